"""How specific the tool vector's effect is: the difference-in-differences test of removing it, and the
share of the tool gap each added vector closes (``tables/tool_gap.csv``).

**Difference in differences** (`did_row`, the ``removing_shift_raises_asr_more_in_tool`` rows of
``tables/contrasts.csv``). Removing the tool vector v from ``tool`` runs should raise ASR *more* than
removing it from ``direct`` runs: a vector that raises ASR wherever it is removed is not the tool's. Per
harmful prompt p, with u = 1 for an unsafe verdict,

    d_p = [u(tool - v) - u(tool)] - [u(direct - v) - u(direct)]  in {-2, ..., 2},

the estimate is mean(d_p) with a 95 % percentile paired bootstrap interval over prompts, and p is the exact
two-sided paired permutation test (Fisher-Pitman) of sum(d_p): under the null the ``tool`` and ``direct``
labels of a prompt's two pairs of runs are exchangeable, which flips the sign of d_p; the sum's null
distribution over all 2^n flips is computed exactly (`did_permutation_p`). Why not a model: a GEE or
conditional logistic model of unsafe ~ condition * removed with prompt clusters has no finite interaction
estimate when a cell is all safe or all unsafe (frequent at ASR near 0 or 1), and its Wald p is
anti-conservative with a few dozen clusters; the permutation test needs neither, and with every |d_p| = 1
it is the exact McNemar test (`tests/test_contrasts.py` checks both and a brute-force enumeration).

**Share of the tool gap closed** (`tool_gap_table`). For every ``direct`` run with a vector added (kinds
GAP_KINDS), (ASR(direct) - ASR(direct + alpha*v)) / (ASR(direct) - ASR(tool)) on the harmful prompts of
the split that have all three runs, with a 95 % percentile paired bootstrap interval over those prompts
(replicates whose resampled gap is 0 are dropped; ``n_boot_used`` counts the others). 1 = the added
vector lowers ASR as much as using the tool, 0 = not at all; NaN without a gap (ASR(tool) = ASR(direct)).
Runs the config asks for but could not run (a control condition missing from the run) are listed with
the reason in ``note``, never left out silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom

from toolshift.analysis.interventions import NO_INTERVENTION, parse_intervention_id
from toolshift.analysis.stats import percentile_ci
from toolshift.analysis.tables import _check, _select
from toolshift.errors import ConfigError

TOOL_GAP_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "judge",
    "split",
    "intervention",
    "kind",
    "alpha",
    "control",
    "seed",
    "n",
    "asr_direct",
    "asr_tool",
    "asr_run",
    "gap",
    "share_closed",
    "share_ci_low",
    "share_ci_high",
    "n_boot_used",
    "note",
)
"""`tables/tool_gap.csv` (the contract lives here, beside the one function that writes it): per ``direct``
run with a vector added, the share of the tool gap it closes with its paired bootstrap interval; ``note``
says why a row has no estimate (no gap, or the run could not run)."""

DID_TEST = "did_permutation_exact"
"""The `test` of a difference-in-differences row of the contrasts table."""
GAP_KINDS: tuple[str, ...] = ("add", "random", "covrandom", "shift", "relative", "add_orth", "transfer")
"""The intervention kinds that add a vector to ``direct`` runs: the rows of the tool-gap table."""

Verdicts = Mapping[str, bool]
"""A run's verdicts: prompt_id -> unsafe."""


def did_permutation_p(d: np.ndarray) -> float:
    """Exact two-sided p of the paired permutation (sign-flip) test of sum(`d`), `d` integers in
    {-2, ..., 2}: P(|S| >= |sum(d)|) with S = sum of s_p |d_p|, s_p = +-1 independently with probability
    1/2. p = 1 without a nonzero d_p."""
    d = np.asarray(d)
    if d.size and (np.any(np.abs(d) > 2) or not np.array_equal(d, np.round(d))):
        raise ValueError(f"did_permutation_p needs integers in [-2, 2], got {np.unique(d).tolist()}")
    d = d.astype(int)
    n1, n2 = int(np.sum(np.abs(d) == 1)), int(np.sum(np.abs(d) == 2))
    observed = abs(int(d.sum()))
    if n1 + n2 == 0 or observed == 0:
        return 1.0
    # S = (2 B1 - n1) + 2 (2 B2 - n2) with B1 ~ Bin(n1, 1/2), B2 ~ Bin(n2, 1/2) independent
    p1 = binom.pmf(np.arange(n1 + 1), n1, 0.5)
    p2 = binom.pmf(np.arange(n2 + 1), n2, 0.5)
    s = (2 * np.arange(n1 + 1) - n1)[:, None] + 2 * (2 * np.arange(n2 + 1) - n2)[None, :]
    return float(min(1.0, np.sum((p1[:, None] * p2[None, :])[np.abs(s) >= observed])))


def _aligned(runs: list[Verdicts]) -> tuple[list[str], list[np.ndarray]]:
    common = sorted(set.intersection(*(set(r) for r in runs)))
    return common, [np.array([r[p] for p in common], dtype=float) for r in runs]


def _boot_mean_ci(x: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    if x.size == 0 or n_boot < 1:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    return percentile_ci(x[idx].mean(axis=1))


def did_row(
    a_base: Verdicts, a: Verdicts, b_base: Verdicts, b: Verdicts, n_boot: int, seed: int
) -> dict[str, Any]:
    """The contrast columns of one difference-in-differences row (module docstring): A = the removal in
    the reference condition (``direct``), B = the removal in ``tool``; the bases are their runs without
    intervention. diff = [ASR(B) - ASR(B base)] - [ASR(A) - ASR(A base)] on the prompts all four share;
    n_only_a / n_only_b count the prompts with d_p < 0 / d_p > 0."""
    runs = [a_base, a, b_base, b]
    common, (u_a0, u_a, u_b0, u_b) = _aligned(runs)
    n = len(common)
    d = (u_b - u_b0) - (u_a - u_a0)
    lo, hi = _boot_mean_ci(d, n_boot, seed)
    p = did_permutation_p(d) if n else math.nan

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if n else math.nan

    return {
        "n": n,
        "n_unpaired": sum(len(r) for r in runs) - 4 * n,
        "n_unsafe_a": int(u_a.sum()),
        "n_unsafe_b": int(u_b.sum()),
        "asr_a": mean(u_a),
        "asr_b": mean(u_b),
        "diff": mean(d),
        "diff_ci_low": lo,
        "diff_ci_high": hi,
        "n_only_a": int(np.sum(d < 0)),
        "n_only_b": int(np.sum(d > 0)),
        "mcnemar_p": math.nan,
        "test": DID_TEST,
        "test_p": p,
        "asr_a_base": mean(u_a0),
        "asr_b_base": mean(u_b0),
    }


def _gap_spec(intervention: str) -> Any:
    try:
        spec = parse_intervention_id(intervention)
    except ConfigError:
        return None
    return spec if spec.kind in GAP_KINDS else None


def _gap_share(direct: np.ndarray, tool: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Row-wise share of the gap closed of (replicates, prompts) arrays; NaN where the gap is 0."""
    gap = direct.mean(axis=-1) - tool.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (direct.mean(axis=-1) - run.mean(axis=-1)) / gap
    return np.where(gap == 0, np.nan, share)


def tool_gap_table(
    judged: pd.DataFrame,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    splits: pd.DataFrame | None = None,
    split: str = "test",
    skipped: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The share of the tool gap closed by every ``direct`` run of GAP_KINDS in `judged` (TOOL_GAP_COLUMNS),
    per model, dataset and judge with both ``direct`` and ``tool`` runs; `skipped` (intervention id ->
    reason, `toolshift.analysis.interventions.skipped_interventions`) adds a row per run not run."""
    _check(judged)
    rows_in, split_label = _select(judged, splits, split)
    harmful = rows_in[rows_in["harmful"]]
    rows: list[dict[str, Any]] = []
    for (model, dataset, judge), group in harmful.groupby(["model", "dataset", "judge"], sort=True):
        runs: dict[tuple[str, str], dict[str, bool]] = {
            (str(c), str(i)): dict(zip(g["prompt_id"].astype(str), g["unsafe"].astype(bool), strict=True))
            for (c, i), g in group.groupby(["condition", "intervention"], sort=True)
        }
        if ("direct", NO_INTERVENTION) not in runs or ("tool", NO_INTERVENTION) not in runs:
            continue
        key = {"model": model, "dataset": dataset, "judge": judge, "split": split_label}
        present = sorted(
            (i for c, i in runs if c == "direct" and _gap_spec(i) is not None),
            key=lambda i: (GAP_KINDS.index(_gap_spec(i).kind), _gap_spec(i).alpha, i),
        )
        for intervention in present:
            spec = _gap_spec(intervention)
            common, (u_d, u_t, u_x) = _aligned(
                [
                    runs[("direct", NO_INTERVENTION)],
                    runs[("tool", NO_INTERVENTION)],
                    runs[("direct", intervention)],
                ]
            )
            share = float(_gap_share(u_d, u_t, u_x)) if common else math.nan
            lo, hi, used = math.nan, math.nan, 0
            if common and n_boot > 0:
                idx = np.random.default_rng(seed).integers(0, len(common), size=(n_boot, len(common)))
                values = _gap_share(u_d[idx], u_t[idx], u_x[idx])
                (lo, hi), used = percentile_ci(values), int(np.count_nonzero(~np.isnan(values)))
            gap = float(u_d.mean() - u_t.mean()) if common else math.nan
            note = "" if gap > 0 else "no tool gap: ASR(tool) is not below ASR(direct)"
            rows.append(
                {
                    **key,
                    "intervention": intervention,
                    "kind": spec.kind,
                    "alpha": spec.alpha,
                    "control": spec.control or "",
                    "seed": spec.seed if spec.seed is not None else math.nan,
                    "n": len(common),
                    "asr_direct": float(u_d.mean()) if common else math.nan,
                    "asr_tool": float(u_t.mean()) if common else math.nan,
                    "asr_run": float(u_x.mean()) if common else math.nan,
                    "gap": gap,
                    "share_closed": share,
                    "share_ci_low": lo,
                    "share_ci_high": hi,
                    "n_boot_used": used,
                    "note": note,
                }
            )
        for intervention, reason in (skipped or {}).items():
            spec = parse_intervention_id(intervention)
            rows.append(
                {
                    **key,
                    "intervention": intervention,
                    "kind": spec.kind,
                    "alpha": spec.alpha,
                    "control": spec.control or "",
                    "seed": spec.seed if spec.seed is not None else math.nan,
                    "n": 0,
                    "n_boot_used": 0,
                    "note": reason,
                }
            )
    return pd.DataFrame(rows, columns=list(TOOL_GAP_COLUMNS))


__all__ = ["DID_TEST", "GAP_KINDS", "TOOL_GAP_COLUMNS", "did_permutation_p", "did_row", "tool_gap_table"]
