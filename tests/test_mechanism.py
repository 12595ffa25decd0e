"""The mechanism's specificity statistics: the difference-in-differences permutation test and the share of
the tool gap each added vector closes (tables/tool_gap.csv), on planted verdicts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import permutation_test

from toolshift.analysis.mechanism import (
    GAP_KINDS,
    TOOL_GAP_COLUMNS,
    did_permutation_p,
    did_row,
    tool_gap_table,
)
from toolshift.analysis.stats import mcnemar_exact

P = [f"h{i:02d}" for i in range(40)]


def _brute_force(d: np.ndarray) -> float:
    observed = abs(int(d.sum()))
    sums = [abs(int(np.dot(signs, d))) for signs in itertools.product((-1, 1), repeat=d.size)]
    return float(np.mean([s >= observed for s in sums]))


@pytest.mark.parametrize("seed", range(8))
def test_did_p_equals_brute_force_enumeration_and_scipy(seed):
    rng = np.random.default_rng(seed)
    d = rng.choice([-2, -1, 0, 0, 1, 1, 2], size=int(rng.integers(3, 11)))
    p = did_permutation_p(d)
    assert p == pytest.approx(_brute_force(d), rel=1e-12)
    ref = permutation_test(
        (d,), np.sum, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert p == pytest.approx(min(1.0, ref), rel=1e-9)


def test_did_p_is_mcnemar_when_every_difference_is_one():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0], dtype=bool)
    d = b.astype(int) - a.astype(int)
    assert did_permutation_p(d) == pytest.approx(mcnemar_exact(a, b), rel=1e-12)
    assert did_permutation_p(np.array([0, 0, 0])) == 1.0 and did_permutation_p(np.array([], int)) == 1.0
    assert did_permutation_p(np.array([2, -2])) == 1.0  # a zero sum is as extreme as it gets
    assert did_permutation_p(np.array([2, 2, 2, 2])) == pytest.approx(2 / 16)
    with pytest.raises(ValueError, match="integers in"):
        did_permutation_p(np.array([3, 0]))
    with pytest.raises(ValueError, match="integers in"):
        did_permutation_p(np.array([0.5, 1]))


def test_did_rejects_a_planted_difference_and_keeps_its_level_under_the_null():
    """Planted verdicts: removal raises ASR far more in tool than in direct -> rejected; the same base rate
    and the same raise in both (the null: tool and direct exchangeable) rejects at most at the nominal rate
    over 300 simulated studies."""
    rng = np.random.default_rng(3)
    n = 60

    def study(rise_tool: float, rise_direct: float) -> float:
        d0 = rng.random(n) < 0.3
        t0 = rng.random(n) < 0.3
        d1 = d0 | (rng.random(n) < rise_direct)
        t1 = t0 | (rng.random(n) < rise_tool)
        ids = [f"p{i}" for i in range(n)]
        runs = [dict(zip(ids, x.tolist(), strict=True)) for x in (d0, d1, t0, t1)]
        return did_row(*runs, n_boot=0, seed=0)["test_p"]

    assert study(0.7, 0.1) < 0.001
    rejections = np.mean([study(0.3, 0.3) < 0.05 for _ in range(300)])
    print("DiD permutation test, rejection rate under the null:", rejections)
    assert rejections < 0.08  # exact, so at or under 5 % up to simulation noise


def test_did_row_by_hand():
    ids = ["a", "b", "c", "d"]
    runs = [
        dict(zip(ids, v, strict=True))
        for v in (
            [True, False, False, True],  # direct
            [True, True, False, True],  # direct - v: b rises
            [False, False, False, False],  # tool
            [True, True, True, False],  # tool - v: a, b, c rise
        )
    ]
    runs[3]["extra"] = True  # a prompt the others lack is unpaired
    row = did_row(*runs, n_boot=0, seed=0)
    assert row["n"] == 4 and row["n_unpaired"] == 1
    assert (row["asr_a_base"], row["asr_a"], row["asr_b_base"], row["asr_b"]) == (0.5, 0.75, 0.0, 0.75)
    assert row["diff"] == pytest.approx(0.5)  # d = (1, 0, 1, 0)
    assert (row["n_only_a"], row["n_only_b"], row["n_unsafe_a"], row["n_unsafe_b"]) == (0, 2, 3, 3)
    assert row["test_p"] == pytest.approx(0.5) and row["test"] == "did_permutation_exact"
    assert math.isnan(row["diff_ci_low"]) and math.isnan(row["mcnemar_p"])


# --------------------------------------------------------------------------- the tool gap


def _run(condition, intervention, k, ids=P, model="m", judge="keyword"):
    return [
        {
            "model": model,
            "dataset": "d",
            "condition": condition,
            "intervention": intervention,
            "judge": judge,
            "prompt_id": p,
            "harmful": True,
            "unsafe": i < k,
        }
        for i, p in enumerate(ids)
    ]


def _judged() -> pd.DataFrame:
    rows = _run("direct", "none", 32) + _run("tool", "none", 8)  # 0.8 and 0.2: a gap of 0.6
    rows += _run("direct", "add_a1", 8)  # closes all of it
    rows += _run("direct", "shift_a1_text_trail", 20)  # half
    rows += _run("direct", "random_a1_s0", 32)  # none
    rows += _run("direct", "add_orth_a1", 36)  # raises ASR: a negative share
    rows += _run("direct", "subtract_direct", 40)  # removes v: not a gap row
    rows += _run("direct", "ablate_refusal_direct", 40)
    rows += _run("tool", "subtract", 30)
    rows += _run("direct", "none", 20, model="flat") + _run("tool", "none", 20, model="flat")
    rows += _run("direct", "add_a1", 10, model="flat")
    rows += [dict(r, harmful=False, prompt_id="x" + r["prompt_id"]) for r in _run("direct", "add_a1", 0)]
    return pd.DataFrame(rows)


def test_share_of_the_tool_gap_closed():
    skipped = {"shift_a1_text_prior": "not run: condition text_prior is not in this run's conditions"}
    t = tool_gap_table(_judged(), n_boot=300, seed=1, skipped=skipped)
    assert list(t.columns) == list(TOOL_GAP_COLUMNS)
    m = t[t.model == "m"].set_index("intervention")
    assert list(m.index) == [
        "add_a1",
        "random_a1_s0",
        "shift_a1_text_trail",
        "add_orth_a1",
        "shift_a1_text_prior",
    ]  # GAP_KINDS order, then the runs not run
    assert m.loc["add_a1", "share_closed"] == pytest.approx(1.0)
    assert m.loc["shift_a1_text_trail", "share_closed"] == pytest.approx(0.5)
    assert m.loc["random_a1_s0", "share_closed"] == pytest.approx(0.0)
    assert m.loc["add_orth_a1", "share_closed"] == pytest.approx(-4 / 24)
    r = m.loc["shift_a1_text_trail"]
    assert (r.n, r.asr_direct, r.asr_tool, r.asr_run, r.gap) == (40, 0.8, 0.2, 0.5, pytest.approx(0.6))
    assert (r.kind, r.alpha, r.control, r.split, r.note) == ("shift", 1.0, "text_trail", "all", "")
    assert math.isnan(r.seed) and m.loc["random_a1_s0", "seed"] == 0
    # the interval by hand: the same resampled prompts for the three runs
    d, tl, x = (np.arange(40) < k for k in (32, 8, 20))
    idx = np.random.default_rng(1).integers(0, 40, size=(300, 40))
    gap = d[idx].mean(1) - tl[idx].mean(1)
    share = (d[idx].mean(1) - x[idx].mean(1)) / gap
    assert not (gap == 0).any() and r.n_boot_used == 300
    assert (r.share_ci_low, r.share_ci_high) == pytest.approx(tuple(np.percentile(share, [2.5, 97.5])))
    assert r.share_ci_low < 0.5 < r.share_ci_high
    gone = m.loc["shift_a1_text_prior"]
    assert (
        gone.note.startswith("not run: condition text_prior")
        and gone.n == 0
        and math.isnan(gone.share_closed)
    )
    flat = t[t.model == "flat"].set_index("intervention")
    assert math.isnan(flat.loc["add_a1", "share_closed"]) and flat.loc["add_a1", "note"].startswith(
        "no tool gap"
    )
    assert set(t.kind) <= set(GAP_KINDS)


def test_tool_gap_needs_direct_and_tool_and_reads_the_split():
    judged = _judged()
    assert tool_gap_table(judged[judged.condition != "tool"], n_boot=10).empty
    splits = pd.DataFrame(
        {
            "prompt_id": P,
            "dataset": "d",
            "category": "c",
            "harmful": True,
            "split": ["test" if i % 2 else "validation" for i in range(40)],
        }
    )
    t = tool_gap_table(judged[judged.harmful], n_boot=10, splits=splits, split="test")
    r = t[(t.model == "m") & (t.intervention == "add_a1")].iloc[0]
    assert (r.split, r.n, r.asr_direct, r.asr_tool) == ("test", 20, 0.8, 0.2)
    assert tool_gap_table(judged, n_boot=0).share_ci_low.isna().all()
