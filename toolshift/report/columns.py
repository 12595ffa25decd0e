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


def _num_ci(col: str) -> Callable[[Any], str]:
    return lambda r: number_with_ci(
        getattr(r, col, None), getattr(r, f"{col}_ci_low", None), getattr(r, f"{col}_ci_high", None)
    )


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


def _after_range(r: Any) -> str:
    """The mean tokens after the instruction and their range over prompts."""
    if is_missing(r.n_after_instruction):
        return DASH
    return f"{r.n_after_instruction:.4g} [{r.n_after_instruction_min:.0f}–{r.n_after_instruction_max:.0f}]"


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
        ("cos(shift, refusal dir.) [95 % CI]", _num_ci("cos_shift_refusal")),
        ("p, cos", _get("cos_shift_refusal_p", p_value)),
        ("shift norm / tool norm", _get("shift_norm_ratio")),
        (
            "refusal position [95 % CI]",
            lambda r: number_with_ci(
                r.refusal_position, r.refusal_position_ci_low, r.refusal_position_ci_high
            ),
        ),
        ("position change from direct [95 % CI]", _num_ci("refusal_shift")),
        ("p, change", _get("refusal_shift_p", p_value)),
        ("probe accuracy (test) [95 % CI]", _num_ci("probe_test_accuracy")),
        ("p, accuracy (labels shuffled)", _get("probe_test_accuracy_p", p_value)),
        ("probe accuracy − direct's [95 % CI]", _num_ci("probe_accuracy_change")),
        ("p, accuracy change", _get("probe_accuracy_change_p", p_value)),
    ],  # fmt: skip
    "relative_vectors": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("h(tool) − h(·)", _get("reference", code)),
        ("layer", _get("layer", int_cell)),
        ("norm / tool vector's", _get("norm_ratio")),
        ("cos(·, refusal dir.) [95 % CI]", _num_ci("cos_refusal")),
        ("p (perm.)", _get("cos_refusal_p", p_value)),
        ("cos to: direct (tool vector)", _get("cos_to_direct")),
        ("text_trail", _get("cos_to_text_trail")),
        ("text_trail_long", _get("cos_to_text_trail_long")),
        ("tool_offered", _get("cos_to_tool_offered")),
        ("image_turn", _get("cos_to_image_turn")),
        ("image_after", _get("cos_to_image_after")),
        ("status", _get("status")),
    ],
    "tool_gap": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("judge", _get("judge")),
        ("intervention", _get("intervention", code)),
        ("n", _get("n", int_cell)),
        ("ASR direct, %", _get("asr_direct", pct)),
        ("ASR tool, %", _get("asr_tool", pct)),
        ("ASR with the vector, %", _get("asr_run", pct)),
        ("share of the gap closed [95 % CI]", _num_ci("share_closed")),
        ("note", _get("note")),
    ],
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
    "token_counts": [
        ("condition", _get("condition", code)),
        ("n", _get("n", int_cell)),
        ("images", _get("n_images")),
        ("visual tokens", _get("n_visual_tokens")),
        ("text tokens", _get("n_text_tokens")),
        ("tokens after T [range]", _after_range),
        ("visual tokens after T", _get("n_visual_after_instruction")),
    ],
    "tokens_model": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("term", _get("term", code)),
        ("coefficient, log-odds [95 % CI]", lambda r: number_with_ci(r.coef, r.ci_low, r.ci_high)),
        ("SE", _get("se")),
        ("p", _get("p", p_value)),
        ("n", _get("n", int_cell)),
        ("reference", _get("reference", code)),
        ("levels left out", _get("dropped_levels")),
        ("note", _get("note")),
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
    "token_counts": "What each condition holds constant, in tokens",
    "tokens_model": "Unsafe answers against the tokens after the instruction",
    "selection": "Layer and α selected on the validation split",
    "transfer": "Transfer of the tool vector between datasets",
    "intervention_cost": "KL cost of each intervention on harmless validation prompts (bounds α) and test "
    "prompts (reported)",
    "representation": "Each condition's shift at the selected layer",
    "relative_vectors": "The tool vector relative to each control, at the selected layer",
    "tool_gap": "Share of the tool gap each added vector closes",
    "free_tool_use": "The free condition: ASR by whether the model chose to call the tool",
    "asr_by_judge": "ASR under every judge, side by side",
    "judge_agreement": "How far the judges agree with each other",
    "judge_human_agreement": "Each judge against the human majority of the labelled file",
    "validation_planted": "Planted-truth recovery",
    "validation_planted_model": "The planted worlds through the whole DAG",
    "validation_worlds": "Each planted world's claim verdicts against its truth",
    "claims": "One verdict per claim",
    "validation_figstep": "FigStep pixel fidelity",
}
"""The title of each analysis table's section."""


TABLE_NOTES: dict[str, str] = {
    "representation": (
        "At each model's selected layer (`tables/selection.csv`), never the best of all layers. "
        "Intervals: 95 % percentile bootstrap over prompts; p: permutation test with the two condition "
        "labels (the condition and `direct`) shuffled within each prompt (for the probe's own accuracy, "
        "the harmful labels shuffled), so each p asks whether the condition moves the states at all along "
        "what is measured. Cosines are over the train harmful prompts the vectors are estimated on, "
        "positions and probes over the test prompts."
    ),
    "relative_vectors": (
        "The tool vector relative to each control, mean h(tool) − h(·) over the train harmful prompts, at "
        "the selected layer (the `direct` row is the tool vector itself). Where a control leaves little of "
        "the tool vector (a small norm ratio), the tool shift is mostly what that control already does; the "
        "interventions chapter adds these vectors alone (`relative_a{α}_{control}`). Interval and p as in "
        "the representation table (labels `tool` and the control shuffled within prompt)."
    ),
    "tool_gap": (
        "(ASR(direct) − ASR(direct + α·v)) / (ASR(direct) − ASR(tool)) on the harmful test prompts that "
        "have all three runs, with a 95 % paired bootstrap interval: 1 = the added vector lowers ASR as "
        "much as using the tool, 0 = not at all. v: the tool vector (`add`), a random direction (`random`, "
        "`covrandom`: drawn from the direct activations' covariance), a control's norm-matched shift "
        "(`shift`), the control-relative vector (`relative`) or the tool vector's part orthogonal to the "
        "refusal direction (`add_orth`). Runs the config asks for that could not run are listed with the "
        "reason."
    ),
}
"""A note under each of these tables (what it shows and how to read it)."""


MISSING_TABLE_REASONS: dict[str, str] = {
    "validation_worlds": "This run has no planted world (a model entry with `fixture.planted`), so there "
    "is no world x claim table to check.",
    "validation_planted_model": "This run has no planted world (a model entry with `fixture.planted`), so "
    "there is no positive control to recover.",
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
    "tool_gap": "No model has both `direct` and `tool` runs with a vector added to `direct` in this run.",
    "relative_vectors": "No vectors file in this run.",
    "token_counts": "No response of this run records token counts.",
    "tokens_model": "No model of this run has harmful test responses with token counts.",
    "validation_figstep": "No FigStep originals were compared in this run.",
    "validation_planted_model": "The planted worlds are calibrated on `mini`, which this run does not use.",
    "validation_worlds": "The planted worlds are calibrated on `mini`, which this run does not use.",
    "claims": "No claim has a contrast in this run.",
}
"""What an empty table means, shown instead of an empty table."""
