"""Writing files so that a failed or killed step leaves nothing Snakemake would take as complete, and the
netCDF reader and writer every `.nc` contract goes through (activations, vectors)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

from toolshift.errors import ContractError, DiskFullError

NETCDF_ENGINE = "h5netcdf"
"""The netCDF backend of every `.nc` file toolshift writes or reads (netCDF4/HDF5 through h5py)."""

_UMASK = os.umask(0)
os.umask(_UMASK)

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")
"""How a full disk shows in errors that are not an OSError with its errno: safetensors' SafetensorError
(`IoError(Os { code: 28, kind: StorageFull, ... })`), pyarrow's and h5py's wrapped OS errors."""


def disk_full_cause(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s chain (itself, its cause or context) that reports a full disk or an exhausted
    quota (ENOSPC / EDQUOT, or a library error whose message carries it), else None."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return exc
        text = str(exc)
        if any(marker in text for marker in _DISK_FULL_TEXTS) or "os error 28" in text or "code: 28," in text:
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def _path_in_frames(exc: BaseException, folder: Path) -> Path | None:
    """The file under `folder` that the innermost frame of `exc`'s traceback was writing: a local variable
    holding a path inside `folder` (e.g. transformers' `filename` when safetensors fails), else None."""
    roots = {os.path.abspath(folder), str(folder.resolve())}
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
                try:
                    text = os.path.abspath(os.fspath(value))
                except (TypeError, ValueError):
                    continue
                for root in roots:
                    if text.startswith(root + os.sep):
                        return Path(text).relative_to(root)
    return None


def _newest_file(folder: Path) -> Path | None:
    """The most recently modified file under `folder` (the one a failed save was writing), or None."""
    try:
        files = [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
        return max(files, key=lambda p: p.lstat().st_mtime_ns).relative_to(folder) if files else None
    except OSError:
        return None


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failed or killed step therefore never leaves a file that Snakemake would take as complete. A full
    disk (or quota), however the writer reports it, raises DiskFullError naming `path` (one line).
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        if tmp.exists() and not tmp.is_symlink():
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    except Exception as exc:
        if disk_full_cause(exc) is not None and not isinstance(exc, DiskFullError):
            raise DiskFullError(target) from exc
        raise
    finally:
        if tmp is not None and (tmp.exists() or tmp.is_symlink()):
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; if the block succeeds, it replaces `path` (an existing
    `path` is removed first), else it is removed and `path` is left as it was. A full disk while the block
    writes raises DiskFullError naming the file it was writing (one line): the path inside the folder that
    the failing frame held (e.g. a model's `model.safetensors`), else the newest file there."""
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as exc:
        if disk_full_cause(exc) is not None and not isinstance(exc, DiskFullError):
            written = None if tmp is None else (_path_in_frames(exc, tmp) or _newest_file(tmp))
            raise DiskFullError(target if written is None else target / written) from exc
        raise
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write `ds` to `path` as netCDF4 (h5netcdf), atomically."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine=NETCDF_ENGINE)


def read_netcdf(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a netCDF file into memory; a missing or unreadable file raises ContractError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ContractError(f"{p}: file not found")
    try:
        with xr.open_dataset(p, engine=NETCDF_ENGINE) as opened:
            return opened.load()
    except Exception as exc:  # noqa: BLE001 - any reader failure (truncated, not HDF5) is a contract failure
        raise ContractError(f"{p}: cannot be read as netCDF ({type(exc).__name__}: {exc})") from None
