"""The interventions chapter's ASR figures: the dose-response curve (`add_a{alpha}` and its random-vector
controls) and the ablation/subtraction bars. Intervention ids are read by
`toolshift.analysis.interventions.parse_intervention_id` (`intervention_spec`), nowhere else."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from toolshift.analysis.interventions import (
    MIN_RANDOM_SEEDS,
    NO_INTERVENTION,
    InterventionSpec,
    parse_intervention_id,
)
from toolshift.contracts import require_columns
from toolshift.errors import ConfigError, ContractError
from toolshift.report.figures.style import (
    CONDITION_PALETTE,
    INTERVENTION_COLOR,
    RANDOM_COLOR,
    check_asr,
    datasets_text,
    grid_shape,
    model_panels,
    n_text,
    new_figure,
    panel_title,
    pick_judge,
    rows_for_judge,
    save_figure,
    seaborn_style,
    single_row,
)

# --------------------------------------------------------------------------- intervention ids and hatching


INTERVENTION_HATCHES: dict[str, str] = {
    "none": "",
    "add": "///",
    "random": "...",
    "subtract": "\\\\\\",
    "ablate": "xxx",
    "transfer": "---",
    "ablate_refusal": "ooo",
}
"""Hatching per intervention kind (the bar keeps its base condition's colour); `none` is solid."""

HATCH_COLOR = "white"
"""Colour of the hatching drawn over a condition-coloured bar."""

_SELECTION_NEEDED = ("model", "dataset", "alpha")


DOSE_KINDS: tuple[str, ...] = ("add", "random")
"""The kinds whose runs are points of the dose-response curve (`add_a{alpha}`, `random_a{alpha}_s{seed}`)."""


def intervention_spec(intervention: str) -> InterventionSpec | None:
    """The spec of an intervention id, read by `toolshift.analysis.interventions.parse_intervention_id` (the
    one parser of ids); None for `none` and for anything that is not a canonical id."""
    if intervention == NO_INTERVENTION:
        return None
    try:
        return parse_intervention_id(str(intervention))
    except ConfigError:
        return None


def dose_spec(intervention: str) -> InterventionSpec | None:
    """The spec of an `add_a{alpha}` or `random_a{alpha}_s{seed}` id; None for any other id."""
    spec = intervention_spec(intervention)
    return spec if spec is not None and spec.kind in DOSE_KINDS else None


def intervention_kind(intervention: str) -> str:
    """`none`, or the kind of an intervention id (add, subtract, ablate, random, transfer, ablate_refusal);
    else `other`."""
    if intervention == NO_INTERVENTION:
        return NO_INTERVENTION
    spec = intervention_spec(intervention)
    return "other" if spec is None else spec.kind


# --------------------------------------------------------------------------- dose response


def plot_dose_response(asr: pd.DataFrame, out_png: str | Path, judge: str | None = None) -> str:
    """ASR against alpha for the `add_a{alpha}` interventions, with random-vector controls and baselines.

    One panel per model: the `add` curve with its 95 % Wilson band, the `random_a{alpha}_s{seed}`
    controls as points with Wilson error bars, and the `direct` (and `tool`) ASR as horizontal lines.
    `judge` defaults to `keyword` if present, else the first judge in sorted order. Returns the caption.
    """
    check_asr(asr)
    judge = pick_judge(asr, judge)
    rows = asr[asr["judge"] == judge].copy()
    doses = rows["intervention"].map(dose_spec)
    rows["kind"] = doses.map(lambda s: s.kind if s else None)
    rows["alpha"] = doses.map(lambda s: s.alpha if s else np.nan)
    rows["seed"] = doses.map(lambda s: s.seed if s else None)
    add = rows[rows["kind"] == "add"]
    if add.empty:
        raise ContractError(f"asr table: no 'add_a{{alpha}}' intervention rows for judge {judge!r}")
    rand = rows[rows["kind"] == "random"]
    base = rows[rows["intervention"] == "none"]
    panels = list(dict.fromkeys(zip(add["model"], add["dataset"], strict=True)))
    several_datasets = add["dataset"].nunique() > 1
    nrows, ncols = grid_shape(len(panels))
    seeds = sorted({int(s) for s in rand["seed"]})
    spread = float(np.ptp(add["alpha"])) or 1.0
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(0.9 + 3.2 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, (model, dataset) in zip(axes, panels, strict=False):

            def pick(df: pd.DataFrame, model: str = model, dataset: str = dataset) -> pd.DataFrame:
                return df[(df["model"] == model) & (df["dataset"] == dataset)]

            for cond, ls in (("direct", "--"), ("tool", ":")):
                b = pick(base)[pick(base)["condition"] == cond]
                if len(b):
                    ax.axhline(
                        float(b["asr"].iloc[0]),
                        color=CONDITION_PALETTE[cond],
                        linestyle=ls,
                        linewidth=2,
                        label=f"{cond} (no intervention)",
                    )
            a = pick(add).sort_values("alpha")
            ax.fill_between(
                a["alpha"],
                a["asr_ci_low"],
                a["asr_ci_high"],
                color=INTERVENTION_COLOR,
                alpha=0.15,
                linewidth=0,
            )
            ax.plot(
                a["alpha"],
                a["asr"],
                color=INTERVENTION_COLOR,
                marker="o",
                linewidth=2,
                label="direct + α·tool vector",
            )
            r = pick(rand)
            if len(r):
                by_alpha = r.groupby("alpha")["asr"].agg(["min", "max", "mean", "size"]).sort_index()
                banded = by_alpha[by_alpha["size"] >= 2]
                if len(banded) >= 2:
                    ax.fill_between(
                        banded.index,
                        banded["min"],
                        banded["max"],
                        facecolor="none",
                        edgecolor=RANDOM_COLOR,
                        hatch="///",
                        linewidth=0.8,
                        label="direct + α·random vector: range over seeds",
                    )
                    ax.plot(
                        banded.index,
                        banded["mean"],
                        color=RANDOM_COLOR,
                        linestyle="--",
                        linewidth=1.5,
                        label="direct + α·random vector: mean over seeds",
                    )
                offsets = r["seed"].map(
                    lambda s: (seeds.index(int(s)) - (len(seeds) - 1) / 2) * 0.015 * spread
                )
                ax.plot(
                    r["alpha"] + offsets,
                    r["asr"],
                    "x",
                    color=RANDOM_COLOR,
                    markersize=6,
                    label="direct + α·random vector (norm-matched), one seed",
                )
            ax.set_title(panel_title(model, dataset, several_datasets), fontsize="medium")
            ax.set_ylim(-0.03, 1.03)  # points at 0 % and 100 % stay whole
            ax.set_yticks(np.linspace(0, 1, 6))
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_xlabel("α (multiple of the tool vector)")
        axes[0].set_ylabel("ASR")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles, labels = {}, []
        for ax in axes[: len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
        fig.legend(
            [handles[lab] for lab in labels], labels, loc="outside lower center", ncols=2, fontsize="small"
        )
        used = pd.concat([add, rand]) if len(rand) else add
        few = (
            f" (fewer than {MIN_RANDOM_SEEDS} seeds: a thin control)"
            if 0 < len(seeds) < MIN_RANDOM_SEEDS
            else ""
        )
        seeds_text = (
            f"crosses are norm-matched random vectors (seeds {', '.join(str(s) for s in seeds)}{few}), the "
            "hatched band their range over seeds and the dashed grey line their mean at each α"
            if seeds
            else "no random-vector controls were run"
        )
        caption = (
            f"ASR on the harmful prompts of {datasets_text(add['dataset'])} when α times the tool vector "
            f"is added to direct runs (n = {n_text(used['n'])} prompts per point), judged by the {judge} "
            "judge; "
            f"the shaded band is the 95 % Wilson confidence interval of the tool-vector curve, {seeds_text}, "
            "and the horizontal lines are the direct and tool ASR without intervention."
        )
        save_figure(fig, out_png)
    return caption


# --------------------------------------------------------------------------- ablation and subtraction


def _selected_alphas(
    selection: pd.DataFrame | None, panels: list[tuple[str, str]], judge: str
) -> dict[tuple[str, str], float]:
    if selection is None:
        return dict.fromkeys(panels, 1.0)
    if not isinstance(selection, pd.DataFrame):
        raise ContractError(f"selection table: expected a pandas DataFrame, got {type(selection).__name__}")
    require_columns(selection, _SELECTION_NEEDED, "selection table")
    out = {}
    for model, dataset in panels:
        sel = selection[(selection["model"] == model) & (selection["dataset"] == dataset)]
        if len(sel) > 1 and "judge" in sel.columns and (sel["judge"] == judge).any():
            sel = sel[sel["judge"] == judge]
        row = single_row(sel, f"selection table, model {model!r}, dataset {dataset!r}")
        if row is None:
            raise ContractError(
                f"selection table: no row for model {model!r}, dataset {dataset!r} (expected its alpha)"
            )
        alpha = float(row["alpha"])
        # no alpha met the validation criteria (`none_qualifies`): show alpha = 1, the average tool shift
        out[(model, dataset)] = alpha if math.isfinite(alpha) else 1.0
    return out


def _alpha_rows(rows: pd.DataFrame, kind: str, alpha: float) -> pd.DataFrame:
    doses = rows["intervention"].map(dose_spec)
    keep = doses.map(
        lambda s: s is not None and s.kind == kind and math.isclose(s.alpha, alpha, abs_tol=1e-9)
    )
    return rows[keep.to_numpy(dtype=bool)]


def _hatch_handles(kinds: list[str], labels: Mapping[str, str]) -> list[matplotlib.patches.Patch]:
    return [
        matplotlib.patches.Patch(
            facecolor="#8c8c8c", edgecolor=HATCH_COLOR, hatch=INTERVENTION_HATCHES[k], label=labels[k]
        )
        for k in kinds
    ]


def plot_interventions(
    asr: pd.DataFrame, out_png: str | Path, judge: str, selection: pd.DataFrame | None = None
) -> str:
    """Ablation and subtraction: ASR of direct and tool runs with and without each intervention, per model.

    Bars, top to bottom: direct; direct + α·tool vector (α from `selection`, i.e. tables/selection.csv,
    else 1, and 1 where no α met the selection criteria); the mean over seeds of direct + α·random vector
    (error bar: range over seeds); tool; tool − tool vector (subtract); tool with the tool direction
    ablated. Colour is the base condition's, hatching the intervention; other error bars are the table's
    95 % Wilson intervals. Missing bars (an intervention not run) are marked "not run". Returns the caption.
    """
    rows = rows_for_judge(asr, judge)
    kinds = rows["intervention"].map(intervention_kind)
    if not kinds.isin(["add", "subtract", "ablate"]).any():
        raise ContractError(
            f"asr table: no add_a{{alpha}}, subtract or ablate intervention rows for judge {judge!r}"
        )
    panels, several = model_panels(rows[kinds != "none"])
    alphas = _selected_alphas(selection, panels, judge)
    slots = ("direct", "add", "random", "tool", "subtract", "ablate")
    slot_labels = {
        "direct": "direct",
        "add": "direct + α·tool vec.",
        "random": "direct + α·random vec.",
        "tool": "tool",
        "subtract": "tool − tool vec.",
        "ablate": "tool, tool dir. ablated",
    }
    base_of = {"direct": "direct", "add": "direct", "random": "direct", "tool": "tool"}
    base_of |= {"subtract": "tool", "ablate": "tool"}
    kind_of = {"direct": "none", "tool": "none"} | {k: k for k in ("add", "random", "subtract", "ablate")}
    ns: list[float] = []
    seed_counts: set[int] = set()
    missing_random: list[str] = []
    ypos = np.arange(len(slots))
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(1.3 + grid_shape(len(panels))[0] * (0.34 * len(slots) + 1.0))
        nrows, ncols = grid_shape(len(panels))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
            alpha = alphas[(model, dataset)]
            where = f"asr table, model {model!r}, dataset {dataset!r}"
            for y, slot in zip(ypos, slots, strict=True):
                cond = sub[sub["condition"] == base_of[slot]]
                colour = CONDITION_PALETTE[base_of[slot]]
                if slot in ("direct", "tool"):
                    picked = cond[cond["intervention"] == "none"]
                elif slot in ("subtract", "ablate"):
                    picked = cond[cond["intervention"] == slot]
                else:
                    picked = _alpha_rows(cond, slot, alpha)
                if picked.empty:
                    if slot == "random":
                        missing_random.append(model)
                    ax.text(
                        0.02, y, "not run", va="center", fontsize="x-small", color="#555555", style="italic"
                    )
                    continue
                if slot == "random":
                    vals = picked["asr"].to_numpy(dtype=float)
                    value, lo, hi = float(vals.mean()), float(vals.min()), float(vals.max())
                    seed_counts.add(len(picked))
                else:
                    r = single_row(picked, f"{where}, {slot_labels[slot]}")
                    value, lo, hi = float(r["asr"]), float(r["asr_ci_low"]), float(r["asr_ci_high"])
                ns.extend(picked["n"].tolist())
                ax.barh(
                    [y],
                    [value],
                    xerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]],
                    color=colour,
                    edgecolor=HATCH_COLOR,
                    linewidth=0,
                    hatch=INTERVENTION_HATCHES[kind_of[slot]],
                    error_kw={"ecolor": "black", "elinewidth": 1.2, "capsize": 3},
                    label=slot,
                )
            title = f"{model} (α = {alpha:g})"
            ax.set_title(panel_title(title, dataset, several), fontsize="small")
            ax.set_xlim(0, 1.02)
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, [slot_labels[s] for s in slots], fontsize="small")
            ax.grid(axis="y", visible=False)
            ax.axhline(2.5, color="#999999", linewidth=0.8)
        axes[0].invert_yaxis()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.1)
        fig.supxlabel("ASR (share of harmful prompts judged unsafe)", fontsize="small")
        legend_labels = {
            "none": "no intervention",
            "add": "+ α·tool vector",
            "random": "+ α·random vector (mean over seeds)",
            "subtract": "− tool vector",
            "ablate": "tool direction ablated",
        }
        colour_handles = [
            matplotlib.patches.Patch(facecolor=CONDITION_PALETTE[c], label=f"base: {c}")
            for c in ("direct", "tool")
        ]
        fig.legend(
            handles=colour_handles + _hatch_handles(list(legend_labels), legend_labels),
            loc="outside upper center",
            ncols=4,
            fontsize="x-small",
            handlelength=2.6,
            handleheight=1.4,
        )
        values = sorted(set(alphas.values()))
        source = "selected on the validation split" if selection is not None else "default, no selection"
        alpha_text = (
            f"α = {values[0]:g} ({source})"
            if len(values) == 1
            else f"α {source} per model (shown in each panel title)"
        )
        seeds = "/".join(str(s) for s in sorted(seed_counts))
        random_text = (
            f"the random-vector bar is the mean over {seeds} norm-matched seeds with their range as error bar"
            if seed_counts
            else "no random-vector control was run at that α"
        )
        if seed_counts and missing_random:
            random_text += f" (none at that α for {', '.join(dict.fromkeys(missing_random))})"
        caption = (
            f"ASR on the harmful prompts of {datasets_text(rows['dataset'])} for direct and tool runs "
            f"without and with an intervention at the tool vector's layer ({alpha_text}), per model "
            f"(n = {n_text(ns)} prompts per run), judged by the {judge} judge; colour is the base condition "
            f"and hatching the intervention, {random_text}, and the other error bars are 95 % Wilson "
            "confidence intervals."
        )
        save_figure(fig, out_png)
    return caption
