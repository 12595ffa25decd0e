"""The overview's figure: the forest plot of the headline table (`tables/headline.csv`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from toolshift.analysis.headline import MEAN_MODEL
from toolshift.contracts import HEADLINE_COLUMNS, require_columns
from toolshift.errors import ContractError
from toolshift.report.figures.style import (
    CONDITION_PALETTE,
    INTERVENTION_COLOR,
    n_text,
    new_figure,
    save_figure,
    seaborn_style,
)


def plot_headline(headline: pd.DataFrame, out_png: str | Path) -> str:
    """Forest plot of the headline table: each model's relative ASR reduction (tool vs direct) and the
    mean over models, with their bootstrap CIs, one block per dataset. Returns the caption."""
    if not isinstance(headline, pd.DataFrame) or headline.empty:
        raise ContractError("headline table: no rows (expected rows of tables/headline.csv)")
    require_columns(headline, HEADLINE_COLUMNS, "headline table")
    labels, est, lo, hi, bold = [], [], [], [], []
    for dataset in dict.fromkeys(headline["dataset"]):
        block = headline[headline["dataset"] == dataset]
        block = pd.concat([block[block["model"] != MEAN_MODEL], block[block["model"] == MEAN_MODEL]])
        for r in block.itertuples(index=False):
            labels.append(f"{r.model} ({dataset})")
            est.append(r.rel_reduction)
            lo.append(r.rel_reduction_ci_low)
            hi.append(r.rel_reduction_ci_high)
            bold.append(r.model == MEAN_MODEL)
    est_a, lo_a, hi_a = (np.asarray(v, dtype=float) for v in (est, lo, hi))
    y = np.arange(len(labels))
    r0 = headline.iloc[0]
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(max(2.4, 1.2 + 0.42 * len(labels)))
        ax = fig.subplots()
        for i in range(len(labels)):
            colour = "black" if bold[i] else CONDITION_PALETTE.get(str(r0["condition"]), INTERVENTION_COLOR)
            if np.isfinite(lo_a[i]) and np.isfinite(hi_a[i]):
                ax.plot([lo_a[i], hi_a[i]], [y[i], y[i]], color=colour, linewidth=3 if bold[i] else 1.8)
            if np.isfinite(est_a[i]):
                ax.plot(
                    est_a[i],
                    y[i],
                    marker="D" if bold[i] else "o",
                    color=colour,
                    markersize=8 if bold[i] else 6,
                )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [textwrap.shorten(t, 60) for t in labels], fontsize="small")
        for tick, b in zip(ax.get_yticklabels(), bold, strict=True):
            tick.set_fontweight("bold" if b else "normal")
        ax.set_ylim(len(labels) - 0.5, -0.5)  # top to bottom, markers at the ends stay whole
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(f"relative ASR reduction, {r0['condition']} vs {r0['reference']}")
        ax.grid(axis="y", visible=False)
        caption = (
            f"Relative reduction of ASR from {r0['reference']} to {r0['condition']} on the {r0['split']} "
            f"harmful prompts (n = {n_text(headline.loc[headline['model'] != MEAN_MODEL, 'n'])} per model), "
            f"judged by the {r0['judge']} judge, per model and as the mean over models (diamonds, the "
            f"headline); lines are {100 * float(r0['conf']):g} % paired bootstrap confidence intervals "
            f"({int(r0['n_boot'])} resamples of the prompts within each model)."
        )
        save_figure(fig, out_png)
    return caption
