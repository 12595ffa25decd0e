"""Wilson intervals, exact McNemar, relative reduction, the Bonett-Price interval and the paired bootstrap."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import norm

from toolshift.analysis.stats import (
    MIN_BOOT_SHARE,
    bootstrap_relative_reduction_ci,
    bootstrap_relative_reductions,
    holm_adjust,
    low_boot_share,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_bootstrap_diff_ci,
    paired_ratio_ci,
    percentile_ci,
    relative_reduction,
    relative_reduction_ci,
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


@pytest.mark.parametrize(
    "both, only_num, only_den, lo, hi",
    [  # the published examples of statpsych::ci.ratio.prop.ps (Bonett & Price 2006), two releases
        (6, 26, 4, 1.766544, 5.796628),  # f00 = 12, f01 = 4, f10 = 26, f11 = 6: ratio 32/10
        (12, 26, 4, 1.537157, 3.669518),  # the older release's argument order: ratio 38/16
    ],
)
def test_bonett_price_ratio_against_published_values(both, only_num, only_den, lo, hi):
    got = paired_ratio_ci(both, only_num, only_den)
    assert got == pytest.approx((lo, hi), abs=5e-7)


def test_bonett_price_zero_counts():
    # 3/50 unsafe under the reference, 0/50 under the treatment: McNemar p = 0.25
    base = np.arange(50) < 3
    treat = np.zeros(50, bool)
    assert mcnemar_exact(base, treat) == pytest.approx(0.25)
    lo, hi = relative_reduction_ci(base, treat)
    boot = paired_bootstrap_ci(base, treat)
    print(f"3/50 vs 0/50: Bonett-Price 95% CI ({lo:.4f}, {hi:.4f}); bootstrap {boot}")
    # by hand: x1 = 0, x2 = n* = 3, z* = z (A = B1 + B2 here), so ratio <= z^2 / 3 and rr >= 1 - z^2 / 3
    assert (lo, hi) == pytest.approx((1 - Z95**2 / 3, 1.0), abs=1e-12)
    assert lo < 0 < hi and paired_bootstrap_ci(base, treat) == (1.0, 1.0)
    assert paired_ratio_ci(0, 0, 0) == (0.0, math.inf)  # nothing unsafe in either arm
    assert paired_ratio_ci(0, 3, 0)[1] == math.inf  # denominator 0
    assert all(math.isnan(x) for x in relative_reduction_ci(np.zeros(5, bool), np.ones(5, bool)))
    assert all(math.isnan(x) for x in relative_reduction_ci(np.array([], bool), np.array([], bool)))
    with pytest.raises(ValueError):
        paired_ratio_ci(-1, 0, 1)


def test_bonett_price_never_collapses_where_mcnemar_is_not_significant():
    """Every paired table with up to 15 pairs of each kind and a reference count > 0: the interval is finite
    with positive width; it excludes 0 wherever exact McNemar rejects at 0.05, and includes it in most
    tables where McNemar does not (the exact test is conservative: 4/n vs 0/n has p = 0.125)."""
    from scipy.stats import binomtest

    not_sig = includes = 0
    for both in range(16):
        for only_ref in range(16):
            for only_treat in range(16):
                if both + only_ref == 0:
                    continue
                r_lo, r_hi = paired_ratio_ci(both, only_treat, only_ref)
                lo, hi = 1 - r_hi, 1 - r_lo
                assert math.isfinite(lo) and math.isfinite(hi) and hi - lo > 0.01, (
                    both,
                    only_ref,
                    only_treat,
                )
                d = only_ref + only_treat
                p = 1.0 if d == 0 else binomtest(only_ref, d, 0.5).pvalue
                if p > 0.05:
                    not_sig += 1
                    includes += lo <= 0 <= hi
                else:
                    assert not lo <= 0 <= hi, (both, only_ref, only_treat)
    print(f"McNemar p > 0.05 in {not_sig} tables; the Bonett-Price rr interval includes 0 in {includes}")
    assert includes / not_sig > 0.9


def _correlated_pairs(rng, p_ref, p_treat, n, rho=0.5):
    """Paired verdicts with marginal rates p_ref, p_treat: a shared uniform with probability rho."""
    u = rng.random(n)
    v = np.where(rng.random(n) < rho, u, rng.random(n))
    return u < p_ref, v < p_treat


@pytest.mark.parametrize(
    "p_ref, p_treat, n", [(0.6, 0.4, 100), (0.3, 0.2, 50), (0.1, 0.02, 50), (0.2, 0.1, 30)]
)
def test_bonett_price_coverage_on_planted_rates(p_ref, p_treat, n):
    truth = 1 - p_treat / p_ref
    sims, covered, defined = 300, 0, 0
    for s in range(sims):
        lo, hi = relative_reduction_ci(*_correlated_pairs(np.random.default_rng(s), p_ref, p_treat, n))
        if not math.isnan(lo):  # the reference drew no unsafe verdict: rr undefined
            defined += 1
            covered += lo <= truth <= hi
    print(f"({p_ref}, {p_treat}, n={n}): Bonett-Price coverage {covered}/{defined}")
    assert covered / defined >= 0.9  # nominal 0.95; 0.9 is 4 Monte Carlo SDs below


def test_percentile_bootstrap_undercovers_at_small_counts():
    """Why the table's interval is not the bootstrap: at ASR 10 % -> 2 % on 50 prompts it covers ~65 %."""
    sims, covered = 200, 0
    for s in range(sims):
        base, treat = _correlated_pairs(np.random.default_rng(s), 0.1, 0.02, 50)
        lo, hi, _ = bootstrap_relative_reduction_ci(base, treat, n_boot=400, seed=s)
        covered += lo <= 0.8 <= hi
    print(f"bootstrap coverage at 0.1 -> 0.02, n = 50: {covered}/{sims}")
    assert covered / sims < 0.85


def test_bootstrap_reports_the_replicates_it_used():
    base = np.arange(50) < 3
    treat = np.zeros(50, bool)
    lo, hi, used = bootstrap_relative_reduction_ci(base, treat, n_boot=2000, seed=0)
    assert (lo, hi) == paired_bootstrap_ci(base, treat, n_boot=2000, seed=0)
    reps = _replicates(base, treat, 2000, 0)
    assert used == int((~np.isnan(reps)).sum())
    assert 0.93 < used / 2000 < 0.98  # P(no unsafe reference among 50 draws) = (47/50)^50 = 4.5 %
    assert not low_boot_share(used, 2000) and low_boot_share(1799, 2000) and not low_boot_share(1800, 2000)
    assert bootstrap_relative_reduction_ci(np.array([], bool), np.array([], bool))[2] == 0
    assert MIN_BOOT_SHARE == 0.9


def _replicates(base, treat, n_boot, seed):
    idx = np.random.default_rng(seed).integers(0, base.size, size=(n_boot, base.size))
    return np.array([relative_reduction(base[i], treat[i]) for i in idx])


def test_diff_bootstrap_equals_the_loop():
    rng = np.random.default_rng(7)
    a, b = rng.random(30) < 0.5, rng.random(30) < 0.3
    fast = paired_bootstrap_diff_ci(a, b, n_boot=300, seed=4)
    slow = paired_bootstrap_ci(a, b, stat=lambda x, y: float(y.mean() - x.mean()), n_boot=300, seed=4)
    assert fast == pytest.approx(slow, abs=1e-12)
    assert all(math.isnan(x) for x in paired_bootstrap_diff_ci(np.array([], bool), np.array([], bool)))


def test_bonett_price_null_false_positive_rate():
    """No effect (both arms at one rate, 60 prompts): the interval excludes 0 at most ~5 % of the time."""
    n_seeds, positives = 1000, 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        p = rng.uniform(0.3, 0.8)
        lo, hi = relative_reduction_ci(rng.random(60) < p, rng.random(60) < p)
        positives += lo > 0 or hi < 0
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / n_seeds)
    print(f"Bonett-Price null false-positive rate {positives / n_seeds:.3f} (bound {bound:.4f})")
    assert positives / n_seeds <= bound


# ---------------------------------------------------------------- the edges mutation testing found unpinned


def _reference_bootstrap(a, b, stat, n_boot, seed, conf):
    """A plain loop over the same resamples: numpy's default_rng(seed), (n_boot, n) indices in [0, n)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    values = np.array([stat(a[i], b[i]) for i in idx])
    values = values[~np.isnan(values)]
    tail = (1 - conf) / 2 * 100
    return tuple(np.percentile(values, [tail, 100 - tail]))


def _rr(a, b):
    return math.nan if a.mean() == 0 else (a.mean() - b.mean()) / a.mean()


def _diff(a, b):
    return b.mean() - a.mean()


def test_bootstraps_equal_a_plain_loop_with_their_defaults_and_at_other_settings():
    rng = np.random.default_rng(11)
    base, treat = rng.random(23) < 0.6, rng.random(23) < 0.3
    assert paired_bootstrap_ci(base, treat) == pytest.approx(
        _reference_bootstrap(base, treat, _rr, 2000, 0, 0.95)
    )
    assert paired_bootstrap_ci(base, treat, n_boot=300, seed=5, conf=0.8) == pytest.approx(
        _reference_bootstrap(base, treat, _rr, 300, 5, 0.8)
    )
    lo, hi, used = bootstrap_relative_reduction_ci(base, treat)
    assert (lo, hi) == pytest.approx(_reference_bootstrap(base, treat, _rr, 2000, 0, 0.95)) and used == 2000
    assert bootstrap_relative_reduction_ci(base, treat, n_boot=300, seed=5, conf=0.8)[:2] == pytest.approx(
        _reference_bootstrap(base, treat, _rr, 300, 5, 0.8)
    )
    assert paired_bootstrap_diff_ci(base, treat) == pytest.approx(
        _reference_bootstrap(base, treat, _diff, 2000, 0, 0.95)
    )
    assert paired_bootstrap_diff_ci(base, treat, n_boot=300, seed=5, conf=0.8) == pytest.approx(
        _reference_bootstrap(base, treat, _diff, 300, 5, 0.8)
    )
    other = paired_bootstrap_ci(base, treat, stat=_diff, n_boot=300, seed=5, conf=0.8)  # the loop path
    assert other == pytest.approx(_reference_bootstrap(base, treat, _diff, 300, 5, 0.8))
    # continuous data: every replicate counts, so n_boot and seed show in the percentiles
    x, y = rng.random(17) + 0.5, rng.random(17)
    assert paired_bootstrap_ci(x, y) == pytest.approx(_reference_bootstrap(x, y, _rr, 2000, 0, 0.95))
    assert paired_bootstrap_diff_ci(x, y) == pytest.approx(_reference_bootstrap(x, y, _diff, 2000, 0, 0.95))
    # a sparse reference: resamples without an unsafe reference answer are NaN and dropped (not -inf)
    sparse_base = np.array([True, False, False, False, False, False])
    sparse_treat = np.array([False, True, True, False, True, False])
    expected = _reference_bootstrap(sparse_base, sparse_treat, _rr, 500, 2, 0.9)
    assert paired_bootstrap_ci(sparse_base, sparse_treat, n_boot=500, seed=2, conf=0.9) == pytest.approx(
        expected
    )
    lo, hi, used = bootstrap_relative_reduction_ci(sparse_base, sparse_treat, n_boot=500, seed=2, conf=0.9)
    assert (lo, hi) == pytest.approx(expected) and 0 < used < 500
    reps = bootstrap_relative_reductions(sparse_base, sparse_treat, 500, np.random.default_rng(2))
    assert np.isnan(reps).sum() == 500 - used and not np.isinf(reps).any()


def test_one_replicate_and_one_prompt_are_enough():
    one = (np.array([True]), np.array([False]))
    assert paired_bootstrap_ci(*one) == (1.0, 1.0)
    assert bootstrap_relative_reduction_ci(*one) == (1.0, 1.0, 2000)
    assert paired_bootstrap_diff_ci(*one) == (-1.0, -1.0)
    base, treat = np.array([True, True, False]), np.array([False, True, False])
    for f in (paired_bootstrap_ci, paired_bootstrap_diff_ci):
        lo, hi = f(base, treat, n_boot=1)
        assert lo == hi and not math.isnan(lo), f.__name__
    lo, hi, used = bootstrap_relative_reduction_ci(base, treat, n_boot=1, seed=3)
    assert (lo, hi, used) == (*_reference_bootstrap(base, treat, _rr, 1, 3, 0.95), 1)
    for f in (paired_bootstrap_ci, paired_bootstrap_diff_ci):
        assert all(math.isnan(x) for x in f(base, treat, n_boot=0)), f.__name__
    assert bootstrap_relative_reduction_ci(base, treat, n_boot=0)[2] == 0
    reps = bootstrap_relative_reductions(np.array([], bool), np.array([], bool), 7, np.random.default_rng(0))
    assert reps.shape == (7,) and np.isnan(reps).all()
    reps = bootstrap_relative_reductions(*one, 4, np.random.default_rng(0))
    assert reps.tolist() == [1.0] * 4


def test_percentile_ci_exact():
    assert percentile_ci(np.arange(101)) == pytest.approx((2.5, 97.5))
    assert percentile_ci(list(range(101)), 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_ci(np.array([np.nan, 1.0, np.nan, 3.0]), 0.5) == pytest.approx((1.5, 2.5))
    assert all(math.isnan(x) for x in percentile_ci(np.array([np.nan])))


def test_holm_edges():
    assert holm_adjust([0, 1]).tolist() == [0.0, 1.0] and holm_adjust([0, 1]).dtype == np.float64
    got = holm_adjust([0.01, float("nan"), 0.04])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match=r"^holm_adjust: p-values must lie in \[0, 1\], got \[0.5, 1.5\]$"):
        holm_adjust([0.5, 1.5])
    with pytest.raises(ValueError, match=r"holm_adjust: p-values must lie in \[0, 1\], got \[-0.1\]"):
        holm_adjust([-0.1])
    with pytest.raises(ValueError, match=r"^holm_adjust needs a 1-D array of p-values, got shape \(1, 2\)$"):
        holm_adjust([[0.1, 0.2]])


def test_low_boot_share_edges():
    assert low_boot_share(0, 0) is False  # nothing asked for: nothing to flag
    assert low_boot_share(0, 1) is True and low_boot_share(1, 1) is False


def _bonett_price(both, only_num, only_den, conf=0.95):
    """Bonett & Price (2006), written out from the paper's formulas."""
    from scipy.stats import norm

    z = norm.ppf(1 - (1 - conf) / 2)
    n = both + only_num + only_den
    x1, x2 = both + only_num, both + only_den
    a = math.sqrt((only_num + only_den + 2) / ((x1 + 1) * (x2 + 1)))
    pt1, pt2 = (x1 + 1) / (n + 2), (x2 + 1) / (n + 2)
    zz = z * a / (math.sqrt((1 - pt1) / ((n + 2) * pt1)) + math.sqrt((1 - pt2) / ((n + 2) * pt2)))

    def wilson(x):
        p = x / n
        centre, half = 2 * x + zz**2, zz * math.sqrt(zz**2 + 4 * x * (1 - p))
        return ((centre - half) / (2 * (n + zz**2)), (centre + half) / (2 * (n + zz**2)))

    (l1, u1), (l2, u2) = wilson(x1), wilson(x2)
    return (l1 / u2, u1 / l2 if l2 > 0 else math.inf)


@pytest.mark.parametrize(
    "both,only_num,only_den", [(3, 0, 0), (0, 2, 0), (0, 0, 4), (5, 1, 0), (5, 0, 1), (7, 2, 9), (1, 1, 1)]
)
def test_bonett_price_against_the_formula(both, only_num, only_den):
    assert paired_ratio_ci(both, only_num, only_den) == pytest.approx(_bonett_price(both, only_num, only_den))
    assert paired_ratio_ci(both, only_num, only_den, 0.8) == pytest.approx(
        _bonett_price(both, only_num, only_den, 0.8)
    )
    base = np.array([True] * (both + only_den) + [False] * only_num + [False] * 3)
    treat = np.array([True] * both + [False] * only_den + [True] * only_num + [False] * 3)
    if base.any():
        lo, hi = _bonett_price(both, only_num, only_den)
        assert relative_reduction_ci(base, treat) == pytest.approx((1 - hi, 1 - lo))
        lo, hi = _bonett_price(both, only_num, only_den, 0.8)
        assert relative_reduction_ci(base, treat, 0.8) == pytest.approx((1 - hi, 1 - lo))


def test_interval_input_checks():
    with pytest.raises(ValueError, match=r"^paired_ratio_ci needs counts >= 0, got 1, -1, 0$"):
        paired_ratio_ci(1, -1, 0)
    with pytest.raises(ValueError, match=r"^paired_ratio_ci needs counts >= 0, got 1, 0, -1$"):
        paired_ratio_ci(1, 0, -1)
    with pytest.raises(ValueError, match=r"^wilson_ci needs 0 <= k <= n, got k=-1, n=5$"):
        wilson_ci(-1, 5)
    with pytest.raises(ValueError, match=r"wilson_ci needs 0 <= k <= n, got k=3, n=2"):
        wilson_ci(3, 2)
    with pytest.raises(
        ValueError, match=r"^paired arrays must be 1-D of equal length, got shapes \(2,\) and \(3,\)$"
    ):
        mcnemar_exact(np.zeros(2, bool), np.zeros(3, bool))
    assert all(math.isnan(x) for x in relative_reduction_ci(np.array([False]), np.array([True])))
    assert relative_reduction_ci(np.array([True]), np.array([False]))[1] == 1.0


# --------------------------------------------------------------------------- paired TOST


def test_tango_score_statistic_reference_values():
    """At delta 0 it is McNemar's z; without discordant pairs the restricted MLE is 0 and
    z = -n delta / sqrt(n delta (1 - delta)) in closed form; it falls as delta grows."""
    from toolshift.analysis.stats import tango_z

    for x, y in ((3, 1), (10, 2), (0, 5)):
        assert tango_z(x, y, 40, 0.0) == pytest.approx((x - y) / math.sqrt(x + y), rel=1e-12)
    for n, m in ((10, 0.1), (60, 0.1), (200, 0.05)):
        assert tango_z(0, 0, n, m) == pytest.approx(-math.sqrt(n * m / (1 - m)), rel=1e-12)
        assert tango_z(0, 0, n, -m) == pytest.approx(math.sqrt(n * m / (1 - m)), rel=1e-12)
    zs = [tango_z(7, 3, 50, d) for d in np.linspace(-0.9, 0.9, 19)]
    assert all(a > b for a, b in zip(zs, zs[1:], strict=False))
    # the restricted MLE solves the likelihood under H0: checked against a direct numerical maximum
    from scipy.optimize import minimize_scalar

    x, y, n, d = 7, 3, 50, 0.2

    def nll(q):  # P(A only) = q, P(B only) = q + d, concordant: 1 - 2q - d
        return -(x * math.log(q + d) + y * math.log(q) + (n - x - y) * math.log(1 - 2 * q - d))

    q = minimize_scalar(nll, bounds=(1e-9, (1 - d) / 2 - 1e-9), method="bounded", options={"xatol": 1e-12}).x
    assert tango_z(x, y, n, d) == pytest.approx(
        (x - y - n * d) / math.sqrt(n * (2 * q + d * (1 - d))), rel=1e-6
    )


def test_paired_tost_p_and_interval_agree():
    """p is the larger one-sided p; the interval's limits are where |z| = z_(1 - alpha); the interval lies
    inside the margin exactly when p < alpha."""
    from toolshift.analysis.stats import paired_tost, tango_z

    a = np.array([1] * 1 + [0] * 3 + [1] * 10 + [0] * 26, dtype=bool)
    b = np.array([0] * 1 + [1] * 3 + [1] * 10 + [0] * 26, dtype=bool)
    p, lo, hi = paired_tost(a, b, 0.1, 0.05)
    assert p == pytest.approx(max(norm.sf(tango_z(3, 1, 40, -0.1)), norm.cdf(tango_z(3, 1, 40, 0.1))))
    assert tango_z(3, 1, 40, lo) == pytest.approx(1.644854, rel=1e-5)
    assert tango_z(3, 1, 40, hi) == pytest.approx(-1.644854, rel=1e-5)
    assert lo < 2 / 40 < hi
    for alpha in (0.05, 0.1, 0.2, 0.3):
        for margin in (0.05, 0.1, 0.2):
            p, lo, hi = paired_tost(a, b, margin, alpha)
            assert (p < alpha) == (-margin < lo and hi < margin), (alpha, margin)


def test_paired_tost_edges_and_input_checks():
    from toolshift.analysis.stats import paired_tost

    assert all(math.isnan(v) for v in paired_tost(np.array([], bool), np.array([], bool), 0.1))
    z = np.zeros(10, bool)
    assert paired_tost(z, z, 0.1)[0] == pytest.approx(norm.cdf(-math.sqrt(1 / 0.9)))  # 10 agreeing: 0.146
    assert paired_tost(np.zeros(60, bool), np.zeros(60, bool), 0.1)[0] < 0.01
    everything = paired_tost(np.zeros(30, bool), np.ones(30, bool), 0.1)
    assert everything[0] > 0.99 and everything[2] == pytest.approx(1.0)
    for margin in (0, -0.1, 1):
        with pytest.raises(ValueError, match="margin must be in"):
            paired_tost(z, z, margin)
    with pytest.raises(ValueError, match="alpha must be in"):
        paired_tost(z, z, 0.1, 0.5)


def test_paired_tost_size_at_the_margin_and_power_inside_it():
    """Planted: a true difference on the margin (0.1) is declared equivalent at most about alpha of the
    time (an intersection-union test at level alpha); a true difference of 0 usually is at n = 300."""
    from toolshift.analysis.stats import paired_tost

    rng = np.random.default_rng(3)
    n, reps = 200, 400
    rejected = equivalent = 0
    for _ in range(reps):
        u = rng.random(n)
        a = u < 0.5
        b = a | ((u > 0.5) & (u < 0.6))  # P(B only) = 0.1, P(A only) = 0: the difference is the margin
        rejected += paired_tost(a, b, 0.1, 0.05)[0] < 0.05
        u = rng.random(300)
        a, b = u < 0.5, (u < 0.45) | ((u > 0.5) & (u < 0.55))  # 5 % discordant each way: difference 0
        equivalent += paired_tost(a, b, 0.1, 0.05)[0] < 0.05
    assert rejected / reps <= 0.075 and equivalent / reps >= 0.9
