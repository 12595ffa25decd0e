"""The behaviour chapter's figures, drawn from the ASR tables: ASR by condition, by prompt category, under
every judge, and in the free condition by whether the model called the tool."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.patches
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from toolshift.contracts import require_columns
from toolshift.errors import ContractError
from toolshift.report.figures.style import (
    CONDITION_PALETTE,
    check_asr,
    check_conditions,
    condition_color,
    datasets_text,
    grid_shape,
    model_panels,
    n_text,
    new_figure,
    panel_title,
    rows_height,
    save_figure,
    seaborn_style,
)

# --------------------------------------------------------------------------- ASR by condition


def plot_asr_by_condition(asr: pd.DataFrame, out_png: str | Path, judge: str) -> str:
    """Bars of ASR per condition (condition rows of `tables/asr.csv`), one panel per model.

    Error bars are the table's 95 % Wilson intervals. Returns the figure's one-sentence caption.
    """
    check_asr(asr)
    rows = asr[(asr["intervention"] == "none") & (asr["judge"] == judge)]
    if rows.empty:
        judges = ", ".join(str(j) for j in pd.unique(asr["judge"]))
        raise ContractError(
            f"asr table: no condition rows (intervention 'none') for judge {judge!r}; "
            f"judges present: {judges}"
        )
    for c in pd.unique(rows["condition"]):
        condition_color(str(c))
    dup = rows.duplicated(["model", "dataset", "condition"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ContractError(
            f"asr table: duplicate row for model {r['model']!r}, dataset {r['dataset']!r}, "
            f"condition {r['condition']!r}, judge {judge!r}"
        )
    conditions = check_conditions(rows["condition"])
    panels = list(dict.fromkeys(zip(rows["model"], rows["dataset"], strict=True)))
    several_datasets = rows["dataset"].nunique() > 1
    nrows, ncols = grid_shape(len(panels))
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(rows_height(nrows, len(conditions), 0.32, 1.1, 0.6))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        ypos = np.arange(len(conditions))
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)].set_index("condition")
            sub = sub.reindex(conditions)
            have = sub["asr"].notna().to_numpy()
            vals = sub["asr"].to_numpy(dtype=float)
            low = np.clip(vals - sub["asr_ci_low"].to_numpy(dtype=float), 0, None)
            high = np.clip(sub["asr_ci_high"].to_numpy(dtype=float) - vals, 0, None)
            ax.barh(
                ypos[have],
                vals[have],
                xerr=np.vstack([low[have], high[have]]),
                color=[condition_color(c) for c, h in zip(conditions, have, strict=True) if h],
                edgecolor="white",
                error_kw={"ecolor": "black", "elinewidth": 1.2, "capsize": 3},
            )
            ax.set_title(panel_title(model, dataset, several_datasets), fontsize="medium")
            ax.set_xlim(0, 1.03)  # room for the caps of intervals that end at 100 %
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, conditions)
            ax.grid(axis="y", visible=False)
        axes[0].invert_yaxis()  # shared: the first condition on top in every panel
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.1)  # keeps '100%' and '0%' apart
        fig.supxlabel("ASR (share of harmful prompts judged unsafe)", fontsize="medium")
        caption = (
            f"Attack success rate (ASR) on the harmful prompts of {datasets_text(rows['dataset'])} "
            f"for each condition and model (n = {n_text(rows['n'])} prompts per bar), judged by the "
            f"{judge} judge; error bars are 95 % Wilson confidence intervals."
        )
        save_figure(fig, out_png)
    return caption


_JUDGE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")

_FREE_NEEDED = ("model", "dataset", "judge", "used_tool", "n", "asr", "asr_ci_low", "asr_ci_high")


def plot_category_heatmap(asr_by_category: pd.DataFrame, out_png: str | Path, judge: str) -> str:
    """ASR per prompt category (rows) and condition (columns), one heatmap per model and dataset.

    Reads ``tables/asr_by_category.csv`` rows with intervention ``none``. Returns the caption.
    """
    check_asr(asr_by_category)
    require_columns(asr_by_category, ("category",), "asr by category table")
    rows = asr_by_category[
        (asr_by_category["intervention"] == "none")
        & (asr_by_category["judge"] == judge)
        & (asr_by_category["category"] != "all")
    ]
    if rows.empty:
        raise ContractError(f"asr by category table: no per-category condition rows for judge {judge!r}")
    conditions = check_conditions(pd.unique(rows["condition"]))
    categories = sorted(pd.unique(rows["category"]).astype(str))
    panels = list(dict.fromkeys(zip(rows["model"], rows["dataset"], strict=True)))
    several = rows["dataset"].nunique() > 1
    nrows, ncols = grid_shape(len(panels), max_cols=3)
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(1.6 + nrows * (0.21 * len(categories) + 1.5))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        mesh = None
        for k, (ax, (model, dataset)) in enumerate(zip(axes, panels, strict=False)):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
            grid = sub.pivot_table(index="category", columns="condition", values="asr", aggfunc="first")
            grid = grid.reindex(index=categories, columns=conditions)
            mesh = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="rocket_r", aspect="auto")
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{100 * v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v > 0.6 else "black",
                    )
            ax.set_xticks(range(len(conditions)), conditions, rotation=45, ha="right", fontsize="x-small")
            ax.set_yticks(
                range(len(categories)),
                categories if k % ncols == 0 else [""] * len(categories),
                fontsize="x-small",
            )
            ax.grid(False)
            ax.set_title(panel_title(model, dataset, several), fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        if mesh is not None:
            bar = fig.colorbar(
                mesh,
                ax=axes.tolist(),
                location="bottom",
                shrink=0.5,
                aspect=40,
                format=PercentFormatter(1.0, 0),
            )
            bar.set_label("ASR", fontsize="small")
            bar.ax.tick_params(labelsize="x-small")
        caption = (
            "ASR per prompt category and condition on the harmful prompts of "
            f"{datasets_text(rows['dataset'])} (n = {n_text(rows['n'])} prompts per cell, numbers in %), "
            f"judged by the {judge} judge; point "
            "estimates (the Wilson intervals of each cell are in tables/asr_by_category.csv)."
        )
        save_figure(fig, out_png)
    return caption


# --------------------------------------------------------------------------- ASR under every judge


def plot_asr_by_judge(asr: pd.DataFrame, out_png: str | Path) -> str:
    """ASR per condition (intervention ``none``) under every judge of `tables/asr.csv`, one panel per model.

    Each condition is a row; its judges sit side by side (one marker shape per judge, filled with the
    condition's colour) with the table's 95 % Wilson intervals. Returns the caption.
    """
    check_asr(asr)
    rows = asr[asr["intervention"] == "none"]
    if rows.empty:
        raise ContractError("asr table: no condition rows (intervention 'none')")
    conditions = check_conditions(pd.unique(rows["condition"]))
    judges = sorted(str(j) for j in pd.unique(rows["judge"]))
    if len(judges) > len(_JUDGE_MARKERS):
        raise ContractError(f"asr table: {len(judges)} judges, at most {len(_JUDGE_MARKERS)} can be drawn")
    dup = rows.duplicated(["model", "dataset", "condition", "judge"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ContractError(
            f"asr table: duplicate row for model {r['model']!r}, dataset {r['dataset']!r}, "
            f"condition {r['condition']!r}, judge {r['judge']!r}"
        )
    panels, several = model_panels(rows)
    nrows, ncols = grid_shape(len(panels))
    step = 0.8 / len(judges)
    offsets = {j: (k - (len(judges) - 1) / 2) * step for k, j in enumerate(judges)}
    row_in = max(0.32, 0.11 * len(judges) + 0.06)
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(rows_height(nrows, len(conditions), row_in, 0.9, 1.0))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        ypos = np.arange(len(conditions))
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = rows[(rows["model"] == model) & (rows["dataset"] == dataset)]
            for judge in judges:
                s = sub[sub["judge"] == judge].set_index("condition").reindex(conditions)
                have = s["asr"].notna().to_numpy()
                if not have.any():
                    continue
                vals = s["asr"].to_numpy(dtype=float)[have]
                low = np.clip(vals - s["asr_ci_low"].to_numpy(dtype=float)[have], 0, None)
                high = np.clip(s["asr_ci_high"].to_numpy(dtype=float)[have] - vals, 0, None)
                y = ypos[have] + offsets[judge]
                ax.errorbar(vals, y, xerr=np.vstack([low, high]), fmt="none", ecolor="black", elinewidth=1)
                ax.scatter(
                    vals,
                    y,
                    marker=_JUDGE_MARKERS[judges.index(judge)],
                    s=30,
                    c=[condition_color(c) for c, h in zip(conditions, have, strict=True) if h],
                    edgecolors="black",
                    linewidths=0.6,
                    zorder=3,
                    label=judge,
                )
            ax.set_title(panel_title(model, dataset, several), fontsize="small")
            ax.set_xlim(-0.03, 1.03)
            ax.set_xticks([0, 0.5, 1])
            ax.set_xticks([0.25, 0.75], minor=True)
            ax.grid(axis="x", which="minor", linewidth=0.6)
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_yticks(ypos, conditions, fontsize="small")
            ax.set_ylim(len(conditions) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
            for y in ypos[1:]:
                ax.axhline(y - 0.5, color="#dddddd", linewidth=0.6)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.get_layout_engine().set(wspace=0.1)
        fig.supxlabel("ASR (share of harmful prompts judged unsafe)", fontsize="small")
        handles = [
            Line2D(
                [], [], marker=_JUDGE_MARKERS[k], color="#8c8c8c", markeredgecolor="black", linestyle="none"
            )
            for k in range(len(judges))
        ]
        fig.legend(
            handles,
            judges,
            loc="outside upper center",
            ncols=len(judges),
            fontsize="small",
            title="judge",
            title_fontsize="small",
        )
        caption = (
            f"ASR on the harmful prompts of {datasets_text(rows['dataset'])} for each condition and model "
            f"under each judge ({', '.join(judges)}; one marker shape per judge, side by side within a "
            f"condition; n = {n_text(rows['n'])} prompts per point); error bars are 95 % Wilson confidence "
            "intervals."
        )
        save_figure(fig, out_png)
    return caption


# --------------------------------------------------------------------------- free tool use


def _as_bool(values: pd.Series, what: str) -> pd.Series:
    mapping = {True: True, False: False, "True": True, "False": False, "true": True, "false": False}
    out = values.map(lambda v: mapping.get(v, mapping.get(str(v))))
    if out.isna().any():
        bad = values[out.isna()].iloc[0]
        raise ContractError(f"{what}: used_tool value {bad!r} is not a boolean")
    return out.astype(bool)


def plot_free_tool_use(free: pd.DataFrame, out_png: str | Path) -> str:
    """ASR of `free` runs split by whether the model called the tool (tables/free_tool_use.csv), per model
    and judge, with n on each bar and 95 % Wilson error bars.

    A group with no runs (e.g. a model that never calls the tool) gets no bar and a "none" mark, and the
    caption says which; an empty table (no free runs) gives a placeholder figure. Returns the caption.
    """
    if not isinstance(free, pd.DataFrame):
        raise ContractError(f"free tool use table: expected a pandas DataFrame, got {type(free).__name__}")
    require_columns(free, _FREE_NEEDED, "free tool use table")
    axes_style, context = seaborn_style()
    if free.empty:
        with axes_style, context:
            fig = new_figure(2.0)
            ax = fig.subplots()
            ax.set_axis_off()
            ax.text(
                0.5, 0.5, "no free-condition runs were judged", ha="center", va="center", fontsize="medium"
            )
            save_figure(fig, out_png)
        return (
            "No free-condition runs were judged (n = 0), so there is no ASR split by tool use to show, under "
            "any judge, and no confidence interval."
        )
    free = free.assign(used_tool=_as_bool(free["used_tool"], "free tool use table"))
    dup = free.duplicated(["model", "dataset", "judge", "used_tool"])
    if dup.any():
        r = free[dup].iloc[0]
        raise ContractError(
            f"free tool use table: duplicate row for model {r['model']!r}, dataset {r['dataset']!r}, "
            f"judge {r['judge']!r}, used_tool {r['used_tool']}"
        )
    judges = sorted(str(j) for j in pd.unique(free["judge"]))
    panels, several = model_panels(free)
    nrows, ncols = grid_shape(len(panels))
    colour = CONDITION_PALETTE["free"]
    groups = ((False, "did not call the tool", ""), (True, "called the tool", "///"))
    width = 0.38
    never: list[str] = []
    always: list[str] = []
    with axes_style, context:
        fig = new_figure(1.2 + 2.6 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, (model, dataset) in zip(axes, panels, strict=False):
            sub = free[(free["model"] == model) & (free["dataset"] == dataset)]
            name = f"{model} ({dataset})" if several else model
            if not sub["used_tool"].any():
                never.append(name)
            if sub["used_tool"].all():
                always.append(name)
            for g, (used, _label, hatch) in enumerate(groups):
                for x, judge in enumerate(judges):
                    xpos = x + (g - 0.5) * width
                    r = sub[(sub["judge"] == judge) & (sub["used_tool"] == used)]
                    if r.empty:
                        ax.text(
                            xpos,
                            0.02,
                            "none",
                            ha="center",
                            va="bottom",
                            fontsize="xx-small",
                            color="#555555",
                            style="italic",
                            rotation=90,
                        )
                        continue
                    r = r.iloc[0]
                    v, lo, hi = float(r["asr"]), float(r["asr_ci_low"]), float(r["asr_ci_high"])
                    ax.bar(
                        [xpos],
                        [v],
                        width=width * 0.95,
                        yerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]],
                        color=colour,
                        edgecolor="#444444",
                        linewidth=0.8,
                        hatch=hatch,
                        error_kw={"ecolor": "black", "elinewidth": 1.1, "capsize": 3},
                        label=f"{judge}|{used}",
                    )
                    ax.text(
                        xpos,
                        min(hi, 1.0) + 0.03,
                        f"n={int(r['n'])}",
                        ha="center",
                        va="bottom",
                        rotation=90,
                        fontsize="xx-small",
                    )
            ax.set_xticks(range(len(judges)), judges, fontsize="small")
            ax.set_xlim(-0.6, len(judges) - 0.4)
            ax.set_ylim(0, 1.32)  # room for the n labels above a bar at 100 %
            ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.tick_params(axis="y", labelsize="small")
            ax.grid(axis="x", visible=False)
            ax.set_title(panel_title(model, dataset, several), fontsize="small")
        for k in range(0, len(panels), ncols):
            axes[k].set_ylabel("ASR (free condition)", fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles = [
            matplotlib.patches.Patch(facecolor=colour, edgecolor="#444444", hatch=h, label=lab)
            for _u, lab, h in groups
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
        missing = []
        if never:
            missing.append(
                f"{', '.join(never)} never called the tool, so only the did-not-call bars are drawn"
            )
        if always:
            missing.append(f"{', '.join(always)} always called the tool, so only the called bars are drawn")
        split = ""
        if "split" in free.columns:
            labels = sorted(str(s) for s in pd.unique(free["split"]))
            split = f" ({'/'.join(labels)} split)" if labels != ["all"] else ""
        caption = (
            f"ASR of the free condition (the model may call the zoom_in tool) on the harmful prompts of "
            f"{datasets_text(free['dataset'])}{split}, split by whether the model called the tool, per "
            f"model and judge ({', '.join(judges)}; n = {n_text(free['n'])} runs per bar, each bar "
            "labelled with its n); error bars are 95 % Wilson confidence intervals, and the split is the "
            "model's own choice, so the comparison is correlational"
            + (f"; {'; '.join(missing)}" if missing else "")
            + "."
        )
        save_figure(fig, out_png)
    return caption
