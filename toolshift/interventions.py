"""Activation interventions with the image-tool vector: what to run, and the vector each hook uses.

Kinds (base condition in brackets):

- ``add`` [direct]: add alpha * v at layer l, at every position; v = ``tool_vector[l]``. alpha = 1
  reproduces the average tool shift; alpha = 0 is a no-op sanity control. Id ``add_a{alpha}``.
- ``subtract`` [tool]: add -1 * v at layer l. Id ``subtract``.
- ``ablate`` [tool]: remove the component along the unit direction v_hat = v / |v| (v taken at layer l)
  from the residual stream at every layer (directional ablation, Arditi et al. 2024). Id ``ablate``.
- ``random`` [direct]: as ``add`` with a random direction of the same norm as v, drawn from
  ``numpy.random.default_rng(seed)`` (PCG64, identical on every platform). Id ``random_a{alpha}_s{seed}``.

Alphas in ids are written with ``format(alpha, "g")`` (``add_a0.5``, ``add_a1``, ``add_a-1``); an id is
the directory name of its run, so `parse_intervention_id` accepts only this canonical spelling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from toolshift.errors import ConfigError, ContractError

KINDS: tuple[str, ...] = ("add", "subtract", "ablate", "random")
BASE_CONDITION: dict[str, str] = {"add": "direct", "random": "direct", "subtract": "tool", "ablate": "tool"}
DEFAULT_ALPHA: dict[str, float] = {"add": 1.0, "random": 1.0, "subtract": -1.0, "ablate": 1.0}
NO_INTERVENTION = "none"
"""The `intervention` value of plain condition runs in responses tables."""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_ID_RE = {
    "add": re.compile(rf"add_a(?P<alpha>{_NUM})"),
    "random": re.compile(rf"random_a(?P<alpha>{_NUM})_s(?P<seed>\d+)"),
    "subtract": re.compile(r"subtract"),
    "ablate": re.compile(r"ablate"),
}


def _fmt(alpha: float) -> str:
    return format(alpha, "g")


@dataclass(frozen=True)
class InterventionSpec:
    """One intervention run. `alpha` and `base_condition` default by kind (see the module docstring).

    ``subtract`` always has alpha -1 and ``ablate`` alpha 1 (their ids carry no alpha); ``random`` needs a
    non-negative integer seed, the other kinds take none. `prompts` is the prompt selection ("all").
    """

    kind: str
    alpha: float | None = None
    seed: int | None = None
    base_condition: str | None = None
    prompts: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"intervention kind {self.kind!r} is not one of {', '.join(KINDS)}")
        alpha = DEFAULT_ALPHA[self.kind] if self.alpha is None else self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
            raise ConfigError(f"intervention {self.kind}: alpha {alpha!r} must be a finite number")
        alpha = float(alpha)
        if self.kind in ("subtract", "ablate") and alpha != DEFAULT_ALPHA[self.kind]:
            raise ConfigError(
                f"intervention {self.kind}: alpha is fixed at {_fmt(DEFAULT_ALPHA[self.kind])}, "
                f"got {_fmt(alpha)}"
            )
        if self.kind == "random":
            if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
                raise ConfigError(f"intervention random: seed {self.seed!r} must be a non-negative integer")
            object.__setattr__(self, "seed", int(self.seed))
        elif self.seed is not None:
            raise ConfigError(f"intervention {self.kind}: takes no seed, got {self.seed!r}")
        base = BASE_CONDITION[self.kind] if self.base_condition is None else self.base_condition
        if base != BASE_CONDITION[self.kind]:
            raise ConfigError(
                f"intervention {self.kind}: base_condition must be {BASE_CONDITION[self.kind]!r}, "
                f"got {base!r}"
            )
        if self.prompts != "all":
            raise ConfigError(f"intervention {self.kind}: prompts {self.prompts!r} must be 'all'")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "base_condition", base)

    @property
    def id(self) -> str:
        """The canonical id: ``add_a0.5``, ``subtract``, ``ablate``, ``random_a1_s0``."""
        if self.kind == "add":
            return f"add_a{_fmt(self.alpha)}"
        if self.kind == "random":
            return f"random_a{_fmt(self.alpha)}_s{self.seed}"
        return self.kind


def parse_intervention_id(intervention_id: str) -> InterventionSpec:
    """The spec whose `.id` is `intervention_id`; anything else raises ConfigError naming it."""
    if not isinstance(intervention_id, str):
        raise ConfigError(f"intervention id {intervention_id!r} must be a string")
    for kind, pattern in _ID_RE.items():
        m = pattern.fullmatch(intervention_id)
        if m is None:
            continue
        groups = m.groupdict()
        alpha = float(groups["alpha"]) if "alpha" in groups else None
        seed = int(groups["seed"]) if "seed" in groups else None
        spec = InterventionSpec(kind, alpha=alpha, seed=seed)
        if spec.id != intervention_id:
            raise ConfigError(f"intervention id {intervention_id!r} is not canonical; write {spec.id!r}")
        return spec
    raise ConfigError(
        f"intervention id {intervention_id!r} is not one of add_a<alpha>, subtract, ablate, "
        "random_a<alpha>_s<seed>"
    )


def _number_list(value: Any, where: str, *, integer: bool = False) -> list[Any]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{where}: expected a non-empty list, got {value!r}")
    for x in value:
        ok = isinstance(x, int) if integer else isinstance(x, int | float)
        if isinstance(x, bool) or not ok:
            raise ConfigError(f"{where}: {x!r} is not {'an integer' if integer else 'a number'}")
    return list(value)


def expand_interventions(cfg: dict[str, Any] | None) -> list[InterventionSpec]:
    """All intervention runs of an ``interventions`` config section, in order add, subtract, ablate, random.

    ``{"layer": "auto", "add": {"alphas": [0, 0.5, 1, 2]}, "subtract": true, "ablate": true,
    "random": {"alphas": [1], "seeds": [0, 1, 2]}}``. A missing, null or false section means none;
    ``random.alphas`` defaults to [1]. Duplicates are dropped (first one kept).
    """
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"interventions: expected a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - {"layer", *KINDS})
    if unknown:
        raise ConfigError(
            f"interventions: unknown key(s) {', '.join(unknown)}; known: layer, {', '.join(KINDS)}"
        )
    specs: list[InterventionSpec] = []

    add = cfg.get("add")
    if add not in (None, False):
        if not isinstance(add, dict) or set(add) != {"alphas"}:
            raise ConfigError(f"interventions.add: expected {{alphas: [numbers]}}, got {add!r}")
        specs += [
            InterventionSpec("add", alpha=a) for a in _number_list(add["alphas"], "interventions.add.alphas")
        ]
    for kind in ("subtract", "ablate"):
        value = cfg.get(kind)
        if value not in (None, False, True):
            raise ConfigError(f"interventions.{kind}: expected true or false, got {value!r}")
        if value:
            specs.append(InterventionSpec(kind))
    rnd = cfg.get("random")
    if rnd not in (None, False):
        if not isinstance(rnd, dict) or "seeds" not in rnd or not set(rnd) <= {"alphas", "seeds"}:
            raise ConfigError(
                f"interventions.random: expected {{alphas: [numbers], seeds: [integers]}}, got {rnd!r}"
            )
        alphas = _number_list(rnd.get("alphas", [1]), "interventions.random.alphas")
        seeds = _number_list(rnd["seeds"], "interventions.random.seeds", integer=True)
        specs += [InterventionSpec("random", alpha=a, seed=s) for a in alphas for s in seeds]

    out: dict[str, InterventionSpec] = {}
    for spec in specs:
        out.setdefault(spec.id, spec)
    return list(out.values())


def resolve_layer(layer_cfg: int | str, n_layers: int) -> int:
    """The decoder layer index (0-based) an intervention acts at.

    An int is used as given; a negative int counts from the end (-1 = last layer). ``"auto"`` is, in
    this skeleton, the middle layer ``n_layers // 2`` (refusal-related directions are typically
    strongest near the middle of the network); a later issue replaces it by validation-split selection.
    Out of range -> ConfigError.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int | np.integer) or n_layers < 1:
        raise ConfigError(
            f"interventions.layer: the model has {n_layers!r} layers, expected a positive integer"
        )
    n_layers = int(n_layers)
    if layer_cfg == "auto":
        return n_layers // 2
    if isinstance(layer_cfg, bool) or not isinstance(layer_cfg, int | np.integer):
        raise ConfigError(f"interventions.layer: {layer_cfg!r} must be 'auto' or an integer")
    layer = int(layer_cfg)
    resolved = layer + n_layers if layer < 0 else layer
    if not 0 <= resolved < n_layers:
        raise ConfigError(
            f"interventions.layer: {layer} is out of range for a model with {n_layers} layers "
            f"(expected {-n_layers}..{n_layers - 1})"
        )
    return resolved


def _tool_vector_at(vectors: xr.Dataset, layer: int) -> np.ndarray:
    if "tool_vector" not in vectors:
        raise ContractError("vectors dataset: missing variable 'tool_vector'")
    tv = vectors["tool_vector"]
    if layer not in set(int(x) for x in tv["layer"].values):
        raise ConfigError(
            f"interventions.layer: layer {layer} is not in the vectors file "
            f"(layers {tv['layer'].values.tolist()})"
        )
    v = tv.sel(layer=layer).values.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ContractError(f"vectors dataset: tool_vector at layer {layer} is not finite")
    return v


def random_direction(seed: int, size: int, norm: float) -> np.ndarray:
    """A random direction (isotropic Gaussian, normalised) of the given norm from ``default_rng(seed)``."""
    g = np.random.default_rng(seed).standard_normal(size)
    return g / np.linalg.norm(g) * norm


def intervention_vector(spec: InterventionSpec, vectors: xr.Dataset, layer: int) -> np.ndarray:
    """The float64 vector the hook uses for `spec`, taken at decoder layer `layer` (a ``layer`` coordinate).

    ``add``/``subtract``: the raw ``tool_vector[layer]`` (the hook scales it by ``spec.alpha``, -1 for
    subtract); ``ablate``: its unit direction; ``random``: a random direction with the same norm as
    ``tool_vector[layer]`` (seeded by ``spec.seed`` only, so the same seed gives the same direction at
    every layer and in every model of the same hidden size).
    """
    v = _tool_vector_at(vectors, layer)
    norm = float(np.linalg.norm(v))
    if spec.kind in ("add", "subtract"):
        return v
    if norm == 0:
        raise ContractError(f"vectors dataset: tool_vector at layer {layer} is zero; {spec.id} is undefined")
    if spec.kind == "ablate":
        return v / norm
    return random_direction(spec.seed, v.shape[0], norm)


def hook_intervention(spec: InterventionSpec, vectors: xr.Dataset, layer: int) -> dict[str, Any]:
    """What the inference hook needs: ``{"kind": "add"|"ablate", "layer", "vector", "alpha"}``.

    For ``add``/``subtract``/``random`` the hook adds ``alpha * vector`` at `layer` (every position);
    for ``ablate`` ``layer`` is None (every layer), ``vector`` is the unit direction and ``alpha`` 1.
    """
    vector = intervention_vector(spec, vectors, layer)
    if spec.kind == "ablate":
        return {"kind": "ablate", "layer": None, "vector": vector, "alpha": 1.0}
    return {"kind": "add", "layer": int(layer), "vector": vector, "alpha": float(spec.alpha)}
