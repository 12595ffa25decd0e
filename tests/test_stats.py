"""Wilson intervals, exact McNemar, relative reduction and the paired bootstrap."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from toolshift.stats import (
    bootstrap_relative_reductions,
    holm_adjust,
    mcnemar_exact,
    paired_bootstrap_ci,
    percentile_ci,
    relative_reduction,
    wilson_ci,
)

Z95 = 1.959963984540054


def wilson_by_roots(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Reference: the roots p of (k/n - p)^2 = z^2 p (1 - p) / n, a quadratic in p."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    disc = math.sqrt(b * b - 4 * a * c)
    return ((-b - disc) / (2 * a), (-b + disc) / (2 * a))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_wilson_small_cases_against_quadratic_roots(n):
    for k in range(n + 1):
        lo, hi = wilson_ci(k, n)
        ref_lo, ref_hi = wilson_by_roots(k, n)
        assert lo == pytest.approx(ref_lo, abs=1e-12)
        assert hi == pytest.approx(ref_hi, abs=1e-12)
        assert 0 <= lo <= k / n <= hi <= 1


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [  # Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_textbook_values(k, n, lo, hi):
    got = wilson_ci(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-5)
    assert got[1] == pytest.approx(hi, abs=5e-5)


def test_wilson_edges():
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    assert wilson_ci(0, 7)[0] == 0.0 and wilson_ci(7, 7)[1] == 1.0
    lo90, hi90 = wilson_ci(5, 10, conf=0.90)
    lo95, hi95 = wilson_ci(5, 10)
    assert lo95 < lo90 < 0.5 < hi90 < hi95
    with pytest.raises(ValueError):
        wilson_ci(3, 2)
    with pytest.raises(ValueError):
        wilson_ci(1, 2, conf=1.0)


def _pairs(only_a: int, only_b: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_hand_computed():
    # 7 vs 1 discordant pairs: p = 2 * P(X <= 1 | Bin(8, 1/2)) = 2 * (1 + 8) / 256 = 18/256
    a, b = _pairs(7, 1, both=20, neither=30)
    assert mcnemar_exact(a, b) == pytest.approx(18 / 256, rel=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(18 / 256, rel=1e-12)
    # concordant pairs do not matter
    assert mcnemar_exact(*_pairs(7, 1, 0, 0)) == pytest.approx(18 / 256, rel=1e-12)


@pytest.mark.parametrize("x, m", [(0, 5), (2, 10), (3, 13), (9, 12)])
def test_mcnemar_vs_exact_binomial_sum(x, m):
    pmf = [Fraction(math.comb(m, i), 2**m) for i in range(m + 1)]
    lo = min(x, m - x)
    p = min(Fraction(1), 2 * sum(pmf[: lo + 1]))
    assert mcnemar_exact(*_pairs(x, m - x, 3, 4)) == pytest.approx(float(p), rel=1e-12)


def test_mcnemar_no_discordant_pairs_and_bad_input():
    assert mcnemar_exact(*_pairs(0, 0, 5, 5)) == 1.0
    assert mcnemar_exact(*_pairs(4, 4, 0, 0)) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_mcnemar_null_false_positive_rate():
    """Under the null (paired outcomes from the same distribution) the test rejects at most ~5 %."""
    n_seeds, n_prompts, level = 200, 100, 0.05
    rejections = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        p = rng.beta(2, 2, size=n_prompts)  # per-prompt propensity shared by both arms
        a = rng.random(n_prompts) < p
        b = rng.random(n_prompts) < p
        rejections += mcnemar_exact(a, b) < level
    rate = rejections / n_seeds
    bound = level + 3 * math.sqrt(level * (1 - level) / n_seeds)  # 0.05 + 3 binomial SDs = 0.0962
    print(f"McNemar null false-positive rate {rate:.3f} (bound {bound:.4f})")
    assert rate <= bound


def test_relative_reduction():
    assert relative_reduction(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])) == 0.5
    assert relative_reduction(np.array([1, 0]), np.array([1, 1])) == -1.0
    assert relative_reduction(0.5, 0.25) == 0.5
    assert math.isnan(relative_reduction(np.zeros(4), np.ones(4)))
    assert math.isnan(relative_reduction(np.array([]), np.array([])))


def _planted_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ASR 0.6 at baseline; treatment keeps each success with prob 2/3 -> ASR 0.4, true reduction 1/3."""
    base = rng.random(n) < 0.6
    treat = base & (rng.random(n) < 2 / 3)
    return base, treat


def test_bootstrap_covers_planted_truth_and_is_reproducible():
    # exactly ASR 0.6 -> 0.4 on 300 shuffled prompts: the true (and observed) reduction is 1/3
    order = np.random.default_rng(123).permutation(300)
    base = (np.arange(300) < 180)[order]
    treat = (np.arange(300) < 120)[order]
    assert relative_reduction(base, treat) == pytest.approx(1 / 3)
    lo, hi = paired_bootstrap_ci(base, treat, n_boot=2000, seed=0)
    assert 0.2 < lo < 1 / 3 < hi < 0.45
    assert (lo, hi) == paired_bootstrap_ci(base, treat, n_boot=2000, seed=0)
    assert (lo, hi) != paired_bootstrap_ci(base, treat, n_boot=2000, seed=1)


def test_bootstrap_coverage_near_nominal():
    n_rep, covered = 100, 0
    for rep in range(n_rep):
        base, treat = _planted_pairs(np.random.default_rng(1000 + rep), 200)
        lo, hi = paired_bootstrap_ci(base, treat, n_boot=500, seed=rep)
        covered += lo <= 1 / 3 <= hi
    print(f"bootstrap 95% CI coverage on planted data: {covered}/{n_rep}")
    assert covered >= 88  # nominal 95; allows ~2.7 binomial SDs of Monte Carlo error at n_rep=100


def test_bootstrap_nan_aware():
    # baseline ASR is 0 on every resample -> all NaN -> (nan, nan)
    lo, hi = paired_bootstrap_ci(np.zeros(10, bool), np.ones(10, bool))
    assert math.isnan(lo) and math.isnan(hi)
    # a single success at baseline: most resamples are finite, NaN ones are dropped
    base = np.array([True] + [False] * 9)
    lo, hi = paired_bootstrap_ci(base, np.zeros(10, bool))
    assert (lo, hi) == (1.0, 1.0)
    assert all(math.isnan(x) for x in paired_bootstrap_ci(np.array([], bool), np.array([], bool)))
    with pytest.raises(ValueError):
        paired_bootstrap_ci(np.ones(3, bool), np.ones(2, bool))


def test_bootstrap_other_stat():
    base = np.array([1, 1, 1, 0, 0] * 20, bool)
    lo, hi = paired_bootstrap_ci(base, base, stat=lambda a, b: float(a.mean() - b.mean()), n_boot=200)
    assert (lo, hi) == (0.0, 0.0)


def test_holm_against_hand_computed_values():
    # sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (monotone), 0.06
    p = np.array([0.04, 0.01, 0.03, 0.02])
    np.testing.assert_allclose(holm_adjust(p), [0.06, 0.04, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjust([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm_adjust([0.003]), [0.003])  # one test: unchanged
    out = holm_adjust([0.01, np.nan, 0.02])  # NaN is not a test: m = 2
    np.testing.assert_allclose(out, [0.02, np.nan, 0.02])
    assert holm_adjust([]).size == 0
    with pytest.raises(ValueError):
        holm_adjust([0.5, 1.5])


def test_holm_is_never_below_raw_and_at_most_bonferroni():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.random(7) ** 3
        adj = holm_adjust(p)
        assert np.all(adj >= p) and np.all(adj <= np.minimum(1, 7 * p) + 1e-15)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0)  # monotone in the raw p


def test_vectorised_bootstrap_equals_the_loop():
    rng = np.random.default_rng(4)
    base, treat = rng.random(40) < 0.6, rng.random(40) < 0.4
    fast = paired_bootstrap_ci(base, treat, n_boot=300, seed=2)
    slow = paired_bootstrap_ci(base, treat, stat=lambda a, b: relative_reduction(a, b), n_boot=300, seed=2)
    assert fast == slow
    reps = bootstrap_relative_reductions(base, treat, 300, np.random.default_rng(2))
    assert percentile_ci(reps) == fast


def test_mcnemar_equals_scipy_binomtest_on_every_small_table():
    from scipy.stats import binomtest

    for b in range(41):
        for c in range(41):
            a = np.array([True] * b + [False] * c + [True] * 3)
            t = np.array([False] * b + [True] * c + [True] * 3)
            expected = 1.0 if b + c == 0 else min(1.0, binomtest(b, b + c, 0.5).pvalue)
            assert mcnemar_exact(a, t) == pytest.approx(expected, rel=1e-9, abs=1e-15), (b, c)
