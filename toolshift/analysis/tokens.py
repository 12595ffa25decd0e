"""What each condition holds constant in tokens, and the logistic model of unsafe on the tokens after the
instruction (`tables/token_counts.csv`, `tables/tokens_model.csv`; docs/analysis.md).

Both read the token counts every response records (toolshift.contracts.TOKEN_COLUMNS) on the harmful prompts
of the split, without intervention, in the controlled conditions (not `free`), from a judged table.

- `token_counts_table`: per model (with its family), dataset and condition, the mean of each count and the
  range of `n_after_instruction` (counts the backend could not make, -1, are left out: NaN).
- `tokens_model_table`: per model, dataset and judge, the logistic regression (statsmodels GLM, binomial,
  logit link) unsafe ~ level + n_after_instruction, one row per term: coefficient, standard error, Wald z, p
  and 95 % interval. The tokens term is TOKENS_TERM (`n_after_instruction`: log-odds per token after the end
  of the attack text). `level` is the condition, except that a condition that differs from another only in how
  many tokens follow T shares its level (`level_of`: the blank size dose that of `tool_blank`,
  `text_trail_long` that of `text_trail`, `image_after` that of `image_no_tool`): with one level per condition
  the tokens term would rest on the few tokens a box's digits add within a condition. The reference level is
  `direct` (else the first level in condition order). A level whose verdicts are all equal is left out (its
  indicator would absorb it: it says nothing about the tokens term) and named in `dropped_levels`; where the
  verdicts do not vary at all, or the tokens do not vary within a level, the row of the tokens term says so in
  `note` and has no estimates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from toolshift import BLANK_CONDITION, blank_scale, condition_order, is_controlled_condition
from toolshift.analysis.interventions import NO_INTERVENTION
from toolshift.analysis.tables import _check, _select
from toolshift.contracts import TOKEN_COLUMNS, TOKEN_COUNT_COLUMNS, TOKENS_MODEL_COLUMNS
from toolshift.errors import ContractError

TOKENS_TERM = "n_after_instruction"
"""The name of the tokens term in `tables/tokens_model.csv` (the responses column it is fitted on)."""

INTERCEPT = "Intercept"

LEVEL_OF: dict[str, str] = {"text_trail_long": "text_trail", "image_after": "image_no_tool"}
"""Conditions that differ from another only in the tokens after T -> that condition (and every blank dose ->
`tool_blank`: `level_of`)."""


def level_of(condition: str) -> str:
    """The level of `condition` in the tokens model (see the module docstring)."""
    if blank_scale(condition) is not None:
        return BLANK_CONDITION
    return LEVEL_OF.get(condition, condition)


def _rows(judged: pd.DataFrame, splits: pd.DataFrame | None, split: str) -> tuple[pd.DataFrame, str]:
    _check(judged)
    missing = [c for c in TOKEN_COLUMNS if c not in judged.columns]
    if missing:
        raise ContractError(f"judged table lacks the token column(s) {', '.join(missing)}")
    rows, label = _select(judged, splits, split)
    keep = rows["harmful"].astype(bool) & (rows["intervention"] == NO_INTERVENTION)
    keep &= rows["condition"].map(is_controlled_condition).astype(bool)
    return rows[keep].reset_index(drop=True), label


def token_counts_table(
    judged: pd.DataFrame,
    *,
    families: Mapping[str, str] | None = None,
    splits: pd.DataFrame | None = None,
    split: str = "test",
) -> pd.DataFrame:
    """TOKEN_COUNT_COLUMNS: the mean token counts per model, dataset and condition (module docstring);
    `families` maps a model to its family (empty where unknown)."""
    rows, label = _rows(judged, splits, split)
    rows = rows.drop_duplicates(["model", "dataset", "condition", "prompt_id"])  # one per judge
    counts = rows[list(TOKEN_COLUMNS)].astype(float)
    rows = rows.assign(**{c: counts[c].where(counts[c] >= 0) for c in TOKEN_COLUMNS})
    out = []
    for (model, dataset, condition), sub in rows.groupby(["model", "dataset", "condition"], sort=False):
        after = sub[TOKENS_TERM]
        out.append(
            {
                "model": model,
                "family": (families or {}).get(str(model), ""),
                "dataset": dataset,
                "split": label,
                "condition": condition,
                "n": len(sub),
                **{c: float(sub[c].mean()) for c in TOKEN_COLUMNS},
                "n_after_instruction_min": float(after.min()),
                "n_after_instruction_max": float(after.max()),
            }
        )
    table = pd.DataFrame(out, columns=list(TOKEN_COUNT_COLUMNS))
    order = [(r.model, r.dataset, condition_order(r.condition)) for r in table.itertuples()]
    return table.iloc[sorted(range(len(table)), key=lambda i: order[i])].reset_index(drop=True)


def fit_tokens_model(frame: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The logistic model of one model, dataset and judge: `frame` has `condition`, `unsafe` and
    TOKENS_TERM. Returns a dict per term (term, coef, se, z, p, ci_low, ci_high) and the fit's
    description (n, n_unsafe, reference, dropped_levels, converged, note)."""
    import statsmodels.api as sm

    data = frame.assign(level=frame["condition"].map(level_of), unsafe=frame["unsafe"].astype(bool))
    data = data[data[TOKENS_TERM] >= 0]
    info: dict[str, Any] = {
        "n": len(data),
        "n_unsafe": int(data["unsafe"].sum()),
        "reference": "",
        "dropped_levels": "",
        "converged": False,
        "note": "",
    }
    blank = [{"term": TOKENS_TERM, **dict.fromkeys(("coef", "se", "z", "p", "ci_low", "ci_high"), math.nan)}]
    if data.empty:
        return blank, {**info, "note": "no response with a token count"}
    rates = data.groupby("level")["unsafe"].mean()
    constant = sorted((lv for lv, r in rates.items() if r in (0.0, 1.0)), key=condition_order)
    info["dropped_levels"] = " ".join(constant)
    data = data[~data["level"].isin(constant)]
    if data.empty:
        return blank, {**info, "note": "every level's verdicts are all equal: nothing to fit"}
    levels = sorted(data["level"].unique(), key=condition_order)
    reference = "direct" if "direct" in levels else levels[0]
    info["reference"] = reference
    columns = {INTERCEPT: np.ones(len(data))}
    columns |= {f"level[{lv}]": (data["level"] == lv).to_numpy(float) for lv in levels if lv != reference}
    columns[TOKENS_TERM] = data[TOKENS_TERM].to_numpy(float)
    design = pd.DataFrame(columns)
    if np.linalg.matrix_rank(design.to_numpy()) < design.shape[1]:
        note = f"{TOKENS_TERM} does not vary within the levels: not identified apart from them"
        return blank, {**info, "n": len(data), "n_unsafe": int(data["unsafe"].sum()), "note": note}
    scale = max(1.0, float(design[TOKENS_TERM].std()))  # fitted per `scale` tokens, reported per token
    design[TOKENS_TERM] /= scale
    y = data["unsafe"].to_numpy(float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = sm.GLM(y, design, family=sm.families.Binomial()).fit()
        except (np.linalg.LinAlgError, ValueError) as exc:
            return blank, {**info, "note": f"the fit failed: {type(exc).__name__}"}
    separated = [w for w in caught if "separation" in str(w.message).lower()]
    converged = bool(result.converged) and not separated
    ci = result.conf_int(alpha=0.05)
    terms = []
    for term in design.columns:
        unit = scale if term == TOKENS_TERM else 1.0
        terms.append(
            {
                "term": term,
                "coef": float(result.params[term]) / unit,
                "se": float(result.bse[term]) / unit,
                "z": float(result.tvalues[term]),
                "p": float(result.pvalues[term]),
                "ci_low": float(ci.loc[term, 0]) / unit,
                "ci_high": float(ci.loc[term, 1]) / unit,
            }
        )
    note = "" if converged else "separation or no convergence: the estimates diverge"
    return terms, {
        **info,
        "n": len(data),
        "n_unsafe": int(y.sum()),
        "converged": converged,
        "note": note,
    }


def tokens_model_table(
    judged: pd.DataFrame, *, splits: pd.DataFrame | None = None, split: str = "test"
) -> pd.DataFrame:
    """TOKENS_MODEL_COLUMNS: `fit_tokens_model` per model, dataset and judge (module docstring)."""
    rows, label = _rows(judged, splits, split)
    out = []
    for (model, dataset, judge), sub in rows.groupby(["model", "dataset", "judge"], sort=True):
        terms, info = fit_tokens_model(sub)
        keys = {"model": model, "dataset": dataset, "judge": judge, "split": label}
        out += [{**keys, **term, **info} for term in terms]
    return pd.DataFrame(out, columns=list(TOKENS_MODEL_COLUMNS))


__all__ = [
    "LEVEL_OF",
    "TOKENS_TERM",
    "fit_tokens_model",
    "level_of",
    "token_counts_table",
    "tokens_model_table",
]
