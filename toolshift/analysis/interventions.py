"""Activation interventions with the image-tool vector (and the refusal direction, as a positive control):
what to run, and the vector each hook uses.

Kinds (base condition in brackets):

- ``add`` [direct]: add alpha * v at layer l, at every position; v = ``tool_vector[l]``. alpha = 1
  reproduces the average tool shift; alpha = 0 is a no-op sanity control. Id ``add_a{alpha}``.
- ``subtract`` [tool]: add -1 * v at layer l. Id ``subtract``.
- ``ablate`` [tool]: remove the component along the unit direction v_hat = v / |v| (v taken at layer l)
  from the residual stream at every layer (directional ablation, Arditi et al. 2024). Id ``ablate``.
- ``random`` [direct]: as ``add`` with a random direction of the same norm as v, drawn from
  ``numpy.random.default_rng(seed)`` (PCG64, identical on every platform). Id ``random_a{alpha}_s{seed}``.
  A study should run at least MIN_RANDOM_SEEDS seeds per alpha (the figures draw them as a band).
- ``transfer`` [direct]: as ``add``, with the tool vector of another dataset (`source`) of the same
  model, at that dataset's selected layer. Id ``transfer_a{alpha}_from_{source}``; the run reads
  ``vectors/{model}/{source}.nc`` (`vectors_dataset`).
- ``ablate_refusal`` [every controlled condition c, one run each]: as ``ablate``, with the unit refusal
  direction r_hat = r / |r|, r = ``refusal_direction[l]`` (Arditi et al. 2024: ablating it should raise ASR in
  every condition of a real model, the positive control of the interventions). Id ``ablate_refusal_{c}``;
  its responses rows have ``condition`` = c. Config ``interventions.ablate_refusal``: ``false`` (off),
  ``true`` (every configured condition but ``free``) or a list of configured conditions. Its runs share
  the intervention jobs of the other kinds (one model load per (model, dataset, shard)), and their KL
  cost on harmless prompts (toolshift.inference.intervention_cost) is measured like every kind's, on the base
  condition's episodes.

The layer (``interventions.layer``): an integer, or ``auto`` = the layer selected on the validation
split and recorded in the vectors file (`toolshift.analysis.selection`; the middle layer for a vectors file
without that record).

Alphas in ids are written with ``format(alpha, "g")`` (``add_a0.5``, ``add_a1``, ``add_a-1``); an id is
the directory name of its run, so `parse_intervention_id` accepts only this canonical spelling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import toolshift
from toolshift.errors import ConfigError, ContractError
from toolshift.models.hooks import ResidualEdit

if TYPE_CHECKING:  # xarray is slow to import, and the Snakefile imports this module for every DAG build
    import xarray as xr

KINDS: tuple[str, ...] = ("add", "subtract", "ablate", "random", "ablate_refusal", "transfer")
PER_CONDITION_KINDS: tuple[str, ...] = ("ablate_refusal",)
"""Kinds with one run per base condition (one of toolshift.CONDITIONS, named in the id); not in
BASE_CONDITION."""
BASE_CONDITION: dict[str, str] = {
    "add": "direct",
    "random": "direct",
    "subtract": "tool",
    "ablate": "tool",
    "transfer": "direct",
}
DEFAULT_ALPHA: dict[str, float] = {
    "add": 1.0,
    "random": 1.0,
    "subtract": -1.0,
    "ablate": 1.0,
    "ablate_refusal": 1.0,
    "transfer": 1.0,
}
MIN_RANDOM_SEEDS = 5
"""The fewest random-vector seeds per alpha a study should run (fewer are drawn as points, not a band)."""
CONFIG_KEYS: tuple[str, ...] = (
    "layer",
    "exclude_last_frac",
    "add",
    "subtract",
    "ablate",
    "random",
    "transfer",
    "ablate_refusal",
    "splits",
)
"""The keys of the ``interventions`` config section."""
NO_INTERVENTION = "none"
"""The `intervention` value of plain condition runs in responses tables."""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_ID_RE = {
    "add": re.compile(rf"add_a(?P<alpha>{_NUM})"),
    "random": re.compile(rf"random_a(?P<alpha>{_NUM})_s(?P<seed>\d+)"),
    "subtract": re.compile(r"subtract"),
    "ablate": re.compile(r"ablate"),
    "ablate_refusal": re.compile(r"ablate_refusal_(?P<condition>[A-Za-z0-9_.]+)"),
    "transfer": re.compile(rf"transfer_a(?P<alpha>{_NUM})_from_(?P<source>[A-Za-z0-9][A-Za-z0-9._-]*)"),
}
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _fmt(alpha: float) -> str:
    return format(alpha, "g")


def controlled_conditions() -> tuple[str, ...]:
    """The conditions an ``ablate_refusal`` run may take as its base: toolshift.CONDITIONS (not ``free``),
    read when called."""
    import toolshift

    return tuple(toolshift.CONDITIONS)


@dataclass(frozen=True)
class InterventionSpec:
    """One intervention run. `alpha` and `base_condition` default by kind (see the module docstring).

    ``subtract`` always has alpha -1 and ``ablate``/``ablate_refusal`` alpha 1 (their ids carry no alpha);
    ``ablate_refusal`` needs a `base_condition` (a controlled condition); ``random`` needs a
    non-negative integer seed, the other kinds take none; ``transfer`` needs the `source` dataset name,
    the other kinds take none. `prompts` is the prompt selection ("all").
    """

    kind: str
    alpha: float | None = None
    seed: int | None = None
    base_condition: str | None = None
    prompts: str = "all"
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"intervention kind {self.kind!r} is not one of {', '.join(KINDS)}")
        alpha = DEFAULT_ALPHA[self.kind] if self.alpha is None else self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
            raise ConfigError(f"intervention {self.kind}: alpha {alpha!r} must be a finite number")
        alpha = float(alpha)
        if self.kind in ("subtract", "ablate", "ablate_refusal") and alpha != DEFAULT_ALPHA[self.kind]:
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
        if self.kind in PER_CONDITION_KINDS:
            base = self.base_condition
            allowed = controlled_conditions()
            if not isinstance(base, str) or not toolshift.is_controlled_condition(base):
                raise ConfigError(
                    f"intervention {self.kind}: base_condition {base!r} must be a controlled condition "
                    f"({', '.join(allowed)})"
                )
        else:
            base = BASE_CONDITION[self.kind] if self.base_condition is None else self.base_condition
            if base != BASE_CONDITION[self.kind]:
                raise ConfigError(
                    f"intervention {self.kind}: base_condition must be {BASE_CONDITION[self.kind]!r}, "
                    f"got {base!r}"
                )
        if self.prompts != "all":
            raise ConfigError(f"intervention {self.kind}: prompts {self.prompts!r} must be 'all'")
        if self.kind == "transfer":
            if not isinstance(self.source, str) or not _DATASET_NAME.fullmatch(self.source):
                raise ConfigError(f"intervention transfer: source {self.source!r} must be a dataset name")
        elif self.source is not None:
            raise ConfigError(f"intervention {self.kind}: takes no source, got {self.source!r}")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "base_condition", base)

    @property
    def id(self) -> str:
        """Canonical id: ``add_a0.5``, ``subtract``, ``ablate``, ``random_a1_s0``, ``transfer_a1_from_d``,
        ``ablate_refusal_tool``."""
        if self.kind == "add":
            return f"add_a{_fmt(self.alpha)}"
        if self.kind == "transfer":
            return transfer_id(self.alpha, self.source)
        if self.kind == "random":
            return f"random_a{_fmt(self.alpha)}_s{self.seed}"
        if self.kind in PER_CONDITION_KINDS:
            return f"{self.kind}_{self.base_condition}"
        return self.kind


def transfer_id(alpha: float, source: str) -> str:
    """The id of a transfer run: ``transfer_a{alpha}_from_{source}`` (`source` may be a wildcard pattern)."""
    return f"transfer_a{_fmt(alpha)}_from_{source}"


def transfer_alphas(cfg: dict[str, Any] | None) -> list[float]:
    """The alphas of the transfer runs of an ``interventions`` config section ([] without transfer pairs)."""
    if not transfer_pairs(cfg):
        return []
    return [
        float(a) for a in _number_list(cfg["transfer"].get("alphas", [1]), "interventions.transfer.alphas")
    ]


def transfer_sources(cfg: dict[str, Any] | None, dataset: str) -> list[str]:
    """The source datasets of the transfer runs whose target is `dataset`."""
    return [source for source, target in transfer_pairs(cfg) if target == dataset]


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
        try:
            spec = InterventionSpec(
                kind,
                alpha=alpha,
                seed=seed,
                source=groups.get("source"),
                base_condition=groups.get("condition"),
            )
        except ConfigError as exc:
            raise ConfigError(f"intervention id {intervention_id!r}: {exc}") from None
        if spec.id != intervention_id:
            raise ConfigError(f"intervention id {intervention_id!r} is not canonical; write {spec.id!r}")
        return spec
    raise ConfigError(
        f"intervention id {intervention_id!r} is not one of add_a<alpha>, subtract, ablate, "
        "random_a<alpha>_s<seed>, transfer_a<alpha>_from_<dataset>, ablate_refusal_<condition>"
    )


def _number_list(value: Any, where: str, *, integer: bool = False) -> list[Any]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{where}: expected a non-empty list, got {value!r}")
    for x in value:
        ok = isinstance(x, int) if integer else isinstance(x, int | float)
        if isinstance(x, bool) or not ok:
            raise ConfigError(f"{where}: {x!r} is not {'an integer' if integer else 'a number'}")
    return list(value)


def transfer_pairs(cfg: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The (source, target) dataset pairs of ``interventions.transfer`` (``{pairs: [[a, b]], alphas}``)."""
    tr = (cfg or {}).get("transfer")
    if tr in (None, False):
        return []
    if not isinstance(tr, dict) or "pairs" not in tr or not set(tr) <= {"pairs", "alphas"}:
        raise ConfigError(
            f"interventions.transfer: expected {{pairs: [[source, target]], alphas: [numbers]}}, got {tr!r}"
        )
    pairs = tr["pairs"]
    if not isinstance(pairs, list | tuple):
        raise ConfigError(f"interventions.transfer.pairs: expected a list of [source, target], got {pairs!r}")
    out: list[tuple[str, str]] = []
    for pair in pairs:
        ok = isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(d, str) for d in pair)
        if not ok or pair[0] == pair[1]:
            raise ConfigError(
                f"interventions.transfer.pairs: {pair!r} is not a [source, target] pair of two datasets"
            )
        if (pair[0], pair[1]) not in out:
            out.append((pair[0], pair[1]))
    return out


def ablate_refusal_conditions(
    cfg: dict[str, Any] | None, conditions: Sequence[str] | None = None
) -> list[str]:
    """The base conditions of the ``ablate_refusal`` runs of an ``interventions`` config section.

    ``interventions.ablate_refusal``: missing, null or false = none; true = every controlled condition
    among `conditions` (the config's ``conditions``, in their order; None = all of toolshift.CONDITIONS);
    a list = those conditions, each a controlled condition and in `conditions`. Anything else raises a
    one-line ConfigError naming the key and the bad value.
    """
    value = (cfg or {}).get("ablate_refusal") if isinstance(cfg, dict) else None
    controlled = controlled_conditions()
    configured = list(controlled if conditions is None else conditions)
    if value in (None, False):
        return []
    if value is True:
        return [c for c in configured if toolshift.is_controlled_condition(c)]
    if not isinstance(value, list | tuple):
        raise ConfigError(
            f"interventions.ablate_refusal: expected true, false or a list of conditions, got {value!r}"
        )
    out: list[str] = []
    for c in value:
        if not isinstance(c, str) or not toolshift.is_controlled_condition(c):
            raise ConfigError(
                f"interventions.ablate_refusal: {c!r} is not a controlled condition "
                f"(one of {', '.join(controlled)})"
            )
        if c not in configured:
            raise ConfigError(
                f"interventions.ablate_refusal: {c!r} is not in conditions ({', '.join(configured)})"
            )
        if c not in out:
            out.append(c)
    return out


def expand_interventions(
    cfg: dict[str, Any] | None, dataset: str | None = None, conditions: Sequence[str] | None = None
) -> list[InterventionSpec]:
    """All intervention runs of an ``interventions`` config section, in order add, subtract, ablate,
    random, ablate_refusal (one per condition, `ablate_refusal_conditions`; `conditions` = the config's
    ``conditions``, None = all of toolshift.CONDITIONS), then (for `dataset`) transfer.

    ``{"layer": "auto", "add": {"alphas": [0, 0.5, 1, 2]}, "subtract": true, "ablate": true,
    "random": {"alphas": [1], "seeds": [0, 1, 2]}, "ablate_refusal": ["direct", "tool"],
    "transfer": {"pairs": [["a", "b"]], "alphas": [1]}}``.
    A missing, null or false section means none; ``random.alphas`` and ``transfer.alphas`` default to [1].
    Transfer runs belong to their target dataset: they are listed only when `dataset` is that target
    (`all_intervention_ids` lists every id of every dataset). Duplicates are dropped (first one kept).
    """
    cfg = cfg or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"interventions: expected a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"interventions: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}"
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
    specs += [
        InterventionSpec("ablate_refusal", base_condition=c)
        for c in ablate_refusal_conditions(cfg, conditions)
    ]
    pairs = transfer_pairs(cfg)
    if pairs:
        alphas = _number_list(cfg["transfer"].get("alphas", [1]), "interventions.transfer.alphas")
        for source, target in pairs:
            if dataset is not None and target == dataset:
                specs += [InterventionSpec("transfer", alpha=a, source=source) for a in alphas]

    out: dict[str, InterventionSpec] = {}
    for spec in specs:
        out.setdefault(spec.id, spec)
    return list(out.values())


def all_intervention_ids(
    cfg: dict[str, Any] | None, datasets: list[str], conditions: Sequence[str] | None = None
) -> list[str]:
    """Every intervention id run on any of `datasets` (e.g. for Snakemake's wildcard constraints)."""
    ids: dict[str, None] = {}
    for dataset in datasets:
        ids.update(dict.fromkeys(spec.id for spec in expand_interventions(cfg, dataset, conditions)))
    return list(ids)


def vectors_dataset(intervention_id: str, dataset: str) -> str:
    """The dataset whose vectors file an intervention run on `dataset` reads (the source, for transfer)."""
    spec = parse_intervention_id(intervention_id)
    return spec.source if spec.kind == "transfer" else dataset


def resolve_layer(layer_cfg: int | str, n_layers: int, vectors: xr.Dataset | None = None) -> int:
    """The decoder layer index (0-based) an intervention acts at.

    An int is used as given; a negative int counts from the end (-1 = last layer). ``"auto"`` is the
    layer selected on the validation split, the ``selected_layer`` attribute of `vectors`
    (`toolshift.analysis.selection`); without `vectors` or that attribute, the middle layer ``n_layers // 2``.
    Out of range -> ConfigError.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int | np.integer) or n_layers < 1:
        raise ConfigError(
            f"interventions.layer: the model has {n_layers!r} layers, expected a positive integer"
        )
    n_layers = int(n_layers)
    if isinstance(layer_cfg, str) and layer_cfg == "auto":
        if vectors is not None and "selected_layer" in vectors.attrs:
            selected = vectors.attrs["selected_layer"]
            if isinstance(selected, bool) or not isinstance(selected, int | np.integer):
                raise ContractError(f"vectors file: selected_layer {selected!r} is not an integer")
            if not 0 <= int(selected) < n_layers:
                raise ContractError(
                    f"vectors file: selected_layer {int(selected)} is out of range for {n_layers} layers"
                )
            return int(selected)
        return n_layers // 2
    if isinstance(layer_cfg, bool) or not isinstance(layer_cfg, int | np.integer):
        raise ConfigError(f"interventions.layer: {layer_cfg!r} must be 'auto' or an integer")
    layer = int(layer_cfg)
    resolved = layer + n_layers if layer < 0 else layer
    if not 0 <= resolved < n_layers:
        raise ConfigError(
            f"interventions.layer: {layer} is out of range for a model with {n_layers} layers "
            f"(expected {-n_layers}..{n_layers - 1}): set interventions.layer to auto or to a layer in "
            "that range"
        )
    return resolved


def _tool_vector_at(vectors: xr.Dataset, layer: int, name: str = "tool_vector") -> np.ndarray:
    if name not in vectors:
        raise ContractError(f"vectors dataset: missing variable {name!r}")
    tv = vectors[name]
    if layer not in set(int(x) for x in tv["layer"].values):
        raise ConfigError(
            f"interventions.layer: layer {layer} is not in the vectors file "
            f"(layers {tv['layer'].values.tolist()})"
        )
    v = tv.sel(layer=layer).values.astype(np.float64)
    if not np.all(np.isfinite(v)):
        why = " (NaN: no harmless train prompts)" if name == "refusal_direction" else ""
        raise ContractError(f"vectors dataset: {name} at layer {layer} is not finite{why}")
    return v


def random_direction(seed: int, size: int, norm: float) -> np.ndarray:
    """A random direction (isotropic Gaussian, normalised) of the given norm from ``default_rng(seed)``."""
    g = np.random.default_rng(seed).standard_normal(size)
    return g / np.linalg.norm(g) * norm


def intervention_vector(spec: InterventionSpec, vectors: xr.Dataset, layer: int) -> np.ndarray:
    """The float64 vector the hook uses for `spec`, taken at decoder layer `layer` (a ``layer`` coordinate).

    ``add``/``subtract``/``transfer``: the raw ``tool_vector[layer]`` (of the source dataset's file,
    for transfer) (the hook scales it by ``spec.alpha``, -1 for
    subtract); ``ablate``: its unit direction; ``ablate_refusal``: the unit direction of
    ``refusal_direction[layer]`` (not the tool vector); ``random``: a random direction with the same norm as
    ``tool_vector[layer]`` (seeded by ``spec.seed`` only, so the same seed gives the same direction at
    every layer and in every model of the same hidden size).
    """
    name = "refusal_direction" if spec.kind == "ablate_refusal" else "tool_vector"
    v = _tool_vector_at(vectors, layer, name)
    norm = float(np.linalg.norm(v))
    if spec.kind in ("add", "subtract", "transfer"):
        return v
    if norm == 0:
        raise ContractError(f"vectors dataset: {name} at layer {layer} is zero; {spec.id} is undefined")
    if spec.kind in ("ablate", "ablate_refusal"):
        return v / norm
    return random_direction(spec.seed, v.shape[0], norm)


def residual_edit(spec: InterventionSpec, vectors: xr.Dataset, layer: int) -> ResidualEdit:
    """The edit the inference hooks apply for `spec` (toolshift.models.hooks.ResidualEdit).

    For ``add``/``subtract``/``random``/``transfer``: add ``alpha * vector`` at `layer` (every position).
    For ``ablate`` and ``ablate_refusal``: ``layer`` is None (every layer), ``vector`` is the unit direction
    (taken at `layer`) and ``alpha`` 1.
    """
    vector = intervention_vector(spec, vectors, layer)
    if spec.kind in ("ablate", "ablate_refusal"):
        return ResidualEdit("ablate", None, vector, 1.0)
    return ResidualEdit("add", int(layer), vector, float(spec.alpha))
