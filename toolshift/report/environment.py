"""The book's record of the environment that ran: installed against locked package versions, the git state
of the checkout and per-rule runtimes (from Snakemake `benchmark:` files)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

import toolshift
from toolshift.report.format import DASH, cell, code, is_missing, markdown_table
from toolshift.report.revisions import COMMIT

VERSION_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "transformers",
    "accelerate",
    "numpy",
    "pandas",
    "xarray",
    "h5netcdf",
    "scipy",
    "matplotlib",
    "seaborn",
    "pillow",
    "snakemake",
    "jupyter-book",
    "sphinx",
    "myst-parser",
)
"""Packages whose installed versions the provenance chapter lists."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def software_markdown(
    lock: str | os.PathLike[str] | None = None, installed: Mapping[str, str] | None = None
) -> str:
    """toolshift, Python and the key packages as installed in the environment building the book beside their
    locked versions (`envs/requirements-lock.txt`, toolshift.common.lockfile), then every package where the
    environment differs from the lock and the whole lock in a dropdown. `installed`: name -> version
    (default: the running environment)."""
    from toolshift.common.lockfile import LOCKED_PYTHON, MAIN_LOCK, TARGET, canonical, differences, read_lock
    from toolshift.errors import ConfigError

    lock_path = Path(lock) if lock is not None else MAIN_LOCK
    shown = (
        lock_path.relative_to(toolshift.REPO_ROOT)
        if lock_path.is_relative_to(toolshift.REPO_ROOT)
        else lock_path
    )
    try:
        locked = read_lock(lock_path)
    except ConfigError as exc:
        locked, lock_error = {}, str(exc)
    else:
        lock_error = None
    have = {canonical(p): _version(p) for p in VERSION_PACKAGES} if installed is None else dict(installed)
    python_locked = ".".join(map(str, LOCKED_PYTHON)) + ".*"
    rows = [[code("toolshift"), cell(toolshift.__version__), "(this checkout)"]]
    rows.append([code("python"), cell(platform.python_version()), cell(python_locked)])
    for package in VERSION_PACKAGES:
        entry = locked.get(canonical(package))
        rows.append(
            [
                code(package),
                cell(have.get(canonical(package), "not installed")),
                cell(entry.version if entry else DASH),
            ]
        )
    out = markdown_table(["package", "installed", f"locked ({code(str(shown))})"], rows)
    out += f"\nInstalled: the environment that built this book ({cell(platform.platform())}). "
    if lock_error is not None:
        return out + f"No lock to compare with: {cell(lock_error)}\n"
    out += (
        f"Locked: `make install` installs {len(locked)} packages at exact versions with sha256 ({TARGET}).\n"
    )
    diff = differences(locked, None if installed is None else have)
    if not diff:
        out += (
            "\nThe environment that built this book is the locked one: every package at its locked version.\n"
        )
    else:
        out += (
            f"\n**{len(diff)} package(s) differ from the lock** (another platform, a `TORCH_SPEC` build, "
            "`make test-latest` or a hand install): the versions below, not the lock, made these results.\n\n"
        )
        out += markdown_table(
            ["package", "locked", "installed"], [[code(n), cell(a), cell(b)] for n, a, b in diff]
        )
    listing = "\n".join(f"{name}=={locked[name].version}" for name in sorted(locked))
    return out + (
        f"\n::::{{dropdown}} Every locked package ({len(locked)}, {code(str(shown))})\n\n"
        f"```text\n{listing}\n```\n::::\n"
    )


def git_state(repo: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it; `commit` is None outside git."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None or not COMMIT.match(commit):
        return {"commit": None, "dirty": None, "describe": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status), "describe": git("log", "-1", "--format=%cI %s")}


def git_markdown(state: Mapping[str, Any]) -> str:
    """One paragraph: the commit the workflow code was at, flagged when the checkout had local changes."""
    if not state.get("commit"):
        return "The workflow did not run from a git checkout, so no commit is recorded.\n"
    text = f"Workflow code at commit {code(state['commit'])}"
    if state.get("describe"):
        text += f" ({cell(state['describe'])})"
    if state.get("dirty"):
        text += ", **with uncommitted changes to tracked files**: the commit alone does not reproduce it"
    return text + ".\n"


BENCHMARK_COLUMNS: tuple[str, ...] = ("s", "max_rss", "cpu_time")
"""Columns of a Snakemake benchmark file the runtime table reads."""


def read_benchmarks(benchmarks_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every `*.tsv` benchmark file under the folder, one row each, with its stage (first path part)."""
    root = Path(benchmarks_dir)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        try:
            df = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.ParserError):
            continue  # a benchmark file being written by a concurrent job: not a result yet
        if df.empty or not set(BENCHMARK_COLUMNS) <= set(df.columns):
            continue
        last = df.iloc[-1]
        rows.append(
            {
                "stage": stage,
                "job": str(rel.with_suffix("")),
                "s": pd.to_numeric(last["s"], errors="coerce"),
                "max_rss": pd.to_numeric(last["max_rss"], errors="coerce"),
                "cpu_time": pd.to_numeric(last["cpu_time"], errors="coerce"),
            }
        )
    return pd.DataFrame(rows, columns=["stage", "job", *BENCHMARK_COLUMNS])


def runtimes_markdown(benchmarks: pd.DataFrame) -> str:
    """Per stage: jobs, summed and longest wall time, CPU time and peak memory, from benchmark files."""
    benchmarks = benchmarks[benchmarks["stage"] != "book"]  # a previous build's: not this one
    if benchmarks.empty:
        return "No benchmark files were found for this run.\n"
    grouped = benchmarks.groupby("stage", sort=False)
    table = grouped.agg(
        jobs=("job", "size"),
        total=("s", "sum"),
        longest=("s", "max"),
        cpu=("cpu_time", "sum"),
        rss=("max_rss", "max"),
    ).sort_values("total", ascending=False)

    def num(x: Any, fmt: str) -> str:
        return DASH if is_missing(x) else format(float(x), fmt)

    rows = [
        [code(stage), str(int(r.jobs)), num(r.total, ".1f"), num(r.longest, ".1f"), num(r.cpu, ".1f"),
         num(r.rss, ".0f")]
        for stage, r in table.iterrows()
    ]  # fmt: skip
    rows.append(
        [
            "**all**",
            str(int(table["jobs"].sum())),
            num(table["total"].sum(), ".1f"),
            num(table["longest"].max(), ".1f"),
            num(table["cpu"].sum(), ".1f"),
            num(table["rss"].max(), ".0f"),
        ]
    )
    header = ["stage", "jobs", "wall time, s (sum)", "longest job, s", "CPU time, s", "peak RSS, MB"]
    note = (
        "\nFrom the Snakemake `benchmark:` file of every job that has run in this results folder (the "
        "book's own job is still running and not shown); jobs may have run in parallel, so the summed wall "
        "time is not the elapsed time.\n"
    )
    return markdown_table(header, rows) + note
