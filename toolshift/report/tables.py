"""The book's tables as markdown: the ASR and over-refusal tables, each analysis table
(`analysis_table_markdown`, with the column specs of `toolshift.report.columns`) and the example
completions."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from toolshift.checks.figstep_fidelity import FIGSTEP_MIN_AGREEMENT
from toolshift.episodes.build import EPISODE_CONDITIONS
from toolshift.report.columns import (
    EMPTY_TABLE_REASONS,
    MISSING_TABLE_REASONS,
    TABLE_COLUMNS,
    TABLE_NOTES,
    TABLE_TITLES,
    int_cell,
    yes_no,
)
from toolshift.report.contrast_tables import contrasts_markdown
from toolshift.report.format import (
    DASH,
    cell,
    code,
    is_missing,
    markdown_table,
    p_value,
    pct,
    ref_label,
    value,
    with_ci,
)
from toolshift.report.verdicts import claims_markdown, world_claims_markdown

PLANTED_LABEL = "planted: positive control"
"""How tables label a planted world's rows."""


def asr_headline_markdown(asr: pd.DataFrame, judge: str, planted: Sequence[str] = ()) -> str:
    """Per model and dataset: ASR without and with the tool, the relative reduction and McNemar p; the
    `planted` models (planted worlds) are labelled as positive controls."""
    rows = asr[(asr["intervention"] == "none") & (asr["judge"] == judge)]
    out = []
    for (model, dataset), sub in rows.groupby(["model", "dataset"], sort=False):
        by = sub.set_index("condition")
        if "direct" not in by.index or "tool" not in by.index:
            continue
        d, t = by.loc["direct"], by.loc["tool"]
        o = by.loc["tool_offered"] if "tool_offered" in by.index else None
        out.append(
            [
                code(model) + (f" ({PLANTED_LABEL})" if model in planted else ""),
                code(dataset),
                str(int(t["n"])),
                with_ci(d["asr"], d["asr_ci_low"], d["asr_ci_high"]),
                DASH if o is None else with_ci(o["asr"], o["asr_ci_low"], o["asr_ci_high"]),
                with_ci(t["asr"], t["asr_ci_low"], t["asr_ci_high"]),
                with_ci(t["rel_reduction"], t["rel_reduction_ci_low"], t["rel_reduction_ci_high"]),
                p_value(t["mcnemar_p"]),
            ]
        )
    if not out:
        return f"No model has both a `direct` and a `tool` row for the {judge} judge in this run.\n"
    header = [
        "model",
        "dataset",
        "n",
        "ASR direct, % [95 % CI]",
        "ASR tool_offered, % [95 % CI]",
        "ASR tool, % [95 % CI]",
        "relative reduction vs direct, % [95 % CI]",
        "McNemar p vs direct",
    ]
    note = (
        f"\nJudge: **{judge}**. ASR is the share of harmful test prompts judged unsafe, with 95 % Wilson "
        "intervals; the relative reduction of `tool` against `direct` has the Bonett-Price (2006) interval "
        "for a ratio of paired proportions (finite when `tool` has no unsafe answer), and p is the exact "
        "McNemar test of the paired verdicts. The reference is `direct` (no tool framing). `tool_offered` "
        "has the tool specification of `tool` without a call: where `tool_offered` is as low as `tool`, the "
        "drop comes from being offered the tool, not from using it; the contrasts table in the "
        "interventions chapter tests `tool` against `tool_offered` directly.\n"
    )
    return markdown_table(header, out) + note


def asr_conditions_markdown(asr: pd.DataFrame, judge: str) -> str:
    """ASR in every condition (no intervention) under the headline judge: one row per condition, one
    column per model and dataset."""
    rows = asr[(asr["intervention"] == "none") & (asr["judge"] == judge)]
    if rows.empty:
        return f"No condition rows for the {judge} judge in this run.\n"
    conditions = list(dict.fromkeys(rows["condition"]))
    runs = list(dict.fromkeys(zip(rows["model"], rows["dataset"], strict=True)))
    several = len({d for _, d in runs}) > 1
    by = rows.set_index(["model", "dataset", "condition"])
    out = []
    for c in conditions:
        cells = []
        for model, dataset in runs:
            key = (model, dataset, c)
            cells.append(
                with_ci(by.loc[key, "asr"], by.loc[key, "asr_ci_low"], by.loc[key, "asr_ci_high"])
                if key in by.index
                else DASH
            )
        out.append([code(c)] + cells)
    header = ["condition"] + [code(f"{m} / {d}" if several else m) for m, d in runs]
    n = int(rows["n"].max())
    return markdown_table(header, out) + (
        f"\nASR, % [95 % Wilson CI], judge **{judge}**, harmful test prompts (n = {n} per cell).\n"
    )


def asr_full_markdown(asr: pd.DataFrame) -> str:
    """Every row of `tables/asr.csv`, formatted."""
    header = [
        "model",
        "dataset",
        "judge",
        "condition",
        "intervention",
        "n",
        "unsafe",
        "ASR, % [95 % CI]",
        "relative reduction vs direct, % [95 % CI]",
        "McNemar p",
    ]
    rows = [
        [
            code(r.model),
            code(r.dataset),
            cell(r.judge),
            code(r.condition),
            code(r.intervention),
            str(int(r.n)),
            str(int(r.n_unsafe)),
            with_ci(r.asr, r.asr_ci_low, r.asr_ci_high),
            with_ci(r.rel_reduction, r.rel_reduction_ci_low, r.rel_reduction_ci_high),
            p_value(r.mcnemar_p),
        ]
        for r in asr.itertuples(index=False)
    ]
    note = (
        "\nIntervention rows (`add_a…`, `random_a…_s…`, `subtract`, `ablate`, `ablate_refusal_…`) are runs "
        "of their base condition with the intervention applied; their relative reduction and p compare them "
        "with `direct` on the prompts both have (`paired_subset` in `tables/asr.csv` marks rows paired on "
        "fewer prompts than `direct` has, and `asr_ref_paired` gives `direct`'s ASR on those prompts). "
        "Intervals of the relative reduction: Bonett-Price (2006); the paired bootstrap interval and the "
        "share of its usable replicates are in the CSV. A dash marks a value that does not apply.\n"
    )
    return fold("Every ASR row", markdown_table(header, rows), len(rows)) + note


def over_refusal_markdown(table: pd.DataFrame | None) -> str:
    """Every row of `tables/over_refusal.csv` (refusal rate on harmless prompts), formatted."""
    if table is None:
        return "The over-refusal table was not produced in this run.\n"
    if table.empty:
        return "The over-refusal table has no rows in this run.\n"
    header = ["model", "dataset", "detector", "condition", "intervention", "n", "refused"]
    header += ["refusal rate, % [95 % CI]", "non-answers"]
    rows = [
        [
            code(r.model),
            code(r.dataset),
            code(getattr(r, "detector", r.judge)),
            code(r.condition),
            code(r.intervention),
            str(int(r.n)),
            str(int(r.n_refused)),
            with_ci(r.refusal_rate, r.refusal_ci_low, r.refusal_ci_high),
            int_cell(getattr(r, "n_non_answer", None)),
        ]
        for r in table.itertuples(index=False)
    ]
    detectors = (
        ", ".join(code(d) for d in dict.fromkeys(table["detector"].astype(str)))
        if "detector" in table
        else ""
    )
    note = "\nThe share of *harmless* test prompts the model refuses, with 95 % Wilson intervals. " + (
        f"Refusals are detected by {detectors}: the refusal phrases of the keyword judge's list at word "
        'boundaries, independent of every judge (a model judge calls every helpful answer "not '
        'unsafe", which is not a refusal), so each run has one row whatever the judges.\n'
        if detectors
        else 'Refusals are counted as the judge\'s "not unsafe" verdicts (a table without a detector).\n'
    )
    return fold("Refusal rate on harmless prompts", markdown_table(header, rows), len(rows)) + note


def _pivot_by_judge(table: pd.DataFrame) -> tuple[str, str]:
    judges = [c for c in table.columns if c.startswith("asr_")]
    keep = table[table["intervention"] == "none"] if "intervention" in table.columns else table
    order = {c: i for i, c in enumerate(EPISODE_CONDITIONS)}
    keep = keep.assign(_o=keep["condition"].map(order)).sort_values(["model", "dataset", "_o"], kind="stable")
    header = ["model", "dataset", "condition"] + [f"{c[4:]}, %" for c in judges]
    rows = [
        [code(r["model"]), code(r["dataset"]), code(r["condition"])] + [pct(r[c]) for c in judges]
        for _, r in keep.iterrows()
    ]
    return markdown_table(header, rows), (
        "ASR on the harmful test prompts without intervention; intervention rows are in "
        "`tables/asr_by_judge.csv`.\n"
    )


def _category_table(table: pd.DataFrame, judge: str | None) -> tuple[str, str]:
    keep = table[(table["intervention"] == "none") & (table["judge"] == (judge or table["judge"].iloc[0]))]
    rows = [
        [code(r.model), code(r.dataset), cell(r.category), code(r.condition), int_cell(r.n),
         with_ci(r.asr, r.asr_ci_low, r.asr_ci_high),
         with_ci(r.rel_reduction, r.rel_reduction_ci_low, r.rel_reduction_ci_high), p_value(r.holm_p)]
        for r in keep.itertuples(index=False)
    ]  # fmt: skip
    header = ["model", "dataset", "category", "condition", "n", "ASR, % [95 % CI]",
              "relative reduction, % [95 % CI]", "Holm p"]  # fmt: skip
    return markdown_table(header, rows), (
        f"Judge **{judge}**, harmful test prompts, no intervention; p-values are McNemar against "
        "`direct`, Holm-adjusted over the categories and conditions of each model.\n"
    )


def _figstep_table(table: pd.DataFrame) -> tuple[str, str]:
    agreement = pd.to_numeric(table["agreement"], errors="coerce")
    identical = table["identical"].astype(str).str.lower().isin(["true", "1"])
    summary = (
        f"{len(table)} SafeBench images rendered from their instruction text with the bundled FreeMonoBold "
        f"and compared with the original FigStep images pixel by pixel: **{int(identical.sum())} of "
        f"{len(table)} identical**, agreement min {100 * agreement.min():.4f} %, mean "
        f"{100 * agreement.mean():.5f} %; every image at least {100 * FIGSTEP_MIN_AGREEMENT:g} % "
        f"identical pixels: **{'yes' if agreement.min() >= FIGSTEP_MIN_AGREEMENT else 'no'}**. "
    )
    worst = table.assign(_a=agreement).sort_values("_a", kind="stable").head(10)
    rows = [
        [
            code(r.get("image", DASH)),
            cell(r.get("category", DASH)) if not is_missing(r.get("category")) else DASH,
            int_cell(r.get("n_differing_pixels")),
            int_cell(r.get("n_pixels")),
            DASH if is_missing(r["_a"]) else f"{100 * float(r['_a']):.4f}",
            yes_no(r["identical"]),
        ]
        for _, r in worst.iterrows()
    ]
    cols = ["image", "category", "differing pixels", "pixels", "agreement, %", "identical"]
    return markdown_table([cell(c) for c in cols], rows), summary + "The table lists the ten least similar.\n"


FOLD_ROWS = 24
"""Tables longer than this are folded into a dropdown the reader opens."""


def fold(summary: str, body: str, n_rows: int) -> str:
    """`body` inside a closed sphinx-design dropdown when it has more than FOLD_ROWS rows, else as it is."""
    if n_rows <= FOLD_ROWS:
        return body
    return f"::::{{dropdown}} {summary} ({n_rows} rows)\n\n{body}\n::::\n"


def _selection_note(table: pd.DataFrame) -> str:
    def values(col: str) -> str:
        return ", ".join(code(v) for v in dict.fromkeys(table[col].astype(str))) if col in table else DASH

    return (
        f"Layer criterion {values('layer_criterion')}; the last {values('exclude_last_frac')} of the "
        f"layers (as a fraction) are never selected; α criterion {values('alpha_criterion')}; "
        f"validation verdicts by the {values('judge')} judge.\n"
    )


def table_block(label: str, title: str, table_md: str, note: str = "") -> str:
    """A captioned, labelled MyST table (`{ref}` target `label`) and an optional note; long tables fold."""
    n_rows = max(0, table_md.count("\n") - 2)
    block = f"```{{table}} {title}\n:name: {label}\n\n{table_md}```\n"
    return fold(f"Table: {title}", block, n_rows) + (f"\n{note}" if note else "")


def _token_counts_markdown(table: pd.DataFrame, label: str, title: str) -> str:
    """`tables/token_counts.csv` per family: the table of the family's first model (the others of the
    family named), each condition's mean counts."""
    spec = TABLE_COLUMNS["token_counts"]
    out = [
        f"({label})=\n**{title}.** Per family, the mean token counts of each condition's prompts (harmful "
        "test prompts): images, the tokens the images add, the other tokens, the tokens after the end of "
        "the attack text T (its range over prompts) and the visual tokens among them. A control holds "
        "constant what its column shows unchanged against `tool`. Every model's rows are in "
        "`tables/token_counts.csv`.\n"
    ]
    families = table.assign(family=table["family"].fillna("").astype(str).replace("", "(family unknown)"))
    for family, sub in families.groupby("family", sort=False):
        models = list(dict.fromkeys(sub["model"].astype(str)))
        first = sub[sub["model"] == models[0]]
        for dataset, rows in first.groupby("dataset", sort=False):
            body = markdown_table(
                [h for h, _ in spec], [[fmt(r) for _, fmt in spec] for r in rows.itertuples()]
            )
            others = f" (also {', '.join(code(m) for m in models[1:])})" if len(models) > 1 else ""
            name = re.sub(r"[^a-z0-9]+", "-", f"{label} {family} {dataset}".lower()).strip("-")
            out.append(
                f"```{{table}} {family}: {models[0]} / {dataset}\n:name: {name}\n\n{body}```\n"
                + (f"Model {code(models[0])}{others}.\n" if others else "")
            )
    return "\n".join(out)


def analysis_table_markdown(
    name: str, table: pd.DataFrame | None, judge: str | None = None, missing: str | None = None
) -> str:
    """One analysis table as a captioned, labelled table (or a labelled note saying why it has no rows;
    `missing` says why a table that is None is not there, e.g. not available for API models)."""
    title = TABLE_TITLES.get(name, name)
    label = ref_label("table", name)
    if table is None:
        reason = missing or MISSING_TABLE_REASONS.get(
            name, f"The `{name}` table was not produced in this run."
        )
        return f"({label})=\n**{title}.** {reason}\n"
    if table.empty:
        return f"({label})=\n**{title}.** " + EMPTY_TABLE_REASONS.get(name, "No rows in this run.") + "\n"
    if name == "contrasts":
        return contrasts_markdown(table, judge, label)
    note = ""
    if name == "asr_by_scale" and judge is not None and "judge" in table.columns:
        table = table[table["judge"] == judge]
        note = (
            f"Judge **{judge}**; harmful test prompts binned by the zoom's magnification (quantile bins); "
            "`direct` on the same prompts; trend ρ: Spearman's correlation between the scale and the paired "
            "change of the verdict from `direct` (negative: more magnification, fewer unsafe answers)."
        )
    if (
        name == "tool_gap"
        and judge is not None
        and "judge" in table.columns
        and (table["judge"] == judge).any()
    ):
        table = table[table["judge"] == judge]
        note = f"Judge **{judge}**. " + TABLE_NOTES[name]
    if name in ("representation", "relative_vectors"):
        note = TABLE_NOTES[name]
    if name == "token_counts":
        return _token_counts_markdown(table, label, title)
    if name == "tokens_model" and judge is not None and (table["judge"] == judge).any():
        table = table[table["judge"] == judge]
        note = (
            f"Judge **{judge}**. Logistic regression of an unsafe answer on the condition's level and the "
            "tokens after the attack text (`n_after_instruction`, log-odds per token), per model, on the "
            "harmful test prompts without intervention; Wald intervals. Conditions that differ from another "
            "only in how many tokens follow T share its level (the blank size dose `tool_blank`'s, "
            "`text_trail_long` `text_trail`'s, `image_after` `image_no_tool`'s). A negative, significant "
            "`n_after_instruction` is what dilution predicts; a `tool` level below `direct` that survives it "
            "is what tool interaction predicts."
        )
    if name == "asr_by_judge":
        body, note = _pivot_by_judge(table)
    elif name == "asr_by_category" and {"intervention", "judge", "category"} <= set(table.columns):
        body, note = _category_table(table, judge)
    elif name == "validation_figstep" and {"agreement", "identical"} <= set(table.columns):
        body, note = _figstep_table(table)
    elif name == "claims" and {"model", "dataset", "judge", "claim", "verdict", "missing"} <= set(table):
        body, note = claims_markdown(table, judge)
    elif name == "validation_worlds" and {"model", "world", "claim", "passed", "expected"} <= set(table):
        body, note = world_claims_markdown(table)
    else:
        body = ""
        if name == "selection":
            note = _selection_note(table)
        spec = TABLE_COLUMNS.get(name)
        if spec is not None:
            try:
                rows = [[fmt(r) for _, fmt in spec] for r in table.itertuples(index=False)]
                body = markdown_table([h for h, _ in spec], rows)
            except AttributeError:
                body = ""  # an older table without some column: show it as it is
        if not body:
            rows = [[value(v) for v in row] for row in table.itertuples(index=False)]
            body = markdown_table([cell(c) for c in table.columns], rows)
    return table_block(label, title, body, note)


COMPLETION_CHARS = 160
"""Completions shown in the book (only with `book.show_completions: true`) are cut to this length."""


COMPLETIONS_PER_RUN = 2
"""How many harmful prompts' completions the book shows per model and condition."""


def completions_markdown(judged: pd.DataFrame | None, show: bool) -> str:
    """Example completions to harmful prompts, truncated, or a note that they are redacted.

    Only plain condition runs are sampled (the first prompts by id, so the choice is stable).
    """
    if not show:
        return (
            "Model completions to harmful prompts are redacted from this book. Set "
            "`book.show_completions: true` in the config to show a few, truncated to "
            f"{COMPLETION_CHARS} characters. All of them are in the judged tables, "
            "`judged/{judge}/{model}/{dataset}.parquet`.\n"
        )
    if judged is None or judged.empty:
        return "No judged responses were given to the book.\n"
    runs = judged[judged["harmful"].astype(bool) & (judged["intervention"] == "none")]
    rows = []
    for (model, condition), group in runs.groupby(["model", "condition"], sort=True):
        for _, row in group.sort_values("prompt_id").head(COMPLETIONS_PER_RUN).iterrows():
            text = " ".join(str(row["response"]).split())
            cut = text[:COMPLETION_CHARS] + ("…" if len(text) > COMPLETION_CHARS else "")
            rows.append(
                [
                    code(model),
                    code(condition),
                    code(row["prompt_id"]),
                    str(bool(row["unsafe"])),
                    cell(cut),
                ]
            )
    header = [
        "model",
        "condition",
        "prompt",
        "judged unsafe",
        f"completion (first {COMPLETION_CHARS} characters)",
    ]
    return markdown_table(header, rows)
