"""The vector each intervention run's hook uses, read from a vectors file at the intervention layer.

Every kind (`toolshift.analysis.interventions`) is one of the two residual-stream edits the hooks know
(toolshift.models.hooks.ResidualEdit): ``add`` (alpha times a vector at one layer, every position) or
``ablate`` (a unit direction projected out of every layer), so the ``hf`` hooks and the ``vllm`` steering
path apply every kind exactly (`VLLMEngine.supports` accepts both edits; nothing falls back). With v =
``tool_vector[l]`` and r_hat the unit ``refusal_direction[l]``:

- ``add``, ``subtract``, ``transfer``: v (the hook scales it by alpha: -1 for subtract, on any base);
- ``ablate``: v_hat; ``ablate_refusal``: r_hat;
- ``random``: an isotropic Gaussian direction from ``default_rng(seed)`` with norm |v|;
- ``covrandom``, ``covrandom_subtract``: a Gaussian direction with the covariance of the ``direct`` train
  states at layer l (``cov_basis``: `covariance_direction`), from ``default_rng(seed)``, norm |v|;
  ``covrandom_ablate``: its unit direction. The same seed gives the same direction in the three kinds;
- ``shift``: the control condition c's shift (``shift[c, l]``: mean h(c) - h(direct)) rescaled to norm
  |v| (`norm_matched`); a control whose shift is below ZERO_SHIFT times |v| (it does not move the states:
  what is left is float rounding, whose direction means nothing) adds nothing;
- ``relative``: ``relative_vector[c, l]`` = mean h(tool) - h(c), as it is;
- ``add_orth``: v - (v . r_hat) r_hat, as it is (`orthogonal_component`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from toolshift.analysis.interventions import ABLATION_KINDS, InterventionSpec
from toolshift.errors import ConfigError, ContractError
from toolshift.models.hooks import ResidualEdit

if TYPE_CHECKING:
    import xarray as xr


def vector_at(vectors: xr.Dataset, layer: int, name: str = "tool_vector", **where: str) -> np.ndarray:
    """Variable `name` of a vectors file at decoder layer `layer` (and at `where`, e.g. condition=c), as a
    finite float64 vector; a missing variable, layer or entry, or a non-finite value raises."""
    if name not in vectors:
        raise ContractError(f"vectors dataset: missing variable {name!r}")
    da = vectors[name]
    for dim, label in where.items():
        labels = [str(x) for x in da[dim].values]
        if label not in labels:
            raise ContractError(
                f"vectors dataset: {name} has no {dim} {label!r} ({dim}s: {', '.join(labels)})"
            )
        da = da.isel({dim: labels.index(label)})
    if layer not in set(int(x) for x in da["layer"].values):
        raise ConfigError(
            f"interventions.layer: layer {layer} is not in the vectors file "
            f"(layers {da['layer'].values.tolist()})"
        )
    v = da.sel(layer=layer).values.astype(np.float64)
    if not np.all(np.isfinite(v)):
        why = " (NaN: no harmless train prompts)" if name == "refusal_direction" else ""
        raise ContractError(f"vectors dataset: {name} at layer {layer} is not finite{why}")
    return v


def random_direction(seed: int, size: int, norm: float) -> np.ndarray:
    """A random direction (isotropic Gaussian, normalised) of the given norm from ``default_rng(seed)``."""
    g = np.random.default_rng(seed).standard_normal(size)
    return g / np.linalg.norm(g) * norm


def covariance_direction(seed: int, basis: np.ndarray, norm: float) -> np.ndarray:
    """A direction drawn from the Gaussian whose covariance is ``basis.T @ basis``, rescaled to `norm`.

    `basis` (components, hidden) holds the principal axes of the activations scaled by their standard
    deviations (a vectors file's ``cov_basis`` at one layer), so ``z @ basis`` with z standard normal from
    ``default_rng(seed)`` (one draw per component) has exactly that covariance. A zero basis (no variance)
    raises ContractError.
    """
    basis = np.asarray(basis, dtype=np.float64)
    g = np.random.default_rng(seed).standard_normal(basis.shape[0]) @ basis
    size = float(np.linalg.norm(g))
    if not size > 0:
        raise ContractError("vectors dataset: cov_basis is zero (the direct states do not vary)")
    return g / size * norm


ZERO_SHIFT = 1e-3
"""A control shift shorter than this fraction of the tool vector counts as no shift (`norm_matched`)."""


def norm_matched(v: np.ndarray, norm: float) -> np.ndarray:
    """`v` rescaled to `norm`; zero when `v` is shorter than ZERO_SHIFT times `norm` (or zero)."""
    size = float(np.linalg.norm(v))
    if not size > ZERO_SHIFT * norm:
        return np.zeros_like(v, dtype=np.float64)
    return np.asarray(v, np.float64) / size * norm


def orthogonal_component(v: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The component of `v` orthogonal to `direction` (which must not be zero)."""
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    return np.asarray(v, dtype=np.float64) - (v @ u) * u


def _unit_of(v: np.ndarray, what: str, spec: InterventionSpec, layer: int) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise ContractError(f"vectors dataset: {what} at layer {layer} is zero; {spec.id} is undefined")
    return v / norm


def intervention_vector(spec: InterventionSpec, vectors: xr.Dataset, layer: int) -> np.ndarray:
    """The float64 vector the hook uses for `spec`, taken at decoder layer `layer` (a ``layer`` coordinate):
    see the module docstring. The hook scales it by ``spec.alpha`` (add edits) or projects it out
    (ABLATION_KINDS, a unit vector)."""
    if spec.kind == "ablate_refusal":
        return _unit_of(vector_at(vectors, layer, "refusal_direction"), "refusal_direction", spec, layer)
    v = vector_at(vectors, layer)
    if spec.kind in ("add", "subtract", "transfer"):
        return v
    if spec.kind == "relative":
        return vector_at(vectors, layer, "relative_vector", reference=str(spec.control))
    if spec.kind == "shift":
        return norm_matched(
            vector_at(vectors, layer, "shift", condition=str(spec.control)), np.linalg.norm(v)
        )
    if spec.kind == "add_orth":
        r = vector_at(vectors, layer, "refusal_direction")
        return orthogonal_component(v, _unit_of(r, "refusal_direction", spec, layer))
    if spec.kind == "ablate":
        return _unit_of(v, "tool_vector", spec, layer)
    _unit_of(v, "tool_vector", spec, layer)  # a zero tool vector leaves the random directions' norm undefined
    norm = float(np.linalg.norm(v))
    if spec.kind == "random":
        return random_direction(spec.seed, v.shape[0], norm)
    if "cov_basis" not in vectors:
        raise ContractError("vectors dataset: missing variable 'cov_basis'")
    basis = vectors["cov_basis"].sel(layer=layer).transpose("cov_component", "hidden").values
    direction = covariance_direction(spec.seed, basis, norm)
    return direction / norm if spec.kind == "covrandom_ablate" else direction


def residual_edit(spec: InterventionSpec, vectors: xr.Dataset, layer: int) -> ResidualEdit:
    """The edit the inference hooks apply for `spec` (toolshift.models.hooks.ResidualEdit).

    ABLATION_KINDS: ``layer`` is None (every layer), ``vector`` the unit direction (taken at `layer`) and
    ``alpha`` 1; every other kind adds ``alpha * vector`` at `layer` (every position).
    """
    vector = intervention_vector(spec, vectors, layer)
    if spec.kind in ABLATION_KINDS:
        return ResidualEdit("ablate", None, vector, 1.0)
    return ResidualEdit("add", int(layer), vector, float(spec.alpha))


__all__ = [
    "ZERO_SHIFT",
    "covariance_direction",
    "intervention_vector",
    "norm_matched",
    "orthogonal_component",
    "random_direction",
    "residual_edit",
    "vector_at",
]
