"""Linear probes (L2-regularised logistic regression) for harmful vs harmless, with cross-validation.

A small numpy/scipy implementation (no scikit-learn): features are standardised with the fitting
set's mean and standard deviation, and ``sum_i logloss_i + l2 / 2 * |w|^2`` (the intercept is not
penalised; ``l2 = 1`` is scikit-learn's default ``C = 1``) is minimised with L-BFGS from zero (to a
relative decrease of 1e-12), so a fit is deterministic. Accuracy predicts "harmful" where the logit
is > 0.

The vectors file stores two accuracies per condition and layer (`toolshift.analysis.vectors`): probes fitted
on the ``direct`` states of the training prompts and scored on every condition by stratified k-fold
cross-validation over prompts (`cross_condition_accuracy`: a prompt's states under any condition are never in
both the fitting and the scored fold), and a probe fitted on all training prompts and scored on the test
prompts (`held_out_accuracy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

DEFAULT_L2 = 1.0
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class LogisticProbe:
    """A fitted probe: ``logit(x) = ((x - mean) / scale) @ coef + intercept``."""

    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray

    def decision(self, x: np.ndarray) -> np.ndarray:
        """The logit of "harmful" for each row of `x` (n, d)."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Boolean predictions (True = harmful)."""
        return self.decision(x) > 0

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Share of rows predicted correctly; NaN for no rows."""
        y = np.asarray(y, dtype=bool)
        return float(np.mean(self.predict(x) == y)) if y.size else math.nan


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = DEFAULT_L2, max_iter: int = 500
) -> LogisticProbe:
    """Fit an L2 logistic regression of boolean `y` (n,) on `x` (n, d); both classes must be present."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_logistic needs x (n, d) and y (n,), got {x.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError("fit_logistic needs both classes in y")
    if not l2 > 0:
        raise ValueError(f"fit_logistic: l2 must be > 0, got {l2!r}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    sign = np.where(y, 1.0, -1.0)
    d = z.shape[1]

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        margin = sign * (z @ w + b)
        loss = -np.sum(log_expit(margin)) + 0.5 * l2 * float(w @ w)
        g = -sign * expit(-margin)  # d loss / d logit
        return loss, np.concatenate([z.T @ g + l2 * w, [g.sum()]])

    result = minimize(
        loss_grad,
        np.zeros(d + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-8, "ftol": 1e-12},
    )
    theta = result.x
    return LogisticProbe(coef=theta[:d], intercept=float(theta[d]), mean=mean, scale=scale)


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """A fold index (0..k'-1) per row, stratified by `y`, with k' = min(k, smallest class size).

    Returns an empty array when a class has fewer than 2 rows (no cross-validation is possible).
    """
    y = np.asarray(y, dtype=bool)
    n_min = min(int(y.sum()), int((~y).sum()))
    k = min(int(k), n_min)
    if k < 2:
        return np.array([], dtype=int)
    rng = np.random.default_rng(seed)
    folds = np.empty(y.size, dtype=int)
    for cls in (True, False):
        rows = np.flatnonzero(y == cls)
        rows = rows[rng.permutation(rows.size)]
        folds[rows] = np.arange(rows.size) % k
    return folds


def cv_accuracy(
    x: np.ndarray, y: np.ndarray, *, k: int = DEFAULT_FOLDS, seed: int = 0, l2: float = DEFAULT_L2
) -> float:
    """Stratified k-fold cross-validated accuracy (pooled over folds); NaN if a class has < 2 rows."""
    acc = cross_condition_accuracy({"x": np.asarray(x)[:, None, :]}, "x", y, k=k, seed=seed, l2=l2)
    return float(acc["x"][0])


def cross_condition_accuracy(
    states: dict[str, np.ndarray],
    fit_on: str,
    y: np.ndarray,
    *,
    k: int = DEFAULT_FOLDS,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> dict[str, np.ndarray]:
    """Cross-validated accuracy per layer of probes fitted on ``states[fit_on]`` and scored on every entry.

    `states` maps a name (condition) to an array (n_prompts, n_layers, d) over the same prompts in the
    same order; `y` (n_prompts,) are the labels. Folds are over prompts (stratified by `y`), so a
    prompt's states are never in the fitting fold when they are scored. Returns name -> (n_layers,)
    accuracies pooled over folds; all NaN when a class has fewer than 2 prompts.
    """
    y = np.asarray(y, dtype=bool)
    names = list(states)
    n_layers = states[fit_on].shape[1]
    folds = stratified_folds(y, k, seed)
    out = {c: np.full(n_layers, np.nan) for c in names}
    if folds.size == 0:
        return out
    correct = {c: np.zeros(n_layers) for c in names}
    for layer in range(n_layers):
        for f in np.unique(folds):
            held = folds == f
            probe = fit_logistic(states[fit_on][~held, layer], y[~held], l2=l2)
            for c in names:
                correct[c][layer] += np.sum(probe.predict(states[c][held, layer]) == y[held])
    return {c: correct[c] / y.size for c in names}


def held_out_accuracy(
    fit_states: np.ndarray,
    fit_y: np.ndarray,
    eval_states: dict[str, np.ndarray],
    eval_y: np.ndarray,
    *,
    l2: float = DEFAULT_L2,
) -> dict[str, np.ndarray]:
    """Accuracy per layer on `eval_states` (name -> (m, n_layers, d)) of probes fitted on all of
    `fit_states` (n, n_layers, d); NaN where fitting is impossible (one class) or there is nothing to score.
    """
    fit_y = np.asarray(fit_y, dtype=bool)
    eval_y = np.asarray(eval_y, dtype=bool)
    n_layers = fit_states.shape[1]
    out = {c: np.full(n_layers, np.nan) for c in eval_states}
    if fit_y.all() or not fit_y.any() or eval_y.size == 0:
        return out
    for layer in range(n_layers):
        probe = fit_logistic(fit_states[:, layer], fit_y, l2=l2)
        for c, s in eval_states.items():
            out[c][layer] = probe.accuracy(s[:, layer], eval_y)
    return out


__all__ = [
    "DEFAULT_FOLDS",
    "DEFAULT_L2",
    "LogisticProbe",
    "cross_condition_accuracy",
    "cv_accuracy",
    "fit_logistic",
    "held_out_accuracy",
    "stratified_folds",
]
