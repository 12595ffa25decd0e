"""How the book shows each analysis table (`tables/{name}.csv`): its columns (header and cell formatter),
its section title, and what the book says when the table is missing or empty. Data only, read by
`toolshift.report.tables.analysis_table_markdown`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolshift.report.format import (
    DASH,
    code,
    is_missing,
    number_with_ci,
    p_value,
    pct,
    value,
    with_ci,
)

Column = tuple[str, Callable[[Any], str]]


def _ci(col: str) -> Callable[[Any], str]:
    return lambda r: with_ci(getattr(r, col), getattr(r, f"{col}_ci_low"), getattr(r, f"{col}_ci_high"))


def _get(col: str, fmt: Callable[[Any], str] = value) -> Callable[[Any], str]:
    return lambda r: fmt(getattr(r, col)) if hasattr(r, col) else DASH


def int_cell(x: Any) -> str:
    return DASH if is_missing(x) else str(int(x))


def yes_no(x: Any) -> str:
    if is_missing(x):
        return DASH
    return "yes" if str(x).lower() in ("true", "1", "1.0") else "no"


def _yes(x: Any) -> str:
    if is_missing(x):
        return DASH
    return "yes" if str(x).lower() in ("true", "1", "1.0") else "**no**"


TABLE_COLUMNS: dict[str, list[Column]] = {
    "selection": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("layers", _get("n_layers", int_cell)),
        ("selected layer", _get("layer", int_cell)),
        ("layer score", _get("layer_score")),
        ("α", _get("alpha")),
        ("validation ASR, %: direct", _get("direct_validation_asr", pct)),
        ("tool", _get("tool_validation_asr", pct)),
        ("direct + α", _get("alpha_validation_asr", pct)),
    ],
    "transfer": [
        ("model", _get("model", code)),
        ("from", _get("source_dataset", code)),
        ("to", _get("target_dataset", code)),
        ("intervention", _get("intervention", code)),
        ("n", _get("n", int_cell)),
        ("ASR, % [95 % CI]", _ci("asr")),
        ("direct ASR, %", _get("direct_asr", pct)),
        ("in-dataset add ASR, %", _get("in_dataset_add_asr", pct)),
        ("relative reduction, % [95 % CI]", _ci("rel_reduction")),
        ("Holm p", _get("holm_p", p_value)),
        ("cos(tool vectors)", _get("cos_tool_vectors")),
    ],
    "intervention_cost": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("intervention", _get("intervention", code)),
        ("on", _get("condition", code)),
        ("layer", _get("layer", int_cell)),
        ("split", _get("split", code)),
        ("n", _get("n", int_cell)),
        ("KL, nats [95 % CI]", lambda r: number_with_ci(r.kl_mean, r.kl_ci_low, r.kl_ci_high)),
        ("KL last prompt token", _get("kl_last_mean")),
        ("KL generated tokens", _get("kl_generated_mean")),
    ],
    "representation": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("condition", _get("condition", code)),
        ("layer", _get("layer", int_cell)),
        ("n harmful", _get("n_harmful", int_cell)),
        ("cos(shift, tool vector)", _get("cos_shift_tool")),
        ("cos(shift, refusal dir.)", _get("cos_shift_refusal")),
        ("shift norm / tool norm", _get("shift_norm_ratio")),
        (
            "refusal position [95 % CI]",
            lambda r: number_with_ci(
                r.refusal_position, r.refusal_position_ci_low, r.refusal_position_ci_high
            ),
        ),
        ("probe accuracy (test)", _get("probe_test_accuracy")),
    ],  # fmt: skip
    "free_tool_use": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("judge", _get("judge")),
        ("called the tool", _get("used_tool", yes_no)),
        ("n", _get("n", int_cell)),
        ("unsafe", _get("n_unsafe", int_cell)),
        ("ASR, % [95 % CI]", _ci("asr")),
        ("tool calls per answer", _get("mean_tool_calls")),
        ("malformed calls", _get("n_malformed_calls", int_cell)),
        ("stopped at max turns", _get("n_stopped_at_max_turns", int_cell)),
    ],
    "asr_by_scale": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("condition", _get("condition", code)),
        ("zoom scale", lambda r: f"{r.scale_min:.2f}–{r.scale_max:.2f}"),
        ("n", _get("n", int_cell)),
        ("ASR, % [95 % CI]", _ci("asr")),
        ("direct ASR, % [95 % CI]", _ci("reference_asr")),
        ("McNemar p", _get("mcnemar_p", p_value)),
        (
            "trend ρ (p)",
            lambda r: DASH if is_missing(r.trend_rho) else f"{r.trend_rho:.2f} ({p_value(r.trend_p)})",
        ),
    ],
    "judge_agreement": [
        ("judge A", _get("judge_a", code)),
        ("judge B", _get("judge_b", code)),
        ("n", _get("n", int_cell)),
        ("agreement, %", _get("percent_agreement", lambda x: DASH if is_missing(x) else f"{float(x):.1f}")),
        ("Cohen's κ", _get("kappa")),
    ],
    "validation_planted_model": [
        ("model", _get("model", code)),
        ("check", _get("check", code)),
        ("what is checked", _get("description")),
        ("planted", _get("planted")),
        (
            "recovered [95 % CI]",
            lambda r: number_with_ci(r.recovered, r.ci_low, r.ci_high, digits=3),
        ),
        ("criterion", _get("criterion")),
        ("passed", _get("passed", _yes)),
    ],
    "validation_planted": [
        ("check", _get("check", code)),
        ("what is checked", _get("description")),
        ("planted", _get("planted")),
        (
            "recovered [95 % CI]",
            lambda r: number_with_ci(
                r.recovered, getattr(r, "ci_low", None), getattr(r, "ci_high", None), digits=4
            ),
        ),
        ("criterion", _get("criterion")),
        ("passed", _get("passed", _yes)),
    ],
}
"""How the book shows each analysis table: (header, cell of a row) per column; other tables show every
column as it is."""


TABLE_TITLES: dict[str, str] = {
    "asr_by_category": "ASR by category",
    "asr_by_scale": "ASR by zoom magnification",
    "contrasts": "Each claim next to its paired test",
    "selection": "Layer and α selected on the validation split",
    "transfer": "Transfer of the tool vector between datasets",
    "intervention_cost": "KL cost of each intervention on harmless validation prompts (bounds α) and test "
    "prompts (reported)",
    "representation": "Each condition's shift at the selected layer",
    "free_tool_use": "The free condition: ASR by whether the model chose to call the tool",
    "asr_by_judge": "ASR under every judge, side by side",
    "judge_agreement": "How far the judges agree with each other",
    "judge_human_agreement": "Each judge against the human majority of the labelled file",
    "validation_planted": "Planted-truth recovery",
    "validation_planted_model": "The planted-mechanism model through the whole DAG",
    "validation_figstep": "FigStep pixel fidelity",
}
"""The title of each analysis table's section."""


MISSING_TABLE_REASONS: dict[str, str] = {
    "validation_planted_model": "This run has no planted-mechanism fixture (a model entry with "
    "`fixture.planted`), so there is no positive control to recover.",
    "validation_figstep": "FigStep pixel fidelity was not checked in this run: it needs the original "
    "SafeBench "
    "images. Set `data_mirror` to a folder holding `figstep_safebench/`, or set "
    "`validation.figstep_fidelity: true` to download them ({doc}`reproduce`).",
}
"""Why a table may be absent from a run, shown instead of it."""


EMPTY_TABLE_REASONS: dict[str, str] = {
    "transfer": "Transfer needs at least two datasets in the run; this run has one, so the table is empty.",
    "judge_human_agreement": "No human-labelled file is configured, so no judge is scored against human "
    "labels. Set `human_labels.path` to a labelled CSV (the JailbreakBench judge-comparison file works as "
    "it is).",
    "free_tool_use": "The `free` condition is not in this run.",
    "asr_by_scale": "No condition of this run has a zoom box: there is no zoom scale to break ASR down by.",
    "contrasts": "No claim has both of its runs in this run.",
    "validation_figstep": "No FigStep originals were compared in this run.",
    "validation_planted_model": "The planted model is calibrated on `mini`, which this run does not use.",
}
"""What an empty table means, shown instead of an empty table."""
