"""The Jupyter Book report: generated markdown fragments from result files, and the offline build.

`write_book_sources` turns the DAG's result files (tables, figures, vector files, episodes, prompts,
splits, benchmark files, the config) into markdown fragments under `{book_dir}/_generated/`, which
the static chapter pages in `book/` include with MyST `{include}` directives. It only formats what
the files hold; it computes no statistics. `build_book` runs Jupyter Book 1.x (Sphinx) with warnings as
errors and no network access, then checks that every internal link and image of the HTML resolves.

Chapters (book/_toc.yml): overview (`intro`), method, behaviour, representation, interventions,
validation, provenance, reproduce.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import xarray as xr

from toolshift.analysis.contrasts import contrasts_markdown
from toolshift.analysis.tables import OVER_REFUSAL_COLUMNS
from toolshift.checks.validation import FIGSTEP_MIN_AGREEMENT
from toolshift.common.guards import claim_book_dir, held_lock
from toolshift.contracts import ASR_COLUMNS, JUDGED_COLUMNS, read_table
from toolshift.episodes.build import EPISODE_CONDITIONS
from toolshift.errors import ContractError, ToolshiftError
from toolshift.report.examples import example_episodes_markdown
from toolshift.report.figures import pick_judge
from toolshift.report.format import (
    DASH,
    cell,
    code,
    is_missing,
    markdown_table,
    number_with_ci,
    p_value,
    pct,
    value,
    with_ci,
)
from toolshift.report.provenance import (
    attach_skipped,
    config_markdown,
    datasets_markdown,
    engines_markdown,
    git_markdown,
    git_state,
    judges_markdown,
    models_markdown,
    models_of,
    read_benchmarks,
    runtimes_markdown,
    software_markdown,
    splits_markdown,
)

GENERATED = "_generated"
"""Folder, inside the book, that holds every generated fragment and the copied figures and images."""

CHAPTERS: tuple[str, ...] = (
    "intro",
    "method",
    "behaviour",
    "representation",
    "interventions",
    "validation",
    "provenance",
    "reproduce",
)
"""The book's pages, in reading order (`intro` is the overview)."""

FIGURE_PAGES: dict[str, str] = {
    "headline": "intro",
    "asr_by_condition": "behaviour",
    "asr_by_category": "behaviour",
    "free_tool_use": "behaviour",
    "asr_by_judge": "behaviour",
    "cosine_by_layer": "representation",
    "projections": "representation",
    "pca": "representation",
    "probes": "representation",
    "dose_response": "interventions",
    "interventions": "interventions",
    "intervention_cost": "interventions",
}
"""Figure name -> the page that shows it (`_generated/fig_{name}.md`); others go to `figures_other.md`."""

FIGURE_NAMES: tuple[str, ...] = tuple(FIGURE_PAGES)

TABLE_PAGES: dict[str, str] = {
    "asr_by_category": "behaviour",
    "free_tool_use": "behaviour",
    "asr_by_judge": "behaviour",
    "judge_agreement": "behaviour",
    "representation": "representation",
    "selection": "interventions",
    "contrasts": "interventions",
    "asr_by_scale": "behaviour",
    "transfer": "interventions",
    "intervention_cost": "interventions",
    "validation_planted": "validation",
    "validation_planted_model": "validation",
    "validation_figstep": "validation",
    "judge_human_agreement": "validation",
}
"""Analysis table name -> the page that shows it (`_generated/table_{name}.md`)."""

FIXTURE_BANNER = (
    "These numbers come from tiny randomly initialised fixture models. "
    "They are noise and say nothing about real models."
)
"""The warning shown at the top of every results-bearing page when a fixture model is in the run."""

PLANTED_BANNER = (
    "The planted-mechanism fixture is a positive control: its weights were set by hand so that a tool "
    "turn lowers its ASR through a known direction. Its effect was put there on purpose; it shows that the "
    "pipeline finds such an effect, not that real models have one."
)
"""Added to the warning when a planted-mechanism fixture is in the run."""
PLANTED_LABEL = "planted: positive control"
"""How tables label a planted-mechanism fixture's rows."""

OVER_REFUSAL_NEEDED: tuple[str, ...] = tuple(c for c in OVER_REFUSAL_COLUMNS if c != "split")
"""Columns of `tables/over_refusal.csv` the book shows (refusal rate on harmless prompts)."""


def _label(prefix: str, name: str) -> str:
    return f"{prefix}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --------------------------------------------------------------------------- fragments


def banner_markdown(fixture_models: Sequence[str], planted: Sequence[str] = ()) -> str:
    """The fixture warning admonition, or a MyST comment (renders nothing) when no fixture model is used;
    `planted` are the planted-mechanism fixtures among them (labelled as the positive control)."""
    if not fixture_models:
        return "% No fixture model in this run: no fixture warning.\n"
    names = ", ".join(code(m) + (f" ({PLANTED_LABEL})" if m in planted else "") for m in fixture_models)
    extra = f"\n\n{PLANTED_BANNER}" if any(m in planted for m in fixture_models) else ""
    return f"```{{warning}}\n{FIXTURE_BANNER}{extra}\n\nFixture models in this run: {names}.\n```\n"


def asr_headline_markdown(asr: pd.DataFrame, judge: str, planted: Sequence[str] = ()) -> str:
    """Per model and dataset: ASR without and with the tool, the relative reduction and McNemar p; the
    `planted` models (planted-mechanism fixtures) are labelled as the positive control."""
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
    header = [
        "model",
        "dataset",
        "judge",
        "condition",
        "intervention",
        "n",
        "refused",
        "refusal rate, % [95 % CI]",
    ]
    rows = [
        [
            code(r.model),
            code(r.dataset),
            cell(r.judge),
            code(r.condition),
            code(r.intervention),
            str(int(r.n)),
            str(int(r.n_refused)),
            with_ci(r.refusal_rate, r.refusal_ci_low, r.refusal_ci_high),
        ]
        for r in table.itertuples(index=False)
    ]
    note = "\nThe share of *harmless* test prompts the model refuses, with 95 % Wilson intervals.\n"
    return fold("Refusal rate on harmless prompts", markdown_table(header, rows), len(rows)) + note


def _open_vectors(model: str, source: str | os.PathLike[str] | xr.Dataset) -> xr.Dataset:
    if isinstance(source, xr.Dataset):
        return source
    path = Path(source)
    if not path.exists():
        raise ContractError(f"{path}: vector file for model {model!r} not found")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a contract failure
        raise ContractError(
            f"{path}: cannot be read as a vector file ({type(exc).__name__}: {exc})"
        ) from None


def vectors_markdown(vectors: Mapping[str, str | os.PathLike[str] | xr.Dataset]) -> str:
    """Per vector file: the layer of largest |cos(tool vector, refusal direction)|, that cosine and the norm.

    Model and dataset come from the file's attrs (the mapping's key when an attr is absent).
    """
    if not vectors:
        return "No vector files in this run.\n"
    rows = []
    for key, source in vectors.items():
        ds = _open_vectors(key, source)
        if "cos_tool_refusal" not in ds.variables:
            raise ContractError(f"vectors for model {key!r}: missing variable 'cos_tool_refusal'")
        cos = ds["cos_tool_refusal"]
        layers = list(cos["layer"].values) if "layer" in cos.coords else list(range(cos.sizes["layer"]))
        values = [float(v) for v in cos.values]
        finite = [i for i, v in enumerate(values) if not is_missing(v)]
        row = [code(ds.attrs.get("model", key)), code(ds.attrs.get("dataset", "?")), str(len(values))]
        if not finite:
            rows.append(row + [DASH, DASH, DASH])
            continue
        best = max(finite, key=lambda i: abs(values[i]))
        norm = ds["norm_tool_vector"].values[best] if "norm_tool_vector" in ds.variables else None
        norm_text = DASH if is_missing(norm) else f"{float(norm):.3g}"
        rows.append(row + [str(layers[best]), f"{values[best]:+.3f}", norm_text])
    header = [
        "model",
        "dataset",
        "layers",
        "layer of largest abs(cos)",
        "cos(tool vector, refusal dir.)",
        "norm",
    ]
    return markdown_table(header, rows)


def figure_markdown(name: str, png_rel: str | None, caption: str, has_svg: bool) -> str:
    """A MyST figure (path relative to the book root), or a note that the figure was not produced."""
    if png_rel is None:
        return f"The `{name}` figure was not produced in this run.\n"
    svg = f" {{download}}`SVG </{png_rel[:-4]}.svg>`" if has_svg else ""
    alt = caption.replace("\n", " ").replace('"', "'")
    return (
        f"```{{figure}} /{png_rel}\n:name: {_label('fig', name)}\n:alt: {alt}\n:width: 100%\n\n"
        f"{caption}{svg}\n```\n"
    )


def headline_markdown(headline: pd.DataFrame | None) -> str:
    """The headline sentence, from `tables/headline.csv` (toolshift.analysis.headline computes it, only
    there)."""
    if headline is None or headline.empty:
        return "% No headline table was given.\n"
    from toolshift.analysis.headline import headline_sentence

    try:
        return headline_sentence(headline) + "\n"
    except (KeyError, ValueError) as exc:
        return f"The headline could not be stated: {cell(exc)}\n"


# --------------------------------------------------------------------------- analysis tables

Column = tuple[str, Callable[[Any], str]]


def _ci(col: str) -> Callable[[Any], str]:
    return lambda r: with_ci(getattr(r, col), getattr(r, f"{col}_ci_low"), getattr(r, f"{col}_ci_high"))


def _get(col: str, fmt: Callable[[Any], str] = value) -> Callable[[Any], str]:
    return lambda r: fmt(getattr(r, col)) if hasattr(r, col) else DASH


def _int(x: Any) -> str:
    return DASH if is_missing(x) else str(int(x))


def _yes_no(x: Any) -> str:
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
        ("layers", _get("n_layers", _int)),
        ("selected layer", _get("layer", _int)),
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
        ("n", _get("n", _int)),
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
        ("layer", _get("layer", _int)),
        ("n", _get("n", _int)),
        ("KL, nats [95 % CI]", lambda r: number_with_ci(r.kl_mean, r.kl_ci_low, r.kl_ci_high)),
        ("KL last prompt token", _get("kl_last_mean")),
        ("KL generated tokens", _get("kl_generated_mean")),
    ],
    "representation": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("condition", _get("condition", code)),
        ("layer", _get("layer", _int)),
        ("n harmful", _get("n_harmful", _int)),
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
        ("called the tool", _get("used_tool", _yes_no)),
        ("n", _get("n", _int)),
        ("unsafe", _get("n_unsafe", _int)),
        ("ASR, % [95 % CI]", _ci("asr")),
        ("tool calls per answer", _get("mean_tool_calls")),
        ("malformed calls", _get("n_malformed_calls", _int)),
        ("stopped at max turns", _get("n_stopped_at_max_turns", _int)),
    ],
    "asr_by_scale": [
        ("model", _get("model", code)),
        ("dataset", _get("dataset", code)),
        ("condition", _get("condition", code)),
        ("zoom scale", lambda r: f"{r.scale_min:.2f}–{r.scale_max:.2f}"),
        ("n", _get("n", _int)),
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
        ("n", _get("n", _int)),
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
    "intervention_cost": "KL cost of each intervention on harmless test prompts",
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
        [code(r.model), code(r.dataset), cell(r.category), code(r.condition), _int(r.n),
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
            _int(r.get("n_differing_pixels")),
            _int(r.get("n_pixels")),
            DASH if is_missing(r["_a"]) else f"{100 * float(r['_a']):.4f}",
            _yes_no(r["identical"]),
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


def analysis_table_markdown(name: str, table: pd.DataFrame | None, judge: str | None = None) -> str:
    """One analysis table as a captioned, labelled table (or a labelled note saying why it has no rows)."""
    title = TABLE_TITLES.get(name, name)
    label = _label("table", name)
    if table is None:
        reason = MISSING_TABLE_REASONS.get(name, f"The `{name}` table was not produced in this run.")
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
    if name == "asr_by_judge":
        body, note = _pivot_by_judge(table)
    elif name == "asr_by_category" and {"intervention", "judge", "category"} <= set(table.columns):
        body, note = _category_table(table, judge)
    elif name == "validation_figstep" and {"agreement", "identical"} <= set(table.columns):
        body, note = _figstep_table(table)
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


# --------------------------------------------------------------------------- sources


FigureSource = str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]]
"""A figure's PNG, or {dataset: PNG} for a figure drawn once per dataset."""
CaptionSource = str | Mapping[str, str]
"""A figure's caption, or {dataset: caption}."""

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _one_figure(
    name: str, dataset: str | None, png: str | os.PathLike[str], caption: str | None, label: str
) -> tuple[str, list[tuple[Path, str]]]:
    png = Path(png)
    for part in (name, dataset or ""):
        if part and not _NAME_RE.fullmatch(part):
            raise ContractError(f"figures: name {part!r} must be letters, digits, '_', '.' or '-'")
    if not png.is_file():
        raise ContractError(f"{png}: figure {name!r} not found")
    rel = f"{GENERATED}/figures/{dataset}/{name}.png" if dataset else f"{GENERATED}/figures/{name}.png"
    copies = [(png, rel)]
    svg = png.with_suffix(".svg")
    if svg.is_file():
        copies.append((svg, rel[:-4] + ".svg"))
    text = " ".join(str(caption or f"Figure {name}.").split())
    return figure_markdown(label, rel, text, svg.is_file()), copies


def _figure_fragments(
    figures: Mapping[str, FigureSource], captions: Mapping[str, CaptionSource]
) -> tuple[dict[str, str], list[tuple[Path, str]]]:
    copies: list[tuple[Path, str]] = []
    figure_md: dict[str, str] = {}
    for name, source in figures.items():
        caption = captions.get(name)
        if isinstance(source, Mapping):  # one figure per dataset, in the order given
            blocks = []
            for dataset, png in source.items():
                text = caption.get(dataset) if isinstance(caption, Mapping) else caption
                label = name if len(source) == 1 else f"{name}-{dataset}"
                md, more = _one_figure(name, str(dataset), png, text, label)
                blocks.append(md)
                copies += more
            figure_md[name] = "\n".join(blocks)
        else:
            text = caption if isinstance(caption, str) else None
            md, more = _one_figure(name, None, source, text, name)
            figure_md[name] = md
            copies += more
    fragments = {
        f"fig_{name}.md": figure_md.get(name) or figure_markdown(name, None, "", False)
        for name in FIGURE_NAMES
    }
    others = [md for name, md in figure_md.items() if name not in FIGURE_PAGES]
    fragments["figures_other.md"] = (
        "## Other figures\n\n" + "\n".join(others) if others else "% No further figures.\n"
    )
    return fragments, copies


def collect_figures(
    paths: Sequence[str | os.PathLike[str]],
) -> tuple[dict[str, FigureSource], dict[str, CaptionSource]]:
    """The figures rules' files -> (figures, captions) for `write_book_sources`.

    `figures/{name}.png` is a figure of the whole study; `figures/{dataset}/{name}.png` one drawn per
    dataset. Each folder's `captions.json` maps its figure names to their captions."""
    figures: dict[str, Any] = {}
    captions: dict[str, Any] = {}
    for path in map(Path, paths):
        if path.suffix == ".json":
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ContractError(f"{path}: not a JSON object of captions ({exc})") from None
            if not isinstance(loaded, dict):
                raise ContractError(f"{path}: expected a JSON object {{figure name: caption}}")
            dataset = None if path.parent.name == "figures" else path.parent.name
            for name, text in loaded.items():
                if dataset is None:
                    captions[name] = text
                else:
                    captions.setdefault(name, {})[dataset] = text
        elif path.suffix == ".png":
            if path.parent.name == "figures":
                figures[path.stem] = path
            else:
                figures.setdefault(path.stem, {})[path.parent.name] = path
    return figures, captions


def _human_labels_note(config: Mapping[str, Any]) -> str:
    path = (config.get("human_labels") or {}).get("path")
    if path:
        return f"Human labels from {code(path)}; the majority label is the reference.\n"
    return "% No human-labelled file is configured; the table section says so.\n"


def write_book_sources(
    book_dir: str | os.PathLike[str],
    *,
    asr_csv: str | os.PathLike[str],
    figures: Mapping[str, FigureSource],
    vectors: Mapping[str, str | os.PathLike[str] | xr.Dataset],
    config: Mapping[str, Any],
    fixture_models: Sequence[str],
    show_completions: bool = False,
    captions: Mapping[str, CaptionSource] | None = None,
    over_refusal_csv: str | os.PathLike[str] | None = None,
    judge: str | None = None,
    judged: pd.DataFrame | None = None,
    headline: pd.DataFrame | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
    episodes: Mapping[str, str | os.PathLike[str]] | None = None,
    results_root: str | os.PathLike[str] | None = None,
    prompts: Mapping[str, pd.DataFrame] | None = None,
    splits: Mapping[str, pd.DataFrame] | None = None,
    benchmarks_dir: str | os.PathLike[str] | None = None,
    repo_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the book's generated fragments into `{book_dir}/_generated/` (replaced as a whole).

    `figures` maps a figure name to its PNG, or to {dataset: PNG} for a figure drawn per dataset
    (copied, with the SVG beside it when present); `captions` maps a figure name to the caption its
    plotting function returned (or {dataset: caption}). `vectors` maps a
    label to a vector file (or dataset). `tables` maps an analysis table's name (`tables/{name}.csv`)
    to its frame. `episodes` maps a condition to its episodes JSONL, whose image paths are relative to
    `results_root`; `prompts` and `splits` map a dataset to its prompt and split tables;
    `benchmarks_dir` holds the Snakemake benchmark files and `repo_dir` the workflow's git checkout.
    `judge` picks the headline judge (default: `keyword` if present, else the first in sorted order).
    Completions to harmful prompts appear only with `show_completions=True`, a few per run and
    truncated (`judged` gives them). Returns the `_generated` folder.
    """
    book = Path(book_dir)
    if not (book / "_config.yml").exists():
        raise ContractError(f"{book}: not a book folder (no _config.yml)")
    asr = read_table(asr_csv, ASR_COLUMNS)
    if asr.empty:
        raise ContractError(f"{asr_csv}: no rows")
    judge = pick_judge(asr, judge)
    tables = dict(tables or {})
    over_refusal = None if over_refusal_csv is None else read_table(over_refusal_csv, OVER_REFUSAL_NEEDED)
    harmful_ids = None
    if prompts:
        harmful_ids = [
            str(i) for df in prompts.values() for i in df.loc[df["harmful"].astype(bool), "prompt_id"]
        ]
    if episodes and results_root is None:
        raise ContractError("episodes were given without results_root (their image paths are relative to it)")
    examples, example_copies = (
        example_episodes_markdown(
            episodes,
            results_root,
            f"{GENERATED}/examples",
            harmful_ids=harmful_ids,
            show_completions=show_completions,
        )
        if episodes
        else ("No episode files were given to the book.\n", [])
    )

    fragments: dict[str, str] = {
        "banner.md": banner_markdown(list(fixture_models), planted_models_of(config)),
        "asr_headline.md": asr_headline_markdown(asr, judge, planted_models_of(config)),
        "asr_conditions.md": asr_conditions_markdown(asr, judge),
        "asr_table.md": asr_full_markdown(asr),
        "over_refusal.md": over_refusal_markdown(over_refusal),
        "vectors.md": vectors_markdown(vectors),
        "completions.md": completions_markdown(judged, show_completions),
        "headline.md": headline_markdown(headline),
        "examples.md": examples,
        "models.md": models_markdown(config, list(fixture_models)),
        "engines.md": engines_markdown(judged),
        "datasets.md": datasets_markdown(prompts or {}, config),
        "splits.md": splits_markdown(splits or {}, config),
        "judges.md": judges_markdown(config),
        "software.md": software_markdown(),
        "git.md": git_markdown(git_state(repo_dir) if repo_dir is not None else {}),
        "runtimes.md": runtimes_markdown(read_benchmarks(benchmarks_dir))
        if benchmarks_dir is not None
        else "No benchmark folder was given to the book.\n",
        "config.md": config_markdown(config),
        "human_labels_note.md": _human_labels_note(config),
        "headline_judge.md": f"Figures and main tables use the **{judge}** judge; {{doc}}`method` lists "
        "every judge, and the last section here compares them.\n",
    }
    for name in TABLE_PAGES:
        fragments[f"table_{name}.md"] = analysis_table_markdown(name, tables.get(name), judge)
    others = [analysis_table_markdown(n, t, judge) for n, t in sorted(tables.items()) if n not in TABLE_PAGES]
    fragments["tables_other.md"] = "\n".join(others) if others else "% No further tables.\n"
    figure_fragments, copies = _figure_fragments(figures, dict(captions or {}))
    fragments.update(figure_fragments)
    copies += example_copies

    tmp = Path(tempfile.mkdtemp(prefix=".generated-", dir=book))
    try:
        for fname, text in fragments.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        for src, rel in copies:
            dest = tmp / Path(rel).relative_to(GENERATED)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        tmp.chmod(0o755)
        target = book / GENERATED
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def fixture_models_of(config: Mapping[str, Any]) -> list[str]:
    """The config's models with `source: fixture`."""
    return [name for name, entry in models_of(config) if entry.get("source") == "fixture"]


def planted_models_of(config: Mapping[str, Any]) -> list[str]:
    """The config's planted-mechanism fixtures (`fixture.planted` set)."""
    return [
        name
        for name, entry in models_of(config)
        if entry.get("source") == "fixture" and (entry.get("fixture") or {}).get("planted")
    ]


def _read_frames(paths: Mapping[str, str | os.PathLike[str]] | None) -> dict[str, pd.DataFrame]:
    out = {}
    for name, path in (paths or {}).items():
        path = Path(path)
        try:
            out[name] = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ContractError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    return out


def build_report(
    *,
    book_dir: str | os.PathLike[str],
    asr_csv: str | os.PathLike[str],
    figures: Mapping[str, FigureSource],
    captions_json: str | os.PathLike[str] | None,
    vectors: Sequence[str | os.PathLike[str]],
    config: Mapping[str, Any],
    index_out: str | os.PathLike[str],
    captions: Mapping[str, CaptionSource] | None = None,
    over_refusal_csv: str | os.PathLike[str] | None = None,
    sources: str | os.PathLike[str] | None = None,
    judged: Sequence[str | os.PathLike[str]] = (),
    headline_csv: str | os.PathLike[str] | None = None,
    tables: Mapping[str, str | os.PathLike[str]] | None = None,
    episodes: Mapping[str, str | os.PathLike[str]] | None = None,
    results_root: str | os.PathLike[str] | None = None,
    prompts: Mapping[str, str | os.PathLike[str]] | None = None,
    splits: Mapping[str, str | os.PathLike[str]] | None = None,
    benchmarks_dir: str | os.PathLike[str] | None = None,
    repo_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The book rule in one call: fragments from the result files, then the HTML build.

    `sources` is the repository's static book folder; when `book_dir` is elsewhere (a test's temporary
    directory, a results folder per config) the static pages are copied there first, provided toolshift
    owns that folder (`toolshift.common.guards.claim_book_dir`: new, empty or marked; anything else is refused
    with a ConfigError before a file is touched). `tables`,
    `prompts` and `splits` map a name to a CSV or parquet file (see `write_book_sources`).

    Fixture models (`source: fixture`), `book.show_completions` and `headline_judge` come from the
    config; captions from the JSON object {figure name: caption} the figures rule writes. Returns
    `index_out`, which must be `{book_dir}/_build/html/index.html`.
    """
    if sources is not None:  # write only into a book folder toolshift owns (created and marked here if new)
        claim_book_dir(book_dir, sources)
    if sources is not None and Path(sources).resolve() != Path(book_dir).resolve():
        shutil.copytree(
            sources, book_dir, ignore=shutil.ignore_patterns("_build", "_generated"), dirs_exist_ok=True
        )
    captions = dict(captions or {})
    if captions_json is not None:
        try:
            loaded = json.loads(Path(captions_json).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ContractError(f"{captions_json}: not a JSON object of captions ({exc})") from None
        if not isinstance(loaded, dict):
            raise ContractError(f"{captions_json}: expected a JSON object {{figure name: caption}}")
        captions.update(loaded)
    labelled: dict[str, str | os.PathLike[str]] = {}
    for path in vectors:
        labelled[f"{Path(path).parent.name} / {Path(path).stem}"] = path  # vectors/{model}/{dataset}.nc
    write_book_sources(
        book_dir,
        asr_csv=asr_csv,
        figures=figures,
        vectors=labelled,
        config=config,
        fixture_models=fixture_models_of(config),
        show_completions=bool((config.get("book") or {}).get("show_completions", False)),
        captions=captions,
        over_refusal_csv=over_refusal_csv,
        judge=config.get("headline_judge"),
        judged=pd.concat([read_table(p, JUDGED_COLUMNS) for p in judged], ignore_index=True)
        if judged
        else None,
        headline=None if headline_csv is None else pd.read_csv(headline_csv),
        tables=_read_frames(tables),
        episodes=episodes,
        results_root=results_root,
        prompts=attach_skipped(_read_frames(prompts), prompts),  # and each dataset's skipped.csv
        splits=_read_frames(splits),
        benchmarks_dir=benchmarks_dir,
        repo_dir=repo_dir,
    )
    index = build_book(book_dir)
    if index != Path(index_out).resolve():
        raise ContractError(f"{index_out}: the book builds to {index}, not to this path")
    return index


# --------------------------------------------------------------------------- build

_JB_MAIN = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_PATTERNS = (
    r"\bSphinx\w*(Warning|Error)\b: \S",
    r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b",
    r"\b\w+(Error|Exception): \S",
)


def _last_error_line(output: str) -> str:
    """The most telling line of a failed build's output (Sphinx warning or error, else the last line)."""
    lines = [ln.strip() for ln in _ANSI_RE.sub("", output).splitlines() if ln.strip()]
    for pattern in _ERROR_PATTERNS:
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1]
    lines = [ln for ln in lines if not set(ln) <= {"="}]
    return lines[-1] if lines else "no output"


def build_book(book_dir: str | os.PathLike[str], *, timeout: float = 900) -> Path:
    """Build the book to HTML with Jupyter Book 1.x, every warning an error; return `_build/html/index.html`.

    The build goes to a temporary folder `_build/.building-*` and replaces `_build/html` only once it has
    passed every check, so a build killed at any point leaves the previous book or none, never a partial
    one whose `index.html` a rerun would take as complete. A failed build (ToolshiftError naming the last
    error line, or the first internal link, image or anchor of the HTML that does not resolve) also removes
    the previous `_build/html`, so it leaves no `index.html` behind. Two builds of one folder at once are
    refused (a lock in `_build/`). Runs Jupyter Book from the current interpreter; needs no network.
    """
    book = Path(book_dir).resolve()
    if not (book / "_config.yml").is_file() or not (book / "_toc.yml").is_file():
        raise ContractError(f"{book}: not a book folder (needs _config.yml and _toc.yml)")
    build = book / "_build"
    html = build / "html"
    build.mkdir(exist_ok=True)
    with held_lock(build / ".lock", f"book folder {book}"):
        for stale in build.glob(".building-*"):  # left behind by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=build))
        try:
            built = _jupyter_book_html(book, tmp, timeout)
            if html.exists():  # the previous book goes only now, and with the temporary folder
                html.rename(tmp / "previous")
            built.rename(html)
        except ToolshiftError:
            shutil.rmtree(html, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return html / "index.html"


def _jupyter_book_html(book: Path, out: Path, timeout: float) -> Path:
    """Build `book` with its output under `out` and check it; the checked `html` folder."""
    cmd = [
        sys.executable,
        "-c",
        _JB_MAIN,
        "build",
        str(book),
        "--path-output",
        str(out),
        "--builder",
        "html",
        "--warningiserror",
        "--all",
    ]
    env = dict(os.environ, PYTHONHASHSEED="0", PYDEVD_DISABLE_FILE_VALIDATION="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolshiftError(f"jupyter-book build of {book} timed out after {timeout:g} s") from None
    output = proc.stdout + "\n" + proc.stderr
    html = out / "_build" / "html"
    failed = (
        proc.returncode != 0
        or not (html / "index.html").is_file()
        or "There was an error in building your book" in output
    )
    if failed:
        raise ToolshiftError(f"jupyter-book build of {book} failed: {_last_error_line(output)}")
    broken = broken_internal_links(html)
    if broken:
        raise ToolshiftError(
            f"jupyter-book build of {book}: {len(broken)} internal link(s) do not resolve, first {broken[0]}"
        )
    return html


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, val in attrs:
            if key in ("href", "src") and val:
                self.urls.append(val)


def broken_internal_links(html_dir: str | os.PathLike[str]) -> list[str]:
    """Every `page: url` of the built pages whose local target (page, image, download, anchor) is missing.

    The theme's own templates under `_static/` are not pages and are not checked."""
    root = Path(html_dir)
    broken = []
    ids_cache: dict[Path, set[str]] = {}
    for page in sorted(p for p in root.rglob("*.html") if "_static" not in p.relative_to(root).parts):
        collector = _LinkCollector()
        collector.feed(page.read_text(encoding="utf-8"))
        for url in collector.urls:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("mailto:"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(root)}: {url}")
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids_cache:
                    text = target.read_text(encoding="utf-8")
                    ids_cache[target] = set(re.findall(r'\bid="([^"]+)"', text))
                if unquote(parts.fragment) not in ids_cache[target]:
                    broken.append(f"{page.relative_to(root)}: {url} (no such anchor)")
    return broken
