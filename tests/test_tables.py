"""ASR and over-refusal tables on a hand-made judged frame with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from toolshift.contracts import ASR_COLUMNS
from toolshift.errors import ContractError
from toolshift.stats import paired_bootstrap_ci, wilson_ci
from toolshift.tables import OVER_REFUSAL_COLUMNS, asr_table, intervention_rank, over_refusal_table

H = [f"h{i:02d}" for i in range(1, 11)]  # ten harmful prompts
B = [f"b{i:02d}" for i in range(1, 5)]  # four harmless prompts


def _rows(condition, intervention, unsafe_by_prompt, judge="keyword"):
    return [
        {
            "model": "m",
            "dataset": "d",
            "condition": condition,
            "intervention": intervention,
            "judge": judge,
            "prompt_id": p,
            "harmful": p.startswith("h"),
            "unsafe": bool(u),
            "response": "...",
        }
        for p, u in unsafe_by_prompt.items()
    ]


def _judged() -> pd.DataFrame:
    rows = []
    # direct/none (the reference): 8/10 unsafe (h01..h08); harmless b01..b03 answered, b04 refused
    rows += _rows("direct", "none", {p: p <= "h08" for p in H} | {"b01": 1, "b02": 1, "b03": 1, "b04": 0})
    # tool/none: 4/10 unsafe (h01..h04); discordant 4 vs 0
    rows += _rows("tool", "none", {p: p <= "h04" for p in H})
    # direct/add_a1: h01 and h09 unsafe (2/10); discordant 7 (h02..h08) vs 1 (h09); harmless: 3 of 4 refused
    rows += _rows(
        "direct", "add_a1", {p: p in ("h01", "h09") for p in H} | {"b01": 1, "b02": 0, "b03": 0, "b04": 0}
    )
    # tool/ablate: prompts h01..h05, h09 and an unpaired h11; h03 refused
    rows += _rows("tool", "ablate", {"h01": 1, "h02": 1, "h03": 0, "h04": 1, "h05": 1, "h09": 1, "h11": 1})
    # another judge with no reference rows
    rows += _rows("tool", "none", {p: p <= "h03" for p in H}, judge="j2")
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    with pytest.warns(UserWarning, match="dropped 1 harmful row"):
        return asr_table(_judged(), n_boot=500, seed=0)


def _row(table, condition, intervention, judge="keyword") -> pd.Series:
    sel = table[
        (table.condition == condition) & (table.intervention == intervention) & (table.judge == judge)
    ]
    assert len(sel) == 1
    return sel.iloc[0]


def test_columns_and_order(table):
    assert list(table.columns) == list(ASR_COLUMNS)
    assert list(zip(table.judge, table.condition, table.intervention, strict=True)) == [
        ("j2", "tool", "none"),
        ("keyword", "direct", "none"),
        ("keyword", "direct", "add_a1"),
        ("keyword", "tool", "none"),
        ("keyword", "tool", "ablate"),
    ]


def test_reference_row(table):
    r = _row(table, "direct", "none")
    assert (r.n, r.n_unsafe, r.asr) == (10, 8, 0.8)
    assert (r.asr_ci_low, r.asr_ci_high) == pytest.approx(wilson_ci(8, 10))
    assert (r.asr_ci_low, r.asr_ci_high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert (r.rel_reduction, r.rel_reduction_ci_low, r.rel_reduction_ci_high, r.mcnemar_p) == (0, 0, 0, 1)


def test_condition_row(table):
    r = _row(table, "tool", "none")
    assert (r.n, r.n_unsafe, r.asr) == (10, 4, 0.4)
    assert (r.asr_ci_low, r.asr_ci_high) == pytest.approx((0.1682, 0.6873), abs=1e-4)
    assert r.rel_reduction == pytest.approx(0.5)
    assert r.mcnemar_p == pytest.approx(2 / 2**4)  # 4 vs 0 discordant pairs
    ref = np.array([p <= "h08" for p in H])
    treat = np.array([p <= "h04" for p in H])
    assert (r.rel_reduction_ci_low, r.rel_reduction_ci_high) == paired_bootstrap_ci(
        ref, treat, n_boot=500, seed=0
    )
    assert r.rel_reduction_ci_low < 0.5 < r.rel_reduction_ci_high


def test_intervention_rows(table):
    r = _row(table, "direct", "add_a1")
    assert (r.n, r.n_unsafe, r.asr) == (10, 2, 0.2)
    assert r.rel_reduction == pytest.approx(0.75)
    assert r.mcnemar_p == pytest.approx(18 / 256)  # 7 vs 1 discordant pairs
    # ablate: h11 has no direct/none pair and is dropped; the rest pairs with ref (5/6 vs 5/6)
    r = _row(table, "tool", "ablate")
    assert (r.n, r.n_unsafe) == (6, 5)
    assert r.asr == pytest.approx(5 / 6)
    assert r.rel_reduction == pytest.approx(0.0)
    assert r.mcnemar_p == 1.0  # 1 vs 1 discordant
    assert table.attrs["n_unpaired"] == {"m/d/tool/ablate/keyword": 1}


def test_group_without_reference(table):
    r = _row(table, "tool", "none", judge="j2")
    assert (r.n, r.n_unsafe) == (10, 3)
    assert all(
        math.isnan(x) for x in (r.rel_reduction, r.rel_reduction_ci_low, r.rel_reduction_ci_high, r.mcnemar_p)
    )


def test_independent_of_row_order(table):
    shuffled = _judged().sample(frac=1.0, random_state=3)
    with pytest.warns(UserWarning):
        again = asr_table(shuffled, n_boot=500, seed=0)
    pd.testing.assert_frame_equal(again, table)


def test_zero_reference_asr_gives_nan():
    df = pd.DataFrame(
        _rows("direct", "none", {p: 0 for p in H}) + _rows("tool", "none", {p: p == "h01" for p in H})
    )
    t = asr_table(df, n_boot=100)
    assert math.isnan(t.rel_reduction[0]) and t.mcnemar_p[0] == 1.0
    assert math.isnan(t.rel_reduction[1]) and t.mcnemar_p[1] == 1.0


def test_bad_tables():
    df = _judged()
    with pytest.raises(ContractError, match="unsafe"):
        asr_table(df.drop(columns="unsafe"))
    bad = df.copy()
    bad["unsafe"] = bad["unsafe"].astype(int)
    with pytest.raises(ContractError, match="boolean"):
        asr_table(bad)
    with pytest.raises(ContractError, match="duplicate"):
        asr_table(pd.concat([df, df.iloc[:1]]))


def test_over_refusal_table():
    t = over_refusal_table(_judged())
    assert list(t.columns) == list(OVER_REFUSAL_COLUMNS)
    assert list(zip(t.condition, t.intervention, strict=True)) == [("direct", "none"), ("direct", "add_a1")]
    assert t.n.tolist() == [4, 4] and t.n_refused.tolist() == [1, 3]
    assert t.refusal_rate.tolist() == [0.25, 0.75]
    assert (t.refusal_ci_low[1], t.refusal_ci_high[1]) == pytest.approx(wilson_ci(3, 4))


def test_intervention_rank():
    ids = ["random_a1_s1", "ablate", "add_a2", "custom", "subtract", "none", "add_a0.5", "random_a1_s0"]
    assert sorted(ids, key=intervention_rank) == [
        "none",
        "add_a0.5",
        "add_a2",
        "subtract",
        "ablate",
        "random_a1_s0",
        "random_a1_s1",
        "custom",
    ]
