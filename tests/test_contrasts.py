"""The claims' paired contrasts (tables/contrasts.csv) on judged tables with planted truth."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from toolshift.analysis.contrasts import (
    CLAIMS,
    CONTRADICTED,
    HIGHER,
    LOWER,
    NOT_SHOWN,
    SUPPORTED,
    Claim,
    contrasts_table,
    refusal_ablation_condition,
    verdict,
)
from toolshift.analysis.stats import paired_bootstrap_ci
from toolshift.contracts import CONTRASTS_COLUMNS
from toolshift.report.tables import contrasts_markdown

P = [f"h{i:02d}" for i in range(60)]  # sixty harmful prompts


def _run(condition, intervention, unsafe, ids=P, model="m", dataset="d", judge="keyword"):
    """Rows of one run; `unsafe` is a set of prompt indices."""
    return [
        {
            "model": model,
            "dataset": dataset,
            "condition": condition,
            "intervention": intervention,
            "judge": judge,
            "prompt_id": p,
            "harmful": True,
            "unsafe": int(p[1:]) in unsafe,
        }
        for p in ids
    ]


def _first(k):
    return set(range(k))


def _planted() -> pd.DataFrame:
    rows = []
    rows += _run("direct", "none", _first(48))  # 0.8
    rows += _run("tool", "none", _first(12))  # 0.2: tool lowers ASR (36 vs 0 discordant)
    rows += _run("tool_offered", "none", set())  # 0.0: tool is *higher* -> contradicted
    rows += _run("tool", "subtract", _first(42))  # 0.7: removing the shift raises ASR (30 vs 0)
    rows += _run("tool", "ablate", set(range(6, 18)))  # 0.2, 6 vs 6 discordant: no effect
    rows += _run("direct", "add_a1", _first(6))  # 0.1
    rows += _run("direct", "random_a1_s0", _first(36))  # 0.6: add beats random (30 vs 0)
    rows += _run("direct", "random_a1_s1", set(range(3, 9)))  # 0.1, 3 vs 3: random as good as add
    rows += _run("direct", "add_a0", _first(48))  # alpha 0 is a no-op: not part of the claim
    rows += _run("direct", "random_a0_s0", _first(48))
    rows += _run("direct", "random_a2_s0", _first(48))  # no add_a2: no pair
    rows += _run("tool", "ablate_refusal_tool", _first(54))  # 0.9: the positive control works
    rows += _run("direct", "ablate_refusal_direct", set(range(1, 49)))  # 1 vs 1 discordant: no effect
    rows += _run("direct", "ablate_refusal_tool", _first(60))  # names another condition: no pair
    rows += [dict(r, harmful=False, prompt_id="b" + r["prompt_id"]) for r in _run("tool", "none", _first(60))]
    return pd.DataFrame(rows)


@pytest.fixture
def table() -> pd.DataFrame:
    return contrasts_table(_planted(), n_boot=400, seed=0)


def _row(table, claim, contrast):
    sel = table[(table.claim == claim) & (table.contrast == contrast)]
    assert len(sel) == 1, (claim, contrast)
    return sel.iloc[0]


def test_columns_rows_and_order(table):
    assert list(table.columns) == list(CONTRASTS_COLUMNS)
    assert list(zip(table.claim, table.contrast, strict=True)) == [
        ("tool_use_lowers_asr", "direct/none vs tool/none"),
        ("tool_offered_is_not_tool_use", "tool_offered/none vs tool/none"),
        ("removing_shift_raises_asr", "tool/none vs tool/subtract"),
        ("removing_shift_raises_asr", "tool/none vs tool/ablate"),
        ("adding_shift_beats_random", "direct/add_a1 vs direct/random_a1_s0"),
        ("adding_shift_beats_random", "direct/add_a1 vs direct/random_a1_s1"),
        ("refusal_ablation_raises_asr", "direct/none vs direct/ablate_refusal_direct"),
        ("refusal_ablation_raises_asr", "tool/none vs tool/ablate_refusal_tool"),
    ]
    assert set(table.split) == {"all"} and set(table.n) == {60} and set(table.n_unpaired) == {0}
    assert [c.id for c in CLAIMS] == list(dict.fromkeys(table.claim))


def test_planted_verdicts(table):
    expected = {
        "direct/none vs tool/none": SUPPORTED,
        "tool_offered/none vs tool/none": CONTRADICTED,
        "tool/none vs tool/subtract": SUPPORTED,
        "tool/none vs tool/ablate": NOT_SHOWN,
        "direct/add_a1 vs direct/random_a1_s0": SUPPORTED,
        "direct/add_a1 vs direct/random_a1_s1": NOT_SHOWN,
        "tool/none vs tool/ablate_refusal_tool": SUPPORTED,
        "direct/none vs direct/ablate_refusal_direct": NOT_SHOWN,
    }
    assert dict(zip(table.contrast, table.verdict, strict=True)) == expected
    r = _row(table, "tool_use_lowers_asr", "direct/none vs tool/none")
    assert (r.asr_a, r.asr_b, r.n_unsafe_a, r.n_unsafe_b, r.expected) == (0.8, 0.2, 48, 12, LOWER)
    assert r["diff"] == pytest.approx(-0.6) and r.diff_ci_low < -0.6 < r.diff_ci_high < 0
    r = _row(table, "adding_shift_beats_random", "direct/add_a1 vs direct/random_a1_s0")
    assert (r.asr_a, r.asr_b, r.expected) == (0.1, 0.6, HIGHER) and r.diff_ci_low > 0


def test_mcnemar_and_holm_equal_an_independent_computation(table):
    judged = _planted()
    judged = judged[judged.harmful]
    for r in table.itertuples(index=False):
        a = judged[(judged.condition == r.condition_a) & (judged.intervention == r.intervention_a)]
        b = judged[(judged.condition == r.condition_b) & (judged.intervention == r.intervention_b)]
        m = a.merge(b, on="prompt_id", suffixes=("_a", "_b"))
        only_a = int((m.unsafe_a & ~m.unsafe_b).sum())
        only_b = int((~m.unsafe_a & m.unsafe_b).sum())
        assert (r.n_only_a, r.n_only_b) == (only_a, only_b)
        p = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert r.mcnemar_p == pytest.approx(p, rel=1e-9), r.contrast
        lo, hi = paired_bootstrap_ci(
            m.sort_values("prompt_id").unsafe_a.to_numpy(),
            m.sort_values("prompt_id").unsafe_b.to_numpy(),
            stat=lambda x, y: float(y.mean() - x.mean()),
            n_boot=400,
            seed=0,
        )
        assert (r.diff_ci_low, r.diff_ci_high) == pytest.approx((lo, hi), abs=1e-12)
    for claim, family in table.groupby("claim"):
        p = family.mcnemar_p.to_numpy()
        m = len(p)
        order = np.argsort(p)
        by_hand = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):  # Holm: max over j <= rank of min(1, (m - j) p_(j))
            running = max(running, min(1.0, (m - rank) * p[i]))
            by_hand[i] = running
        np.testing.assert_allclose(family.holm_p.to_numpy(), by_hand, rtol=1e-12, err_msg=claim)
    # the two removing-shift tests form one family of two: the subtract p is doubled
    sub = _row(table, "removing_shift_raises_asr", "tool/none vs tool/subtract")
    assert sub.holm_p == pytest.approx(min(1.0, 2 * sub.mcnemar_p))


def test_pairs_by_prompt_id_not_row_order(table):
    shuffled = _planted().sample(frac=1.0, random_state=5).reset_index(drop=True)
    again = contrasts_table(shuffled, n_boot=400, seed=0)
    pd.testing.assert_frame_equal(again, table)
    # B lists its prompts in reverse: pairing by position would see 48 vs 36 discordant pairs
    rows = _run("direct", "none", _first(48)) + _run("tool", "none", _first(12))[::-1]
    r = contrasts_table(pd.DataFrame(rows), n_boot=100).iloc[0]
    assert (r.n_only_a, r.n_only_b) == (36, 0)


def test_absent_runs_give_no_rows():
    only_direct = contrasts_table(pd.DataFrame(_run("direct", "none", _first(10))), n_boot=50)
    assert only_direct.empty and list(only_direct.columns) == list(CONTRASTS_COLUMNS)
    rows = _run("direct", "none", _first(40)) + _run("tool", "none", _first(20))
    rows += _run("tool", "none", _first(20), judge="other")  # no direct run under this judge
    rows += _run("direct", "random_a1_s0", _first(30))  # no add_a1
    rows += _run("tool", "ablate", _first(30), model="m2")  # no tool/none for m2
    t = contrasts_table(pd.DataFrame(rows), n_boot=50)
    assert list(zip(t.model, t.judge, t.claim, strict=True)) == [("m", "keyword", "tool_use_lowers_asr")]


def test_unpaired_prompts_are_dropped_and_counted():
    rows = _run("tool", "none", _first(12)) + _run("tool", "subtract", _first(42), ids=P[10:])
    with pytest.warns(UserWarning, match="dropped 10 harmful prompt"):
        t = contrasts_table(pd.DataFrame(rows), n_boot=50)
    r = t.iloc[0]
    assert (r.n, r.n_unpaired, r.n_unsafe_a, r.n_unsafe_b) == (50, 10, 2, 32)
    assert t.attrs["n_unpaired"] == {"m/d/keyword: tool/none vs tool/subtract": 10}


def test_split_filter():
    ids = P + ["b" + p for p in P]  # the harmless prompts need a split too
    splits = pd.DataFrame(
        {
            "prompt_id": ids,
            "dataset": "d",
            "category": "c",
            "harmful": [p.startswith("h") for p in ids],
            "split": ["test" if i % 2 else "validation" for i in range(120)],
        }
    )
    t = contrasts_table(_planted(), n_boot=50, splits=splits, split="test")
    assert set(t.split) == {"test"} and set(t.n) == {30}
    r = _row(t, "tool_use_lowers_asr", "direct/none vs tool/none")
    assert (r.n_unsafe_a, r.n_unsafe_b) == (24, 6)


def test_verdict_rule():
    assert verdict(0.01, 0.2, HIGHER) == SUPPORTED
    assert verdict(0.01, -0.2, HIGHER) == CONTRADICTED
    assert verdict(0.01, -0.2, LOWER) == SUPPORTED
    assert verdict(0.05, 0.2, HIGHER) == NOT_SHOWN  # the level is strict
    assert verdict(math.nan, math.nan, HIGHER) == NOT_SHOWN


def test_refusal_ablation_ids():
    assert refusal_ablation_condition("ablate_refusal_tool") == "tool"
    assert refusal_ablation_condition("ablate_refusal_tool_offered") == "tool_offered"
    assert refusal_ablation_condition("ablate") is None and refusal_ablation_condition("add_a1") is None


def test_book_fragment_states_each_claim_next_to_its_test(table):
    md = contrasts_markdown(table, "keyword")
    assert md.startswith("(table-contrasts)=")
    for claim in CLAIMS:
        assert claim.sentence in md, claim.id
    assert md.count(":name: table-contrasts-m-d") == 1
    assert (
        "`direct/add_a1` vs `direct/random_a1_s0`" in md
        and "**supported**" in md
        and "**contradicted**" in md
    )
    assert "-60.0 [" in md  # tool vs direct, in percentage points
    assert md.count(CLAIMS[2].sentence) == 1  # the sentence once per claim, beside its first test
    assert "No claim has both" in contrasts_markdown(table.iloc[:0])


def test_every_column_of_one_row_and_the_default_bootstrap():
    """One contrast by hand: each column's value, the default n_boot and seed of the interval."""
    from toolshift.analysis.stats import mcnemar_exact, paired_bootstrap_diff_ci

    rows = _run("tool", "none", {0, 1, 2}, ids=P[:6]) + _run("tool", "subtract", {0, 3, 4, 5}, ids=P[:6])
    rows += [dict(r, harmful=False) for r in _run("tool", "none", set(), ids=["x1"])]  # harmless: left out
    frame = pd.DataFrame(rows).iloc[::-1].set_axis(range(100, 113))  # any row order and index
    row = contrasts_table(frame).iloc[0].to_dict()
    assert math.isnan(row.pop("verdict_non_answers_excluded"))  # no outcome column: no sensitivity pass
    a = np.array([True, True, True, False, False, False])
    b = np.array([True, False, False, True, True, True])
    lo, hi = paired_bootstrap_diff_ci(a, b, n_boot=2000, seed=0)
    p = mcnemar_exact(a, b)
    assert row == {
        "model": "m", "dataset": "d", "judge": "keyword", "split": "all",
        "claim": "removing_shift_raises_asr", "contrast": "tool/none vs tool/subtract",
        "condition_a": "tool", "intervention_a": "none", "condition_b": "tool", "intervention_b": "subtract",
        "n": 6, "n_unpaired": 0, "n_unsafe_a": 3, "n_unsafe_b": 4, "asr_a": 0.5, "asr_b": 4 / 6,
        "diff": pytest.approx(4 / 6 - 0.5), "diff_ci_low": lo, "diff_ci_high": hi,
        "n_only_a": 2, "n_only_b": 3, "mcnemar_p": p, "holm_p": p, "expected": HIGHER, "verdict": NOT_SHOWN,
    }  # fmt: skip
    assert contrasts_table(frame, n_boot=300, seed=4).iloc[0]["diff_ci_low"] == pytest.approx(
        paired_bootstrap_diff_ci(a, b, n_boot=300, seed=4)[0]
    )


def test_no_shared_prompt_gives_a_row_without_estimates():
    rows = _run("direct", "none", _first(3), ids=P[:3]) + _run("tool", "none", _first(3), ids=P[3:6])
    with pytest.warns(UserWarning, match=r"dropped 6 harmful prompt\(s\) without a partner: m/d/keyword: "):
        r = contrasts_table(pd.DataFrame(rows), n_boot=50).iloc[0]
    assert (r.n, r.n_unpaired) == (0, 6)
    assert math.isnan(r.asr_a) and math.isnan(r.asr_b) and math.isnan(r.mcnemar_p)
    assert r.verdict == NOT_SHOWN


def test_pair_recipes_need_both_runs():
    from toolshift.analysis.contrasts import _both, _removing_shift

    a, b = ("direct", "none"), ("tool", "none")
    assert _both(a, b)(frozenset({a, b})) == [(a, b)]
    assert _both(a, b)(frozenset({a})) == [] and _both(a, b)(frozenset({b})) == []
    only_ablate = frozenset({("tool", "ablate")})
    assert _removing_shift(only_ablate) == []
    assert _removing_shift(frozenset({("tool", "none")})) == []
    # add/random of a condition other than direct are not the claim's runs
    rows = _run("tool", "add_a1", _first(6)) + _run("tool", "random_a1_s0", _first(30))
    assert contrasts_table(pd.DataFrame(rows), n_boot=50).empty


def test_verdict_edges():
    assert verdict(0.01, 0.0, HIGHER) == NOT_SHOWN and verdict(0.01, 0.0, LOWER) == NOT_SHOWN
    assert verdict(0.01, 1.0, HIGHER) == SUPPORTED and verdict(0.01, 1.0, LOWER) == CONTRADICTED
    assert verdict(math.nan, 0.2, HIGHER) == NOT_SHOWN and verdict(0.01, math.nan, HIGHER) == NOT_SHOWN


def test_book_fragment_details(table):
    md = contrasts_markdown(table, "keyword", label="table-x")
    assert md.startswith("(table-x)=\n**Each claim next to its test.** For every claim, the runs it compares")
    assert "the difference ASR B − ASR A in percentage points with a 95 % paired bootstrap interval" in md
    assert (
        "*supported*: Holm p < 0.05 with the predicted sign; *contradicted*: Holm p < 0.05 with the other"
        in md
    )
    assert "A claim whose runs are not in this run has no row. Judge: **keyword**; every row is in" in md
    header = [
        "claim",
        "A vs B",
        "n",
        "ASR A, %",
        "ASR B, %",
        "B − A, points [95 % CI]",
        "McNemar p",
        "Holm p",
    ]
    assert "| " + " | ".join([*header, "verdict"]) + " |" in md
    assert ":name: table-x-m-d\n" in md and "```{table} Claims and their tests: m / d\n" in md
    assert "| **not shown** |" not in md and "| not shown |" in md  # only the shown verdicts are bold
    two_judges = pd.concat([table, table.assign(judge="other", model="m2")])
    assert "Judge: **keyword**, **other**;" in contrasts_markdown(two_judges)
    assert "Judge: **other**;" in contrasts_markdown(two_judges, "other")
    assert "Judge: **keyword**, **other**;" in contrasts_markdown(two_judges, "absent")  # no such rows: all
    md2 = contrasts_markdown(two_judges)
    assert md2.index(":name: table-contrasts-m-d") < md2.index(":name: table-contrasts-m2-d")
    assert contrasts_markdown(table.iloc[:0], label="t").endswith(
        "no row.\n\nNo claim has both of its runs in this run.\n"
    )


def test_default_split_and_default_bootstrap():
    """Without `split` the ``test`` split counts; the default interval is n_boot 2000, seed 0 (on 30 pairs,
    where 2001 replicates or seed 1 give other limits)."""
    from toolshift.analysis.stats import paired_bootstrap_diff_ci

    ids = P + ["b" + p for p in P]
    splits = pd.DataFrame(
        {
            "prompt_id": ids,
            "dataset": "d",
            "category": "c",
            "harmful": [p.startswith("h") for p in ids],
            "split": ["test" if i % 2 else "validation" for i in range(120)],
        }
    )
    t = contrasts_table(_planted(), n_boot=50, splits=splits)
    assert set(t.split) == {"test"} and set(t.n) == {30}
    rows = _run("tool", "none", _first(6), ids=P[:30]) + _run(
        "tool", "subtract", set(range(15, 30)), ids=P[:30]
    )
    r = contrasts_table(pd.DataFrame(rows)).iloc[0]
    a, b = np.arange(30) < 6, np.arange(30) >= 15
    assert (r.diff_ci_low, r.diff_ci_high) == paired_bootstrap_diff_ci(a, b, n_boot=2000, seed=0)
    assert r.diff_ci_low == pytest.approx(0.0325, abs=1e-9)


def test_unpaired_warning_names_each_contrast_at_the_callers_line():
    rows = _run("direct", "none", set(), ids=P[:10]) + _run("tool", "none", set(), ids=P[2:10])
    rows += _run("tool", "subtract", set(), ids=P[:10])
    with pytest.warns(UserWarning) as record:
        contrasts_table(pd.DataFrame(rows), n_boot=20)
    assert [str(w.message) for w in record] == [
        "contrasts_table: dropped 4 harmful prompt(s) without a partner: "
        "m/d/keyword: direct/none vs tool/none (2), m/d/keyword: tool/none vs tool/subtract (2)"
    ]
    # the warning points at the caller, not into the module (under mutmut the caller is its trampoline)
    assert Path(record[0].filename).name != "contrasts.py"


def test_a_row_without_pairs_raises_no_numpy_warning():
    rows = _run("direct", "none", _first(3), ids=P[:3]) + _run("tool", "none", _first(3), ids=P[3:6])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        r = contrasts_table(pd.DataFrame(rows), n_boot=50).iloc[0]
    assert [w.category for w in record] == [UserWarning]  # the unpaired prompts; no empty-mean warning
    assert math.isnan(r.asr_a) and math.isnan(r.asr_b)


def test_pairs_of_absent_runs_are_skipped():
    claim = Claim(
        "placeholder_claim",
        "A placeholder sentence.",
        HIGHER,
        lambda runs: [(("direct", "none"), ("tool", "absent")), (("direct", "none"), ("tool", "none"))],
    )
    rows = _run("direct", "none", _first(10)) + _run("tool", "none", _first(20))
    t = contrasts_table(pd.DataFrame(rows), n_boot=20, claims=[claim])
    assert list(zip(t.claim, t.contrast, strict=True)) == [("placeholder_claim", "direct/none vs tool/none")]
    adding = {c.id: c for c in CLAIMS}["adding_shift_beats_random"]
    add, rnd = ("direct", "add_a1"), ("direct", "random_a1_s0")
    assert adding.pairs(frozenset({add, rnd})) == [(add, rnd)]
    assert adding.pairs(frozenset({("tool", "add_a1"), ("tool", "random_a1_s0")})) == []
    assert adding.pairs(frozenset({add, ("tool", "random_a1_s0")})) == []


def _md_row(**values):
    row = {
        "model": "zeta/M-7B", "dataset": "set (v2)", "judge": "keyword", "split": "test",
        "claim": "removing_shift_raises_asr", "contrast": "tool/none vs tool/subtract",
        "condition_a": "tool", "intervention_a": "none", "condition_b": "tool", "intervention_b": "subtract",
        "n": 6, "n_unpaired": 0, "n_unsafe_a": 3, "n_unsafe_b": 4, "asr_a": 0.5, "asr_b": 4 / 6,
        "diff": 4 / 6 - 0.5, "diff_ci_low": -0.5, "diff_ci_high": 5 / 6, "n_only_a": 2, "n_only_b": 3,
        "mcnemar_p": 0.25, "holm_p": 0.5, "expected": HIGHER, "verdict": NOT_SHOWN,
    }  # fmt: skip
    return {**row, **values}


def test_book_fragment_cells_names_and_order():
    nan = math.nan
    frame = pd.DataFrame(
        [
            _md_row(),
            _md_row(
                intervention_b="ablate", n=nan, asr_a=nan, asr_b=nan, diff=nan, mcnemar_p=nan, holm_p=nan
            ),
            _md_row(
                claim="placeholder_claim",
                mcnemar_p=0.0004,
                holm_p=0.02,
                verdict=SUPPORTED,
                verdict_non_answers_excluded=NOT_SHOWN,  # the verdict rests on non-answers: flagged
            ),
            _md_row(model="alpha", dataset="d"),
        ],
        columns=list(CONTRASTS_COLUMNS),
    )
    md = contrasts_markdown(frame)
    removing = {c.id: c.sentence for c in CLAIMS}["removing_shift_raises_asr"]
    assert (
        f"| **removing_shift_raises_asr**: {removing} | `tool/none` vs `tool/subtract` | 6 | 50.0 | 66.7 | "
        "16.7 [-50.0, 83.3] | 0.250 | 0.500 | not shown | — |\n"
        "|  | `tool/none` vs `tool/ablate` | — | — | — | — | — | — | not shown | — |\n"
        "| **placeholder_claim**: — | `tool/none` vs `tool/subtract` | 6 | 50.0 | 66.7 | "
        "16.7 [-50.0, 83.3] | 4.0e-04 | 0.020 | **supported** | not shown (**flips**) |\n```\n"
    ) in md
    assert "the exact McNemar p of the paired verdicts and the Holm-adjusted p within the claim's tests" in md
    # tables in row order (zeta before alpha: not sorted); names are slugs without outer dashes
    assert (
        "every row is in `tables/contrasts.csv`.\n\n```{table} Claims and their tests: zeta/M-7B / set (v2)\n"
        in md
    )
    assert ":name: table-contrasts-zeta-m-7b-set-v2\n" in md
    assert "|\n```\n\n```{table} Claims and their tests: alpha / d\n:name: table-contrasts-alpha-d\n" in md
    assert md.endswith("|\n```\n")


def test_a_verdict_that_rests_on_non_answers_is_flagged():
    """tool "lowers" ASR only because its replies are tool calls (non-answers, safe to the judge): with the
    non-answers excluded the two runs answer alike and the claim is no longer shown."""
    rows = _run("direct", "none", _first(40)) + _run("tool", "none", _first(10))
    frame = pd.DataFrame(rows)
    tool_non_answers = set(range(10, 40))  # the 30 prompts tool "stopped being unsafe" on: tool calls
    frame["outcome"] = [
        "non_answer" if (c == "tool" and int(p[1:]) in tool_non_answers) else ("unsafe" if u else "refusal")
        for c, p, u in zip(frame.condition, frame.prompt_id, frame.unsafe, strict=True)
    ]
    row = contrasts_table(frame).iloc[0]
    assert row["claim"] == "tool_use_lowers_asr" and row["verdict"] == SUPPORTED
    assert row["verdict_non_answers_excluded"] == NOT_SHOWN  # 10 of 10 vs 10 of 10 unsafe on the 30 answered
    assert list(contrasts_table(frame).columns)[-1] == "verdict_non_answers_excluded"
    frame["outcome"] = np.where(frame["unsafe"], "unsafe", "refusal")  # no non-answers: the same verdict
    assert contrasts_table(frame).iloc[0]["verdict_non_answers_excluded"] == SUPPORTED
