"""Intervals and permutation nulls for the representation results at the selected layer.

Every statistic is paired by prompt: a condition's state and ``direct``'s (or ``tool``'s and a control's)
of the same prompt. Its 95 % interval is a percentile bootstrap over prompts (`toolshift.analysis.stats.
percentile_ci`), its p a permutation test that shuffles the two condition labels within each prompt (a
sign flip of the prompt's paired difference: under the null the two states of a prompt are exchangeable),
``p = (1 + #{|T*| >= |T|}) / (1 + n_perm)`` (two-sided; Monte Carlo over `n` random relabellings).

- `cosine_null`: cos(mean over prompts of d_p, u) for paired differences d_p (prompts, hidden) and a fixed
  direction u (the refusal direction, estimated once on the train prompts and held fixed): the cosine of
  a shift, or of a control-relative vector, with r_hat. The cosine is scale-free: flipping the signs of a
  consistent shift's d_p leaves it at about +-cos whenever the flips do not cancel, so a relabelling null
  of the cosine itself has no power. Its p is therefore the permutation test of its numerator, the mean
  projection mean(d_p . u_hat) (cos = 0 exactly when that is 0); the interval is the cosine's;
- `mean_difference_null`: the mean of a per-prompt paired difference (a projection on r_hat, or a probe's
  correctness under a condition minus under ``direct``);
- `accuracy_null`: a fixed probe's accuracy; its null permutes the harmful/harmless labels among the
  scored prompts (one-sided: accuracy above what the labels' shuffle gives).

Results are (estimate, ci_low, ci_high, p) tuples (QUANTITIES); NaN where there are no prompts.
"""

from __future__ import annotations

import math

import numpy as np

from toolshift.analysis.stats import percentile_ci

QUANTITIES: tuple[str, ...] = ("estimate", "ci_low", "ci_high", "p_perm")
"""What every null result holds, in this order."""
CHUNK = 512
"""Replicates computed at once (bounds the memory of (replicates, hidden) arrays)."""

Result = tuple[float, float, float, float]
NAN_RESULT: Result = (math.nan, math.nan, math.nan, math.nan)


def _cos(means: np.ndarray, u: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(means, axis=-1) * np.linalg.norm(u)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, means @ u / norms, np.nan)


def _replicates(rng: np.random.Generator, n_rep: int, n: int, kind: str) -> np.ndarray:
    """(n_rep, n) weights: bootstrap counts (`boot`) or random signs (`flip`)."""
    if kind == "flip":
        return rng.choice(np.array([-1.0, 1.0]), size=(n_rep, n))
    counts = np.zeros((n_rep, n))
    np.add.at(counts, (np.repeat(np.arange(n_rep), n), rng.integers(0, n, size=n_rep * n)), 1.0)
    return counts


def _p_two_sided(observed: float, null: np.ndarray) -> float:
    null = null[~np.isnan(null)]
    if math.isnan(observed) or null.size == 0:
        return math.nan
    return float((1 + np.count_nonzero(np.abs(null) >= abs(observed) - 1e-12)) / (1 + null.size))


def cosine_null(diffs: np.ndarray, direction: np.ndarray, n_boot: int, seed: int) -> Result:
    """cos(mean of `diffs` (prompts, hidden), `direction`): estimate, bootstrap CI, and the sign-flip p of
    the mean projection on the unit `direction` (the cosine's numerator; module docstring)."""
    d = np.asarray(diffs, dtype=np.float64)
    u = np.asarray(direction, dtype=np.float64)
    n = d.shape[0]
    if n == 0 or not np.all(np.isfinite(u)) or not np.linalg.norm(u) > 0:
        return NAN_RESULT
    estimate = float(_cos(d.mean(axis=0), u))
    rng = np.random.default_rng(seed)
    boot = [
        _cos(_replicates(rng, min(CHUNK, n_boot - start), n, "boot") @ d / n, u)
        for start in range(0, n_boot, CHUNK)
    ]
    lo, hi = percentile_ci(np.concatenate(boot)) if boot else (math.nan, math.nan)
    projection = d @ (u / np.linalg.norm(u))
    flip = _replicates(rng, n_boot, n, "flip") @ projection / n
    return (estimate, lo, hi, _p_two_sided(float(projection.mean()), flip) if n_boot else math.nan)


def mean_difference_null(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> Result:
    """mean(a - b) over prompts (paired): estimate, bootstrap CI, sign-flip p (labels a/b swapped)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = d.size
    if n == 0:
        return NAN_RESULT
    estimate = float(d.mean())
    rng = np.random.default_rng(seed)
    boot = _replicates(rng, n_boot, n, "boot") @ d / n
    flip = _replicates(rng, n_boot, n, "flip") @ d / n
    lo, hi = percentile_ci(boot) if n_boot else (math.nan, math.nan)
    return (estimate, lo, hi, _p_two_sided(estimate, flip))


def accuracy_null(predicted: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> Result:
    """Accuracy of fixed boolean predictions: estimate, bootstrap CI over prompts, and the one-sided p of
    a label permutation (how often shuffled labels are matched at least as well)."""
    pred = np.asarray(predicted, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    n = y.size
    if n == 0:
        return NAN_RESULT
    correct = (pred == y).astype(np.float64)
    estimate = float(correct.mean())
    rng = np.random.default_rng(seed)
    boot = _replicates(rng, n_boot, n, "boot") @ correct / n
    perms = (rng.permuted(np.tile(y, (n_boot, 1)), axis=1) == pred).mean(axis=1)
    lo, hi = percentile_ci(boot) if n_boot else (math.nan, math.nan)
    p = float((1 + np.count_nonzero(perms >= estimate - 1e-12)) / (1 + n_boot)) if n_boot else math.nan
    return (estimate, lo, hi, p)


SHIFT_STATISTICS: tuple[str, ...] = (
    "cos_shift_refusal",
    "refusal_shift",
    "probe_test_accuracy",
    "probe_accuracy_change",
)
"""The per-condition statistics of a vectors file's ``shift_null`` (condition, statistic, quantity):
cos(shift from direct, r_hat) over the train harmful prompts; the mean change of the evaluation harmful
prompts' refusal position from ``direct`` (projection on r_hat, 0 = harmless direct, 1 = harmful direct);
the direct probe's test accuracy on the condition's states; and that accuracy minus the one on ``direct``."""


def layer_nulls(
    states: dict[str, np.ndarray],
    references: list[str],
    *,
    harmful: np.ndarray,
    estimate: np.ndarray,
    evaluation: np.ndarray,
    test: np.ndarray,
    train: np.ndarray,
    r_hat: np.ndarray,
    n_boot: int,
    seed: int,
    l2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``shift_null`` (conditions, SHIFT_STATISTICS, QUANTITIES) and ``relative_null`` (references,
    QUANTITIES: cos(mean h(tool) - h(ref), r_hat)) of one layer.

    `states` maps each condition (in order, ``direct`` and ``tool`` among them) to its (prompts, hidden)
    states at the layer; the masks (prompts,) pick the prompts the vectors are estimated on (`estimate`:
    train harmful), the evaluation prompts of the projections, the probe's `test` and `train` prompts.
    Rows of ``direct`` (against itself) are NaN; so is every probe statistic without both classes in train
    or without test prompts, and the refusal shift without a finite r_hat or harmless evaluation prompts.
    """
    from toolshift.analysis.probes import fit_logistic

    harmful = np.asarray(harmful, dtype=bool)
    direct = states["direct"]
    shift = np.full((len(states), len(SHIFT_STATISTICS), len(QUANTITIES)), np.nan)
    proj = {c: s @ r_hat for c, s in states.items()} if np.all(np.isfinite(r_hat)) else None
    gap = math.nan
    if proj is not None and (evaluation & ~harmful).any():
        base = proj["direct"][evaluation & ~harmful].mean()
        gap = proj["direct"][evaluation & harmful].mean() - base
    probe = None
    fit_y = harmful[train]
    if test.any() and fit_y.any() and not fit_y.all():
        probe = fit_logistic(direct[train], fit_y, l2=l2)
    for i, (c, s) in enumerate(states.items()):
        k = seed * 1000 + i * 10
        if probe is not None:
            shift[i, 2] = accuracy_null(probe.predict(s[test]), harmful[test], n_boot, k + 2)
        if c == "direct":
            continue
        shift[i, 0] = cosine_null(s[estimate] - direct[estimate], r_hat, n_boot, k)
        if proj is not None and gap != 0 and not math.isnan(gap):
            rows = evaluation & harmful
            shift[i, 1] = mean_difference_null(proj[c][rows] / gap, proj["direct"][rows] / gap, n_boot, k + 1)
        if probe is not None:
            right = [probe.predict(x[test]) == harmful[test] for x in (s, direct)]
            shift[i, 3] = mean_difference_null(*right, n_boot, k + 3)
    relative = (
        np.stack(
            [
                cosine_null(
                    states["tool"][estimate] - states[r][estimate], r_hat, n_boot, seed * 1000 + 500 + j
                )
                for j, r in enumerate(references)
            ]
        )
        if references
        else np.zeros((0, len(QUANTITIES)))
    )
    return shift, relative


__all__ = [
    "QUANTITIES",
    "SHIFT_STATISTICS",
    "accuracy_null",
    "cosine_null",
    "layer_nulls",
    "mean_difference_null",
]
