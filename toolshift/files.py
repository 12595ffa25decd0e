"""Writing files so that a failed or killed step leaves nothing Snakemake would take as complete, and the
netCDF reader and writer every `.nc` contract goes through (activations, vectors)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import xarray as xr

from toolshift.errors import ContractError

NETCDF_ENGINE = "h5netcdf"
"""The netCDF backend of every `.nc` file toolshift writes or reads (netCDF4/HDF5 through h5py)."""

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failed or killed step therefore never leaves a file that Snakemake would take as complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; if the block succeeds, it replaces `path` (an existing
    `path` is removed first), else it is removed and `path` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
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
