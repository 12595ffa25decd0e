"""Paired timings of `make bench` (toolshift.bench.suite): variants run interleaved repetition by repetition,
each ratio summarised with a 95 % interval from the pairs, and the CPU time of a process tree.

A ratio of two variants is estimated from the per-repetition (paired) log-ratios log(a_i / b_i): their mean,
exponentiated (the geometric mean of the ratios), with a one-sample Student t interval of that mean
(scipy.stats), exponentiated. Pairing removes what a repetition shares (the machine's state at that moment);
the interval says how far the figure could move with more repetitions on this machine.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

INTERVAL_LEVEL = 0.95
INTERVAL_METHOD = "Student t interval of the mean per-pair log ratio, exponentiated (geometric mean ratio)"


def _seconds(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def interleaved_times(
    variants: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Run every variant `repeats` times, interleaved, alternating the order each repetition (ABBA...).
    `clock`: wall time by default; `time.process_time` counts this process's CPU only, so that other
    processes on a shared machine do not enter a compute-bound ratio."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            times[name].append(_seconds(variants[name], clock))
    return times


def _check_pairs(numerator: Sequence[float], denominator: Sequence[float]) -> None:
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("a paired ratio needs two equally long, non-empty series")


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median of the per-repetition ratios numerator[i] / denominator[i]."""
    _check_pairs(numerator, denominator)
    return float(statistics.median(a / b for a, b in zip(numerator, denominator, strict=True)))


def ratio_interval(
    numerator: Sequence[float], denominator: Sequence[float], level: float = INTERVAL_LEVEL
) -> dict[str, Any]:
    """The paired ratio numerator / denominator: `ratio` (geometric mean of the per-pair ratios), `ci`
    (its `level` t interval; None with fewer than two pairs), `median` and `pairs`."""
    from scipy import stats

    _check_pairs(numerator, denominator)
    logs = np.log(np.asarray(numerator, dtype=float) / np.asarray(denominator, dtype=float))
    ci = None
    if len(logs) >= 2:
        if np.ptp(logs) == 0.0:  # identical pairs: no spread, the interval is the point
            low = high = float(logs[0])
        else:
            low, high = stats.ttest_1samp(logs, 0.0).confidence_interval(confidence_level=level)
        ci = [math.exp(low), math.exp(high)]
    return {
        "ratio": math.exp(float(np.mean(logs))),
        "ci": ci,
        "median": median_ratio(numerator, denominator),
        "pairs": len(logs),
    }


def children_cpu_s() -> float:
    """User + system CPU seconds of every child process this process has waited for (and, transitively, of
    theirs): the difference around a `subprocess.run` is the CPU time of that whole process tree."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
