"""Jobs die with their workflow: a Snakemake process killed with `kill -9` leaves no job running.

Snakemake starts each rule script as a child process and has no say once it is killed itself: without help
its jobs run on as orphans, and the documented resume (`--unlock`, `--rerun-incomplete`) starts a second copy
of a job whose first copy still runs (on a GPU box: two model loads, two writers of one shard). So every rule
script calls `die_with_workflow` at its start (through `toolshift.common.steps.run_step`):

- when the job's parent is the Snakemake process (a local run: Snakemake's bash `exec`s the script), the
  kernel kills the job the moment that parent ends (`prctl(PR_SET_PDEATHSIG, SIGKILL)`, Linux);
- when a shell sits between them (`--use-conda` activates the environment first), a watcher thread waits on
  the Snakemake process (`pidfd_open`) and, when it ends, kills the job's own child processes and the job.

Processes a job starts itself (the Jupyter Book build, a vLLM interpreter) get `child_dies_with_parent` as
their `preexec_fn`, so they go with the job. Outside Linux, or with no Snakemake process among its
ancestors (a test calling a script's `main`), nothing is armed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal the calling process gets when its parent (thread) ends."""


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent ends (Linux); whether it was armed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def child_dies_with_parent() -> None:
    """`preexec_fn` for a process a job starts: it is killed when the job ends (Linux; else a no-op)."""
    set_parent_death_signal(signal.SIGKILL)


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, command line) of a process, from /proc; None if it is gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), cmdline


def _is_snakemake(cmdline: str) -> bool:
    return any("snakemake" in Path(arg).name for arg in cmdline.split()[:3])


def snakemake_ancestor(max_depth: int = 4) -> tuple[int, int] | None:
    """(pid, depth) of the nearest Snakemake process above this one (depth 1: the parent), or None."""
    pid = os.getpid()
    for depth in range(1, max_depth + 1):
        here = _stat(pid)
        if here is None or here[0] <= 1:
            return None
        pid = here[0]
        parent = _stat(pid)
        if parent is None:
            return None
        if _is_snakemake(parent[1]):
            return pid, depth
    return None


def _descendants(root: int) -> list[int]:
    """Every live process below `root` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_job_tree() -> None:
    """SIGKILL every process this one started (and theirs), then this process."""
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(pid: int) -> None:
    """Block until process `pid` ends, then end this job (a daemon thread)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:  # no pidfd (old kernel): poll
        while _stat(pid) is not None:
            threading.Event().wait(1.0)
    kill_job_tree()


def die_with_workflow() -> str:
    """Arm this job to die with the Snakemake process that runs it (module docstring); what was armed:
    `parent-death signal`, `watcher` or `nothing`."""
    if not sys.platform.startswith("linux"):
        return "nothing"
    found = snakemake_ancestor()
    if found is None:
        return "nothing"
    pid, depth = found
    if depth == 1 and set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != pid:  # Snakemake ended before the signal was armed
            kill_job_tree()
        return "parent-death signal"
    threading.Thread(target=_watch, args=(pid,), name="toolshift-die-with-workflow", daemon=True).start()
    return "watcher"
