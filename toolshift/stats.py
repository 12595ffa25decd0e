"""Statistics for ASR tables: Wilson intervals, exact McNemar tests, paired bootstrap intervals and Holm.

Arguments that are not meaningful numbers (k > n, mismatched pair lengths, conf outside (0, 1)) raise
ValueError: these functions are called by the library, not fed by users directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy.stats import binom, norm


@lru_cache(maxsize=64)
def _z(conf: float) -> float:
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1), got {conf!r}")
    return float(norm.ppf(1 - (1 - conf) / 2))


def wilson_ci(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (nan, nan) when n = 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return (math.nan, math.nan)
    z = _z(conf)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired arrays must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    return a, b


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p for paired booleans: binomial test of the discordant pairs at 1/2.

    p = 1 when there is no discordant pair.
    """
    a, b = _paired(a, b)
    a = a.astype(bool)
    b = b.astype(bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    # Binomial(n, 1/2) is symmetric, so the two-sided exact p (scipy's binomtest) is twice the smaller tail
    return float(min(1.0, 2.0 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def relative_reduction(base: np.ndarray | float, treat: np.ndarray | float) -> float:
    """(ASR_base - ASR_treat) / ASR_base, with ASR the mean of each input; NaN when ASR_base is 0 or empty."""
    base = np.asarray(base, dtype=np.float64)
    treat = np.asarray(treat, dtype=np.float64)
    if base.size == 0 or treat.size == 0:
        return math.nan
    asr_base = float(base.mean())
    asr_treat = float(treat.mean())
    if asr_base == 0 or math.isnan(asr_base):
        return math.nan
    return (asr_base - asr_treat) / asr_base


def paired_bootstrap_ci(
    base: np.ndarray,
    treat: np.ndarray,
    stat: Callable[[np.ndarray, np.ndarray], float] = relative_reduction,
    n_boot: int = 2000,
    seed: int = 0,
    conf: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(base, treat)``, resampling paired prompts with replacement.

    Resamples on which the statistic is NaN (e.g. ASR_base = 0) are dropped; (nan, nan) if all are, or if
    there is no pair. Reproducible: the resampling uses ``numpy.random.default_rng(seed)``.
    """
    base, treat = _paired(base, treat)
    _z(conf)
    n = base.shape[0]
    if n == 0 or n_boot < 1:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    if stat is relative_reduction:  # vectorised; the same numbers as the loop below
        values = _relative_reductions(base.astype(np.float64)[idx], treat.astype(np.float64)[idx])
    else:
        values = np.array([stat(base[i], treat[i]) for i in idx], dtype=np.float64)
    return percentile_ci(values, conf)


def _relative_reductions(base: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """Row-wise relative reduction of (resamples, prompts) arrays; NaN where the base mean is 0."""
    asr_base = base.mean(axis=1)
    asr_treat = treat.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (asr_base - asr_treat) / asr_base
    return np.where(asr_base == 0, np.nan, out)


def bootstrap_relative_reductions(
    base: np.ndarray, treat: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """`n_boot` paired-bootstrap replicates of ``relative_reduction(base, treat)`` drawn from `rng`.

    NaN marks a replicate whose resampled base ASR is 0. Used by the headline, which resamples the
    prompts of each model independently with one generator.
    """
    base, treat = _paired(base, treat)
    n = base.shape[0]
    if n == 0:
        return np.full(n_boot, np.nan)
    idx = rng.integers(0, n, size=(n_boot, n))
    return _relative_reductions(base.astype(np.float64)[idx], treat.astype(np.float64)[idx])


def percentile_ci(values: np.ndarray, conf: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, NaN replicates dropped; (nan, nan) if none is left."""
    _z(conf)
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    tail = (1 - conf) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return (float(lo), float(hi))


def holm_adjust(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values for one family of tests; NaN stays NaN and is not counted.

    With m finite p-values sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1)
    p_(j)). Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha under any
    dependence between the tests.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm_adjust needs a 1-D array of p-values, got shape {p.shape}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"holm_adjust: p-values must lie in [0, 1], got {p[finite].tolist()}")
    out = np.full_like(p, np.nan)
    vals = p[finite]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * vals[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    out[finite] = adjusted
    return out
