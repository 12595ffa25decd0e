"""Logistic probes: planted separable signal, chance on noise, folds that never leak a prompt."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import check_grad

from toolshift.analysis.probes import (
    cross_condition_accuracy,
    cv_accuracy,
    fit_logistic,
    held_out_accuracy,
    stratified_folds,
)


def planted(n: int = 120, d: int = 30, signal: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 0
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    x = rng.standard_normal((n, d)) + np.outer(np.where(y, signal, -signal), w) + 5.0  # offset: standardised
    return x, y


def test_fit_separates_planted_classes_and_recovers_the_direction():
    x, y = planted(signal=3.0)
    probe = fit_logistic(x, y)
    assert probe.accuracy(x, y) > 0.97
    rng = np.random.default_rng(0)
    w = rng.standard_normal(30)
    w /= np.linalg.norm(w)
    coef_raw = probe.coef / probe.scale  # back in the input's units
    assert abs(coef_raw @ w) / np.linalg.norm(coef_raw) > 0.9


def test_fit_is_the_optimum_of_the_penalised_loss():
    x, y = planted(n=60, d=8, signal=0.5)
    probe = fit_logistic(x, y, l2=2.0)
    z = (x - probe.mean) / probe.scale
    s = np.where(y, 1.0, -1.0)

    def loss(theta):
        return np.sum(np.logaddexp(0, -s * (z @ theta[:-1] + theta[-1]))) + 1.0 * theta[:-1] @ theta[:-1]

    def grad(theta):
        g = -s / (1 + np.exp(s * (z @ theta[:-1] + theta[-1])))
        return np.concatenate([z.T @ g + 2.0 * theta[:-1], [g.sum()]])

    theta = np.concatenate([probe.coef, [probe.intercept]])
    assert np.linalg.norm(grad(theta)) < 1e-4  # stationary point of a strictly convex loss
    assert check_grad(loss, grad, theta + 0.1) < 1e-4
    assert fit_logistic(x, y, l2=2.0).coef == pytest.approx(probe.coef)  # deterministic


def test_cv_accuracy_planted_versus_noise():
    x, y = planted(signal=2.0)
    assert cv_accuracy(x, y, k=5) > 0.9
    rng = np.random.default_rng(1)
    accs = [
        cv_accuracy(rng.standard_normal((80, 20)), np.arange(80) % 2 == 0, k=5, seed=s) for s in range(10)
    ]
    print("noise CV accuracies", np.round(accs, 3))
    assert 0.35 < np.mean(accs) < 0.65


def test_stratified_folds():
    y = np.array([True] * 7 + [False] * 13)
    folds = stratified_folds(y, 5, seed=0)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    for f in range(5):
        assert 1 <= y[folds == f].sum() <= 2
    assert stratified_folds(y, 10).max() == 6  # k limited by the smaller class
    assert stratified_folds(np.array([True, False, False]), 5).size == 0
    assert math.isnan(cv_accuracy(np.zeros((3, 2)), np.array([True, False, False])))


def test_cross_condition_accuracy_transfers_and_never_leaks():
    x, y = planted(n=80, d=10, signal=2.0)
    states = {
        "direct": x[:, None, :],
        "same": x[:, None, :].copy(),
        "flipped": (2 * x.mean(axis=0) - x)[:, None, :],  # classes mirrored: the probe is wrong
        "noise": np.random.default_rng(3).standard_normal((80, 1, 10)) + 5,
    }
    acc = cross_condition_accuracy(states, "direct", y, k=4, seed=0)
    assert acc["direct"][0] == acc["same"][0] > 0.9
    assert acc["flipped"][0] < 0.1
    assert 0.3 < acc["noise"][0] < 0.7
    # leakage check: memorisable labels (one unique state per prompt, random labels) give chance, not 100 %
    rng = np.random.default_rng(5)
    ids = rng.standard_normal((60, 1, 200))
    labels = rng.random(60) < 0.5
    leak = cross_condition_accuracy({"direct": ids, "copy": ids.copy()}, "direct", labels, k=5)
    assert leak["copy"][0] < 0.8


def test_held_out_accuracy():
    x, y = planted(n=100, d=10, signal=2.0)
    acc = held_out_accuracy(x[:60, None], y[:60], {"a": x[60:, None]}, y[60:])
    assert acc["a"][0] > 0.9
    assert np.isnan(held_out_accuracy(x[:60, None], np.ones(60, bool), {"a": x[60:, None]}, y[60:])["a"][0])
    assert np.isnan(held_out_accuracy(x[:60, None], y[:60], {"a": x[:0, None]}, y[:0])["a"][0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(np.zeros((4, 2)), np.ones(4, bool))
    with pytest.raises(ValueError, match="x"):
        fit_logistic(np.zeros(4), np.array([True, False, True, False]))


def test_accuracy_null_rejects_a_probe_that_reads_the_labels_and_not_one_that_guesses():
    """The probe-accuracy null of the representation table: bootstrap interval over prompts, and a
    one-sided p from shuffling the harmful labels among the scored prompts (the probe stays fixed)."""
    from toolshift.analysis.representation_nulls import accuracy_null

    x, y = planted(n=200, signal=2.0, seed=3)
    probe = fit_logistic(x[:100], y[:100])
    est, lo, hi, p = accuracy_null(probe.predict(x[100:]), y[100:], 1000, 0)
    assert est == probe.accuracy(x[100:], y[100:]) and est > 0.9
    assert lo <= est <= hi and p < 0.01
    # a probe fitted on noise: its accuracy on new prompts is not told from shuffled labels
    rng = np.random.default_rng(4)
    rates = []
    for s in range(60):
        noise = rng.standard_normal((80, 10))
        labels = rng.random(80) < 0.5
        guess = fit_logistic(noise[:40], labels[:40]) if labels[:40].any() and not labels[:40].all() else None
        if guess is not None:
            rates.append(accuracy_null(guess.predict(noise[40:]), labels[40:], 300, s)[3] < 0.05)
    print("probe accuracy null, rejection rate on noise:", np.mean(rates))
    assert np.mean(rates) < 0.12
    assert all(math.isnan(v) for v in accuracy_null(np.array([], bool), np.array([], bool), 10, 0))
