"""The reduced embedded config and running Snakemake on it: what the end-to-end tests share (conftest's
`dag_run` fixture runs it once per session; tests/test_workflow.py checks that run, other e2e tests start
their own from `reduced_config`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import IN_CI, require_shared, shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
MODELS = ("fixture-qwen2_5_vl", "fixture-llava")
N_LAYERS = 3
PER_CLASS = 4
INTERVENTIONS = (
    "add_a0",
    "add_a4",
    "ablate",
    "ablate_direct",
    "random_a4_s0",
    "shift_a4_text_trail",
    "relative_a4_text_trail",
    "covrandom_a4_s0",
    "add_orth_a4",
    "covrandom_ablate_s0",
    "ablate_refusal_tool_blank",
)
"""In expand order; the refusal ablation's base is a condition no other intervention runs on; one run of
every kind of the mechanism's specificity controls."""


def reduced_config(work: Path) -> dict:
    """The embedded default, made smaller: fewer prompts, layers, tokens and interventions; two shards."""
    with open(REPO / "config" / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    cfg["results"] = str(work / "results")
    cfg["book_dir"] = str(work / "book")
    cfg["datasets"] = {"mini": {"limit_per_class": PER_CLASS}}
    # the random fixtures only: the planted-mechanism one has its own DAG test (tests/test_planted_dag.py)
    cfg["models"] = {m: cfg["models"][m] for m in MODELS}
    for entry in cfg["models"].values():
        entry["fixture"].update(num_layers=N_LAYERS, hidden_size=32, num_heads=2)
    cfg["generation"].update(max_new_tokens=6, batch_size=4, shards=2, device="cpu")
    cfg["interventions"] = {
        "layer": "auto",
        "add": {"alphas": [0, 4]},
        "ablate": ["tool", "direct"],
        "subtract": False,
        "random": {"alphas": [4], "seeds": [0]},
        "covrandom": {"alphas": [4], "seeds": [0]},
        "control_shift": {"conditions": ["text_trail"], "alphas": [4]},
        "relative": {"conditions": ["text_trail"], "alphas": [4]},
        "add_orth": {"alphas": [4]},
        "covrandom_remove": {"seeds": [0]},
        "ablate_refusal": ["tool_blank"],
    }
    cfg["stats"] = {"n_boot": 200, "seed": 0}
    cfg["free"] = {"max_turns": 2}
    mirror = shared_data_dir()
    if IN_CI:  # CI has the shared data: the FigStep check may not quietly become "no table written"
        require_shared(mirror / "figstep_safebench")
    if (mirror / "figstep_safebench").is_dir():  # FigStep fidelity against the originals, 10 images
        cfg["data_mirror"] = str(mirror)
        cfg["validation"] = {"planted_seed": 0, "figstep_fidelity": "auto", "figstep_every": 50}
    lock = work / "datasets.lock.yaml"  # never write the committed lock file from a test
    shutil.copyfile(REPO / "config" / "datasets.lock.yaml", lock)
    cfg["data_lock"] = str(lock)
    return cfg


def snakemake(work: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)


def run_reduced_dag(work: Path) -> tuple[Path, dict]:
    """Run the whole DAG on `reduced_config(work)` with 2 cores; (work, config) once it succeeded."""
    cfg = reduced_config(work)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "--configfile", "config.yaml", "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-6000:]
    return work, cfg
