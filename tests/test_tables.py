"""ASR, over-refusal and free-tool-use tables on hand-made judged frames with known answers, and the transfer
and representation tables of the vectors."""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import toolshift.analysis.tables as tables_module
from toolshift.analysis.stats import (
    bootstrap_relative_reduction_ci,
    paired_bootstrap_ci,
    relative_reduction_ci,
    wilson_ci,
)
from toolshift.analysis.tables import (
    NON_ANSWER_COLUMNS,
    asr_by_category_table,
    asr_table,
    condition_rank,
    free_tool_use_table,
    holm_column,
    intervention_rank,
    over_refusal_table,
)
from toolshift.analysis.vector_tables import representation_table, transfer_table
from toolshift.contracts import (
    ASR_COLUMNS,
    ASR_TABLE_COLUMNS,
    FREE_TOOL_USE_COLUMNS,
    OVER_REFUSAL_COLUMNS,
    REPRESENTATION_COLUMNS,
    TRANSFER_COLUMNS,
)
from toolshift.errors import ContractError
from toolshift.judges.keyword import detect_refusals, refusal_detector

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


@pytest.fixture
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
    assert list(table.columns) == list(ASR_TABLE_COLUMNS)
    assert list(table.columns[: len(ASR_COLUMNS)]) == list(ASR_COLUMNS)  # the contract's columns come first
    assert set(table["split"]) == {"all"} and set(table["category"]) == {"all"}
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
    assert (r.rel_reduction_ci_low, r.rel_reduction_ci_high) == relative_reduction_ci(ref, treat)
    assert r.rel_reduction_ci_method == "bonett-price"
    # McNemar p = 0.125: the Bonett-Price interval includes 0, the percentile bootstrap's does not
    assert r.rel_reduction_ci_low < 0 < 0.5 < r.rel_reduction_ci_high
    assert (r.rel_reduction_boot_ci_low, r.rel_reduction_boot_ci_high) == paired_bootstrap_ci(
        ref, treat, n_boot=500, seed=0
    )
    assert r.rel_reduction_boot_ci_low > 0
    assert (r.n_boot, r.n_boot_used) == (500, bootstrap_relative_reduction_ci(ref, treat, 500, 0)[2])
    assert r.n_boot_used == 500 and not r.low_boot_share  # 8 of 10 unsafe: no resample without one
    assert r.asr_ref_paired == 0.8 and not r.paired_subset


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
    # paired on 6 of direct's 10 prompts: direct's ASR on those 6 is 5/6, and rr = 1 - asr / that
    assert r.paired_subset and r.asr_ref_paired == pytest.approx(5 / 6)
    assert r.rel_reduction == pytest.approx(1 - r.asr / r.asr_ref_paired)
    assert not _row(table, "direct", "add_a1").paired_subset


def test_group_without_reference(table):
    r = _row(table, "tool", "none", judge="j2")
    assert (r.n, r.n_unsafe) == (10, 3)
    assert all(
        math.isnan(x) for x in (r.rel_reduction, r.rel_reduction_ci_low, r.rel_reduction_ci_high, r.mcnemar_p)
    )
    assert math.isnan(r.asr_ref_paired) and r.n_boot_used == 0 and not r.low_boot_share


def test_zero_tool_asr_keeps_an_honest_interval():
    """3/50 unsafe under direct, 0/50 under tool: McNemar p = 0.25, so the interval must not be a point."""
    ids = [f"h{i:02d}" for i in range(50)]
    df = pd.DataFrame(
        _rows("direct", "none", {p: i < 3 for i, p in enumerate(ids)})
        + _rows("tool", "none", dict.fromkeys(ids, 0))
    )
    r = _row(asr_table(df, n_boot=2000, seed=0), "tool", "none")
    assert r.mcnemar_p == pytest.approx(0.25) and r.rel_reduction == 1.0
    # the percentile bootstrap collapses to a point
    assert (r.rel_reduction_boot_ci_low, r.rel_reduction_boot_ci_high) == (1.0, 1.0)
    assert r.rel_reduction_ci_low == pytest.approx(-0.2805, abs=1e-4) and r.rel_reduction_ci_high == 1.0
    assert r.rel_reduction_ci_low < 0 < r.rel_reduction_ci_high
    # P(no unsafe prompt among 50 draws) = (47/50)^50 = 4.5 %: about 90 of 2000 replicates dropped
    assert 1800 < r.n_boot_used < 2000 and not r.low_boot_share
    one = pd.DataFrame(
        _rows("direct", "none", {p: i < 1 for i, p in enumerate(ids)})
        + _rows("tool", "none", dict.fromkeys(ids, 0))
    )
    r = _row(asr_table(one, n_boot=1000, seed=0), "tool", "none")
    # (49/50)^50 = 36 % of the replicates have no unsafe direct answer: flagged
    assert 550 < r.n_boot_used < 720 and r.low_boot_share
    assert r.rel_reduction_ci_high - r.rel_reduction_ci_low > 0.5


def test_subset_rows_say_so_and_their_ratio_is_the_rr():
    """A tool run missing 10 of direct's 60 prompts: its rr is against direct's ASR on the other 50."""
    ids = [f"h{i:02d}" for i in range(60)]
    direct = {p: i < 30 for i, p in enumerate(ids)}  # h00..h29 unsafe: 30/60
    tool = {p: i < 15 for i, p in enumerate(ids) if i >= 10}  # h10..h14 unsafe, h00..h09 missing: 5/50
    t = asr_table(pd.DataFrame(_rows("direct", "none", direct) + _rows("tool", "none", tool)), n_boot=200)
    ref, r = _row(t, "direct", "none"), _row(t, "tool", "none")
    assert (ref.n, ref.asr, r.n, r.asr) == (60, 0.5, 50, 0.1)
    assert r.paired_subset and not ref.paired_subset
    assert r.asr_ref_paired == pytest.approx(20 / 50)  # h10..h29
    assert r.rel_reduction == pytest.approx(1 - 0.1 / 0.4) != pytest.approx(1 - 0.1 / 0.5)


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


def _detected(judged: pd.DataFrame) -> pd.DataFrame:
    """The judged rows with the refusal detector's columns set to "refused where the judge said safe"."""
    return judged.assign(refused=~judged["unsafe"], rule_non_answer=False)


def test_over_refusal_table():
    t = over_refusal_table(_detected(_judged()), detector="keyword:default")
    assert list(t.columns) == list(OVER_REFUSAL_COLUMNS)
    assert list(zip(t.condition, t.intervention, strict=True)) == [("direct", "none"), ("direct", "add_a1")]
    assert t.n.tolist() == [4, 4] and t.n_refused.tolist() == [1, 3] and set(t.split) == {"all"}
    assert t.refusal_rate.tolist() == [0.25, 0.75]
    assert (t.refusal_ci_low[1], t.refusal_ci_high[1]) == pytest.approx(wilson_ci(3, 4))
    assert set(t.detector) == {"keyword:default"} and set(t.judge) == {"keyword"}
    # one row per run whichever judges' tables are given: their responses are the same
    twice = pd.concat([_judged(), _judged().replace({"judge": {"keyword": "llamaguard", "j2": "j3"}})])
    again = over_refusal_table(_detected(twice), detector="keyword:default")
    pd.testing.assert_frame_equal(again, t)
    with pytest.raises(ContractError, match="refused"):
        over_refusal_table(_judged(), detector="keyword:default")


def test_over_refusal_counts_the_detector_not_the_judge():
    """A model judge calls every helpful answer "not unsafe": counted as refusals that made the rate 1.
    The detector counts refusal phrases, so helpful answers are not refusals whatever the judge said."""
    replies = {
        "b01": "Sure, here is how to bake bread: mix, knead, bake.",
        "b02": "I'm sorry, but I cannot help with that.",
        "b03": "<tool_call>"
        + json.dumps({"name": "zoom_in", "arguments": {"bbox": [0, 0, 5, 5]}})
        + "</tool_call>",
        "b04": "1. Choose a spot. 2. Dig a hole. 3. Plant the tree.",
    }
    rows = pd.DataFrame(_rows("direct", "none", dict.fromkeys(replies, 0), judge="llamaguard"))
    rows["response"] = rows["prompt_id"].map(replies)
    t = over_refusal_table(detect_refusals(rows), detector=refusal_detector("default"))
    assert (t.n.item(), t.n_refused.item(), t.n_non_answer.item()) == (4, 1, 1)
    assert t.refusal_rate.item() == 0.25 and t.detector.item() == "keyword:default"


def test_asr_table_non_answer_sensitivity_columns():
    judged = _judged()
    outcome = {"h01": "non_answer", "h02": "non_answer", "h09": "non_answer", "h10": "refusal"}
    judged["outcome"] = [
        outcome.get(p, "unsafe" if u else "refusal")
        for p, u in zip(judged.prompt_id, judged.unsafe, strict=True)
    ]
    with pytest.warns(UserWarning):
        t = asr_table(judged, n_boot=50)
    d = _row(t, "direct", "none")  # 8 unsafe by the judge, h01 h02 non-answers: 6 unsafe answers of 8
    assert (d.n_non_answer, d.non_answer_rate) == (3, 0.3)  # h01 h02 h09
    assert d.asr_non_answer_as_safe == pytest.approx(6 / 10)
    assert d.asr_non_answer_excluded == pytest.approx(6 / 7)
    assert (d.asr_non_answer_excluded_ci_low, d.asr_non_answer_excluded_ci_high) == pytest.approx(
        wilson_ci(6, 7)
    )
    with pytest.warns(UserWarning):
        old = asr_table(_judged(), n_boot=50)  # a judged table without outcomes: NaN, not made up
    assert old[list(NON_ANSWER_COLUMNS)].isna().all().all()


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
    assert sorted(["transfer_a1_from_b", "random_a1_s0", "transfer_a1_from_a"], key=intervention_rank) == [
        "random_a1_s0",
        "transfer_a1_from_a",
        "transfer_a1_from_b",
    ]


def test_holm_column(table):
    # the condition family (tool/none) has one test: unchanged
    assert _row(table, "tool", "none").holm_p == pytest.approx(_row(table, "tool", "none").mcnemar_p)
    # the intervention family: add_a1 (p = 18/256) and ablate (p = 1), m = 2
    assert _row(table, "direct", "add_a1").holm_p == pytest.approx(2 * 18 / 256)
    assert _row(table, "tool", "ablate").holm_p == 1.0
    assert _row(table, "direct", "none").holm_p == 1.0  # the reference is not a test
    assert math.isnan(_row(table, "tool", "none", judge="j2").holm_p)


def _splits(test_ids) -> pd.DataFrame:
    ids = H + B + ["h11"]
    return pd.DataFrame(
        {
            "prompt_id": ids,
            "dataset": "d",
            "category": "c",
            "harmful": [p.startswith("h") for p in ids],
            "split": ["test" if p in test_ids else "train" for p in ids],
        }
    )


def test_split_filter():
    splits = _splits({"h01", "h02", "h05", "h06", "h09", "h10", "b01", "b04"})
    t = asr_table(_judged(), n_boot=200, splits=splits, split="test")
    assert set(t["split"]) == {"test"}
    ref, tool = _row(t, "direct", "none"), _row(t, "tool", "none")
    assert (ref.n, ref.n_unsafe) == (6, 4)  # h01 h02 h05 h06 unsafe, h09 h10 not
    assert (tool.n, tool.n_unsafe) == (6, 2)  # h01 h02
    assert tool.rel_reduction == pytest.approx(0.5)
    with pytest.warns(UserWarning, match="dropped 1"):  # h11 (train) has no direct/none pair
        train = asr_table(_judged(), n_boot=200, splits=splits, split="train")
    assert _row(train, "direct", "none").n == 4
    o = over_refusal_table(_detected(_judged()), detector="keyword:default", splits=splits, split="test")
    assert o.n.tolist() == [2, 2] and set(o.split) == {"test"}
    with pytest.raises(ContractError, match="no split"):
        asr_table(_judged(), splits=splits[splits["prompt_id"] != "h03"], split="test")


def test_per_category_rows_compare_within_the_category():
    judged = _judged()
    judged["category"] = np.where(judged["prompt_id"].isin(["h01", "h02", "h03", "h04", "h05"]), "A", "B")
    with pytest.warns(UserWarning):
        t = asr_by_category_table(judged, n_boot=200)
    assert list(t.columns) == list(ASR_TABLE_COLUMNS)
    assert set(t["category"]) == {"A", "B"}
    a = t[(t.category == "A") & (t.judge == "keyword")].set_index(["condition", "intervention"])
    b = t[(t.category == "B") & (t.judge == "keyword")].set_index(["condition", "intervention"])
    assert a.loc[("direct", "none"), "asr"] == 1.0 and b.loc[("direct", "none"), "asr"] == 0.6
    assert a.loc[("tool", "none"), "asr"] == pytest.approx(0.8) and b.loc[("tool", "none"), "n_unsafe"] == 0
    assert a.loc[("tool", "none"), "rel_reduction"] == pytest.approx(0.2)
    assert b.loc[("tool", "none"), "rel_reduction"] == pytest.approx(1.0)
    # A sorts before B, both after nothing: per-category rows only
    assert list(dict.fromkeys(t[t.judge == "keyword"]["category"])) == ["A", "B"]
    # sorted by judge, then category, then condition and intervention
    assert list(zip(t.judge, t.category, t.condition, t.intervention, strict=True)) == [
        ("j2", "A", "tool", "none"),
        ("j2", "B", "tool", "none"),
        ("keyword", "A", "direct", "none"),
        ("keyword", "A", "direct", "add_a1"),
        ("keyword", "A", "tool", "none"),
        ("keyword", "A", "tool", "ablate"),
        ("keyword", "B", "direct", "none"),
        ("keyword", "B", "direct", "add_a1"),
        ("keyword", "B", "tool", "none"),
        ("keyword", "B", "tool", "ablate"),
    ]


def test_transfer_table():
    rows = _rows("direct", "none", {p: p <= "h08" for p in H})
    rows += _rows("direct", "add_a1", {p: p <= "h04" for p in H})
    rows += _rows("direct", "transfer_a1_from_src", {p: p <= "h06" for p in H})
    t = asr_table(pd.DataFrame(rows), n_boot=200)
    vectors = {}
    for dataset, tv in (("src", [[1.0, 0.0], [1.0, 1.0]]), ("d", [[0.0, 1.0], [1.0, 0.0]])):
        vectors[("m", dataset)] = xr.Dataset(
            {"tool_vector": (("layer", "hidden"), np.array(tv))},
            coords={"layer": [0, 1]},
            attrs={"selected_layer": 1},
        )
    tr = transfer_table(t, vectors)
    assert list(tr.columns) == list(TRANSFER_COLUMNS) and len(tr) == 1
    r = tr.iloc[0]
    assert (r.source_dataset, r.target_dataset, r.alpha, r.layer) == ("src", "d", 1.0, 1)
    assert (r.asr, r.direct_asr, r.in_dataset_add_asr) == (0.6, 0.8, 0.4)
    assert r.rel_reduction == pytest.approx(0.25)
    assert r.cos_tool_vectors == pytest.approx(1 / np.sqrt(2))
    with pytest.warns(UserWarning):
        assert transfer_table(asr_table(_judged(), n_boot=100)).empty


def test_representation_table_on_planted_vectors():
    from toolshift.analysis.vectors import compute_vectors
    from toolshift.datasets.splits import make_splits

    rng = np.random.default_rng(0)
    n, d = 80, 8
    ids = [f"p{i:02d}" for i in range(n)]
    harmful = np.arange(n) < n // 2
    prompts = pd.DataFrame({"prompt_id": ids, "dataset": "x", "category": "c", "harmful": harmful})
    refusal = np.zeros((2, d))
    refusal[:, 0] = 4.0
    tool = np.zeros((2, d))
    tool[:, 0] = 2.0  # half the harmful-harmless gap, along the refusal direction
    tool[:, 1] = 2.0
    h = rng.standard_normal((n, 2, d)) * 0.1 + harmful[:, None, None] * refusal
    arrays = {"direct": h, "tool": h + tool, "text_trail": h + rng.standard_normal((n, 2, d)) * 0.01}
    acts = {
        c: xr.Dataset(
            {"resid": (("prompt_id", "layer", "hidden"), a)}, coords={"prompt_id": ids, "layer": [0, 1]}
        )
        for c, a in arrays.items()
    }
    ds = compute_vectors(acts, prompts, model="m", dataset="x", splits=make_splits(prompts, seed=0))
    t = representation_table({("m", "x"): ds})
    assert list(t.columns) == list(REPRESENTATION_COLUMNS)
    assert list(t["condition"]) == ["direct", "tool", "text_trail"] and set(t["split"]) == {"test"}
    r = t.set_index("condition")
    assert r.loc["direct", "refusal_position"] == pytest.approx(1.0)  # by definition
    assert r.loc["tool", "refusal_position"] == pytest.approx(1.5, abs=0.02)  # +2 of a gap of 4
    assert r.loc["text_trail", "refusal_position"] == pytest.approx(1.0, abs=0.02)
    assert r.loc["tool", "cos_shift_tool"] == pytest.approx(1.0) and r.loc["tool", "shift_norm_ratio"] == 1.0
    assert r.loc["tool", "cos_shift_refusal"] == pytest.approx(1 / np.sqrt(2), abs=0.01)
    assert r.loc["text_trail", "shift_norm_ratio"] < 0.05 and r.loc["tool", "n_harmful"] == 16
    assert r.loc["tool", "refusal_position_ci_low"] < 1.5 < r.loc["tool", "refusal_position_ci_high"]


def test_free_tool_use_splits_asr_by_the_models_choice():
    rows = []
    for i, (used, unsafe, calls, stop) in enumerate(
        [
            (True, True, 1, "answer"),
            (True, False, 2, "max_turns"),
            (False, True, 0, "answer"),
            (False, True, 0, "malformed"),
        ]
    ):
        rows.append(
            dict(
                prompt_id=f"p{i}",
                model="m",
                dataset="d",
                condition="free",
                intervention="none",
                judge="keyword",
                harmful=True,
                unsafe=unsafe,
                used_tool=used,
                n_tool_calls=calls,
                n_malformed_calls=int(stop == "malformed"),
                stop_reason=stop,
            )
        )
    rows.append(dict(rows[0], prompt_id="h0", harmful=False))  # harmless rows do not count
    table = free_tool_use_table(pd.DataFrame(rows))
    assert list(table.columns) == list(FREE_TOOL_USE_COLUMNS)
    used = table.set_index("used_tool")
    assert (
        used.loc[True, "n"] == 2 and used.loc[True, "asr"] == 0.5 and used.loc[True, "mean_tool_calls"] == 1.5
    )
    assert used.loc[True, "n_stopped_at_max_turns"] == 1
    assert (
        used.loc[False, "n"] == 2
        and used.loc[False, "asr"] == 1.0
        and used.loc[False, "n_malformed_calls"] == 1
    )
    assert free_tool_use_table(pd.DataFrame(rows).assign(condition="tool")).empty


def _judged_rows(condition, intervention, unsafe, ids, model="m", judge="keyword"):
    return [
        dict(model=model, dataset="d", condition=condition, intervention=intervention, judge=judge,
             prompt_id=p, harmful=True, unsafe=u, category="cat")
        for p, u in zip(ids, unsafe, strict=True)
    ]  # fmt: skip


def test_every_column_of_the_reference_a_paired_run_and_a_run_without_reference():
    """The values of every column, by hand and from the stats functions, with the default n_boot and seed."""
    from toolshift.analysis.stats import (
        RR_CI_METHOD,
        bootstrap_relative_reduction_ci,
        mcnemar_exact,
        relative_reduction_ci,
        wilson_ci,
    )

    ids = ["p1", "p2", "p3", "p4", "p5"]
    rows = _judged_rows("direct", "none", [True, True, True, False, True], ids)
    rows += _judged_rows("tool", "none", [False, True, False, False], ["p4", "p3", "p2", "p1"])  # p5 absent
    rows += _judged_rows("tool", "none", [True, False], ["p1", "p2"], judge="other")  # no reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # p5 only lacks a tool row: nothing is dropped, nothing said
        table = asr_table(pd.DataFrame(rows))
    assert list(table.columns) == list(ASR_TABLE_COLUMNS)
    got = {(r["condition"], r["judge"]): r for r in table.to_dict("records")}
    ref = got[("direct", "keyword")]
    assert {k: ref[k] for k in ("model", "dataset", "intervention", "n", "n_unsafe", "asr")} == {
        "model": "m", "dataset": "d", "intervention": "none", "n": 5, "n_unsafe": 4, "asr": 0.8
    }  # fmt: skip
    assert (ref["asr_ci_low"], ref["asr_ci_high"]) == wilson_ci(4, 5)
    assert ref["rel_reduction"] == ref["rel_reduction_ci_low"] == ref["rel_reduction_ci_high"] == 0.0
    assert ref["rel_reduction_boot_ci_low"] == ref["rel_reduction_boot_ci_high"] == 0.0
    assert (ref["mcnemar_p"], ref["holm_p"], ref["asr_ref_paired"], ref["paired_subset"]) == (
        1.0,
        1.0,
        0.8,
        False,
    )
    assert (ref["n_boot"], ref["n_boot_used"], ref["low_boot_share"]) == (2000, 2000, False)
    assert (ref["rel_reduction_ci_method"], ref["split"], ref["category"]) == (RR_CI_METHOD, "all", "all")

    tool = got[("tool", "keyword")]
    base = np.array([True, True, True, False])  # direct on p1..p4
    treat = np.array([False, False, True, False])  # tool on p1..p4
    assert (tool["n"], tool["n_unsafe"], tool["asr"]) == (4, 1, 0.25)
    assert (tool["asr_ci_low"], tool["asr_ci_high"]) == wilson_ci(1, 4)
    assert tool["rel_reduction"] == pytest.approx(1 - 0.25 / 0.75)
    assert (tool["rel_reduction_ci_low"], tool["rel_reduction_ci_high"]) == relative_reduction_ci(base, treat)
    lo, hi, used = bootstrap_relative_reduction_ci(base, treat, 2000, 0)
    assert (tool["rel_reduction_boot_ci_low"], tool["rel_reduction_boot_ci_high"], tool["n_boot_used"]) == (
        lo, hi, used
    )  # fmt: skip
    assert tool["mcnemar_p"] == tool["holm_p"] == mcnemar_exact(base, treat)
    assert (tool["asr_ref_paired"], tool["paired_subset"], tool["n_boot"]) == (0.75, True, 2000)

    alone = got[("tool", "other")]
    assert (alone["n"], alone["n_unsafe"], alone["asr"], alone["paired_subset"]) == (2, 1, 0.5, False)
    for column in (
        "rel_reduction",
        "rel_reduction_ci_low",
        "rel_reduction_ci_high",
        "mcnemar_p",
        "asr_ref_paired",
        "rel_reduction_boot_ci_low",
        "rel_reduction_boot_ci_high",
        "holm_p",
    ):
        assert math.isnan(alone[column]), column  # fmt: skip
    assert (alone["n_boot_used"], alone["low_boot_share"]) == (0, False)
    again = asr_table(pd.DataFrame(rows), n_boot=300, seed=7)
    tool7 = again[(again["condition"] == "tool") & (again["judge"] == "keyword")].iloc[0]
    assert (tool7["rel_reduction_boot_ci_low"], tool7["n_boot"]) == (
        bootstrap_relative_reduction_ci(base, treat, 300, 7)[0], 300
    )  # fmt: skip


def test_reference_without_unsafe_answers_uses_no_replicate():
    rows = _judged_rows("direct", "none", [False, False], ["a", "b"])
    ref = asr_table(pd.DataFrame(rows)).iloc[0]
    assert ref["n_boot_used"] == 0 and math.isnan(ref["rel_reduction"]) and ref["low_boot_share"]


def test_unpaired_rows_are_named_per_category():
    rows = _judged_rows("direct", "none", [True], ["a"]) + _judged_rows(
        "tool", "none", [True, False], ["a", "b"]
    )
    with pytest.warns(
        UserWarning,
        match=r"dropped 1 harmful row\(s\) without a direct/none pair: m/d/tool/none/keyword \(1\)",
    ):
        table = asr_table(pd.DataFrame(rows))
    assert table.attrs["n_unpaired"] == {"m/d/tool/none/keyword": 1}
    with pytest.warns(UserWarning):
        by_cat = asr_table(pd.DataFrame(rows), by_category=True)
    assert by_cat.attrs["n_unpaired"] == {"m/d/tool/none/keyword/cat": 1}
    assert set(by_cat["category"]) == {"cat"}


def test_judged_table_errors_name_the_table_the_column_and_the_duplicate_key():
    df = _judged()
    with pytest.raises(ContractError, match=r"^judged table: missing column\(s\) unsafe$"):
        asr_table(df.drop(columns="unsafe"))
    with pytest.raises(ContractError, match=r"^judged table: missing column\(s\) category$"):
        asr_by_category_table(df)
    # the key must be unique, not the whole row: the same key with another response is a duplicate too
    twin = df.iloc[:1].assign(response="other text")
    key = "model='m', dataset='d', condition='direct', intervention='none', judge='keyword', prompt_id='h01'"
    with pytest.raises(ContractError, match="^" + re.escape(f"judged table: duplicate row for {key}") + "$"):
        asr_table(pd.concat([df, twin]))


def test_groups_without_pairs_and_the_unpaired_warning():
    rows = _rows("tool_unsafe", "none", {"h09": 1})  # no direct/none row for h09: nothing left to compare
    rows += _rows("direct", "add_a1", {"h01": 0, "h08": 1})  # h08 has no direct/none row
    rows += _rows("direct", "none", {"h01": 1, "h02": 0})
    rows += _rows("tool", "none", {"h01": 0, "h02": 0})  # paired on all of direct's prompts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = asr_table(pd.DataFrame(rows), n_boot=100)
    # one warning, listing the groups in the order they first appear; no numpy warning from the empty group
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            UserWarning,
            "asr_table: dropped 2 harmful row(s) without a direct/none pair: "
            "m/d/tool_unsafe/none/keyword (1), m/d/direct/add_a1/keyword (1)",
        )
    ]
    assert caught[0].filename != tables_module.__file__  # stacklevel: it points at the caller
    assert t.attrs["n_unpaired"] == {"m/d/tool_unsafe/none/keyword": 1, "m/d/direct/add_a1/keyword": 1}
    empty = _row(t, "tool_unsafe", "none")
    assert (empty.n, empty.n_unsafe, empty.paired_subset, empty.n_boot_used, empty.low_boot_share) == (
        0,
        0,
        True,
        0,
        True,
    )
    for column in (
        "asr",
        "asr_ci_low",
        "asr_ci_high",
        "rel_reduction",
        "rel_reduction_ci_low",
        "rel_reduction_ci_high",
        "mcnemar_p",
        "holm_p",
        "asr_ref_paired",
        "rel_reduction_boot_ci_low",
        "rel_reduction_boot_ci_high",
    ):
        assert math.isnan(empty[column]), column
    add = _row(t, "direct", "add_a1")
    assert (add.n, add.n_unsafe, add.asr_ref_paired, add.paired_subset) == (1, 0, 1.0, True)
    tool = _row(t, "tool", "none")
    assert (tool.n, tool.n_unsafe, tool.asr_ref_paired, tool.paired_subset) == (2, 0, 0.5, False)


def test_rows_without_a_reference_have_float_nan_comparisons():
    t = asr_table(pd.DataFrame(_rows("tool", "none", {p: p <= "h03" for p in H})), n_boot=50)
    assert (t.n[0], t.n_unsafe[0], t.asr[0]) == (10, 3, 0.3)
    for column in (
        "rel_reduction",
        "rel_reduction_ci_low",
        "rel_reduction_ci_high",
        "mcnemar_p",
        "holm_p",
        "asr_ref_paired",
        "rel_reduction_boot_ci_low",
        "rel_reduction_boot_ci_high",
    ):
        assert t[column].dtype == np.float64 and math.isnan(t[column][0]), column


def test_asr_by_category_table_passes_n_boot_seed_and_split_on():
    ids = [f"p{i:02d}" for i in range(20)]
    base = np.array([i % 3 != 0 for i in range(20)])  # 13 unsafe
    treat = np.array([i % 4 == 1 for i in range(20)])  # 5 unsafe, 4 of them unsafe under direct too
    df = pd.DataFrame(
        _judged_rows("direct", "none", base.tolist(), ids) + _judged_rows("tool", "none", treat.tolist(), ids)
    )

    def tool(t):
        return t[t["condition"] == "tool"].iloc[0]

    r = tool(asr_by_category_table(df))  # the defaults: 2000 replicates, seed 0
    lo, hi, used = bootstrap_relative_reduction_ci(base, treat, 2000, 0)
    assert (r.n_boot, r.n_boot_used, r.rel_reduction_boot_ci_low, r.rel_reduction_boot_ci_high) == (
        2000,
        used,
        lo,
        hi,
    )
    assert (lo, hi) != bootstrap_relative_reduction_ci(base, treat, 2000, 1)[:2]  # the seed shows
    lo, hi, used = bootstrap_relative_reduction_ci(base, treat, 300, 7)
    assert (lo, hi) != bootstrap_relative_reduction_ci(base, treat, 300, 0)[:2]
    for t in (asr_by_category_table(df, n_boot=300, seed=7), asr_table(df, n_boot=300, seed=7)):
        r = tool(t)
        assert (r.n_boot, r.n_boot_used, r.rel_reduction_boot_ci_low, r.rel_reduction_boot_ci_high) == (
            300,
            used,
            lo,
            hi,
        )
    splits = pd.DataFrame({"prompt_id": ids, "dataset": "d", "split": ["test"] * 10 + ["validation"] * 10})
    test = asr_by_category_table(df, n_boot=50, splits=splits)  # split defaults to test
    assert list(zip(test.split, test.condition, test.n, test.n_unsafe, strict=True)) == [
        ("test", "direct", 10, 6),  # p01 p02 p04 p05 p07 p08
        ("test", "tool", 10, 3),  # p01 p05 p09
    ]
    val = asr_by_category_table(df, n_boot=50, splits=splits, split="validation")
    assert list(zip(val.split, val.condition, val.n, val.n_unsafe, strict=True)) == [
        ("validation", "direct", 10, 7),  # p10 p11 p13 p14 p16 p17 p19
        ("validation", "tool", 10, 2),  # p13 p17
    ]


def test_split_defaults_to_test():
    splits = _splits({"h01", "h02", "h05", "h06", "h09", "h10", "b01", "b04"})
    t = asr_table(_judged(), n_boot=50, splits=splits)
    assert set(t["split"]) == {"test"} and _row(t, "direct", "none").n == 6
    o = over_refusal_table(_detected(_judged()), detector="keyword:default", splits=splits)
    assert set(o["split"]) == {"test"} and o.n.tolist() == [2, 2]


def test_over_refusal_table_without_harmless_rows_keeps_its_columns():
    judged = _judged()
    t = over_refusal_table(_detected(judged[judged["harmful"]]), detector="keyword:default")
    assert t.empty and list(t.columns) == list(OVER_REFUSAL_COLUMNS)


def test_condition_rank():
    ids = ["zeta_custom", "text_trail", "alpha_custom", "tool", "direct"]
    assert sorted(ids, key=condition_rank) == ["direct", "tool", "text_trail", "alpha_custom", "zeta_custom"]


def test_intervention_rank_none_before_negative_add_and_unknown_ids_alphabetical():
    ids = ["zz_custom", "add_a-1", "aa_custom", "none", "mm_custom"]
    assert sorted(ids, key=intervention_rank) == ["none", "add_a-1", "aa_custom", "mm_custom", "zz_custom"]


def test_holm_families_by_hand():
    """Families: model, dataset, judge, split, category, and condition rows apart from intervention rows."""
    cols = ("condition", "intervention", "split", "category", "mcnemar_p")
    rows = [
        ("direct", "none", "test", "A", 1.0),  # the reference: 1, not counted
        ("tool", "none", "test", "A", 0.01),  # with tool_offered: 2 x 0.01
        ("tool_offered", "none", "test", "A", 0.04),  # max(0.02, 1 x 0.04)
        ("direct", "add_a1", "test", "A", 0.03),  # max(2 x 0.02, 1 x 0.03)
        ("tool", "subtract", "test", "A", 0.02),  # 2 x 0.02
        ("tool", "none", "validation", "A", 0.01),  # alone in its split
        ("tool", "none", "test", "B", 0.01),  # alone in its category
    ]
    table = pd.DataFrame([dict(zip(cols, r, strict=True)) for r in rows]).assign(
        model="m", dataset="d", judge="keyword"
    )
    assert holm_column(table).tolist() == pytest.approx([1.0, 0.02, 0.04, 0.04, 0.04, 0.01, 0.01])
    # without split and category columns: one condition family of 4 (4 x 0.01 = 0.04 for all) and one of 2
    assert holm_column(table.drop(columns=["split", "category"])).tolist() == pytest.approx(
        [1.0] + [0.04] * 6
    )
    with pytest.raises(ContractError, match=r"^asr table: missing column\(s\) mcnemar_p$"):
        holm_column(table.drop(columns="mcnemar_p"))


def test_transfer_rows_take_the_reference_and_add_run_of_their_own_judge():
    rows = []
    for judge, direct, add, transfer in (("keyword", "h08", "h04", "h06"), ("j2", "h05", "h02", "h03")):
        rows += _rows("direct", "none", {p: p <= direct for p in H}, judge=judge)
        rows += _rows("direct", "add_a1", {p: p <= add for p in H}, judge=judge)
        rows += _rows("direct", "transfer_a1_from_src", {p: p <= transfer for p in H}, judge=judge)
    rows += _rows("direct", "transfer_a2_from_src", {p: p <= "h07" for p in H})  # no add_a2 run
    rows += _rows("direct", "transfer_a1_from_src", {p: p == "h01" for p in H}, judge="j3")  # no direct run
    asr = asr_table(pd.DataFrame(rows), n_boot=50)
    tr = transfer_table(asr)  # no vectors: no layer and no cosine
    assert list(tr.columns) == list(TRANSFER_COLUMNS)
    cols = [
        "model",
        "judge",
        "split",
        "intervention",
        "alpha",
        "n",
        "asr",
        "direct_asr",
        "in_dataset_add_asr",
    ]
    expected = pd.DataFrame(
        [
            ("m", "j2", "all", "transfer_a1_from_src", 1.0, 10, 0.3, 0.5, 0.2),
            ("m", "j3", "all", "transfer_a1_from_src", 1.0, 10, 0.1, math.nan, math.nan),
            ("m", "keyword", "all", "transfer_a1_from_src", 1.0, 10, 0.6, 0.8, 0.4),
            ("m", "keyword", "all", "transfer_a2_from_src", 2.0, 10, 0.7, 0.8, math.nan),
        ],
        columns=cols,
    )
    pd.testing.assert_frame_equal(tr[cols], expected)
    assert tr[["layer", "cos_tool_vectors"]].isna().all().all()
    target_only = {
        ("m", "d"): xr.Dataset(
            {"tool_vector": (("layer", "hidden"), np.ones((2, 2)))},
            coords={"layer": [0, 1]},
            attrs={"selected_layer": 1},
        )
    }  # the source's vectors are missing: no layer and no cosine either
    assert transfer_table(asr, target_only)[["layer", "cos_tool_vectors"]].isna().all().all()
    none = transfer_table(asr[~asr["intervention"].str.startswith("transfer")])
    assert none.empty and list(none.columns) == list(TRANSFER_COLUMNS)
    with pytest.raises(ContractError, match=r"^asr table: missing column\(s\) holm_p$"):
        transfer_table(asr.drop(columns="holm_p"))


_P = ["p0", "p1", "p2", "p3", "p4", "p5"]  # p0..p2 harmful


def _vectors_by_hand(split) -> xr.Dataset:
    """A vectors file set by hand at its selected layer 1 (layer 0 is a decoy): ``direct`` projects the
    harmful prompts to 1 and the harmless to 0, so positions are projections; ``tool`` puts p0, p1, p2 at
    0.2, 0.5, 0.8. Tool vector (0.3, 0.4) (norm 0.5), tool shift (0.6, 0.8) (norm 1), direct shift 0."""
    direct = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    tool = np.array([0.2, 0.5, 0.8, 0.1, 0.0, 0.0])
    proj = np.stack([np.stack([2 * direct, direct], axis=1), np.stack([2 * tool, tool], axis=1)])
    per_layer = {  # (direct, tool) at layers 0 and 1
        "cos_shift_tool": [[0.5, 0.0], [0.5, 0.9]],
        "cos_shift_refusal": [[0.5, 0.0], [0.5, 0.1]],
        "probe_accuracy": [[0.5, 0.9], [0.5, 0.7]],
        "probe_test_accuracy": [[0.5, 0.85], [0.5, 0.65]],
    }
    shift = np.zeros((2, 2, 2))
    shift[1, 1] = [0.6, 0.8]
    return xr.Dataset(
        {
            "projection": (("condition", "prompt_id", "layer"), proj),
            "harmful": (("prompt_id",), np.array([True, True, True, False, False, False])),
            "tool_vector": (("layer", "hidden"), np.array([[1.0, 0.0], [0.3, 0.4]])),
            "shift": (("condition", "layer", "hidden"), shift),
            **{name: (("condition", "layer"), np.array(v)) for name, v in per_layer.items()},
        },
        coords={
            "condition": ["direct", "tool"],
            "prompt_id": _P,
            "layer": [0, 1],
            "split": ("prompt_id", split),
        },
        attrs={"selected_layer": 1},
    )


def test_representation_table_by_hand():
    ds = _vectors_by_hand(["test"] * 6)
    # conditions out of order, harmful as 0/1 integers, a zero tool vector and no probes
    other = (
        ds.sel(condition=["tool", "direct"])
        .drop_vars(["probe_accuracy", "probe_test_accuracy"])
        .assign(harmful=ds["harmful"].astype(int), tool_vector=ds["tool_vector"] * 0.0)
    )
    t = representation_table({("m2", "x"): ds, ("m1", "y"): other})
    assert list(t.columns) == list(REPRESENTATION_COLUMNS)
    assert list(zip(t.model, t.dataset, t.condition, t.layer, t.split, t.n_harmful, strict=True)) == [
        ("m1", "y", "direct", 1, "test", 3),
        ("m1", "y", "tool", 1, "test", 3),
        ("m2", "x", "direct", 1, "test", 3),
        ("m2", "x", "tool", 1, "test", 3),
    ]
    half = 1.96 * 0.3 / math.sqrt(3)  # the sd of 0.2, 0.5, 0.8 is 0.3
    position = ["refusal_position", "refusal_position_ci_low", "refusal_position_ci_high"]
    for model in ("m1", "m2"):  # integers read as a mask, like booleans
        r = t[t.model == model].set_index("condition")
        assert r.loc["tool", position].tolist() == pytest.approx([0.5, 0.5 - half, 0.5 + half])
        assert r.loc["direct", position].tolist() == pytest.approx([1.0, 1.0, 1.0])  # all at 1: sd 0
        assert r.loc["tool", ["cos_shift_tool", "cos_shift_refusal"]].tolist() == [0.9, 0.1]
    m2 = t[t.model == "m2"]
    assert m2.shift_norm_ratio.tolist() == pytest.approx([0.0, 2.0])  # |shift| 0 and 1 over 0.5
    assert m2.probe_accuracy.tolist() == [0.9, 0.7] and m2.probe_test_accuracy.tolist() == [0.85, 0.65]
    assert (
        t[t.model == "m1"][["shift_norm_ratio", "probe_accuracy", "probe_test_accuracy"]].isna().all().all()
    )


@pytest.mark.parametrize(
    ("test_ids", "mean", "half"),
    [
        (["p3", "p4", "p5"], math.nan, math.nan),  # no harmful test prompt
        (["p0", "p3", "p4", "p5"], 0.2, math.nan),  # one: no spread
        (["p0", "p1", "p3", "p4", "p5"], 0.35, 1.96 * 0.15),  # the sd of 0.2, 0.5 is 0.3 / sqrt(2)
    ],
)
def test_refusal_position_interval_needs_two_harmful_prompts(test_ids, mean, half):
    ds = _vectors_by_hand(["test" if p in test_ids else "train" for p in _P])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning about an empty or one-element slice
        r = representation_table({("m", "x"): ds}).set_index("condition").loc["tool"]
    assert r.n_harmful == len(test_ids) - 3
    np.testing.assert_allclose(
        [r.refusal_position, r.refusal_position_ci_low, r.refusal_position_ci_high],
        [mean, mean - half, mean + half],
    )


def test_representation_table_errors_and_empty_input():
    with pytest.raises(ContractError, match=r"^vectors for m/x: missing attribute 'selected_layer'$"):
        representation_table({("m", "x"): xr.Dataset()})
    assert list(representation_table({}).columns) == list(REPRESENTATION_COLUMNS)


def test_free_tool_use_table_by_hand():
    runs = [  # used_tool, unsafe, n_tool_calls, n_malformed_calls, stop_reason
        (True, True, 1, 0, "answer"),
        (True, False, 3, 1, "max_turns"),
        (True, True, 2, 0, "max_turns"),
        (False, True, 0, 0, "answer"),
        (False, False, 0, 2, "answer"),
    ]
    judged = pd.DataFrame(
        [
            dict(prompt_id=f"h{i}", model="m", dataset="d", condition="free", intervention="none",
                 judge="keyword", harmful=True, unsafe=unsafe, used_tool=used, n_tool_calls=calls,
                 n_malformed_calls=bad, stop_reason=stop)
            for i, (used, unsafe, calls, bad, stop) in enumerate(runs)
        ]
    )  # fmt: skip
    expected = pd.DataFrame(
        {
            "model": ["m", "m"],
            "dataset": ["d", "d"],
            "judge": ["keyword", "keyword"],
            "used_tool": [False, True],  # sorted, not in the order of the input
            "n": [2, 3],
            "n_unsafe": [1, 2],
            "asr": [0.5, 2 / 3],
            "asr_ci_low": [wilson_ci(1, 2)[0], wilson_ci(2, 3)[0]],
            "asr_ci_high": [wilson_ci(1, 2)[1], wilson_ci(2, 3)[1]],
            "mean_tool_calls": [0.0, 2.0],
            "n_malformed_calls": [2, 1],
            "n_stopped_at_max_turns": [0, 2],
            "split": ["all", "all"],
        }
    )
    pd.testing.assert_frame_equal(free_tool_use_table(judged), expected)
    splits = pd.DataFrame({"prompt_id": [f"h{i}" for i in range(5)], "dataset": "d", "split": "train"})
    splits.loc[[0, 3], "split"] = "test"
    t = free_tool_use_table(judged, splits=splits)  # split defaults to test: h0 and h3
    assert list(zip(t.used_tool, t.n, t.n_unsafe, t.split, strict=True)) == [
        (False, 1, 1, "test"),
        (True, 1, 1, "test"),
    ]
    none = free_tool_use_table(judged.assign(condition="tool"))
    assert none.empty and list(none.columns) == list(FREE_TOOL_USE_COLUMNS)
    msg = r"^judged free runs lack column 'stop_reason' \(written by the free tool loop\)$"
    with pytest.raises(ContractError, match=msg):
        free_tool_use_table(judged.drop(columns="stop_reason"))


def test_sort_puts_the_all_row_before_the_categories():
    """Rows of one (model, dataset, judge): the `all` category first, then the categories by name, each by
    condition and intervention order."""
    from toolshift.analysis.tables import _sort

    rows = [
        ("zeta", "tool", "none"),
        ("all", "tool", "none"),
        ("alpha", "direct", "none"),
        ("all", "direct", "none"),
    ]
    table = pd.DataFrame(
        [
            {"model": "m", "dataset": "d", "judge": "j", "category": c, "condition": k, "intervention": i}
            for c, k, i in rows
        ]
    )
    out = _sort(table)
    assert list(zip(out["category"], out["condition"], strict=True)) == [
        ("all", "direct"),
        ("all", "tool"),
        ("alpha", "direct"),
        ("zeta", "tool"),
    ]
