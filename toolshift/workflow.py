"""Glue between a Snakemake `script:` and the library: logging and one-line errors.

Each `workflow_scripts/*.py` file is a thin `main(smk)` over the library, run by `run_step`.
"""

from __future__ import annotations

import logging
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


def run_step(smk: Any, main: Callable[[Any], None]) -> None:
    """Run `main(smk)`; a ToolshiftError ends the job with one line on stderr and exit status 1.

    Snakemake then deletes the job's outputs, so a failed step never looks complete.
    """
    setup_logging(smk.log[0] if len(smk.log) else None)
    log.info("rule %s, wildcards %s", smk.rule, dict(smk.wildcards.items()))
    try:
        main(smk)
    except ToolshiftError as exc:
        log.error("%s", exc)
        print(f"toolshift error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
