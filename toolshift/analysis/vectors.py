"""The image-tool vector, the refusal direction and how every condition moves the residual stream.

Input: one activations dataset per condition (variable ``resid`` with dims prompt_id/layer/hidden: the
residual stream after each decoder layer at the last prompt token), the prompts table (for ``harmful``
and ``category``) and, optionally, the split table (`toolshift.datasets.splits`). Every vector is estimated on
the **train** prompts only (all prompts when no split table is given); the other prompts are projected,
probed and used for layer selection. Output: ``vectors/{model}/{dataset}.nc`` with

- ``tool_vector`` (layer, hidden): mean over train harmful prompts of h(tool) - h(direct), paired per prompt;
- ``refusal_direction`` (layer, hidden): mean h(direct, harmful) - mean h(direct, harmless), train prompts;
  a dataset without harmless prompts takes the direction of the dataset its config names
  (`borrowed_refusal`; attr ``refusal_source`` says where the direction comes from);
- ``shift`` (condition, layer, hidden): mean over train harmful prompts of h(c) - h(direct) (zero for direct);
- ``cos_tool_refusal`` (layer), ``cos_shift_tool`` and ``cos_shift_refusal`` (condition, layer);
- ``projection`` (condition, prompt_id, layer): h . r_hat, with r_hat the unit refusal direction per
  layer, for every prompt of every split;
- ``norm_tool_vector`` (layer);
- ``probe_accuracy`` (condition, layer): harmful-vs-harmless logistic probes fitted on ``direct`` states
  and scored on each condition by k-fold cross-validation over the train prompts
  (`toolshift.analysis.probes`); the ``direct`` row is the probe's own CV accuracy;
- ``probe_test_accuracy`` (condition, layer): the probe fitted on all train ``direct`` states, scored
  on each condition's test prompts (NaN without test prompts);
- ``pca`` (condition, prompt_id, layer, component) and ``pca_explained_variance_ratio`` (layer,
  component): per layer, the principal components of the train states of all conditions pooled, and
  every state's coordinates on them (each component's sign makes its largest loading positive);
- ``layer_score`` (layer): the layer-selection criterion (`toolshift.analysis.selection`, criterion (a)) on
  the validation prompts, NaN for excluded layers;
- ``relative_vector`` (reference, layer, hidden): the control-relative vectors, mean over train harmful
  prompts of h(tool) - h(reference), for every condition but ``tool`` as reference (the ``direct`` row is
  the tool vector itself); ``norm_relative_vector`` and ``cos_relative_refusal`` (reference, layer), and
  ``cos_relative`` (reference, reference_b, layer) between each two of them;
- ``cov_basis`` (layer, cov_component, hidden): the principal axes of the ``direct`` train states (harmful
  and harmless) scaled by their standard deviations, the largest COV_COMPONENTS: ``z @ cov_basis[l]`` with
  z standard normal has the states' covariance (the covariance-random interventions,
  `toolshift.analysis.steering.covariance_direction`); each axis' sign makes its largest loading positive;
- ``shift_null`` (condition, statistic, quantity) and ``relative_null`` (reference, quantity): at the
  selected layer, the representation statistics with a bootstrap interval over prompts and a permutation
  null (condition labels shuffled within prompt; `toolshift.analysis.representation_nulls`);
- coordinates ``harmful``, ``split`` and ``category`` (prompt_id), ``component``; attrs ``n_harmful``,
  ``n_harmless`` (train prompts the vectors are estimated on), ``n_prompts``, ``splits`` (``train/
  validation/test`` or ``all``), ``selected_layer``, ``selection_criterion``, ``selection_split``,
  ``exclude_last_frac``, ``probe_folds``, ``null_layer`` (= ``selected_layer``), ``n_boot``, ``model``,
  ``dataset``, ``conditions``, ``toolshift_version``.

Cosines are NaN where either vector is zero (e.g. the shift of ``direct`` itself) and the refusal
direction is NaN everywhere when the train prompts hold no harmless prompt: NaN, not 0, marks
"undefined". All arithmetic is done in float64.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from toolshift import CONDITIONS, __version__
from toolshift.analysis.probes import DEFAULT_FOLDS, DEFAULT_L2, cross_condition_accuracy, held_out_accuracy
from toolshift.analysis.representation_nulls import QUANTITIES, SHIFT_STATISTICS, layer_nulls
from toolshift.analysis.selection import (
    DEFAULT_EXCLUDE_LAST_FRAC,
    activation_layer_scores,
    select_from_scores,
)
from toolshift.contracts import ACTIVATION_DIMS, require_columns
from toolshift.datasets.splits import SPLITS, split_of
from toolshift.errors import ContractError
from toolshift.files import read_netcdf, write_netcdf

VECTOR_VARS: dict[str, tuple[str, ...]] = {
    "tool_vector": ("layer", "hidden"),
    "refusal_direction": ("layer", "hidden"),
    "shift": ("condition", "layer", "hidden"),
    "cos_tool_refusal": ("layer",),
    "cos_shift_tool": ("condition", "layer"),
    "cos_shift_refusal": ("condition", "layer"),
    "projection": ("condition", "prompt_id", "layer"),
    "norm_tool_vector": ("layer",),
    "probe_accuracy": ("condition", "layer"),
    "probe_test_accuracy": ("condition", "layer"),
    "pca": ("condition", "prompt_id", "layer", "component"),
    "pca_explained_variance_ratio": ("layer", "component"),
    "layer_score": ("layer",),
    "relative_vector": ("reference", "layer", "hidden"),
    "norm_relative_vector": ("reference", "layer"),
    "cos_relative_refusal": ("reference", "layer"),
    "cos_relative": ("reference", "reference_b", "layer"),
    "cov_basis": ("layer", "cov_component", "hidden"),
    "shift_null": ("condition", "statistic", "quantity"),
    "relative_null": ("reference", "quantity"),
}
"""The variables of a vectors file and their dims."""

VECTOR_ATTRS: tuple[str, ...] = ("model", "dataset", "n_harmful", "n_harmless", "selected_layer")
"""Attributes every vectors file has."""

N_COMPONENTS = 2
"""Principal components stored per layer."""
COV_COMPONENTS = 32
"""Principal axes of the direct states kept in ``cov_basis`` (all of them when the states span fewer)."""
DEFAULT_N_BOOT = 1000
"""Bootstrap and permutation replicates of the representation nulls (the DAG passes stats.n_boot)."""

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


def pca_by_layer(
    fit_states: np.ndarray, all_states: np.ndarray, n_components: int = N_COMPONENTS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer PCA fitted on `fit_states` (n, layers, hidden), applied to `all_states` (..., layers, d).

    Returns the coordinates (..., layers, n_components) and the explained-variance ratios (layers,
    n_components); components beyond the rank of the fitting data are 0 (ratio 0). Each component's sign
    makes its largest-magnitude loading positive, so the result does not depend on the SVD's signs.
    """
    n_layers = fit_states.shape[1]
    coords = np.zeros(all_states.shape[:-1] + (n_components,))
    ratios = np.zeros((n_layers, n_components))
    for layer in range(n_layers):
        x = fit_states[:, layer]
        mean = x.mean(axis=0)
        _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = min(n_components, vt.shape[0])
        comps = vt[:k]
        signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
        comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
        total = float(np.sum(sv**2))
        if total > 0:
            ratios[layer, :k] = sv[:k] ** 2 / total
        coords[..., layer, :k] = (all_states[..., layer, :] - mean) @ comps.T
    return coords, ratios


def covariance_basis(states: np.ndarray, n_components: int = COV_COMPONENTS) -> np.ndarray:
    """Per layer, the principal axes of `states` (n, layers, hidden) scaled by their standard deviations
    (ddof 1), largest first: (layers, min(n_components, hidden), hidden), zero rows beyond the states'
    rank, so ``basis.T @ basis`` is the states' covariance whenever they span at most that many axes.
    Each axis' sign makes its largest-magnitude loading positive (as `pca_by_layer`)."""
    n, n_layers, hidden = states.shape
    out = np.zeros((n_layers, min(n_components, hidden), hidden))
    for layer in range(n_layers if n > 1 else 0):
        x = states[:, layer] - states[:, layer].mean(axis=0)
        _, sv, vt = np.linalg.svd(x, full_matrices=False)
        k = min(out.shape[1], vt.shape[0])
        signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt[:k]), axis=1)])
        out[layer, :k] = vt[:k] * (np.where(signs == 0, 1.0, signs) * sv[:k] / np.sqrt(n - 1))[:, None]
    return out


def compute_vectors(
    acts: dict[str, xr.Dataset],
    prompts: pd.DataFrame,
    *,
    model: str,
    dataset: str,
    splits: pd.DataFrame | None = None,
    exclude_last_frac: float = DEFAULT_EXCLUDE_LAST_FRAC,
    probe_folds: int = DEFAULT_FOLDS,
    probe_l2: float = DEFAULT_L2,
    seed: int = 0,
    n_boot: int = DEFAULT_N_BOOT,
    refusal_from: xr.Dataset | None = None,
) -> xr.Dataset:
    """Compute the vectors file of one model on one dataset (see the module docstring).

    `acts` maps condition -> activations dataset; it must hold ``direct`` and ``tool``. Prompts are aligned by
    prompt_id on the prompts of ``direct`` (that are also in `prompts`): every other condition must have all
    of them (extra prompts of another condition are ignored). Layers and hidden sizes must agree across
    conditions. `splits` (a splits table, `toolshift.datasets.splits`) restricts estimation to its train
    prompts; None uses every prompt as train. `seed` fixes the probes' folds and the nulls' replicates
    (`n_boot` of each). `refusal_from` is the vectors file of the same model on another dataset whose refusal
    direction is used when this dataset has no harmless train prompt
    (`toolshift.datasets.prompts.refusal_source`); it is ignored otherwise.
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
    split = split_of(splits, ids, dataset)
    train = split == "train"
    n_harmful, n_harmless = int((harmful & train).sum()), int((~harmful & train).sum())
    if n_harmful == 0:
        raise ContractError(
            f"vectors for {model}/{dataset}: no harmful train prompt among the direct activations"
        )

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
    est = harmful & train
    shift = np.stack([(h[c][est] - h_direct[est]).mean(axis=0) for c in conditions])
    tool_vector = shift[conditions.index("tool")]
    source = str(dataset)
    if n_harmless:
        refusal = h_direct[est].mean(axis=0) - h_direct[~harmful & train].mean(axis=0)
    elif refusal_from is not None:
        refusal, source = borrowed_refusal(refusal_from, layers, n_hidden, f"vectors for {model}/{dataset}")
    else:
        refusal, source = np.full_like(tool_vector, np.nan), ""
    r_hat = unit(refusal)  # (layer, hidden)
    projection = np.stack([np.einsum("plh,lh->pl", h[c], r_hat) for c in conditions])

    validation = split == "validation"
    select_on = validation if validation.any() else train
    scores, criterion = activation_layer_scores(
        direct_val=h_direct[select_on],
        tool_val=h["tool"][select_on],
        harmful_val=harmful[select_on],
        direct_train=h_direct[train],
        harmful_train=harmful[train],
        refusal=refusal,
        tool_vector=tool_vector,
    )
    selection = select_from_scores(scores, criterion, exclude_last_frac=exclude_last_frac)

    train_states = {c: h[c][train] for c in conditions}
    probe_cv = cross_condition_accuracy(
        train_states, "direct", harmful[train], k=probe_folds, seed=seed, l2=probe_l2
    )
    test = split == "test"
    probe_test = held_out_accuracy(
        h_direct[train], harmful[train], {c: h[c][test] for c in conditions}, harmful[test], l2=probe_l2
    )
    pooled = np.concatenate([train_states[c] for c in conditions], axis=0)
    pca, pca_ratio = pca_by_layer(pooled, np.stack([h[c] for c in conditions]))
    references = [c for c in conditions if c != "tool"]
    relative = np.stack([(h["tool"][est] - h[c][est]).mean(axis=0) for c in references])
    li = selection.layer
    shift_null, relative_null = layer_nulls(
        {c: h[c][:, li] for c in conditions},
        references,
        harmful=harmful,
        estimate=est,
        evaluation=test if test.any() else np.ones_like(test),
        test=test,
        train=train,
        r_hat=r_hat[li],
        n_boot=n_boot,
        seed=seed,
        l2=probe_l2,
    )
    cov_basis = covariance_basis(h_direct[train])

    coords = {
        "condition": conditions,
        "prompt_id": ids,
        "layer": layers,
        "component": np.arange(1, N_COMPONENTS + 1),
        "reference": references,
        "reference_b": references,
        "cov_component": np.arange(1, cov_basis.shape[1] + 1),
        "statistic": list(SHIFT_STATISTICS),
        "quantity": list(QUANTITIES),
        "harmful": ("prompt_id", harmful),
        "split": ("prompt_id", split.astype(str)),
    }
    if "category" in prompts:
        category_of = dict(
            zip(prompts["prompt_id"].astype(str), prompts["category"].astype(str), strict=True)
        )
        coords["category"] = ("prompt_id", np.array([category_of[p] for p in ids], dtype=str))
    data_vars = {
        "tool_vector": (("layer", "hidden"), tool_vector),
        "refusal_direction": (("layer", "hidden"), refusal),
        "shift": (("condition", "layer", "hidden"), shift),
        "cos_tool_refusal": (("layer",), cosine(tool_vector, refusal)),
        "cos_shift_tool": (("condition", "layer"), cosine(shift, tool_vector[None])),
        "cos_shift_refusal": (("condition", "layer"), cosine(shift, refusal[None])),
        "projection": (("condition", "prompt_id", "layer"), projection),
        "norm_tool_vector": (("layer",), np.linalg.norm(tool_vector, axis=-1)),
        "probe_accuracy": (("condition", "layer"), np.stack([probe_cv[c] for c in conditions])),
        "probe_test_accuracy": (("condition", "layer"), np.stack([probe_test[c] for c in conditions])),
        "pca": (("condition", "prompt_id", "layer", "component"), pca),
        "pca_explained_variance_ratio": (("layer", "component"), pca_ratio),
        "layer_score": (("layer",), selection.scores),
        "relative_vector": (("reference", "layer", "hidden"), relative),
        "norm_relative_vector": (("reference", "layer"), np.linalg.norm(relative, axis=-1)),
        "cos_relative_refusal": (("reference", "layer"), cosine(relative, refusal[None])),
        "cos_relative": (("reference", "reference_b", "layer"), cosine(relative[:, None], relative[None])),
        "cov_basis": (("layer", "cov_component", "hidden"), cov_basis),
        "shift_null": (("condition", "statistic", "quantity"), shift_null),
        "relative_null": (("reference", "quantity"), relative_null),
    }
    attrs = {
        "model": str(model),
        "dataset": str(dataset),
        "conditions": ",".join(conditions),
        "n_harmful": n_harmful,
        "n_harmless": n_harmless,
        "n_prompts": len(ids),
        "splits": "all" if splits is None else "/".join(SPLITS),
        "selected_layer": int(layers[selection.layer]),
        "selection_criterion": selection.criterion,
        "selection_split": "validation" if validation.any() else "train",
        "exclude_last_frac": float(exclude_last_frac),
        "probe_folds": int(probe_folds),
        "null_layer": int(layers[li]),
        "n_boot": int(n_boot),
        "refusal_source": source,
        "position": str(direct.attrs.get("position", "")),
        "toolshift_version": __version__,
        "note": "cosines are NaN where a vector is zero; refusal_direction is NaN without harmless prompts",
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def borrowed_refusal(
    source: xr.Dataset, layers: np.ndarray, n_hidden: int, where: str
) -> tuple[np.ndarray, str]:
    """The refusal direction of another dataset's vectors file (same model: same layers and hidden size)
    and that dataset's name; ContractError naming `where` when it does not fit or is undefined."""
    if "refusal_direction" not in source:
        raise ContractError(f"{where}: the refusal source has no variable 'refusal_direction'")
    r = source["refusal_direction"]
    name = str(source.attrs.get("dataset", "?"))
    if not np.array_equal(r["layer"].values, layers) or r.sizes["hidden"] != n_hidden:
        raise ContractError(
            f"{where}: the refusal direction of {name} has layers/hidden "
            f"{r.sizes['layer']}/{r.sizes['hidden']}, this model's states {len(layers)}/{n_hidden} "
            "(a vectors file of another model?)"
        )
    values = r.values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ContractError(
            f"{where}: the refusal direction of {name} is not finite (no harmless prompts there)"
        )
    return values, name


def evaluation_prompts(ds: xr.Dataset) -> tuple[np.ndarray, str]:
    """Which prompts of a vectors file the reported analyses use: its test split, else every prompt."""
    if "split" in ds.coords:
        test = np.asarray(ds["split"].values).astype(str) == "test"
        if test.any():
            return test, "test"
    return np.ones(ds.sizes["prompt_id"], dtype=bool), "all"


def refusal_position(ds: xr.Dataset) -> xr.DataArray:
    """The projection onto the refusal direction rescaled per layer: 0 = mean of the harmless ``direct``
    evaluation prompts, 1 = mean of the harmful ones (evaluation prompts: `evaluation_prompts`).

    Dims (condition, prompt_id, layer) over the evaluation prompts; NaN everywhere without harmless
    prompts (no refusal direction) and at layers where the two means coincide.
    """
    if "projection" not in ds:
        raise ContractError("vectors dataset: missing variable 'projection'")
    mask, _ = evaluation_prompts(ds)
    proj = ds["projection"].transpose("condition", "prompt_id", "layer").isel(prompt_id=np.flatnonzero(mask))
    harmful = np.asarray(ds["harmful"].values, dtype=bool)[mask]
    direct = proj.sel(condition="direct").values
    if harmful.all() or not harmful.any():
        return xr.full_like(proj, np.nan, dtype=float)
    lo = direct[~harmful].mean(axis=0)
    gap = direct[harmful].mean(axis=0) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(np.abs(gap) > 0, 1.0 / gap, np.nan)
    return (proj - lo) * scale


def tool_vector_cosines(source: xr.Dataset, target: xr.Dataset) -> xr.DataArray:
    """Per-layer cosine between the tool vectors of two vectors files (e.g. two datasets, for transfer)."""
    for name, ds in (("source", source), ("target", target)):
        if "tool_vector" not in ds:
            raise ContractError(f"{name} vectors: missing variable 'tool_vector'")
    a, b = source["tool_vector"], target["tool_vector"]
    if a.shape != b.shape or not np.array_equal(a["layer"].values, b["layer"].values):
        raise ContractError(f"tool vectors of different shapes cannot be compared: {a.shape} vs {b.shape}")
    return xr.DataArray(cosine(a.values, b.values), dims=("layer",), coords={"layer": a["layer"].values})


def validate_vectors(ds: xr.Dataset, where: str) -> None:
    """Check that `ds` has every vectors variable with the right dims; `where` names the file."""
    for name, dims in VECTOR_VARS.items():
        if name not in ds:
            raise ContractError(f"{where}: missing variable {name!r}")
        if tuple(ds[name].dims) != dims:
            raise ContractError(
                f"{where}: variable {name!r} has dims {tuple(ds[name].dims)}, expected {dims}"
            )
    for key in VECTOR_ATTRS:
        if key not in ds.attrs:
            raise ContractError(f"{where}: missing attribute {key!r}")


def write_vectors(ds: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Write a vectors dataset to netCDF (h5netcdf), atomically."""
    validate_vectors(ds, str(path))
    write_netcdf(ds, path)


def read_vectors(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read and validate a vectors file; a missing, corrupt or incomplete file raises ContractError."""
    p = Path(path)
    ds = read_netcdf(p)
    validate_vectors(ds, str(p))
    return ds
