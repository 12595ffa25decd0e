"""The interventions chapter's cost figure: the KL cost of each intervention on harmless prompts against
the ASR change it buys."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from toolshift.contracts import require_columns
from toolshift.errors import ContractError
from toolshift.report.figures.interventions import dose_spec, intervention_kind
from toolshift.report.figures.style import (
    CONDITION_PALETTE,
    RANDOM_COLOR,
    condition_color,
    datasets_text,
    grid_shape,
    model_panels,
    n_text,
    new_figure,
    panel_title,
    plot_not_drawn,
    rows_for_judge,
    save_figure,
    seaborn_style,
    single_row,
)

_COST_NEEDED = ("model", "dataset", "intervention", "condition", "n", "kl_mean", "kl_ci_low", "kl_ci_high")


# --------------------------------------------------------------------------- intervention cost


COST_GROUPS: dict[str, str] = {
    "covrandom_subtract": "covrandom_remove",
    "covrandom_ablate": "covrandom_remove",
}
"""Intervention kinds drawn with one marker in the cost figure."""


def cost_group(intervention: str) -> str:
    """The marker group of an intervention id in the cost figure: its kind, or its COST_GROUPS entry."""
    kind = intervention_kind(intervention)
    return COST_GROUPS.get(kind, kind)


def plot_intervention_cost(cost: pd.DataFrame, asr: pd.DataFrame, out_png: str | Path, judge: str) -> str:
    """What each intervention costs (mean next-token KL on harmless test prompts, the test rows of
    tables/intervention_cost.csv) against the ASR change it buys (intervened ASR minus its base
    condition's ASR), one panel per model.

    Horizontal bars: the cost table's 95 % bootstrap CI of the mean KL; vertical bars: the intervened
    run's 95 % Wilson interval shifted by the base ASR. Random-vector controls are grey crosses.
    Returns the caption.
    """
    if not isinstance(cost, pd.DataFrame):
        raise ContractError(
            f"intervention cost table: expected a pandas DataFrame, got {type(cost).__name__}"
        )
    require_columns(cost, _COST_NEEDED, "intervention cost table")
    if cost.empty:  # the KL cost is measured on harmless prompts: a dataset without them has none
        return plot_not_drawn(
            out_png,
            "no KL cost rows: the cost of an intervention is measured on harmless validation and test "
            "prompts, and this dataset has none (it borrows its refusal direction; see the datasets table).",
        )
    if "split" in cost.columns and (cost["split"] == "test").any():
        cost = cost[cost["split"] == "test"]  # the reported rows; the validation ones bound alpha
    rows = rows_for_judge(asr, judge)
    points = []
    unmatched = 0
    for r in cost.itertuples(index=False):
        key = (rows["model"] == r.model) & (rows["dataset"] == r.dataset) & (rows["condition"] == r.condition)
        where = f"asr table, model {r.model!r}, dataset {r.dataset!r}, condition {r.condition!r}"
        treated = single_row(
            rows[key & (rows["intervention"] == r.intervention)], f"{where}, {r.intervention}"
        )
        base = single_row(rows[key & (rows["intervention"] == "none")], f"{where}, none")
        if treated is None or base is None or not math.isfinite(float(r.kl_mean)):
            unmatched += 1
            continue
        condition_color(str(r.condition))
        delta = float(treated["asr"]) - float(base["asr"])
        dose = dose_spec(str(r.intervention))
        points.append(
            {
                "model": str(r.model),
                "dataset": str(r.dataset),
                "condition": str(r.condition),
                "kind": cost_group(str(r.intervention)),
                "alpha": dose.alpha if dose else np.nan,
                "kl": float(r.kl_mean),
                "kl_lo": float(r.kl_ci_low),
                "kl_hi": float(r.kl_ci_high),
                "delta": delta,
                "d_lo": float(treated["asr_ci_low"]) - float(base["asr"]),
                "d_hi": float(treated["asr_ci_high"]) - float(base["asr"]),
                "n_cost": int(r.n),
                "n_asr": int(treated["n"]),
            }
        )
    if not points:
        raise ContractError(
            f"intervention cost table: none of its {len(cost)} rows has a matching intervention and base "
            f"row in the asr table for judge {judge!r}"
        )
    pts = pd.DataFrame(points)
    panels, several = model_panels(pts)
    nrows, ncols = grid_shape(len(panels))
    styles = {
        "add": {"marker": "o", "label": "direct + α·tool vector (line: increasing α)"},
        "random": {"marker": "x", "label": "direct + α·random vector (control), one seed"},
        "subtract": {"marker": "v", "label": "tool − tool vector"},
        "ablate": {"marker": "s", "label": "tool, tool direction ablated"},
        "transfer": {"marker": "D", "label": "direct + α·other dataset's tool vector"},
        "ablate_refusal": {"marker": "*", "label": "refusal direction ablated (colour: its condition)"},
        "covrandom": {"marker": "+", "label": "direct + α·covariance-random vector (control)"},
        "covrandom_remove": {"marker": "X", "label": "tool, covariance-random direction removed"},
        "shift": {"marker": "^", "label": "direct + α·a control's shift, norm-matched"},
        "relative": {"marker": ">", "label": "direct + α·tool vector relative to a control"},
        "add_orth": {"marker": "<", "label": "direct + α·tool vector's part orthogonal to refusal dir."},
        "other": {"marker": "P", "label": "other intervention"},
    }
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(1.5 + 2.8 * nrows)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        shown: list[str] = []
        for k, (ax, (model, dataset)) in enumerate(zip(axes, panels, strict=False)):
            sub = pts[(pts["model"] == model) & (pts["dataset"] == dataset)]
            add = sub[sub["kind"] == "add"].sort_values("alpha")
            if len(add) > 1:
                ax.plot(add["kl"], add["delta"], color=CONDITION_PALETTE["direct"], linewidth=1, zorder=2)
            for kind, style in styles.items():
                s = sub[sub["kind"] == kind]
                if s.empty:
                    continue
                colour = RANDOM_COLOR if kind == "random" else [CONDITION_PALETTE[c] for c in s["condition"]]
                xerr = np.vstack(
                    [np.clip(s["kl"] - s["kl_lo"], 0, None), np.clip(s["kl_hi"] - s["kl"], 0, None)]
                )
                yerr = np.vstack(
                    [np.clip(s["delta"] - s["d_lo"], 0, None), np.clip(s["d_hi"] - s["delta"], 0, None)]
                )
                ax.errorbar(
                    s["kl"],
                    s["delta"],
                    xerr=xerr,
                    yerr=yerr,
                    fmt="none",
                    ecolor="#777777",
                    elinewidth=0.8,
                    zorder=1,
                )
                ax.scatter(
                    s["kl"],
                    s["delta"],
                    marker=style["marker"],
                    c=colour,
                    s=36,
                    edgecolors=None if kind == "random" else "black",
                    linewidths=0.6,
                    zorder=3,
                    label=kind,
                )
                shown.append(kind)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xlim(left=0)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            ax.xaxis.get_offset_text().set_fontsize("x-small")
            ax.tick_params(labelsize="small")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_title(panel_title(model, dataset, several), fontsize="small")
            if k // ncols == nrows - 1 or k + ncols >= len(panels):
                ax.set_xlabel("mean KL on harmless prompts (nats)", fontsize="small")
        axes[0].set_ylabel("ASR change vs. no intervention", fontsize="small")
        for k in range(0, len(panels), ncols):
            axes[k].set_ylabel("ASR change vs. no intervention", fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        kinds = [k for k in styles if k in shown]
        handles = [
            Line2D(
                [],
                [],
                marker=styles[k]["marker"],
                linestyle="none",
                color=RANDOM_COLOR
                if k == "random"
                else "#8c8c8c"
                if k == "ablate_refusal"
                else CONDITION_PALETTE[
                    "tool" if k in ("subtract", "ablate", "covrandom_remove") else "direct"
                ],
                markeredgecolor=RANDOM_COLOR if k == "random" else "black",
            )
            for k in kinds
        ]
        fig.legend(
            handles,
            [styles[k]["label"] for k in kinds],
            loc="outside lower center",
            ncols=2,
            fontsize="x-small",
        )
        skipped = f"; {unmatched} cost rows without a matching ASR row are left out" if unmatched else ""
        caption = (
            "Cost of each intervention, the mean next-token KL divergence between the unhooked and hooked "
            f"model on harmless prompts (n = {n_text(pts['n_cost'])} per point), against the ASR change it "
            f"buys on the harmful prompts of {datasets_text(pts['dataset'])} (intervened minus the base "
            f"condition without intervention, n = {n_text(pts['n_asr'])}), judged by the {judge} judge, "
            "per model; horizontal bars are 95 % bootstrap confidence intervals of the mean KL, vertical "
            "bars the 95 % Wilson interval of the intervened ASR (the base ASR's own uncertainty not "
            f"included), grey crosses the random-vector controls{skipped}."
        )
        save_figure(fig, out_png)
    return caption
