"""The run pairs each claim of `toolshift.analysis.contrasts` is tested on: functions from the runs present
for one model, dataset and judge, a set of (condition, intervention), to the (A, B) pairs of its rows, in
row order (`Claim.pairs`). A run that is absent gives no pair."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolshift import blank_scale, condition_order
from toolshift.analysis.interventions import NO_INTERVENTION, parse_intervention_id
from toolshift.errors import ConfigError

Run = tuple[str, str]
"""A run of one model, dataset and judge: (condition, intervention)."""


def _both(a: Run, b: Run) -> Callable[[frozenset[Run]], list[tuple[Run, Run]]]:
    return lambda runs: [(a, b)] if a in runs and b in runs else []


def _removing_shift(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
    a = ("tool", NO_INTERVENTION)
    return [(a, ("tool", i)) for i in ("subtract", "ablate") if a in runs and ("tool", i) in runs]


def _spec(intervention: str) -> Any:
    try:
        return parse_intervention_id(intervention)
    except ConfigError:
        return None


def _add_vs_random(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
    """direct/add_a{α} vs every direct/random_a{α}_s{seed}, for each α > 0 present in both (α = 0 is a
    no-op in both runs, so it is not a test of the claim)."""
    adds: dict[float, str] = {}
    randoms: list[tuple[float, int, str]] = []
    for condition, intervention in runs:
        spec = _spec(intervention) if condition == "direct" else None
        if spec is None or spec.alpha == 0:
            continue
        if spec.kind == "add":
            adds[spec.alpha] = intervention
        elif spec.kind == "random":
            randoms.append((spec.alpha, spec.seed, intervention))
    return [(("direct", adds[alpha]), ("direct", rid)) for alpha, _, rid in sorted(randoms) if alpha in adds]


def refusal_ablation_condition(intervention: str) -> str | None:
    """The condition a refusal-ablation run id names (``ablate_refusal_tool`` -> ``tool``), else None."""
    spec = _spec(intervention)
    return spec.base_condition if spec is not None and spec.kind == "ablate_refusal" else None


def _refusal_ablation(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
    out = []
    for condition, intervention in sorted(runs):
        if refusal_ablation_condition(intervention) == condition and (condition, NO_INTERVENTION) in runs:
            out.append(((condition, NO_INTERVENTION), (condition, intervention)))
    return out


def _direct_runs(runs: frozenset[Run], kind: str) -> dict[tuple[float, str], str]:
    """The ``direct`` runs of one intervention kind with alpha > 0: (alpha, control or seed) -> id."""
    out = {}
    for condition, intervention in runs:
        spec = _spec(intervention) if condition == "direct" else None
        if spec is not None and spec.kind == kind and spec.alpha > 0:
            label = spec.control or ("" if spec.seed is None else f"{spec.seed:09d}")
            out[(spec.alpha, label)] = intervention
    return out


def _add_versus(kind: str) -> Callable[[frozenset[Run]], list[tuple[Run, Run]]]:
    """direct/add_a{α} vs every direct run of `kind` at the same α > 0 (by α, then control or seed)."""

    def pairs(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
        adds = {alpha: i for (alpha, _), i in _direct_runs(runs, "add").items()}
        return [
            (("direct", adds[alpha]), ("direct", i))
            for (alpha, _), i in sorted(_direct_runs(runs, kind).items())
            if alpha in adds
        ]

    return pairs


def _direct_lowered_by(kind: str) -> Callable[[frozenset[Run]], list[tuple[Run, Run]]]:
    """direct/none vs every direct run of `kind` with α > 0."""

    def pairs(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
        a = ("direct", NO_INTERVENTION)
        return [(a, ("direct", i)) for _, i in sorted(_direct_runs(runs, kind).items())] if a in runs else []

    return pairs


def _removal_in_both(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
    """(direct/{kind}_direct, tool/{kind}) for subtract and ablate, with both conditions' plain runs."""
    bases = ("direct", NO_INTERVENTION) in runs and ("tool", NO_INTERVENTION) in runs
    return [
        (("direct", f"{kind}_direct"), ("tool", kind))
        for kind in ("subtract", "ablate")
        if bases and ("direct", f"{kind}_direct") in runs and ("tool", kind) in runs
    ]


def _removal_vs_random(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
    """tool/covrandom_{kind}_s{seed} vs tool/{kind}, for subtract and ablate, by seed."""
    out = []
    for kind in ("subtract", "ablate"):
        controls = []
        for condition, intervention in runs:
            spec = _spec(intervention) if condition == "tool" else None
            if spec is not None and spec.kind == f"covrandom_{kind}":
                controls.append((spec.seed, intervention))
        if ("tool", kind) in runs:
            out += [(("tool", i), ("tool", kind)) for _, i in sorted(controls)]
    return out


OVERRIDES: tuple[str, ...] = ("tool_unsafe", "tool_benign")
"""The overrides besides the blank ones (`tool_blank` and every `tool_blank_x{scale}` are overrides too)."""


def is_override(condition: str) -> bool:
    """Whether the tool turn of `condition` returns another image than the zoom (claim 2's overrides)."""
    return condition in OVERRIDES or blank_scale(condition) is not None


def _overrides_against(trail: str) -> Callable[[frozenset[Run]], list[tuple[Run, Run]]]:
    """`trail`/none vs every override run present (none), in condition order."""

    def pairs(runs: frozenset[Run]) -> list[tuple[Run, Run]]:
        a = (trail, NO_INTERVENTION)
        if a not in runs:
            return []
        overrides = sorted(
            (c for c, i in runs if i == NO_INTERVENTION and is_override(c)), key=condition_order
        )
        return [(a, (c, NO_INTERVENTION)) for c in overrides]

    return pairs
