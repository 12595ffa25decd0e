"""The book's contrasts table: per model and dataset, every claim's paired contrasts with their tests and
verdicts, and the verdict with non-answers excluded (`tables/contrasts.csv`)."""

from __future__ import annotations

import re

import pandas as pd

from toolshift.analysis.contrasts import ALPHA, CLAIMS, INCONCLUSIVE, NOT_SHOWN
from toolshift.report.format import DASH, code, is_missing, markdown_table, p_value, pct, value, with_ci


def _tost_cell(row: object) -> str:
    """The TOST p of an equivalence row and its margin in points (a dash for a McNemar row)."""
    test = getattr(row, "test", None)
    if test != "tost":
        return DASH
    return f"{p_value(row.tost_p)} (± {value(100 * row.margin)})"  # type: ignore[attr-defined]


def _sensitivity_cell(r: object) -> str:
    """The verdict with non-answers excluded, marked when it differs from the verdict (a dash without)."""
    other = getattr(r, "verdict_non_answers_excluded", None)
    if is_missing(other):
        return DASH
    return f"{other} (**flips**)" if other != r.verdict else str(other)


def contrasts_markdown(table: pd.DataFrame, judge: str | None = None, label: str = "table-contrasts") -> str:
    """Each claim sentence next to its tests, one table per model and dataset, for the book.

    Only the rows of `judge` when it has any (the book's headline judge); `label` is the MyST target of
    the section. A table without rows gives a sentence saying so.
    """
    sentences = {c.id: c.sentence for c in CLAIMS}
    rows = table
    if judge is not None and "judge" in table and (table["judge"] == judge).any():
        rows = table[table["judge"] == judge]
    intro = (
        f"({label})=\n**Each claim next to its test.** For every claim, the runs it compares (A vs B), "
        "the harmful test prompts they share (n), each run's ASR, the difference ASR B − ASR A in "
        "percentage points with a 95 % paired bootstrap interval, the exact McNemar p of the paired "
        f"verdicts and the Holm-adjusted p within the claim's tests for that model and dataset. "
        "For the difference-in-differences claim (`removing_shift_raises_asr_more_in_tool`) B − A is "
        "[ASR(B) − ASR(tool)] − [ASR(A) − ASR(direct)] and p its exact paired permutation test. "
        f"*supported*: Holm p < {ALPHA:g} with the predicted sign; *contradicted*: Holm p < {ALPHA:g} "
        "with the other sign; *not shown*: otherwise. The equivalence claims (a text-only control goes "
        "back to `direct`) are tested by a paired TOST within ± the margin: *supported* when its p < "
        f"{ALPHA:g} (the difference lies within the margin), *contradicted* when the runs differ (Holm p "
        f"< {ALPHA:g}) by more than the margin (its {100 - 200 * ALPHA:g} % interval lies outside), "
        "*inconclusive* otherwise: a difference that is not significant is not read as equivalence. "
        "The last column repeats the test on the prompts where neither run gave a non-answer; **flips** "
        "marks a verdict that rests on replies that do not answer. A claim whose runs are not in this run "
        "has no row."
    )
    if rows.empty:
        return intro + "\n\nNo claim has both of its runs in this run.\n"
    judges = ", ".join(f"**{j}**" for j in dict.fromkeys(rows["judge"].astype(str)))
    out = [intro + f" Judge: {judges}; every row is in `tables/contrasts.csv`.\n"]
    header = [
        "claim",
        "A vs B",
        "n",
        "ASR A, %",
        "ASR B, %",
        "B − A, points [95 % CI]",
        "McNemar p",
        "Holm p",
        "TOST p (± margin, points)",
        "verdict",
        "verdict, non-answers excluded",
    ]
    for (model, dataset), sub in rows.groupby(["model", "dataset"], sort=False):
        body, last = [], None
        for r in sub.itertuples(index=False):
            first = r.claim != last
            last = r.claim
            body.append(
                [
                    f"**{r.claim}**: {sentences.get(r.claim, DASH)}" if first else "",
                    f"{code(f'{r.condition_a}/{r.intervention_a}')} vs "
                    f"{code(f'{r.condition_b}/{r.intervention_b}')}",
                    DASH if is_missing(r.n) else str(int(r.n)),
                    pct(r.asr_a),
                    pct(r.asr_b),
                    with_ci(r.diff, r.diff_ci_low, r.diff_ci_high),
                    p_value(r.mcnemar_p if is_missing(getattr(r, "test_p", None)) else r.test_p),
                    p_value(r.holm_p),
                    _tost_cell(r),
                    f"**{r.verdict}**" if r.verdict not in (NOT_SHOWN, INCONCLUSIVE) else str(r.verdict),
                    _sensitivity_cell(r),
                ]
            )
        name = re.sub(r"[^a-z0-9]+", "-", f"{label} {model} {dataset}".lower()).strip("-")
        out.append(
            # a backtick fence's info string may not hold backticks: model and dataset as plain text
            f"```{{table}} Claims and their tests: {model} / {dataset}\n:name: {name}\n\n"
            f"{markdown_table(header, body)}```\n"
        )
    return "\n".join(out)
