"""`activations.nc`: residual-stream states at the last prompt token, as an xarray Dataset (h5netcdf)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import toolshift
from toolshift.contracts import ACTIVATION_ATTRS, ACTIVATION_DIMS
from toolshift.errors import ContractError
from toolshift.files import read_netcdf, write_netcdf

VARIABLE = "resid"
POSITION = "last_prompt_token"
IDENTITY_ATTRS = ("model", "revision", "condition", "position")
"""Attrs that must agree between shards of one run."""


def to_dataset(states: np.ndarray, prompt_ids: Sequence[str], attrs: dict[str, Any]) -> xr.Dataset:
    """Wrap (prompt, layer, hidden) states as a Dataset with variable `resid` and the contract attrs.

    `attrs` must give `model`, `revision` and `condition`; `position` defaults to "last_prompt_token",
    `toolshift_version` to this package's version and `dtype` to the model dtype "float32" (the stored
    array is always float32).
    """
    states = np.asarray(states)
    if states.ndim != 3 or states.shape[0] != len(prompt_ids):
        raise ContractError(
            f"activations: expected an array (prompt_id={len(prompt_ids)}, layer, hidden), "
            f"got shape {states.shape}"
        )
    ids = [str(p) for p in prompt_ids]
    if len(set(ids)) != len(ids):
        raise ContractError("activations: duplicate prompt_id")
    full = {"position": POSITION, "dtype": "float32", "toolshift_version": toolshift.__version__, **attrs}
    missing = [k for k in ACTIVATION_ATTRS if full.get(k) is None]
    if missing:
        raise ContractError(f"activations: missing attr(s) {', '.join(missing)}")
    full = {k: (str(v) if isinstance(v, str | os.PathLike) else v) for k, v in full.items()}
    return xr.Dataset(
        {VARIABLE: (ACTIVATION_DIMS, states.astype(np.float32, copy=False))},
        coords={
            "prompt_id": np.array(ids, dtype=object),
            "layer": np.arange(states.shape[1], dtype=np.int64),
        },
        attrs=full,
    )


def _validate(ds: xr.Dataset, where: str | os.PathLike[str]) -> None:
    if VARIABLE not in ds.data_vars:
        raise ContractError(f"{where}: no variable {VARIABLE!r}")
    if tuple(ds[VARIABLE].dims) != ACTIVATION_DIMS:
        dims = tuple(ds[VARIABLE].dims)
        raise ContractError(f"{where}: {VARIABLE} has dims {dims}, expected {ACTIVATION_DIMS}")
    missing = [k for k in ACTIVATION_ATTRS if k not in ds.attrs]
    if missing:
        raise ContractError(f"{where}: missing attr(s) {', '.join(missing)}")
    if "prompt_id" not in ds.coords or "layer" not in ds.coords:
        raise ContractError(f"{where}: missing coordinate prompt_id or layer")


def write_activations(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Validate and write `ds` to `path` (netCDF4 via h5netcdf), atomically."""
    _validate(ds, path)
    write_netcdf(ds, path)


def read_activations(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read an `activations.nc` into memory and check its contract (ContractError naming the file)."""
    p = Path(path)
    ds = read_netcdf(p)
    _validate(ds, p)
    ds["prompt_id"] = ds["prompt_id"].astype(object)
    return ds


def concat_shards(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Concatenate shards of one run along prompt_id (same layers, hidden size and identity attrs)."""
    if not datasets:
        raise ContractError("activations: no shards to concatenate")
    first = datasets[0]
    for i, ds in enumerate(datasets):
        _validate(ds, f"shard {i}")
        for key in IDENTITY_ATTRS:
            mine, theirs = ds.attrs.get(key), first.attrs.get(key)
            if mine != theirs:
                raise ContractError(f"shard {i}: attr {key}={mine!r} differs from shard 0 ({theirs!r})")
        shape = (ds.sizes["layer"], ds.sizes["hidden"])
        first_shape = (first.sizes["layer"], first.sizes["hidden"])
        if shape != first_shape:
            raise ContractError(f"shard {i}: (layer, hidden) = {shape} differs from shard 0 {first_shape}")
    out = xr.concat(list(datasets), dim="prompt_id", combine_attrs="override")
    counts = Counter(out["prompt_id"].values.tolist())
    dup = next((pid for pid, c in counts.items() if c > 1), None)
    if dup is not None:
        raise ContractError(f"activations: prompt_id {dup!r} appears in more than one shard")
    return out
