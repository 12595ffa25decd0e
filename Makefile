# The README's two commands: `make report` and `make test` (and `make bench`, `make lint`).
# Each creates or reuses a local virtualenv in .venv and installs what it needs; no root needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned as a pair that installs and runs on CPU-only machines too;
# override on a GPU box if you need another build: make report TORCH_SPEC="torch==2.x torchvision==0.y"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.toolshift-installed
CORES ?= all
SNAKEMAKE_ARGS ?=
# A local copy of the benchmark files laid out like the dataset registry (see README, "Datasets").
# When set, the validation chapter also checks FigStep pixel fidelity against the SafeBench originals.
# Default: ../shared/data when that folder exists, else none.
DATA_MIRROR ?= $(wildcard $(abspath ../shared/data))

.PHONY: report test bench lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

report: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) \
		$(if $(DATA_MIRROR),--config data_mirror=$(DATA_MIRROR)) $(SNAKEMAKE_ARGS)
	@echo "The book: $(CURDIR)/book/_build/html/index.html"

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m toolshift.bench

lint: $(STAMP)
	$(BIN)/ruff check toolshift tests workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

clean:
	rm -rf results book/_build book/_generated .snakemake
