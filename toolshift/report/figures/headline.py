"""The overview's figure: the forest plot of the headline table (`tables/headline.csv`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, PercentFormatter

from toolshift.analysis.headline import MEAN_MODEL, POOLED
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


def _headline_rows(headline: pd.DataFrame) -> list[tuple[str, str, pd.Series]]:
    """(label, kind, row) in plotting order: against the first reference every model, the mean and the
    pooled row of each dataset; against the others only their mean and pooled rows (the summaries)."""
    out = []
    references = list(dict.fromkeys(headline["reference"]))
    for i, reference in enumerate(references):
        ref_rows = headline[headline["reference"] == reference]
        for dataset in dict.fromkeys(ref_rows["dataset"]):
            block = ref_rows[ref_rows["dataset"] == dataset]
            models = block[~block["model"].isin([MEAN_MODEL, POOLED])] if i == 0 else block.iloc[:0]
            for _, r in pd.concat(
                [models, block[block["model"] == MEAN_MODEL], block[block["model"] == POOLED]]
            ).iterrows():
                kind = r["model"] if r["model"] in (MEAN_MODEL, POOLED) else "model"
                suffix = "" if i == 0 else f", vs {reference}"
                out.append((f"{r['model']} ({dataset}{suffix})", kind, r))
    return out


def plot_headline(headline: pd.DataFrame, out_png: str | Path) -> str:
    """Forest plot of the headline table, relative (left) and absolute (right) reduction of ASR from the
    first reference (``direct``) to ``tool``: each model, the mean over models (diamonds) and the pooled
    estimate (squares) per dataset, with their bootstrap CIs; below, the mean and pooled rows against the
    other references (``tool_offered``). Returns the caption."""
    if not isinstance(headline, pd.DataFrame) or headline.empty:
        raise ContractError("headline table: no rows (expected rows of tables/headline.csv)")
    require_columns(headline, HEADLINE_COLUMNS, "headline table")
    rows = _headline_rows(headline)
    labels = [label for label, _, _ in rows]
    kinds = [kind for _, kind, _ in rows]
    y = np.arange(len(labels))
    r0 = headline.iloc[0]
    references = list(dict.fromkeys(headline["reference"]))
    axes_style, context = seaborn_style()
    with axes_style, context:
        fig = new_figure(max(2.4, 1.2 + 0.42 * len(labels)))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, measure, title, formatter in (
            (axes[0], "rel_reduction", "relative reduction", PercentFormatter(1.0, decimals=0)),
            (
                axes[1],
                "abs_reduction",
                "absolute reduction, ASR points",
                FuncFormatter(lambda x, _: f"{100 * x:.0f}"),
            ),
        ):
            for i, (_, kind, r) in enumerate(rows):
                est, lo, hi = (float(r[f"{measure}{s}"]) for s in ("", "_ci_low", "_ci_high"))
                summary = kind != "model"
                colour = (
                    "black" if summary else CONDITION_PALETTE.get(str(r0["condition"]), INTERVENTION_COLOR)
                )
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo, hi], [y[i], y[i]], color=colour, linewidth=3 if summary else 1.8)
                if np.isfinite(est):
                    marker = {MEAN_MODEL: "D", POOLED: "s"}.get(kind, "o")
                    ax.plot(est, y[i], marker=marker, color=colour, markersize=8 if summary else 6)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.xaxis.set_major_formatter(formatter)
            ax.set_xlabel(title)
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(y, [textwrap.shorten(t, 60) for t in labels], fontsize="small")
        for tick, kind in zip(axes[0].get_yticklabels(), kinds, strict=True):
            tick.set_fontweight("normal" if kind == "model" else "bold")
        axes[0].set_ylim(len(labels) - 0.5, -0.5)  # top to bottom, markers at the ends stay whole
        fig.suptitle(f"ASR reduction, {r0['condition']} vs {r0['reference']}", fontsize="medium")
        per_model = headline[
            (headline["reference"] == references[0]) & ~headline["model"].isin([MEAN_MODEL, POOLED])
        ]
        others = ", ".join(references[1:])
        caption = (
            f"Reduction of ASR from {r0['reference']} to {r0['condition']} on the {r0['split']} harmful "
            f"prompts (n = {n_text(per_model['n'])} per model), judged by the {r0['judge']} judge: relative "
            f"(left) and absolute in ASR points (right), per model, as the mean over models (diamonds, the "
            f"headline; {100 * float(r0['conf']):g} % intervals from {int(r0['n_boot'])} resamples of the "
            f"prompts within each model) and pooled over models and prompts (squares; intervals from a "
            f"crossed bootstrap that resamples the models and the prompts)"
            + (f"; the last rows compare {r0['condition']} with {others}." if others else ".")
        )
        save_figure(fig, out_png)
    return caption
