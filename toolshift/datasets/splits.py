"""Seeded, stratified train / validation / test splits of a dataset's prompts.

- ``train``: every vector is estimated on it (tool vector, refusal direction, PCA, probe fits);
- ``validation``: the intervention layer and alpha are selected on it;
- ``test``: every reported number (ASR tables, headline, figures) is computed on it.

Allocation (`make_splits`): prompts are grouped by ``harmful`` and, inside each class, by ``category``;
categories are visited in a seeded random order and the prompts of each category in a seeded random
order. The visited prompts of one class receive the labels of a deterministic *smooth weighted
round-robin* sequence over the splits (at every step the split whose running count lags its fraction
most gets the next prompt; ties go to train, then validation, then test). Hence, per class, every
prefix of the sequence, and so every split size, is within one prompt of ``fraction * n_class``; and
the prompts of one category are spread over the splits in proportion (within one prompt) because they
occupy a contiguous stretch of the sequence. The first prompt of each class goes to the split with the
largest fraction (train by default), so train always has both classes when the data has them.

The split file is ``splits/{dataset}.parquet`` with columns SPLIT_COLUMNS.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from toolshift.contracts import SPLIT_COLUMNS, read_table, require_columns, write_parquet
from toolshift.errors import ConfigError, ContractError, DataError

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The split names, in allocation order."""

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.4, "validation": 0.2, "test": 0.4}
"""Default split fractions: train estimates vectors, validation selects, test is reported."""


ALL = "all"
"""The `split` value of a table computed on every prompt (no split filter)."""


def validate_fractions(fractions: Mapping[str, Any] | None) -> dict[str, float]:
    """Check a ``{train, validation, test}`` mapping of non-negative numbers summing to 1 (within 1e-9).

    None gives DEFAULT_FRACTIONS. Train must be positive. Raises ConfigError naming the key.
    """
    if fractions is None:
        return dict(DEFAULT_FRACTIONS)
    if not isinstance(fractions, Mapping):
        raise ConfigError(f"splits.fractions: expected a mapping of {', '.join(SPLITS)}, got {fractions!r}")
    keys = set(fractions)
    if keys != set(SPLITS):
        raise ConfigError(
            f"splits.fractions: expected exactly the keys {', '.join(SPLITS)}, got {', '.join(sorted(keys))}"
        )
    out: dict[str, float] = {}
    for name in SPLITS:
        value = fractions[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"splits.fractions.{name}: {value!r} is not a number")
        if value < 0:
            raise ConfigError(f"splits.fractions.{name}: {value!r} must be >= 0")
        out[name] = float(value)
    if abs(sum(out.values()) - 1) > 1e-9:
        raise ConfigError(f"splits.fractions: the fractions must sum to 1, got {sum(out.values())!r}")
    if out["train"] <= 0:
        raise ConfigError("splits.fractions.train: must be > 0 (the vectors are estimated on train)")
    return out


def round_robin_labels(n: int, fractions: Mapping[str, float]) -> list[str]:
    """The first `n` labels of the smooth weighted round-robin sequence over SPLITS (see the module doc)."""
    weights = np.array([fractions[s] for s in SPLITS], dtype=np.float64)
    credit = np.zeros(len(SPLITS))
    labels = []
    for _ in range(n):
        credit += weights
        k = int(np.argmax(credit))  # first maximum: train, then validation, then test
        credit[k] -= 1.0
        labels.append(SPLITS[k])
    return labels


def make_splits(
    prompts: pd.DataFrame, *, seed: int = 0, fractions: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Assign every prompt to train / validation / test, stratified by ``harmful`` and ``category``.

    Deterministic for a given seed and set of prompts (independent of the input row order). Returns
    SPLIT_COLUMNS in the input's row order. A dataset with a harmful prompt but none in train raises
    DataError (it cannot happen with a positive train fraction, see the module docstring).
    """
    require_columns(prompts, ("prompt_id", "dataset", "category", "harmful"), "prompts table")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"splits.seed: {seed!r} must be a non-negative integer")
    frac = validate_fractions(fractions)
    if prompts["prompt_id"].duplicated().any():
        dup = prompts["prompt_id"][prompts["prompt_id"].duplicated()].iloc[0]
        raise ContractError(f"prompts table: duplicate prompt_id {dup!r}")
    rng = np.random.default_rng(int(seed))
    table = prompts.assign(
        prompt_id=prompts["prompt_id"].astype(str), category=prompts["category"].astype(str)
    )
    label: dict[str, str] = {}
    for harmful in (True, False):
        cls = table[table["harmful"].astype(bool) == harmful]
        categories = sorted(cls["category"].unique())
        order: list[str] = []
        for k in rng.permutation(len(categories)):
            ids = sorted(cls.loc[cls["category"] == categories[k], "prompt_id"])
            order += [ids[i] for i in rng.permutation(len(ids))]
        label.update(zip(order, round_robin_labels(len(order), frac), strict=True))
    out = table.loc[:, ["prompt_id", "dataset", "category", "harmful"]].copy()
    out["harmful"] = out["harmful"].astype(bool)
    out["split"] = out["prompt_id"].map(label)
    if out["harmful"].any() and not (out["harmful"] & (out["split"] == "train")).any():
        raise DataError("splits: no harmful prompt landed in train; raise splits.fractions.train")
    return out.reset_index(drop=True)[list(SPLIT_COLUMNS)]


def validate_splits(df: pd.DataFrame, where: str | os.PathLike[str]) -> pd.DataFrame:
    """Check a splits table (columns, unique prompt ids per dataset, known split names) and return it."""
    require_columns(df, SPLIT_COLUMNS, where)
    bad = sorted(set(df["split"].astype(str)) - set(SPLITS))
    if bad:
        raise ContractError(f"{where}: unknown split {bad[0]!r} (expected one of {', '.join(SPLITS)})")
    dup = df.duplicated(["dataset", "prompt_id"])
    if dup.any():
        raise ContractError(f"{where}: duplicate prompt_id {df.loc[dup, 'prompt_id'].iloc[0]!r}")
    return df


def write_splits(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Validate and write `splits/{dataset}.parquet` atomically."""
    write_parquet(validate_splits(df, str(path)).loc[:, list(SPLIT_COLUMNS)], path)


def read_splits(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a splits file."""
    df = read_table(path, SPLIT_COLUMNS)
    df["prompt_id"] = df["prompt_id"].astype(str)
    return validate_splits(df, str(path))


def split_of(splits: pd.DataFrame | None, prompt_ids: list[str], dataset: str | None = None) -> np.ndarray:
    """The split of each prompt id (an array of str); ``"train"`` for all when `splits` is None.

    With a `dataset`, only that dataset's rows of `splits` are used. A prompt without a split raises
    ContractError.
    """
    if splits is None:
        return np.array(["train"] * len(prompt_ids), dtype=object)
    require_columns(splits, ("prompt_id", "split"), "splits table")
    rows = splits if dataset is None or "dataset" not in splits else splits[splits["dataset"] == dataset]
    lookup = dict(zip(rows["prompt_id"].astype(str), rows["split"].astype(str), strict=True))
    missing = [p for p in prompt_ids if p not in lookup]
    if missing:
        raise ContractError(
            f"splits table: prompt_id {missing[0]!r} has no split ({len(missing)} missing"
            + (f" in dataset {dataset!r})" if dataset else ")")
        )
    return np.array([lookup[p] for p in prompt_ids], dtype=object)


def filter_split(table: pd.DataFrame, splits: pd.DataFrame | None, split: str) -> pd.DataFrame:
    """The rows of `table` (with ``dataset`` and ``prompt_id``) whose prompt is in `split`.

    `splits` None or `split` ``"all"`` returns `table` unchanged. A dataset of `table` absent from
    `splits`, or one of its prompts without a split, raises ContractError naming it.
    """
    if splits is None or split == ALL:
        return table
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)} or {ALL}")
    require_columns(table, ("dataset", "prompt_id"), "table")
    require_columns(splits, ("dataset", "prompt_id", "split"), "splits table")
    known = set(splits["dataset"].astype(str))
    absent = sorted(set(table["dataset"].astype(str)) - known)
    if absent:
        raise ContractError(
            f"splits table: no splits for dataset {absent[0]!r} (have {', '.join(sorted(known))})"
        )
    key = splits.assign(prompt_id=splits["prompt_id"].astype(str), dataset=splits["dataset"].astype(str))
    key = key.set_index(["dataset", "prompt_id"])["split"]
    index = pd.MultiIndex.from_arrays([table["dataset"].astype(str), table["prompt_id"].astype(str)])
    labels = key.reindex(index)
    if labels.isna().any():
        i = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise ContractError(
            f"splits table: prompt_id {table['prompt_id'].iloc[i]!r} of dataset "
            f"{table['dataset'].iloc[i]!r} has no split"
        )
    return table[labels.to_numpy() == split]


__all__ = [
    "ALL",
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "filter_split",
    "make_splits",
    "read_splits",
    "round_robin_labels",
    "split_of",
    "validate_fractions",
    "validate_splits",
    "write_splits",
]
