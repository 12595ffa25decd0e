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

With the tokens model (`tables/tokens_model.csv`, toolshift.analysis.tokens) a fifth row per key, `dose`
(DOSE), reads its `n_after_instruction` term: *supported* when it is negative with Wald p < 0.05 (more
tokens after the instruction, whatever they are, fewer unsafe answers: the dilution explanation),
*contradicted* when positive with p < 0.05, *not shown* otherwise.
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
        "Claim 3: removing the tool shift from tool runs raises ASR, adding it to direct runs lowers ASR "
        "more than norm-matched random vectors do and more than its part orthogonal to the refusal "
        "direction (given that ablating the refusal direction moves ASR at all).",
        (
            Component("removing_shift_raises_asr"),
            Component("adding_shift_beats_random"),
            Component("adding_shift_beats_orthogonal_component"),
            Component("refusal_ablation_raises_asr", mode="any", precondition=True),
        ),
    ),
    ClaimGroup(
        "specificity",
        "Mechanism specificity: the tool vector beats the control conditions' own shifts and random "
        "directions drawn from the activations' covariance, its part that no control shares lowers ASR, "
        "and removing it matters more in tool runs than in direct runs, and more than removing a "
        "covariance-random direction.",
        (
            Component("adding_shift_beats_control_shift"),
            Component("adding_shift_beats_covariance_random"),
            Component("relative_shift_lowers_asr"),
            Component("removing_shift_raises_asr_more_in_tool"),
            Component("removing_shift_beats_random_removal"),
        ),
    ),
)
"""The claims read from `tables/contrasts.csv`, in the order the table and the book show them. The
diagnostic ``orthogonal_component_lowers_asr`` (whether the tool vector also acts outside the refusal
direction) is in no claim: either answer is compatible with the study's."""

DOSE = ClaimGroup(
    "dose",
    "Dose: in the logistic model unsafe ~ level + tokens after the instruction (`tables/tokens_model.csv`), "
    "more tokens after the attack text lower the odds of an unsafe answer whatever they hold (the "
    "dilution explanation). Supported: the tokens term is negative with p < 0.05.",
    (Component("n_after_instruction"),),
)
"""The dilution reading, from the tokens model's `n_after_instruction` term (not a claim of the study: the
alternative its controls must rule out; the validation chapter checks it on every planted world)."""
ALPHA = 0.05
"""The level of the tokens term's Wald test."""

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


def dose_verdict(coef: Any, p: Any) -> str:
    """The dose claim's verdict from the tokens term: SUPPORTED (negative, p < ALPHA), CONTRADICTED
    (positive, p < ALPHA), NOT_SHOWN otherwise (no estimate included)."""
    if pd.isna(coef) or pd.isna(p) or not float(p) < ALPHA or float(coef) == 0:
        return NOT_SHOWN
    return SUPPORTED if float(coef) < 0 else CONTRADICTED


def _dose_rows(tokens_model: pd.DataFrame) -> dict[tuple[Any, ...], dict[str, Any]]:
    require_columns(tokens_model, (*KEYS, "term", "coef", "p", "note"), "tokens model table")
    term = DOSE.components[0].id
    out = {}
    for r in tokens_model[tokens_model["term"] == term].itertuples(index=False):
        verdict = dose_verdict(r.coef, r.p)
        note = "" if pd.isna(r.note) or r.note == "" else f" ({r.note})"
        detail = f"{term}: {verdict}, coef {float(r.coef):.3g}, p {float(r.p):.3g}{note}"
        if pd.isna(r.coef):
            detail = f"{term}: {verdict}, no estimate{note}"
        out[tuple(getattr(r, k) for k in KEYS)] = {"verdict": verdict, "components": detail}
    return out


def claims_table(
    contrasts: pd.DataFrame,
    tokens_model: pd.DataFrame | None = None,
    groups: tuple[ClaimGroup, ...] = CLAIM_GROUPS,
) -> pd.DataFrame:
    """One row per (model, dataset, judge, split, claim) present in `contrasts` (CLAIMS_COLUMNS), in the
    order of the contrasts' keys, then `groups`, then DOSE when `tokens_model` is given (``not tested``
    where it has no tokens term for those keys)."""
    require_columns(contrasts, (*KEYS, "claim", "verdict"), "contrasts table")
    doses = None if tokens_model is None else _dose_rows(tokens_model)
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
        if doses is not None:
            dose = doses.get(tuple(key))
            rows.append(
                {
                    **dict(zip(KEYS, key, strict=True)),
                    "claim": DOSE.id,
                    "verdict": NOT_TESTED if dose is None else dose["verdict"],
                    "n_rows": int(dose is not None),
                    "components": "" if dose is None else dose["components"],
                    "missing": DOSE.components[0].id if dose is None else "",
                }
            )
    return pd.DataFrame(rows, columns=list(CLAIMS_COLUMNS))


__all__ = [
    "CLAIM_GROUPS",
    "DOSE",
    "VERDICTS",
    "ClaimGroup",
    "Component",
    "claim_verdict",
    "claims_table",
    "component_verdict",
    "dose_verdict",
    "row_verdict",
]
