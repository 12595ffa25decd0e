"""`make bench`'s bundle row: the embedded default's result bundle, imported into a fresh folder with the book
rebuilt, timed against the full run of the same config on the same cores (toolshift.bench.workflow_timing's
`end_to_end_figures`, whose run folder this reuses; the issue's target is a quarter of it)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from toolshift.bench.workflow_timing import DEFAULT_CONFIG, _run_snakemake

BUNDLE = Path("results") / "bundle" / "toolshift-bundle.zip"
"""Where `snakemake bundle` writes, relative to the run folder (the embedded default's `results: results`)."""


def bundle_figures(work: Path, full_run_s: float | None, cores: int | None = None) -> dict[str, Any]:
    """Pack the bundle of the finished embedded-default run in `work/e2e`, import it into `work/from_bundle`
    and rebuild everything after generation: the import's wall time, its ratio to `full_run_s`, the
    bundle's size and the packing time. Without a full run (it failed) nothing is measured; a failure here
    is recorded in `bundle.error`, the other figures stand."""
    if full_run_s is None:
        return {"bundle_import_s": None, "bundle": {"skipped": "no full run of the embedded default"}}
    try:
        return _measure(work, full_run_s, cores)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"bundle_import_s": None, "bundle": {"error": str(exc)}}


def _measure(work: Path, full_run_s: float, cores: int | None) -> dict[str, Any]:
    source, target = work / "e2e", work / "from_bundle"
    target.mkdir()
    cores = cores or os.cpu_count() or 1
    start = time.perf_counter()
    _run_snakemake(
        ["--configfile", str(DEFAULT_CONFIG), "--cores", str(cores), "bundle"], source, timeout=3600
    )
    pack_s = time.perf_counter() - start
    bundle = source / BUNDLE
    args = ["--configfile", str(DEFAULT_CONFIG), "--cores", str(cores), "--config", f"bundle={bundle}"]
    start = time.perf_counter()
    _run_snakemake(args, target, timeout=3600)
    import_s = time.perf_counter() - start
    return {
        "bundle_import_s": import_s,
        "bundle_import_over_full": import_s / full_run_s,
        "bundle_mb": bundle.stat().st_size / 1e6,
        "bundle": {"pack_s": pack_s, "cores": cores, "full_run_s": full_run_s},
    }
