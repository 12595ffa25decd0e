"""Glue between a Snakemake `script:` and the library: logging and one-line errors.

Each `workflow_scripts/*.py` file is a thin `main(smk)` over the library, run by `run_step`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from toolshift.errors import ToolshiftError

log = logging.getLogger("toolshift")


def setup_logging(logfile: str | None) -> None:
    """Log INFO and above to the rule's log file (if any) and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )


def limit_threads(threads: int) -> None:
    """Let numerical libraries (torch, BLAS) use the job's `threads` only, set before they are imported.

    Snakemake runs several jobs at once on the cores it was given; a library that also spreads each job
    over every core oversubscribes the machine (on 2 cores, 2 jobs of 2 threads each ran ~3x slower).
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(max(1, int(threads)))


def run_step(smk: Any, main: Callable[[Any], None]) -> None:
    """Run `main(smk)`; a ToolshiftError ends the job with one line on stderr and exit status 1.

    Snakemake then deletes the job's outputs, so a failed step never looks complete. Numerical libraries
    get the job's threads (`limit_threads`).
    """
    limit_threads(getattr(smk, "threads", 1) or 1)
    setup_logging(smk.log[0] if len(smk.log) else None)
    log.info("rule %s, wildcards %s", smk.rule, dict(smk.wildcards.items()))
    try:
        main(smk)
    except ToolshiftError as exc:
        log.error("%s", exc)
        print(f"toolshift error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
