"""Resumable, deterministic inference: a run killed with SIGKILL mid-inference resumes to the same files.

Two tiny DAGs (one fixture model, two conditions, two shards, two prompts per class, two new tokens)
are run to `tables/asr.csv` in separate directories: one without interruption, one killed (the whole
process group, SIGKILL) as soon as its first inference shard is on disk, then resumed with
`snakemake --unlock` and `snakemake --rerun-incomplete`. Every file both wrote under the results root
must agree byte for byte, except netCDF files (compared with `xarray.Dataset.identical`, since HDF5 may
stamp times), parquet tables (compared as frames, then as bytes), and the results root itself where a
file names its own path. The resumed run is also a second full run of the same config, which is the
determinism check: two runs give identical tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr
import yaml
from dag import REPO, SNAKEMAKE, reduced_config, snakemake

pytestmark = pytest.mark.e2e

MODEL = "fixture-qwen2_5_vl"
SKIPPED_DIRS = ("logs", "benchmarks")
"""Per-job logs and timings differ between runs by nature (times, process ids)."""


def tiny_config(work: Path) -> dict:
    """One fixture model, two conditions, two shards, no interventions: the smallest DAG with shards."""
    cfg = reduced_config(work)
    cfg["models"] = {MODEL: cfg["models"][MODEL]}
    cfg["models"][MODEL]["fixture"].update(num_layers=2, hidden_size=32, num_heads=2)
    cfg["datasets"] = {"mini": {"limit_per_class": 2}}
    cfg["conditions"] = ["direct", "tool"]
    cfg["generation"].update(max_new_tokens=2, batch_size=2, shards=2)
    cfg["interventions"] = {}
    cfg["stats"] = {"n_boot": 100, "seed": 0}
    return cfg


def write_config(work: Path) -> Path:
    cfg = tiny_config(work)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return Path(cfg["results"])


def target(results: Path) -> str:
    return str(results / "tables" / "asr.csv")


def run_to_completion(work: Path, results: Path) -> None:
    proc = snakemake(work, "--configfile", "config.yaml", "--cores", "2", target(results), timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]


def kill_mid_inference(work: Path, results: Path, limit_s: float = 600) -> list[Path]:
    """Start the DAG, SIGKILL its process group once a shard exists; the shard files present then."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", "config.yaml", "--cores", "2", target(results)]
    log = open(work / "interrupted.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            shards = sorted((results / "runs").glob("*/*/shards/*/*.parquet"))  # {model}/{dataset}
            if shards:
                break
            time.sleep(0.1)
        still_running = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert shards, f"no shard appeared within {limit_s} s: {(work / 'interrupted.log').read_text()[-3000:]}"
    assert still_running, "the DAG finished before it could be killed"
    return shards


def result_files(results: Path) -> dict[str, Path]:
    """Every file under the results root, by relative path, but per-job logs and benchmarks."""
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if path.is_file() and rel.parts[0] not in SKIPPED_DIRS:
            out[str(rel)] = path
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    clean = tmp_path_factory.mktemp("uninterrupted")
    clean_results = write_config(clean)
    run_to_completion(clean, clean_results)

    killed = tmp_path_factory.mktemp("killed")
    killed_results = write_config(killed)
    shards_at_kill = kill_mid_inference(killed, killed_results)
    files_at_kill = result_files(killed_results)
    # a SIGKILLed Snakemake leaves its lock behind: the documented resume is --unlock, then --rerun-incomplete
    unlocked = snakemake(killed, "--configfile", "config.yaml", "--unlock", timeout=300)
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]
    resumed = snakemake(
        killed,
        "--configfile",
        "config.yaml",
        "--cores",
        "2",
        "--rerun-incomplete",
        target(killed_results),
        timeout=900,
    )
    return {
        "clean": clean_results,
        "killed": killed_results,
        "shards_at_kill": shards_at_kill,
        "files_at_kill": files_at_kill,
        "resumed": resumed,
    }


def test_no_partial_file_survives_the_kill(runs):
    """Atomic writes: what the kill left is either absent or complete (no temp file under a real name)."""
    for path in runs["shards_at_kill"]:
        frame = pd.read_parquet(path)
        assert len(frame) > 0
    for rel, path in runs["files_at_kill"].items():
        if rel.endswith(".parquet"):
            pd.read_parquet(path)
        elif rel.endswith(".nc"):
            xr.open_dataset(path, engine="h5netcdf").close()
    assert "tables/asr.csv" not in runs["files_at_kill"]


def test_resume_completes(runs):
    proc = runs["resumed"]
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert (runs["killed"] / "tables" / "asr.csv").is_file()


def test_resumed_run_equals_uninterrupted_run(runs):
    """Same file set; parquet equal as frames and as bytes, netCDF identical, everything else bytes."""
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-6000:]
    clean, resumed = result_files(runs["clean"]), result_files(runs["killed"])
    assert sorted(clean) == sorted(resumed)
    assert any(rel.endswith("shards/000/direct.parquet") for rel in clean)
    for rel in clean:
        a, b = clean[rel], resumed[rel]
        if rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), obj=rel)
            assert a.read_bytes() == b.read_bytes(), rel
        elif rel.endswith(".nc"):
            with xr.open_dataset(a, engine="h5netcdf") as x, xr.open_dataset(b, engine="h5netcdf") as y:
                assert x.identical(y), rel
        else:  # files that name their own path (validation markers) differ by the results root only
            text_a = a.read_bytes().replace(str(runs["clean"]).encode(), b"<results>")
            text_b = b.read_bytes().replace(str(runs["killed"]).encode(), b"<results>")
            assert text_a == text_b, rel


def test_two_full_runs_give_identical_tables(runs):
    """The tables of both runs (each run end to end from the same config) are byte-identical."""
    tables = sorted((runs["clean"] / "tables").glob("*.csv"))
    assert {p.name for p in tables} >= {"asr.csv", "over_refusal.csv"}
    for table in tables:
        assert table.read_bytes() == (runs["killed"] / "tables" / table.name).read_bytes(), table.name
