"""The headline (mean relative ASR reduction of tool vs direct across models) on hand-made verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from toolshift.analysis.headline import (
    ESTIMATORS,
    MEAN_MODEL,
    POOLED,
    dataset_weights,
    headline_row,
    headline_sentence,
    headline_table,
    pooled_estimate,
    pooled_replicates,
)
from toolshift.analysis.stats import bootstrap_relative_reductions, percentile_ci
from toolshift.contracts import HEADLINE_COLUMNS
from toolshift.datasets.splits import make_splits
from toolshift.errors import ContractError

H = [f"h{i:02d}" for i in range(10)]


def _rows(model, dataset, condition, unsafe_ids, intervention="none", judge="keyword", ids=H):
    return [
        {
            "model": model,
            "dataset": dataset,
            "condition": condition,
            "intervention": intervention,
            "judge": judge,
            "prompt_id": p,
            "category": "c",
            "harmful": True,
            "unsafe": p in unsafe_ids,
        }
        for p in ids
    ]


def _judged() -> pd.DataFrame:
    rows = []
    rows += _rows("m1", "d", "direct", H[:8]) + _rows("m1", "d", "tool", H[:4])  # rr 0.5
    rows += _rows("m2", "d", "direct", H[:5]) + _rows("m2", "d", "tool", H[1:5])  # rr 0.2
    rows += _rows("m1", "d", "text_trail", H[:2])  # another condition: ignored
    rows += _rows("m1", "d", "direct", H[:1], intervention="add_a1")  # an intervention: ignored
    rows += _rows("m1", "d", "tool", H, judge="other")  # another judge: ignored
    rows += [dict(r, harmful=False, prompt_id="b" + r["prompt_id"]) for r in _rows("m1", "d", "tool", H)]
    return pd.DataFrame(rows)


def test_point_estimates_and_columns():
    table = headline_table(_judged(), judge="keyword", n_boot=500, seed=0)
    assert list(table.columns) == list(HEADLINE_COLUMNS)
    assert table[["dataset", "model"]].values.tolist() == [
        ["d", "m1"],
        ["d", "m2"],
        ["d", MEAN_MODEL],
        ["d", POOLED],
    ]
    assert set(table["reference"]) == {"direct"}  # no tool_offered runs: no rows against it
    t = table.set_index("model")
    assert t.loc["m1", "rel_reduction"] == pytest.approx(0.5)
    assert t.loc["m2", "rel_reduction"] == pytest.approx(0.2)
    mean = t.loc[MEAN_MODEL]
    assert mean["rel_reduction"] == pytest.approx(0.35)
    assert (mean["n_models"], mean["n"], mean["split"], mean["judge"]) == (2, 20, "all", "keyword")
    assert mean["reference_asr"] == pytest.approx(13 / 20) and mean["asr"] == pytest.approx(8 / 20)
    assert mean["rel_reduction_ci_low"] < 0.35 < mean["rel_reduction_ci_high"]
    # absolute reductions: m1 0.8 - 0.4, m2 0.5 - 0.4; their unweighted mean
    assert t.loc["m1", "abs_reduction"] == pytest.approx(0.4) and t.loc[
        "m2", "abs_reduction"
    ] == pytest.approx(0.1)
    assert mean["abs_reduction"] == pytest.approx(0.25)
    assert mean["abs_reduction_ci_low"] < 0.25 < mean["abs_reduction_ci_high"]
    # pooled: the ratio of the pooled ASRs over every (model, prompt) pair, 1 - 8/13
    pooled = t.loc[POOLED]
    assert pooled["rel_reduction"] == pytest.approx(1 - 8 / 13) and pooled["abs_reduction"] == pytest.approx(
        0.25
    )
    assert pooled["rel_reduction"] == pytest.approx(1 - pooled["asr"] / pooled["reference_asr"])
    assert pooled["estimator"] == ESTIMATORS[POOLED] and mean["estimator"] == ESTIMATORS[MEAN_MODEL]


def test_bootstrap_resamples_within_models_then_averages():
    table = headline_table(_judged(), judge="keyword", n_boot=500, seed=3)
    rng = np.random.default_rng(3)
    b1 = bootstrap_relative_reductions(np.arange(10) < 8, np.arange(10) < 4, 500, rng)
    b2 = bootstrap_relative_reductions(
        np.arange(10) < 5, (np.arange(10) >= 1) & (np.arange(10) < 5), 500, rng
    )
    ok = ~(np.isnan(b1) | np.isnan(b2))
    expected = percentile_ci(((b1 + b2) / 2)[ok])
    mean = table.set_index("model").loc[MEAN_MODEL]
    assert (mean["rel_reduction_ci_low"], mean["rel_reduction_ci_high"]) == pytest.approx(expected)
    assert mean["n_boot_used"] == ok.sum()
    again = headline_table(_judged(), judge="keyword", n_boot=500, seed=3)
    pd.testing.assert_frame_equal(table, again)
    shuffled = headline_table(_judged().sample(frac=1, random_state=0), judge="keyword", n_boot=500, seed=3)
    pd.testing.assert_frame_equal(table, shuffled)  # row order of the input does not matter


def test_model_without_direct_successes_is_excluded_and_named():
    rows = _judged().to_dict("records")
    rows += _rows("m3", "d", "direct", []) + _rows("m3", "d", "tool", H[:3])
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=200)
    mean = table.set_index("model").loc[MEAN_MODEL]
    assert mean["rel_reduction"] == pytest.approx(0.35) and mean["n_models"] == 2
    assert mean["excluded"] == "m3/d" and mean["n"] == 20  # the excluded model's prompts do not count
    assert "left out (direct ASR 0): m3/d" in headline_sentence(table)


def test_several_datasets_weigh_each_model_once():
    rows = _judged().to_dict("records")
    rows += _rows("m1", "e", "direct", H[:10]) + _rows("m1", "e", "tool", H[:9])  # rr 0.1
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=200)
    overall = headline_row(table)
    assert overall["dataset"] == "all"
    # m1: mean(0.5, 0.1) = 0.3; m2: 0.2; mean over models 0.25 (not the mean of three cells, 0.2667)
    assert overall["rel_reduction"] == pytest.approx(0.25)
    assert headline_row(table, "e")["rel_reduction"] == pytest.approx(0.1)
    assert headline_row(table, "d")["rel_reduction"] == pytest.approx(0.35)


def test_split_filter_uses_only_test_prompts():
    prompts = pd.DataFrame({"prompt_id": H, "dataset": "d", "category": "c", "harmful": True})
    splits = make_splits(prompts, seed=0, fractions={"train": 0.5, "validation": 0.0, "test": 0.5})
    test_ids = list(splits.loc[splits["split"] == "test", "prompt_id"])
    rows = _rows("m1", "d", "direct", H) + _rows("m1", "d", "tool", [p for p in H if p not in test_ids])
    table = headline_table(pd.DataFrame(rows), judge="keyword", splits=splits, n_boot=200)
    row = headline_row(table)
    assert (row["split"], row["n"], row["rel_reduction"]) == ("test", 5, 1.0)


def test_sentence_and_errors():
    table = headline_table(_judged(), judge="keyword", n_boot=200)
    sentence = headline_sentence(table)
    assert sentence.startswith("Across 2 model(s) on dataset d") and "35.0 %" in sentence
    assert "95 % bootstrap CI" in sentence and sentence.endswith(".") and "\n" not in sentence
    with pytest.raises(ContractError, match="judge 'llamaguard'"):
        headline_table(_judged(), judge="llamaguard")
    with pytest.raises(ContractError, match="dataset 'x'"):
        headline_row(table, "x")
    csv_like = table.assign(excluded=math.nan)  # an empty field read back from CSV
    assert "left out" not in headline_sentence(csv_like)


def test_dropped_replicates_and_zero_width_intervals_are_stated():
    ids = [f"h{i:02d}" for i in range(50)]
    # one unsafe direct answer in 50: (49/50)^50 = 36 % of the resamples have none and are dropped
    rows = _rows("m1", "d", "direct", ids[:1], ids=ids) + _rows("m1", "d", "tool", [], ids=ids)
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=1000, seed=0)
    row = headline_row(table)
    assert 550 < row["n_boot_used"] < 720 and row["low_boot_share"]
    assert (row["rel_reduction_ci_low"], row["rel_reduction_ci_high"]) == (1.0, 1.0)  # tool ASR 0 throughout
    sentence = headline_sentence(table)
    dropped = 1000 - int(row["n_boot_used"])
    assert f"{dropped} of 1000 bootstrap replicates" in sentence and "below 90 %" in sentence
    assert "zero width" in sentence and "not certainty" in sentence
    plain = headline_table(_judged(), judge="keyword", n_boot=200)
    assert not plain["low_boot_share"].any() and "replicates" not in headline_sentence(plain)


def test_duplicate_verdicts_are_refused():
    judged = _judged()
    with pytest.raises(ContractError, match="duplicate prompt_id 'h00'"):
        headline_table(pd.concat([judged, judged.iloc[:1]]), judge="keyword")


def test_rows_against_tool_offered():
    rows = _judged().to_dict("records")
    rows += _rows("m1", "d", "tool_offered", H[:6]) + _rows("m2", "d", "tool_offered", H[:5])
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=200)
    assert list(dict.fromkeys(table["reference"])) == ["direct", "tool_offered"]
    offered = table[table["reference"] == "tool_offered"].set_index("model")
    assert offered.loc["m1", "rel_reduction"] == pytest.approx(1 - 4 / 6)  # 0.6 -> 0.4
    assert offered.loc["m2", "abs_reduction"] == pytest.approx(0.1)  # 0.5 -> 0.4
    assert offered.loc[MEAN_MODEL, "rel_reduction"] == pytest.approx(((1 - 4 / 6) + 0.2) / 2)
    assert offered.loc[POOLED, "rel_reduction"] == pytest.approx(1 - 8 / 11)
    direct = table[table["reference"] == "direct"]
    pd.testing.assert_frame_equal(  # the direct rows do not depend on the tool_offered runs
        direct.reset_index(drop=True), headline_table(_judged(), judge="keyword", n_boot=200)
    )
    sentence = headline_sentence(table)
    assert "Against direct: mean absolute reduction 25.0 points" in sentence
    assert "Against tool_offered: mean absolute reduction" in sentence and "pooled over models" in sentence
    assert headline_row(table, reference="tool_offered", model=POOLED)["n_models"] == 2


def test_datasets_sharing_their_questions_count_once():
    assert dataset_weights(["mmsb_typo", "mmsb_sd_typo", "hades"]) == {
        "mmsb_typo": 0.5,
        "mmsb_sd_typo": 0.5,
        "hades": 1.0,
    }
    rows = _rows("m1", "mmsb_typo", "direct", H[:8]) + _rows("m1", "mmsb_typo", "tool", H[:4])  # rr 0.5
    rows += _rows("m1", "mmsb_sd_typo", "direct", H[:8]) + _rows("m1", "mmsb_sd_typo", "tool", H[:4])  # 0.5
    rows += _rows("m1", "hades", "direct", H[:10]) + _rows("m1", "hades", "tool", H[:9])  # rr 0.1
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=200)
    # the two MM-SafetyBench variants ask the same questions: (0.5 + 0.1) / 2, not (0.5 + 0.5 + 0.1) / 3
    assert headline_row(table)["rel_reduction"] == pytest.approx(0.3)
    # pooled: MM-SafetyBench's pairs weigh 1/2 each, 1 - (4/2 + 4/2 + 9) / (8/2 + 8/2 + 10)
    assert headline_row(table, model=POOLED)["rel_reduction"] == pytest.approx(1 - 13 / 18)


def _planted_study(rng, n_models, n_prompts, rr, model_sd=1.0, prompt_sd=1.0, base=0.5, paired=True):
    """Crossed random effects on the logit of the direct ASR, and a tool that removes each unsafe direct
    answer with probability rr (per-model rr when given a list; `paired=False`: tool verdicts drawn
    independently with probability (1 - rr) times direct's): the pooled reduction is rr in expectation."""
    model_effect = rng.normal(0, model_sd, n_models)
    prompt_effect = rng.normal(0, prompt_sd, n_prompts)
    logit = np.log(base / (1 - base)) + model_effect[:, None] + prompt_effect[None, :]
    direct = rng.random((n_models, n_prompts)) < 1 / (1 + np.exp(-logit))
    keep = 1 - np.broadcast_to(np.asarray(rr, dtype=float).reshape(-1, 1), direct.shape)
    if paired:
        tool = direct & (rng.random(direct.shape) < keep)
    else:
        tool = rng.random(direct.shape) < keep / (1 + np.exp(-logit))
    ids = np.array([f"p{i:03d}" for i in range(n_prompts)])
    return {(f"m{m}", "d"): (direct[m], tool[m], ids) for m in range(n_models)}


def test_the_pooled_estimate_recovers_a_planted_reduction():
    """Planted truth: a 30 % relative reduction under crossed model and prompt effects. The crossed
    bootstrap interval covers it (in a single study and at about the nominal rate over repeated studies),
    and covers 0 for a planted null."""
    rng = np.random.default_rng(0)
    cells = _planted_study(rng, n_models=7, n_prompts=150, rr=0.3)
    weights = {"d": 1.0}
    rel, ab = pooled_estimate(cells, weights)
    reps, _ = pooled_replicates(cells, weights, 2000, np.random.default_rng(1))
    lo, hi = percentile_ci(reps)
    assert abs(rel - 0.3) < 0.06 and lo < 0.3 < hi
    covered = 0
    for k in range(40):
        study = _planted_study(np.random.default_rng(100 + k), n_models=7, n_prompts=80, rr=0.3)
        reps, _ = pooled_replicates(study, weights, 400, np.random.default_rng(k))
        lo, hi = percentile_ci(reps)
        covered += lo <= 0.3 <= hi
    assert covered >= 34  # 95 % nominal; at least 85 % of 40 studies
    null = _planted_study(np.random.default_rng(7), n_models=7, n_prompts=150, rr=0.0, paired=False)
    lo, hi = percentile_ci(pooled_replicates(null, weights, 1000, np.random.default_rng(2))[0])
    assert lo < 0 < hi


def test_the_pooled_interval_treats_models_as_random():
    """Models whose reductions differ (0 to 60 %): the mean over models describes these seven models
    (prompts resampled within each), the pooled interval a population of such models, so it is wider."""
    cells = _planted_study(np.random.default_rng(3), 7, 200, rr=np.linspace(0, 0.6, 7), model_sd=0.3)
    rows = []
    for (model, dataset), (direct, tool, ids) in cells.items():
        rows += _rows(model, dataset, "direct", set(ids[direct]), ids=list(ids))
        rows += _rows(model, dataset, "tool", set(ids[tool]), ids=list(ids))
    table = headline_table(pd.DataFrame(rows), judge="keyword", n_boot=1000, seed=0)
    mean, pooled = headline_row(table), headline_row(table, model=POOLED)
    width = lambda r: r["rel_reduction_ci_high"] - r["rel_reduction_ci_low"]  # noqa: E731
    assert width(pooled) > 1.5 * width(mean)
    assert pooled["rel_reduction_ci_low"] < 0.3 < pooled["rel_reduction_ci_high"]
