"""Seeded, stratified train/validation/test splits: sizes, stratification, determinism, files, filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolshift.contracts import SPLIT_COLUMNS
from toolshift.datasets.prompts import load_mini
from toolshift.datasets.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    filter_split,
    make_splits,
    read_splits,
    round_robin_labels,
    split_of,
    validate_fractions,
    write_splits,
)
from toolshift.errors import ConfigError, ContractError


def mini_prompts() -> pd.DataFrame:
    return load_mini().assign(dataset="mini")


def test_round_robin_prefix_counts_track_the_fractions():
    frac = {"train": 0.4, "validation": 0.2, "test": 0.4}
    labels = round_robin_labels(200, frac)
    assert labels[:5] == ["train", "test", "validation", "train", "test"]
    for n in range(1, 201):
        counts = pd.Series(labels[:n]).value_counts()
        for s in SPLITS:
            assert abs(counts.get(s, 0) - frac[s] * n) < 1, (n, s)


def test_mini_split_sizes_and_stratification():
    prompts = mini_prompts()
    splits = make_splits(prompts, seed=0)
    assert list(splits.columns) == list(SPLIT_COLUMNS)
    assert list(splits["prompt_id"]) == list(prompts["prompt_id"])  # input order kept
    for harmful in (True, False):
        counts = splits[splits["harmful"] == harmful]["split"].value_counts()
        assert counts.to_dict() == {"train": 20, "test": 20, "validation": 10}
    # 5 prompts per category and class: each category is spread over the splits within one prompt
    per_cat = splits.groupby(["harmful", "category"])["split"].value_counts().unstack(fill_value=0)
    for s in SPLITS:
        assert (per_cat[s] - 5 * DEFAULT_FRACTIONS[s]).abs().max() < 1 + 1e-9, s


def test_splits_are_deterministic_and_seeded():
    prompts = mini_prompts()
    a = make_splits(prompts, seed=3)
    shuffled = prompts.sample(frac=1.0, random_state=1)
    b = make_splits(shuffled, seed=3).set_index("prompt_id").loc[a["prompt_id"]].reset_index()
    pd.testing.assert_frame_equal(a, b)  # independent of the input row order
    c = make_splits(prompts, seed=4)
    assert (a["split"] != c["split"]).any()


def test_tiny_dataset_keeps_both_classes_in_train():
    prompts = mini_prompts().groupby(["harmful", "category"]).head(1).groupby("harmful").head(4)
    assert len(prompts) == 8
    for seed in range(20):
        s = make_splits(prompts, seed=seed)
        train = s[s["split"] == "train"]
        assert train["harmful"].any() and (~train["harmful"]).any()


@pytest.mark.parametrize(
    "fractions, key",
    [
        ({"train": 0.5, "validation": 0.5}, "splits.fractions"),
        ({"train": 0.5, "validation": 0.2, "test": 0.2}, "sum to 1"),
        ({"train": 0.0, "validation": 0.5, "test": 0.5}, "train"),
        ({"train": 1.2, "validation": -0.2, "test": 0.0}, "validation"),
        ({"train": "0.4", "validation": 0.2, "test": 0.4}, "train"),
    ],
)
def test_bad_fractions(fractions, key):
    with pytest.raises(ConfigError, match=key):
        validate_fractions(fractions)


def test_bad_seed_and_duplicate_ids():
    prompts = mini_prompts()
    with pytest.raises(ConfigError, match="seed"):
        make_splits(prompts, seed=-1)
    with pytest.raises(ContractError, match="duplicate"):
        make_splits(pd.concat([prompts, prompts.iloc[:1]]))


def test_file_round_trip_and_validation(tmp_path):
    splits = make_splits(mini_prompts(), seed=0)
    path = tmp_path / "splits" / "mini.parquet"
    write_splits(splits, path)
    pd.testing.assert_frame_equal(read_splits(path), splits)
    bad = splits.copy()
    bad.loc[0, "split"] = "holdout"
    with pytest.raises(ContractError, match="holdout"):
        write_splits(bad, tmp_path / "bad.parquet")
    with pytest.raises(ContractError, match="split"):
        write_splits(splits.drop(columns="split"), tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_split_of_and_filter_split():
    splits = make_splits(mini_prompts(), seed=0)
    ids = list(splits["prompt_id"][:5])
    np.testing.assert_array_equal(split_of(splits, ids, "mini"), splits["split"][:5].to_numpy())
    assert list(split_of(None, ids)) == ["train"] * 5
    with pytest.raises(ContractError, match="nope"):
        split_of(splits, ["nope"], "mini")
    table = splits[["prompt_id", "dataset"]].assign(value=np.arange(len(splits)))
    test = filter_split(table, splits, "test")
    assert len(test) == 40 and set(splits.set_index("prompt_id").loc[test["prompt_id"], "split"]) == {"test"}
    assert filter_split(table, None, "test") is table
    assert filter_split(table, splits, "all") is table
    with pytest.raises(ContractError, match="other"):
        filter_split(table.assign(dataset="other"), splits, "test")
    with pytest.raises(ConfigError, match="holdout"):
        filter_split(table, splits, "holdout")
    with pytest.raises(ContractError, match="mini-h-001"):
        filter_split(table, splits[splits["prompt_id"] != "mini-h-001"], "test")
