"""The study's four claims as verdicts, aggregated from the paired contrasts (``tables/claims.csv``).

`tables/contrasts.csv` holds one row per tested pair of runs, each with its own verdict (``supported``,
``contradicted``, ``not shown``; the equivalence rows ``supported``, ``contradicted``, ``inconclusive``).
A reader (and the validation chapter, which checks the planted worlds) needs one verdict per claim.
`CLAIM_GROUPS` lists the claims and the contrast ids each is made of, once; `claims_table` applies one
documented rule, per model, dataset, judge and split:

1. **Component** (one contrast id, all its rows: e.g. every override against ``text_trail``, every α and
   seed against the random vectors): ``not tested`` without rows; with ``mode="all"`` ``contradicted``
   if any row is contradicted, ``supported`` if every row is supported, else ``not shown``; with
   ``mode="any"`` (a positive control) ``supported`` if any row is, else ``not shown``. Row verdicts
   other than supported and contradicted (``not shown``, ``inconclusive``) count as not shown.
2. **Claim**: ``not tested`` if any of its components is (the missing ids are listed); ``inconclusive``
   if a precondition (the refusal-ablation positive control: the interventions can move ASR at all) is
   not supported; else ``contradicted`` if any component is contradicted, ``supported`` if every
   component is supported, ``not shown`` otherwise.

A claim is thus never supported by a non-significant difference (each row's verdict already needs its
Holm-adjusted test, or its equivalence test), and one contradicted component is enough to contradict it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from toolshift.contracts import CLAIMS_COLUMNS, require_columns

SUPPORTED, CONTRADICTED, NOT_SHOWN = "supported", "contradicted", "not shown"
INCONCLUSIVE, NOT_TESTED = "inconclusive", "not tested"
VERDICTS: tuple[str, ...] = (SUPPORTED, CONTRADICTED, NOT_SHOWN, INCONCLUSIVE, NOT_TESTED)
"""Every claim verdict, in the order the book explains them."""


@dataclass(frozen=True)
class Component:
    """One contrast id of `tables/contrasts.csv` in a claim: `mode` ``all`` (every row must be supported) or
    ``any`` (one supported row is enough: a positive control); a `precondition` makes the claim
    inconclusive, not contradicted, when it is not supported."""

    id: str
    mode: str = "all"
    precondition: bool = False


@dataclass(frozen=True)
class ClaimGroup:
    """A claim of the study and the contrast ids that test it."""

    id: str
    sentence: str
    components: tuple[Component, ...]


CLAIM_GROUPS: tuple[ClaimGroup, ...] = (
    ClaimGroup(
        "behaviour",
        "Claim 1: explicit image-tool interaction lowers ASR, and being offered the tool does not.",
        (Component("tool_use_lowers_asr"), Component("tool_offered_is_not_tool_use")),
    ),
    ClaimGroup(
        "controls",
        "Claim 2: every override keeps ASR below the text-only tool trail (short and long), the tool keeps "
        "it below the same zoom shown without a tool, and the text-only controls are equivalent to direct.",
        (
            Component("override_beats_text_trail"),
            Component("override_beats_text_trail_long"),
            Component("tool_beats_image_after"),
            Component("tool_beats_image_turn"),
            Component("text_trail_equivalent_to_direct"),
            Component("text_trail_long_equivalent_to_direct"),
            Component("text_prior_equivalent_to_direct"),
        ),
    ),
    ClaimGroup(
        "mechanism",
        "Claim 3: removing the tool shift from tool runs raises ASR and adding it to direct runs lowers ASR "
        "more than norm-matched random vectors do (given that ablating the refusal direction moves ASR).",
        (
            Component("removing_shift_raises_asr"),
            Component("adding_shift_beats_random"),
            Component("refusal_ablation_raises_asr", mode="any", precondition=True),
        ),
    ),
    ClaimGroup(
        "specificity",
        "Mechanism specificity: the tool vector beats the control conditions' own shifts and random "
        "directions drawn from the activations' covariance, and removing it matters more in tool runs "
        "than in direct runs.",
        (
            Component("adding_shift_beats_control_shift"),
            Component("adding_shift_beats_covariance_random"),
            Component("removing_shift_raises_asr_more_in_tool"),
        ),
    ),
)
"""The claims in the order the table and the book show them."""

KEYS: tuple[str, ...] = ("model", "dataset", "judge", "split")


def row_verdict(verdict: Any) -> str:
    """A contrast row's verdict as SUPPORTED, CONTRADICTED or NOT_SHOWN (inconclusive and the rest)."""
    return verdict if verdict in (SUPPORTED, CONTRADICTED) else NOT_SHOWN


def component_verdict(verdicts: list[str], mode: str = "all") -> str:
    """The verdict of one contrast id from its rows' verdicts (the module docstring's rule 1)."""
    if not verdicts:
        return NOT_TESTED
    rows = [row_verdict(v) for v in verdicts]
    if mode == "any":
        return SUPPORTED if SUPPORTED in rows else NOT_SHOWN
    if mode != "all":
        raise ValueError(f"component mode must be 'all' or 'any', got {mode!r}")
    if CONTRADICTED in rows:
        return CONTRADICTED
    return SUPPORTED if all(v == SUPPORTED for v in rows) else NOT_SHOWN


def claim_verdict(group: ClaimGroup, by_component: dict[str, str]) -> str:
    """The verdict of a claim from its components' verdicts (the module docstring's rule 2)."""
    verdicts = [by_component.get(c.id, NOT_TESTED) for c in group.components]
    if NOT_TESTED in verdicts:
        return NOT_TESTED
    if any(by_component[c.id] != SUPPORTED for c in group.components if c.precondition):
        return INCONCLUSIVE
    tests = [by_component[c.id] for c in group.components if not c.precondition]
    if CONTRADICTED in tests:
        return CONTRADICTED
    return SUPPORTED if all(v == SUPPORTED for v in tests) else NOT_SHOWN


def claims_table(contrasts: pd.DataFrame, groups: tuple[ClaimGroup, ...] = CLAIM_GROUPS) -> pd.DataFrame:
    """One row per (model, dataset, judge, split, claim) present in `contrasts` (CLAIMS_COLUMNS), in the
    order of the contrasts' keys, then `groups`."""
    require_columns(contrasts, (*KEYS, "claim", "verdict"), "contrasts table")
    rows: list[dict[str, Any]] = []
    for key, frame in contrasts.groupby(list(KEYS), sort=True):
        by_id = {str(k): list(v) for k, v in frame.groupby("claim", sort=False)["verdict"]}
        for group in groups:
            components = {c.id: component_verdict(by_id.get(c.id, []), c.mode) for c in group.components}
            missing = [c for c, v in components.items() if v == NOT_TESTED]
            rows.append(
                {
                    **dict(zip(KEYS, key, strict=True)),
                    "claim": group.id,
                    "verdict": claim_verdict(group, components),
                    "n_rows": sum(len(by_id.get(c.id, [])) for c in group.components),
                    "components": "; ".join(f"{c}: {v}" for c, v in components.items()),
                    "missing": "; ".join(missing),
                }
            )
    return pd.DataFrame(rows, columns=list(CLAIMS_COLUMNS))


__all__ = [
    "CLAIM_GROUPS",
    "VERDICTS",
    "ClaimGroup",
    "Component",
    "claim_verdict",
    "claims_table",
    "component_verdict",
    "row_verdict",
]
