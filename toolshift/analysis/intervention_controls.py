"""The ``interventions`` config keys of the mechanism's specificity controls, read into run arguments.

`toolshift.analysis.interventions.expand_interventions` turns what this module returns into intervention
specs (this module knows the keys, not the ids, so it imports nothing of the intervention grammar):

- ``subtract`` / ``ablate``: ``true`` (on ``tool``: the default base), ``false``, or a list of base
  conditions among REMOVAL_BASES (``[tool, direct]`` also removes the tool vector from ``direct`` runs,
  the other half of the difference-in-differences test);
- ``control_shift`` and ``relative``: ``{conditions: [...], alphas: [...]}``, one run per control
  condition and alpha (alphas default to [1]);
- ``covrandom``: ``{alphas: [...], seeds: [...]}`` (alphas default to [1]);
- ``add_orth``: ``{alphas: [...]}``;
- ``covrandom_remove``: ``{seeds: [...]}``, one ``covrandom_subtract`` and/or ``covrandom_ablate`` run per
  seed on ``tool``, for each of ``subtract`` / ``ablate`` that runs on ``tool`` (their controls).

A control condition must be a controlled condition other than ``direct`` and ``tool``. One that the config's
``conditions`` lack is not run: `control_runs` returns it among the skipped runs with the reason, and the
tables say so (`toolshift.analysis.mechanism.tool_gap_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from toolshift.errors import ConfigError

REMOVAL_BASES: tuple[str, ...] = ("tool", "direct")
"""The base conditions ``subtract`` and ``ablate`` may run on (the first is the default)."""
CONTROL_KEYS: tuple[str, ...] = ("control_shift", "relative", "covrandom", "add_orth", "covrandom_remove")
"""The config keys this module reads besides ``subtract`` and ``ablate``."""
KIND_OF_KEY: dict[str, str] = {"control_shift": "shift", "relative": "relative"}
"""The intervention kind of each per-control-condition key."""
NOT_A_CONTROL: tuple[str, ...] = ("direct", "tool")

Run = dict[str, Any]
"""The arguments of one intervention spec: kind, and alpha, seed, control, base_condition as needed."""


def number_list(value: Any, where: str, *, integer: bool = False) -> list[Any]:
    """`value` as a non-empty list of numbers (of integers with `integer`); ConfigError naming `where`."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{where}: expected a non-empty list, got {value!r}")
    for x in value:
        ok = isinstance(x, int) if integer else isinstance(x, int | float)
        if isinstance(x, bool) or not ok:
            raise ConfigError(f"{where}: {x!r} is not {'an integer' if integer else 'a number'}")
    return list(value)


def _section(cfg: dict[str, Any], key: str, allowed: set[str], required: set[str]) -> dict[str, Any] | None:
    value = cfg.get(key)
    if value in (None, False):
        return None
    if not isinstance(value, dict) or not required <= set(value) or not set(value) <= allowed:
        shape = ", ".join(f"{k}: [...]" for k in sorted(allowed))
        raise ConfigError(f"interventions.{key}: expected {{{shape}}}, got {value!r}")
    return value


def removal_bases(cfg: dict[str, Any], kind: str) -> list[str]:
    """The base conditions of the ``subtract`` or ``ablate`` runs (`kind`) of an interventions section."""
    value = cfg.get(kind)
    if value in (None, False):
        return []
    if value is True:
        return [REMOVAL_BASES[0]]
    if not isinstance(value, list | tuple) or not value or any(b not in REMOVAL_BASES for b in value):
        raise ConfigError(
            f"interventions.{kind}: expected true, false or a list of {', '.join(REMOVAL_BASES)}, "
            f"got {value!r}"
        )
    return list(dict.fromkeys(value))


def _controls(value: Any, key: str, controlled: Sequence[str]) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"interventions.{key}.conditions: expected a non-empty list, got {value!r}")
    import toolshift

    allowed = [c for c in controlled if c not in NOT_A_CONTROL]
    for c in value:
        if not isinstance(c, str) or c in NOT_A_CONTROL or not toolshift.is_controlled_condition(c):
            raise ConfigError(
                f"interventions.{key}.conditions: {c!r} is not a control condition "
                f"(one of {', '.join(allowed)})"
            )
    return list(dict.fromkeys(value))


def control_runs(
    cfg: dict[str, Any], conditions: Sequence[str] | None, controlled: Sequence[str]
) -> tuple[list[Run], list[tuple[Run, str]]]:
    """The control runs of an ``interventions`` section (module docstring), in the order ``control_shift``,
    ``relative``, ``covrandom``, ``add_orth``, ``covrandom_remove``; and the runs skipped because their
    control condition is not among `conditions` (None: every condition of `controlled` is configured),
    each with its reason. `controlled` are the controlled conditions (toolshift.CONDITIONS)."""
    configured = set(controlled if conditions is None else conditions)
    runs: list[Run] = []
    skipped: list[tuple[Run, str]] = []
    for key, kind in KIND_OF_KEY.items():
        section = _section(cfg, key, {"conditions", "alphas"}, {"conditions"})
        if section is None:
            continue
        alphas = number_list(section.get("alphas", [1]), f"interventions.{key}.alphas")
        for control in _controls(section["conditions"], key, controlled):
            for alpha in alphas:
                run = {"kind": kind, "alpha": alpha, "control": control}
                if control in configured:
                    runs.append(run)
                else:
                    skipped.append((run, f"not run: condition {control} is not in this run's conditions"))
    section = _section(cfg, "covrandom", {"alphas", "seeds"}, {"seeds"})
    if section is not None:
        alphas = number_list(section.get("alphas", [1]), "interventions.covrandom.alphas")
        seeds = number_list(section["seeds"], "interventions.covrandom.seeds", integer=True)
        runs += [{"kind": "covrandom", "alpha": a, "seed": s} for a in alphas for s in seeds]
    section = _section(cfg, "add_orth", {"alphas"}, {"alphas"})
    if section is not None:
        runs += [
            {"kind": "add_orth", "alpha": a}
            for a in number_list(section["alphas"], "interventions.add_orth.alphas")
        ]
    section = _section(cfg, "covrandom_remove", {"seeds"}, {"seeds"})
    if section is not None:
        seeds = number_list(section["seeds"], "interventions.covrandom_remove.seeds", integer=True)
        kinds = [k for k in ("subtract", "ablate") if REMOVAL_BASES[0] in removal_bases(cfg, k)]
        if not kinds:
            raise ConfigError(
                "interventions.covrandom_remove: its runs are the controls of subtract and ablate on tool; "
                "turn at least one of them on"
            )
        runs += [{"kind": f"covrandom_{k}", "seed": s} for k in kinds for s in seeds]
    return runs, skipped


__all__ = ["CONTROL_KEYS", "REMOVAL_BASES", "control_runs", "number_list", "removal_bases"]
