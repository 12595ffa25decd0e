"""The headline (mean relative ASR reduction of tool vs direct across models) on hand-made verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from toolshift.analysis.headline import MEAN_MODEL, headline_row, headline_sentence, headline_table
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
    assert table[["dataset", "model"]].values.tolist() == [["d", "m1"], ["d", "m2"], ["d", MEAN_MODEL]]
    t = table.set_index("model")
    assert t.loc["m1", "rel_reduction"] == pytest.approx(0.5)
    assert t.loc["m2", "rel_reduction"] == pytest.approx(0.2)
    mean = t.loc[MEAN_MODEL]
    assert mean["rel_reduction"] == pytest.approx(0.35)
    assert (mean["n_models"], mean["n"], mean["split"], mean["judge"]) == (2, 20, "all", "keyword")
    assert mean["reference_asr"] == pytest.approx(13 / 20) and mean["asr"] == pytest.approx(8 / 20)
    assert mean["rel_reduction_ci_low"] < 0.35 < mean["rel_reduction_ci_high"]


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
