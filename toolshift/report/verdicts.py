"""The book's claim-verdict tables: `tables/claims.csv` (one verdict per model and claim) and the validation
chapter's world x claim table (`tables/validation_worlds.csv`). Formatting only: the verdicts are computed
by `toolshift.analysis.claims` and checked by `toolshift.checks.planted_worlds`."""

from __future__ import annotations

import pandas as pd

from toolshift.analysis.claims import CLAIM_GROUPS, DOSE
from toolshift.report.format import DASH, cell, code, markdown_table

CLAIM_HEADERS: dict[str, str] = {
    "behaviour": "1 behaviour",
    "controls": "2 controls",
    "mechanism": "3 mechanism",
    "specificity": "mechanism specificity",
    "dose": "dose (tokens after the instruction)",
}
"""Column headers of the claims, in CLAIM_GROUPS order."""

RULE_NOTE = (
    "Each verdict comes from the claim's rows of `tables/contrasts.csv` by one rule "
    "(`toolshift.analysis.claims`): a contrast id is *supported* when every one of its rows is (one row is "
    "enough for the refusal-ablation positive control), *contradicted* when any row is; a claim is "
    "*contradicted* when any of its contrast ids is, *supported* when all are, *inconclusive* when the "
    "positive control does not move ASR, *not tested* when the run lacks some of its contrasts, and "
    "*not shown* otherwise. *dose* reads the tokens model's `n_after_instruction` term (supported: "
    "negative, p < 0.05): the dilution explanation, which the controls must rule out."
)


def _verdict(verdict: str) -> str:
    return f"**{verdict}**" if verdict in ("supported", "contradicted") else cell(verdict)


def claims_markdown(table: pd.DataFrame, judge: str | None) -> tuple[str, str]:
    """The claims table as one row per model and dataset, one column per claim (rows of `judge` when it
    has any); returns (table, note)."""
    rows = table
    if judge is not None and (table["judge"] == judge).any():
        rows = table[table["judge"] == judge]
    claims = [g.id for g in (*CLAIM_GROUPS, DOSE) if g.id in set(rows["claim"])]
    body = []
    for (model, dataset), sub in rows.groupby(["model", "dataset"], sort=False):
        by_claim = dict(zip(sub["claim"], sub["verdict"], strict=True))
        body.append([code(model), code(dataset), *(_verdict(by_claim.get(c, DASH)) for c in claims)])
    header = ["model", "dataset", *(CLAIM_HEADERS.get(c, c) for c in claims)]
    judges = ", ".join(f"**{j}**" for j in dict.fromkeys(rows["judge"].astype(str)))
    missing = sorted({m for text in rows["missing"].fillna("").astype(str) for m in text.split("; ") if m})
    note = f"Judge: {judges}; test split. {RULE_NOTE}"
    if missing:
        note += " Contrasts this run lacks: " + ", ".join(code(m) for m in missing) + "."
    return markdown_table(header, body), note + "\n"


def world_claims_markdown(table: pd.DataFrame) -> tuple[str, str]:
    """The world x claim table: one row per checked model (planted world or null world), one column per
    claim, each cell the DAG's verdict, marked wrong (with what the world allows) when it fails; returns
    (table, note)."""
    passed = table["passed"].astype(str).str.lower().isin(["true", "1", "1.0"])
    claims = [g.id for g in (*CLAIM_GROUPS, DOSE) if g.id in set(table["claim"])]
    body = []
    for (model, world, dataset), sub in table.assign(ok=passed).groupby(
        ["model", "world", "dataset"], sort=False
    ):
        cells = {}
        for r in sub.itertuples(index=False):
            mark = "✓" if r.ok else f"✗ (expected {r.expected})"
            text = f"{r.verdict} {mark}"
            cells[r.claim] = text if r.ok else f"**{text}**"
        body.append([code(model), cell(world), code(dataset), *(cells.get(c, DASH) for c in claims)])
    header = ["model", "world", "dataset", *(CLAIM_HEADERS.get(c, c) for c in claims)]
    n_wrong = int((~passed).sum())
    judge = ", ".join(f"**{j}**" for j in dict.fromkeys(table["judge"].astype(str)))
    summary = (
        f"**All {len(table)} cells correct.**"
        if n_wrong == 0
        else f"**{n_wrong} of {len(table)} cells wrong**: a stage of the pipeline no longer tells the "
        "planted explanations apart."
    )
    note = (
        f"{summary} Judge: {judge}; test split. Each cell is the claim's verdict in `tables/claims.csv`, "
        "checked against what the world's `FIXTURE.json` allows (`null`: the random-weight fixtures, where "
        "no claim may be supported or contradicted). " + RULE_NOTE
    )
    return markdown_table(header, body), note + "\n"
