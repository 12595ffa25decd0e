"""Workflow figures of `make bench` (toolshift.bench.suite): how long Snakemake takes to build the paper DAG
(`snakemake -n` on `config/paper.yaml`, its job count and what the study costs before it runs,
toolshift.bench.study_cost) and to run the embedded default (`config/config.yaml`) end to end.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from toolshift import REPO_ROOT

PAPER_CONFIG = REPO_ROOT / "config" / "paper.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


def _snakemake() -> str:
    found = Path(sys.executable).parent / "snakemake"
    return str(found) if found.exists() else (shutil.which("snakemake") or "snakemake")


def _run_snakemake(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [_snakemake(), "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(cwd), *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{' '.join(cmd[:1] + args)} failed (exit {proc.returncode}): {tail[0]}")
    return proc


def dag_figures(work: Path, repeats: int, configfile: Path = PAPER_CONFIG) -> dict[str, Any]:
    """Wall time of `snakemake -n` (dry run, job summary only) for `configfile`, and its job count."""
    times: list[float] = []
    n_jobs, rule_counts = None, {}
    for rep in range(repeats):
        directory = work / f"dag{rep}"
        directory.mkdir()
        args = ["--configfile", str(configfile), "--dry-run", "--quiet", "rules"]
        start = time.perf_counter()
        proc = _run_snakemake(args, directory, timeout=900)
        times.append(time.perf_counter() - start)
        rule_counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M)}
        if "total" not in rule_counts:
            raise RuntimeError("snakemake --dry-run printed no 'total' job count")
        n_jobs = rule_counts.pop("total")
    from toolshift.bench.study_cost import study_cost
    from toolshift.common.config import load_config

    study = study_cost(load_config(configfile), rule_counts)
    return {
        "dag_build_s": float(statistics.median(times)),
        "dag_jobs": n_jobs,
        "dag_rule_counts": rule_counts,
        "dag": {"configfile": _shown(configfile), "repeats": repeats, "times_s": times},
        "study_model_loads": study["model_loads"],
        "infer_loads_per_model_dataset_shard": study["loads_per_model_dataset_shard"]["infer"],
        "intervene_loads_per_model_dataset_shard": study["loads_per_model_dataset_shard"]["intervene"],
        "study_generations": study["generations"],
        "study_max_new_tokens": study["max_new_tokens"],
        "study": study,
    }


def _shown(path: Path) -> str:
    """`path` relative to the repository where it lies inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(resolved)


def end_to_end_figures(work: Path, cores: int | None = None) -> dict[str, Any]:
    """The embedded default (config/config.yaml) from scratch in an empty directory: its wall time, the CPU
    time (user + sys) of the whole process tree (Snakemake and every job it waited for) and the summed
    `cpu_time` of the jobs' Snakemake `benchmark:` files. On a slower machine all three grow together; a
    slower package shows as more CPU time for the same jobs."""
    from toolshift.bench.timing import children_cpu_s
    from toolshift.common.config import load_config
    from toolshift.report.environment import read_benchmarks

    directory = work / "e2e"
    directory.mkdir()
    cores = cores or os.cpu_count() or 1
    args = ["--configfile", str(DEFAULT_CONFIG), "--cores", str(cores)]
    cpu_before = children_cpu_s()
    start = time.perf_counter()
    _run_snakemake(args, directory, timeout=7200)
    wall = time.perf_counter() - start
    tree_cpu = children_cpu_s() - cpu_before
    benchmarks = read_benchmarks(directory / load_config(DEFAULT_CONFIG)["results"] / "benchmarks")
    return {
        "end_to_end_s": wall,
        "end_to_end_cpu_s": tree_cpu,
        "end_to_end_jobs_cpu_s": float(benchmarks["cpu_time"].sum()),
        "end_to_end": {
            "cores": cores,
            "jobs": len(benchmarks),
            "jobs_wall_s": float(benchmarks["s"].sum()),
            "cpu_per_wall": tree_cpu / wall if wall > 0 else None,
        },
    }
