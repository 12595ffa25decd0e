"""Glue between a Snakemake `script:` and the library: logging and one-line errors.

Each `workflow_scripts/*.py` file is a thin `main(smk)` over the library, run by `run_step`.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolshift import PACKAGE_DIR, REPO_ROOT
from toolshift.errors import ToolshiftError
from toolshift.files import disk_full_cause
from toolshift.processes import die_with_workflow

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


def _fail(exc: BaseException, line: str, *, traceback_to_console: bool) -> None:
    """End the job: the full traceback and `line` into the rule's log file, `line` once on stderr.

    Without a log file (or when the disk refuses it) the traceback goes to stderr when
    `traceback_to_console` (an unexpected error, whose traceback must not be lost), else nowhere.
    """
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    record = logging.LogRecord("toolshift", logging.ERROR, __file__, 0, "%s", (line,), None)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    written = False
    for handler in handlers:
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
            written = True
        except OSError:  # a full disk may refuse the log too
            pass
        finally:
            handler.release()
        if written:
            handler.handle(record)
    if traceback_to_console and not written:
        print(text, file=sys.stderr, end="", flush=True)
    print(f"toolshift error: {line}", file=sys.stderr, flush=True)
    sys.exit(1)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during (innermost last)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _where_raised(exc: BaseException) -> str:
    """`file:line` of the innermost frame of the traceback in toolshift's own code (the library or a rule
    script), else of the innermost frame (the code that raised)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    here = Path(__file__).resolve()
    frames = [f for f in frames if Path(f.filename).resolve() != here] or frames
    roots = (PACKAGE_DIR, REPO_ROOT / "workflow_scripts")

    def own_code(filename: str) -> bool:
        path = Path(filename).resolve()
        return any(path.is_relative_to(root) for root in roots) or ".snakemake/scripts" in path.as_posix()

    own = [f for f in frames if own_code(f.filename)]
    frame = (own or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def describe_unexpected(exc: BaseException, logfile: str | None) -> str:
    """One line for an exception that is not a ToolshiftError: the cause, the file it concerns and what
    to do. A full disk and exhausted memory get their own advice; anything else is named with where it
    was raised and points at the rule's log for the traceback."""
    where_log = f"full traceback in {logfile}" if logfile else "full traceback above"
    full = disk_full_cause(exc)  # an OSError (ENOSPC, EDQUOT) or a library error wrapping one
    if full is not None:
        target = getattr(full, "filename", None) or _where_raised(exc)
        return (
            f"disk full while writing {target} (No space left on device): free space on that disk or "
            f"point `results` at a larger one, then rerun (Snakemake removed this job's outputs; "
            f"{where_log})"
        )
    for cause in _chain(exc):
        if isinstance(cause, MemoryError):
            return (
                f"out of host memory at {_where_raised(exc)}: lower generation.batch_size or give the job "
                f"more memory, then rerun ({where_log})"
            )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "(no message)"
    if len(first) > 300:
        first = first[:300] + "..."
    filename = getattr(exc, "filename", None)
    about = f" on {filename}" if filename else ""
    return (
        f"unexpected {type(exc).__name__}{about}: {first} (raised at {_where_raised(exc)}); {where_log}; "
        "check the rule's input files, and report it as a toolshift bug with that log if they are fine"
    )


def run_step(smk: Any, main: Callable[[Any], None]) -> None:
    """Run `main(smk)`; any exception ends the job with exit status 1, one line on stderr and the full
    traceback in the rule's log file.

    A ToolshiftError's line is its message; any other exception gets a line naming its cause, the file
    it concerns and what to do (`describe_unexpected`). Snakemake then deletes the job's outputs, so a
    failed step never looks complete. Numerical libraries get the job's threads (`limit_threads`), and the
    job is armed to die with the Snakemake process that runs it (`toolshift.processes.die_with_workflow`).
    """
    armed = die_with_workflow()  # a killed Snakemake leaves no job of it running (toolshift.processes)
    limit_threads(getattr(smk, "threads", 1) or 1)
    logfile = smk.log[0] if len(smk.log) else None
    setup_logging(logfile)
    log.info(
        "rule %s, wildcards %s (dies with its workflow: %s)", smk.rule, dict(smk.wildcards.items()), armed
    )
    try:
        main(smk)
    except ToolshiftError as exc:
        _fail(exc, str(exc), traceback_to_console=False)
    except Exception as exc:  # noqa: BLE001 - every other failure: one line here, the traceback in the log
        line = f"rule {smk.rule}: {describe_unexpected(exc, str(Path(logfile)) if logfile else None)}"
        _fail(exc, " ".join(line.split()), traceback_to_console=True)
