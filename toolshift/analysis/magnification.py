"""ASR by zoom magnification: does the effect of the tool depend on how much the zoom enlarges?

Each episode with a zoom box records the zoom's scale (`meta.zoom_scale`, copied into the responses'
`zoom_scale` column): the returned image's width over the crop's width. The scale is a property of the
prompt's image and the bbox policy, the same in every condition of a prompt. This table bins the
harmful prompts of each (model, dataset, judge) by that scale (quantile bins, at most `n_bins`, edges
from the prompts' own scales) and reports, per zoom condition and bin, the ASR of the condition and of
`direct` on the same prompts, with Wilson intervals and the exact McNemar test, and per condition a
trend test over all its prompts: Spearman's rho between the scale and the paired change in the verdict
(unsafe under the condition minus unsafe under `direct`, in {-1, 0, 1}), with its p-value. A rho near 0
says the condition's effect does not depend on magnification within the range the run covers (the
`scale_min`/`scale_max` columns); no row means no condition of the run shows the zoom. Only the
conditions that show the zoom crop (`toolshift.episodes.build.ZOOM_CONDITIONS`: `tool`, `image_no_tool`) are
broken down: the overrides and `text_trail` have the box but show other content or none.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from toolshift.analysis.interventions import NO_INTERVENTION
from toolshift.analysis.stats import mcnemar_exact, wilson_ci
from toolshift.contracts import ASR_BY_SCALE_COLUMNS, require_columns
from toolshift.datasets.splits import ALL, filter_split
from toolshift.episodes.build import ZOOM_CONDITIONS

REFERENCE = "direct"


def scale_bins(scales: np.ndarray, n_bins: int = 3) -> np.ndarray:
    """Bin index (0 ..) of each scale: quantile bins with edges from the scales themselves; equal scales
    always share a bin (so fewer than `n_bins` bins when the scales take fewer values)."""
    scales = np.asarray(scales, dtype=np.float64)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if scales.size == 0:
        return np.zeros(0, dtype=int)
    edges = np.unique(np.quantile(scales, np.linspace(0, 1, n_bins + 1)[1:-1]))
    index = np.searchsorted(edges, scales, side="right")
    return np.unique(index, return_inverse=True)[1].reshape(-1)  # numbered 0, 1, ... without gaps


def _trend(scales: np.ndarray, change: np.ndarray) -> tuple[float, float]:
    if scales.size < 3 or np.ptp(scales) == 0 or np.ptp(change) == 0:
        return (math.nan, math.nan)
    rho, p = spearmanr(scales, change)
    return (float(rho), float(p))


def asr_by_scale_table(
    judged: pd.DataFrame,
    *,
    splits: pd.DataFrame | None = None,
    split: str = "test",
    n_bins: int = 3,
) -> pd.DataFrame:
    """ASR by zoom-scale bin for every condition that shows the zoom (see the module docstring); columns
    ASR_BY_SCALE_COLUMNS. Rows of interventions are left out."""
    require_columns(
        judged,
        (
            "model",
            "dataset",
            "judge",
            "condition",
            "intervention",
            "prompt_id",
            "harmful",
            "unsafe",
            "zoom_scale",
        ),
        "judged table",
    )
    rows_in = judged if splits is None else filter_split(judged, splits, split)
    label = ALL if splits is None else split
    plain = rows_in[rows_in["harmful"] & (rows_in["intervention"] == NO_INTERVENTION)]
    out: list[dict[str, Any]] = []
    for (model, dataset, judge), sub in plain.groupby(["model", "dataset", "judge"], sort=True):
        ref = sub[sub["condition"] == REFERENCE].set_index("prompt_id")["unsafe"].astype(bool)
        zoomed = sub[sub["zoom_scale"].notna() & sub["condition"].isin(ZOOM_CONDITIONS)]
        for condition, rows in zoomed.groupby("condition", sort=False):
            rows = rows[rows["prompt_id"].isin(ref.index)].sort_values("prompt_id")
            if rows.empty:
                continue
            scales = rows["zoom_scale"].to_numpy(dtype=np.float64)
            treat = rows["unsafe"].to_numpy(dtype=bool)
            base = ref.loc[rows["prompt_id"]].to_numpy(dtype=bool)
            rho, p_trend = _trend(scales, treat.astype(int) - base.astype(int))
            bins = scale_bins(scales, n_bins)
            for b in np.unique(bins):
                sel = bins == b
                n, k, k_ref = int(sel.sum()), int(treat[sel].sum()), int(base[sel].sum())
                lo, hi = wilson_ci(k, n)
                ref_lo, ref_hi = wilson_ci(k_ref, n)
                out.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "judge": judge,
                        "split": label,
                        "condition": condition,
                        "scale_bin": int(b),
                        "scale_min": float(scales[sel].min()),
                        "scale_max": float(scales[sel].max()),
                        "n": n,
                        "asr": k / n,
                        "asr_ci_low": lo,
                        "asr_ci_high": hi,
                        "reference_asr": k_ref / n,
                        "reference_asr_ci_low": ref_lo,
                        "reference_asr_ci_high": ref_hi,
                        "mcnemar_p": mcnemar_exact(base[sel], treat[sel]),
                        "trend_rho": rho,
                        "trend_p": p_trend,
                    }
                )
    return pd.DataFrame(out, columns=list(ASR_BY_SCALE_COLUMNS))
