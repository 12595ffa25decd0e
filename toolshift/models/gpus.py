"""Claim one GPU per inference job on a multi-GPU box.

Snakemake's `--resources gpu=N` caps how many GPU jobs run at once but does not say which GPU each
job gets. Each job therefore takes an exclusive lock on one GPU index (a lock file per index) and
keeps it for the life of the process; the operating system releases it when the job ends, even on
SIGKILL, so a crashed job never leaves a GPU claimed.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

from toolshift.errors import ToolshiftError

_HELD: list[IO[str]] = []  # lock files held by this process (closing one releases its GPU)


def lock_dir() -> Path:
    """Where the per-GPU lock files live ($TOOLSHIFT_GPU_LOCKS, else a folder in the temp dir)."""
    path = Path(
        os.environ.get("TOOLSHIFT_GPU_LOCKS") or Path(tempfile.gettempdir()) / f"toolshift-gpus-{os.getuid()}"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_gpu(n_gpus: int, directory: Path | None = None) -> int:
    """Lock the first free GPU index in range(n_gpus) for this process and return it.

    Raises ToolshiftError when every GPU is claimed (more GPU jobs than `--resources gpu=N` allows GPUs).
    """
    folder = directory or lock_dir()
    for index in range(n_gpus):
        handle = open(folder / f"gpu{index}.lock", "w")  # noqa: SIM115 - held until the process ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD.append(handle)
        return index
    raise ToolshiftError(
        f"all {n_gpus} GPU(s) are claimed by other jobs; run with --resources gpu={n_gpus} at most"
    )


def job_device(device: str) -> str:
    """The torch device for this job: `auto`/`cuda` on a box with several GPUs claims one of them."""
    from toolshift.models.loading import resolve_device

    resolved = resolve_device(device)
    if resolved != "cuda":
        return resolved
    import torch

    n_gpus = torch.cuda.device_count()
    return f"cuda:{claim_gpu(n_gpus)}" if n_gpus > 1 else "cuda"
