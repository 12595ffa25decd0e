"""Statistics for ASR tables: Wilson intervals, exact McNemar tests, the Bonett-Price interval of a ratio of
paired proportions, paired bootstrap intervals and Holm.

Wilson intervals, the exact McNemar test and Holm's adjustment are statsmodels'
(`proportion_confint(method="wilson")`, `mcnemar(exact=True)`, `multipletests(method="holm")`), wrapped for
the package's edge cases and checked against hand-computed references in tests/test_stats.py; the
Bonett-Price interval of a paired ratio and the equivalence test of paired proportions (`paired_tost`),
which statsmodels lacks, are written out here.

Arguments that are not meaningful numbers (k > n, mismatched pair lengths, conf outside (0, 1)) raise
ValueError: these functions are called by the library, not fed by users directly.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np
from scipy.stats import norm


@lru_cache(maxsize=64)
def _z(conf: float) -> float:
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1), got {conf!r}")
    return float(norm.ppf(1 - (1 - conf) / 2))


def wilson_ci(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (statsmodels' `proportion_confint`, method
    "wilson"); exactly 0 / 1 at k = 0 / k = n; (nan, nan) when n = 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return (math.nan, math.nan)
    _z(conf)
    lo, hi = proportion_confint(int(k), int(n), alpha=1 - conf, method="wilson")
    return (0.0 if k == 0 else max(0.0, float(lo)), 1.0 if k == n else min(1.0, float(hi)))


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired arrays must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    return a, b


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p for paired booleans: binomial test of the discordant pairs at 1/2
    (statsmodels' `mcnemar(exact=True)`). p = 1 when there is no discordant pair.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = _paired(a, b)
    a = a.astype(bool)
    b = b.astype(bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    table = [[int(np.sum(a & b)), only_a], [only_b, int(np.sum(~a & ~b))]]
    return float(min(1.0, mcnemar(table, exact=True).pvalue))


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


MIN_BOOT_SHARE = 0.9
"""A bootstrap interval whose usable replicates (``n_boot_used``) fall below this share of ``n_boot`` is
flagged (``low_boot_share``): the dropped replicates (resampled reference ASR 0) are not a random
subset, so such an interval is biased towards the replicates where the reference has unsafe answers."""


def bootstrap_relative_reduction_ci(
    base: np.ndarray, treat: np.ndarray, n_boot: int = 2000, seed: int = 0, conf: float = 0.95
) -> tuple[float, float, int]:
    """`paired_bootstrap_ci` of the relative reduction (the same replicates, so the same interval) and
    ``n_boot_used``, the number of replicates whose resampled base ASR is not 0 (the others are dropped).
    """
    base, treat = _paired(base, treat)
    _z(conf)
    n = base.shape[0]
    if n == 0 or n_boot < 1:
        return (math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    values = _relative_reductions(base.astype(np.float64)[idx], treat.astype(np.float64)[idx])
    lo, hi = percentile_ci(values, conf)
    return (lo, hi, int(np.count_nonzero(~np.isnan(values))))


def paired_bootstrap_diff_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, conf: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b) - mean(a) over paired prompts (never undefined, so no
    replicate is dropped). The same numbers as ``paired_bootstrap_ci(a, b, lambda x, y: y.mean() -
    x.mean(), n_boot, seed, conf)``, vectorised."""
    a, b = _paired(a, b)
    _z(conf)
    n = a.shape[0]
    if n == 0 or n_boot < 1:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    diffs = b.astype(np.float64)[idx].mean(axis=1) - a.astype(np.float64)[idx].mean(axis=1)
    return percentile_ci(diffs, conf)


def low_boot_share(n_boot_used: int, n_boot: int) -> bool:
    """True when fewer than MIN_BOOT_SHARE of the `n_boot` bootstrap replicates were usable."""
    return bool(n_boot > 0 and n_boot_used < MIN_BOOT_SHARE * n_boot)


def _wilson_z(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score limits of x/n at critical value z (Bonett & Price's adjusted z, not a conf level)."""
    p = x / n
    centre = 2 * x + z * z
    half = z * math.sqrt(z * z + 4 * x * (1 - p))
    denom = 2 * (n + z * z)
    lo = 0.0 if x == 0 else (centre - half) / denom
    hi = 1.0 if x == n else (centre + half) / denom
    return (lo, hi)


def paired_ratio_ci(both: int, only_num: int, only_den: int, conf: float = 0.95) -> tuple[float, float]:
    """Bonett & Price (2006) hybrid Wilson score interval for a ratio of paired binomial proportions.

    For paired binary outcomes, `both` pairs are 1 in both arms, `only_num` only in the numerator arm and
    `only_den` only in the denominator arm (pairs that are 0 in both do not enter). With
    x1 = both + only_num, x2 = both + only_den and n* = both + only_num + only_den the ratio
    p1 / p2 = x1 / x2 has the limits (l1 / u2, u1 / l2), where (l_i, u_i) is the Wilson score interval
    of x_i / n* computed with the adjusted critical value z* = z · A / (B1 + B2):

        A  = sqrt((only_num + only_den + 2) / ((x1 + 1)(x2 + 1)))   the SE of the adjusted log ratio
        Bi = sqrt((1 - p̃i) / ((n* + 2) p̃i)),  p̃i = (xi + 1) / (n* + 2)   the SEs of the adjusted logs

    (Bonett D.G., Price R.M., Statistics in Medicine 25:3039-3047, 2006; the interval Fagerland, Lydersen
    & Laake, Statistics in Medicine 33:2850, 2014, recommend for the paired ratio). The pseudo-counts keep
    z* finite and positive at zero counts, so the interval always has positive width: with x1 = 0 it is
    (0, u1 / l2), never a point. (0, inf) without a single 1 in either arm; the upper limit is inf when
    x2 = 0.
    """
    if min(both, only_num, only_den) < 0:
        raise ValueError(f"paired_ratio_ci needs counts >= 0, got {both!r}, {only_num!r}, {only_den!r}")
    z = _z(conf)
    n = both + only_num + only_den
    if n == 0:
        return (0.0, math.inf)
    x1, x2 = both + only_num, both + only_den
    a = math.sqrt((only_num + only_den + 2) / ((x1 + 1) * (x2 + 1)))
    p1, p2 = (x1 + 1) / (n + 2), (x2 + 1) / (n + 2)
    b1 = math.sqrt((1 - p1) / ((n + 2) * p1))
    b2 = math.sqrt((1 - p2) / ((n + 2) * p2))
    z_adj = z * a / (b1 + b2)
    l1, u1 = _wilson_z(x1, n, z_adj)
    l2, u2 = _wilson_z(x2, n, z_adj)
    return (l1 / u2, u1 / l2 if l2 > 0 else math.inf)


RR_CI_METHOD = "bonett-price"
"""The ``rel_reduction_ci_method`` of the ASR table: `relative_reduction_ci` (Bonett & Price 2006)."""


def relative_reduction_ci(base: np.ndarray, treat: np.ndarray, conf: float = 0.95) -> tuple[float, float]:
    """Interval for the relative reduction 1 - ASR_treat / ASR_base of paired verdicts: 1 minus the
    `paired_ratio_ci` of ASR_treat / ASR_base (limits swapped). Closed form, no resampling; finite and of
    positive width whenever the base has an unsafe verdict, including treat ASR 0 (3/50 vs 0/50 gives
    about (-0.28, 1), while the percentile bootstrap collapses to (1, 1)). (nan, nan) without pairs or when
    ASR_base is 0 (the relative reduction is undefined there).
    """
    base, treat = _paired(base, treat)
    base = base.astype(bool)
    treat = treat.astype(bool)
    if base.size == 0 or not base.any():
        return (math.nan, math.nan)
    lo, hi = paired_ratio_ci(
        int(np.sum(base & treat)), int(np.sum(treat & ~base)), int(np.sum(base & ~treat)), conf
    )
    return (1.0 - hi, 1.0 - lo)


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
    """Holm (1979) step-down adjusted p-values for one family of tests (statsmodels' `multipletests`,
    method "holm"); NaN stays NaN and is not counted.

    With m finite p-values sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1)
    p_(j)). Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha under any
    dependence between the tests.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm_adjust needs a 1-D array of p-values, got shape {p.shape}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"holm_adjust: p-values must lie in [0, 1], got {p[finite].tolist()}")
    out = np.full_like(p, np.nan)
    if finite.any():
        with _without_forced_collection():
            out[finite] = multipletests(p[finite], method="holm")[1]
    return out


@contextlib.contextmanager
def _without_forced_collection() -> Iterator[None]:
    """statsmodels' `multipletests` runs a full `gc.collect()` on every Holm call (to free the arrays of
    huge families): 60-80 ms in a process holding pandas and torch, for a family of a handful of p-values,
    and a contrasts table adjusts hundreds of families. The collection is skipped for the call (the analysis
    is single-threaded); what it computes is unchanged."""
    collect = gc.collect
    gc.collect = lambda generation=2: 0
    try:
        yield
    finally:
        gc.collect = collect


def tango_z(only_b: int, only_a: int, n: int, delta: float) -> float:
    """Tango's (1998) asymptotic score statistic for H0: P(B only) - P(A only) = `delta` in n matched pairs
    (`only_b`, `only_a`: the discordant pairs), with the restricted maximum-likelihood estimate of P(A only):

        z = (only_b - only_a - n delta) / sqrt(n (2 q + delta (1 - delta))),
        q = (-B + sqrt(B^2 - 4 A C)) / (2 A),  A = 2n,  B = -only_b - only_a + (2n - only_b + only_a) delta,
        C = -only_a delta (1 - delta)

    (Tango T., Statistics in Medicine 17:891-908, 1998). At delta = 0 it is McNemar's z.
    """
    a_ = 2.0 * n
    b_ = -only_b - only_a + (2.0 * n - only_b + only_a) * delta
    c_ = -only_a * delta * (1 - delta)
    q = (-b_ + math.sqrt(max(b_ * b_ - 4 * a_ * c_, 0.0))) / (2 * a_)
    var = n * (2 * q + delta * (1 - delta))
    diff = only_b - only_a - n * delta
    if var <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def paired_tost(
    a: np.ndarray, b: np.ndarray, margin: float, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Equivalence of two paired proportions: TOST of |mean(b) - mean(a)| < `margin` for paired booleans.

    Returns (p, low, high): p = max of the two one-sided p-values of Tango's score test (`tango_z`; H0:
    diff <= -margin, H0: diff >= margin), and the (1 - 2 alpha) Tango score interval of the difference
    (the differences neither one-sided test at level alpha rejects), which lies inside (-margin, margin)
    exactly when p < alpha. Tango's interval is the one Fagerland, Lydersen & Laake (Statistics in Medicine
    33:2850, 2014) recommend for a difference of paired proportions; its variance is taken under each null,
    so agreement on a handful of prompts is not mistaken for equivalence (10 concordant pairs give
    p = 0.15 at margin 0.1; 60 give p = 0.005). statsmodels has TOST for one proportion, two independent
    ones and paired means (a t test whose se is 0 without a discordant pair), not for paired proportions.
    (nan, nan, nan) without pairs.
    """
    from scipy.optimize import brentq

    a, b = _paired(a, b)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin!r}")
    a = a.astype(bool)
    b = b.astype(bool)
    n = int(a.size)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    x, y = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    p = max(float(norm.sf(tango_z(x, y, n, -margin))), float(norm.cdf(tango_z(x, y, n, margin))))
    z = float(norm.ppf(1 - alpha))
    # z(delta) falls from +inf at delta -> -1 to -inf at delta -> 1: the limits are where it crosses -/+ z
    edge = 1 - 1e-12
    low = brentq(lambda d: tango_z(x, y, n, d) - z, -edge, edge) if tango_z(x, y, n, -edge) > z else -1.0
    high = brentq(lambda d: tango_z(x, y, n, d) + z, -edge, edge) if tango_z(x, y, n, edge) < -z else 1.0
    return (p, float(low), float(high))
