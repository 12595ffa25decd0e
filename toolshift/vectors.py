"""The image-tool vector, the refusal direction and how every condition moves the residual stream.

Input: one activations dataset per condition (variable ``resid`` with dims prompt_id/layer/hidden: the
residual stream after each decoder layer at the last prompt token) and the prompts table (for
``harmful``). Output: ``vectors/{model}/{dataset}.nc`` with

- ``tool_vector`` (layer, hidden): mean over harmful prompts of h(tool) - h(direct), paired per prompt;
- ``refusal_direction`` (layer, hidden): mean h(direct, harmful) - mean h(direct, harmless);
- ``shift`` (condition, layer, hidden): mean over harmful prompts of h(c) - h(direct) (zero for direct);
- ``cos_tool_refusal`` (layer), ``cos_shift_tool`` and ``cos_shift_refusal`` (condition, layer);
- ``projection`` (condition, prompt_id, layer): h . r_hat, with r_hat the unit refusal direction per layer;
- ``norm_tool_vector`` (layer);
- coordinate ``harmful`` (prompt_id); attrs ``n_harmful``, ``n_harmless``, ``model``, ``dataset``,
  ``conditions``, ``toolshift_version``.

Cosines are NaN where either vector is zero (e.g. the shift of ``direct`` itself) and the refusal
direction is NaN everywhere when the dataset has no harmless prompt: NaN, not 0, marks "undefined".
All arithmetic is done in float64.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from toolshift import CONDITIONS, __version__
from toolshift.contracts import ACTIVATION_DIMS, atomic_path, require_columns
from toolshift.errors import ContractError

VECTOR_VARS: dict[str, tuple[str, ...]] = {
    "tool_vector": ("layer", "hidden"),
    "refusal_direction": ("layer", "hidden"),
    "shift": ("condition", "layer", "hidden"),
    "cos_tool_refusal": ("layer",),
    "cos_shift_tool": ("condition", "layer"),
    "cos_shift_refusal": ("condition", "layer"),
    "projection": ("condition", "prompt_id", "layer"),
    "norm_tool_vector": ("layer",),
}
"""The variables of a vectors file and their dims."""

REQUIRED_CONDITIONS: tuple[str, str] = ("direct", "tool")


def cosine(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cosine similarity along `axis`; NaN where either vector has zero norm (or is NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=axis)
    nb = np.linalg.norm(b, axis=axis)
    dot = np.sum(a * b, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dot / (na * nb)
    out = np.where((na > 0) & (nb > 0), out, np.nan)
    return np.clip(out, -1.0, 1.0)


def unit(v: np.ndarray, axis: int = -1) -> np.ndarray:
    """`v` scaled to unit norm along `axis`; NaN where the norm is zero."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, v / n, np.nan)


def _condition_order(conditions: list[str]) -> list[str]:
    known = [c for c in CONDITIONS if c in conditions]
    return known + sorted(c for c in conditions if c not in CONDITIONS)


def _check_acts(condition: str, ds: xr.Dataset) -> None:
    if not isinstance(ds, xr.Dataset) or "resid" not in ds:
        raise ContractError(f"activations of condition {condition!r}: no variable 'resid'")
    if tuple(ds["resid"].dims) != ACTIVATION_DIMS:
        raise ContractError(
            f"activations of condition {condition!r}: resid has dims {tuple(ds['resid'].dims)}, "
            f"expected {ACTIVATION_DIMS}"
        )
    ids = pd.Index(ds["prompt_id"].values)
    if ids.has_duplicates:
        raise ContractError(
            f"activations of condition {condition!r}: duplicate prompt_id {ids[ids.duplicated()][0]!r}"
        )


def compute_vectors(
    acts: dict[str, xr.Dataset], prompts: pd.DataFrame, *, model: str, dataset: str
) -> xr.Dataset:
    """Compute the tool vector, refusal direction, per-condition shifts, cosines and projections.

    `acts` maps condition -> activations dataset; it must hold ``direct`` and ``tool``. Prompts are
    aligned by prompt_id on the prompts of ``direct`` (that are also in `prompts`): every other
    condition must have all of them (extra prompts of another condition are ignored). Layers and
    hidden sizes must agree across conditions.
    """
    missing = [c for c in REQUIRED_CONDITIONS if c not in acts]
    if missing:
        raise ContractError(
            f"vectors for {model}/{dataset}: missing activations of condition(s) {', '.join(missing)}; "
            f"got {sorted(acts)}"
        )
    require_columns(prompts, ("prompt_id", "harmful"), "prompts table")
    for condition, ds in acts.items():
        _check_acts(condition, ds)

    direct = acts["direct"]
    harmful_of = dict(zip(prompts["prompt_id"].astype(str), prompts["harmful"].astype(bool), strict=True))
    direct_ids = [str(p) for p in direct["prompt_id"].values]
    unknown = [p for p in direct_ids if p not in harmful_of]
    if unknown:
        raise ContractError(
            f"activations of condition 'direct': prompt_id {unknown[0]!r} is not in the prompts table "
            f"({len(unknown)} unknown)"
        )
    ids = direct_ids
    harmful = np.array([harmful_of[p] for p in ids], dtype=bool)
    n_harmful, n_harmless = int(harmful.sum()), int((~harmful).sum())
    if n_harmful == 0:
        raise ContractError(f"vectors for {model}/{dataset}: no harmful prompt among the direct activations")

    layers = direct["layer"].values
    n_hidden = direct.sizes["hidden"]
    conditions = _condition_order(list(acts))
    h: dict[str, np.ndarray] = {}
    for c in conditions:
        ds = acts[c]
        have = set(str(p) for p in ds["prompt_id"].values)
        lacking = [p for p in ids if p not in have]
        if lacking:
            raise ContractError(
                f"activations of condition {c!r} lack {len(lacking)} prompt(s) that 'direct' has, "
                f"e.g. {lacking[0]!r}"
            )
        if ds.sizes["layer"] != len(layers) or not np.array_equal(ds["layer"].values, layers):
            raise ContractError(f"activations of condition {c!r}: layers differ from those of 'direct'")
        if ds.sizes["hidden"] != n_hidden:
            raise ContractError(
                f"activations of condition {c!r}: hidden size {ds.sizes['hidden']}, 'direct' has {n_hidden}"
            )
        resid = ds["resid"].assign_coords(prompt_id=[str(p) for p in ds["prompt_id"].values])
        h[c] = resid.sel(prompt_id=ids).values.astype(np.float64)  # (prompt, layer, hidden)

    h_direct = h["direct"]
    shift = np.stack([(h[c][harmful] - h_direct[harmful]).mean(axis=0) for c in conditions])
    tool_vector = shift[conditions.index("tool")]
    if n_harmless:
        refusal = h_direct[harmful].mean(axis=0) - h_direct[~harmful].mean(axis=0)
    else:
        refusal = np.full_like(tool_vector, np.nan)
    r_hat = unit(refusal)  # (layer, hidden)
    projection = np.stack([np.einsum("plh,lh->pl", h[c], r_hat) for c in conditions])

    coords = {
        "condition": conditions,
        "prompt_id": ids,
        "layer": layers,
        "harmful": ("prompt_id", harmful),
    }
    data_vars = {
        "tool_vector": (("layer", "hidden"), tool_vector),
        "refusal_direction": (("layer", "hidden"), refusal),
        "shift": (("condition", "layer", "hidden"), shift),
        "cos_tool_refusal": (("layer",), cosine(tool_vector, refusal)),
        "cos_shift_tool": (("condition", "layer"), cosine(shift, tool_vector[None])),
        "cos_shift_refusal": (("condition", "layer"), cosine(shift, refusal[None])),
        "projection": (("condition", "prompt_id", "layer"), projection),
        "norm_tool_vector": (("layer",), np.linalg.norm(tool_vector, axis=-1)),
    }
    attrs = {
        "model": str(model),
        "dataset": str(dataset),
        "conditions": ",".join(conditions),
        "n_harmful": n_harmful,
        "n_harmless": n_harmless,
        "position": str(direct.attrs.get("position", "")),
        "toolshift_version": __version__,
        "note": "cosines are NaN where a vector is zero; refusal_direction is NaN without harmless prompts",
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def validate_vectors(ds: xr.Dataset, where: str) -> None:
    """Check that `ds` has every vectors variable with the right dims; `where` names the file."""
    for name, dims in VECTOR_VARS.items():
        if name not in ds:
            raise ContractError(f"{where}: missing variable {name!r}")
        if tuple(ds[name].dims) != dims:
            raise ContractError(
                f"{where}: variable {name!r} has dims {tuple(ds[name].dims)}, expected {dims}"
            )
    for key in ("model", "dataset", "n_harmful", "n_harmless"):
        if key not in ds.attrs:
            raise ContractError(f"{where}: missing attribute {key!r}")


def write_vectors(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write a vectors dataset to netCDF (h5netcdf), atomically."""
    validate_vectors(ds, str(path))
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def read_vectors(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read and validate a vectors file; a missing, corrupt or incomplete file raises ContractError."""
    p = Path(path)
    if not p.exists():
        raise ContractError(f"{p}: file not found")
    try:
        with xr.open_dataset(p, engine="h5netcdf") as opened:
            ds = opened.load()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a contract failure
        raise ContractError(f"{p}: cannot be read as netCDF ({type(exc).__name__}: {exc})") from None
    validate_vectors(ds, str(p))
    return ds
