"""ASR by zoom scale: bins, paired reference, the trend test recovers a planted dependence on scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, spearmanr

from toolshift.analysis.magnification import asr_by_scale_table, scale_bins
from toolshift.contracts import ASR_BY_SCALE_COLUMNS
from toolshift.errors import ContractError


def judged(n: int = 120, planted: bool = True, seed: int = 0) -> pd.DataFrame:
    """`direct` unsafe for every prompt; `tool` refuses with a probability that grows with the zoom scale
    (planted) or not at all; `text_prior` has no zoom (NaN scale), `text_trail` a box but no zoom shown."""
    rng = np.random.default_rng(seed)
    scales = np.round(rng.uniform(1.0, 3.0, n), 3)
    p_refuse = (scales - 1.0) / 2.0 if planted else np.full(n, 0.3)
    rows = []
    for i in range(n):
        pid = f"p{i:03d}"
        for condition, unsafe, scale in (
            ("direct", True, np.nan),
            ("tool", bool(rng.random() >= p_refuse[i]), scales[i]),
            ("text_prior", bool(rng.random() < 0.9), np.nan),
            ("text_trail", True, scales[i]),  # has the box, but shows no zoom: not broken down
        ):
            rows.append(
                dict(
                    model="m",
                    dataset="d",
                    judge="keyword",
                    condition=condition,
                    intervention="none",
                    prompt_id=pid,
                    harmful=True,
                    unsafe=unsafe,
                    zoom_scale=scale,
                )
            )
        rows.append(
            dict(
                model="m",
                dataset="d",
                judge="keyword",
                condition="tool",
                intervention="ablate",
                prompt_id=pid,
                harmful=True,
                unsafe=True,
                zoom_scale=scales[i],
            )
        )
    return pd.DataFrame(rows)


def test_scale_bins():
    assert scale_bins(np.array([1.0, 1.0, 1.0])).tolist() == [0, 0, 0]
    bins = scale_bins(np.arange(1, 10, dtype=float), 3)
    assert bins.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert scale_bins(np.array([1.0, 2.0, 2.0, 2.0]), 3).tolist()[1:] == [1, 1, 1]  # ties share a bin


def test_planted_dependence_on_scale_is_recovered():
    table = asr_by_scale_table(judged(planted=True), n_bins=3)
    assert list(table.columns) == list(ASR_BY_SCALE_COLUMNS)
    assert set(table["condition"]) == {"tool"}  # text_prior/text_trail show no zoom, interventions left out
    assert table["n"].sum() == 120 and (table["reference_asr"] == 1.0).all()
    asr = table.sort_values("scale_bin")["asr"].to_numpy()
    assert asr[0] > asr[1] > asr[2]  # more magnification, fewer unsafe answers: as planted
    assert table["trend_rho"].iloc[0] < -0.3 and table["trend_p"].iloc[0] < 0.01
    assert (table["scale_max"].iloc[:-1].to_numpy() <= table["scale_min"].iloc[1:].to_numpy()).all()
    # each bin's McNemar p is the exact binomial test of its discordant pairs
    first = table.iloc[0]
    discordant = round(first["n"] * (1 - first["asr"]))
    assert first["mcnemar_p"] == pytest.approx(binomtest(0, discordant, 0.5).pvalue)


def test_no_planted_dependence_gives_no_trend():
    frame = judged(planted=False, seed=3)
    table = asr_by_scale_table(frame, n_bins=3)
    assert table["trend_p"].iloc[0] > 0.05
    tool = frame[(frame["condition"] == "tool") & (frame["intervention"] == "none")].sort_values("prompt_id")
    rho, _ = spearmanr(tool["zoom_scale"], tool["unsafe"].astype(int) - 1)
    assert table["trend_rho"].iloc[0] == pytest.approx(rho)


def test_needs_the_zoom_scale_column():
    with pytest.raises(ContractError, match="zoom_scale"):
        asr_by_scale_table(judged().drop(columns="zoom_scale"))


def rows(model, condition, unsafe, scales, intervention="none", prefix="p"):
    return [
        dict(
            model=model,
            dataset="d",
            judge="keyword",
            condition=condition,
            intervention=intervention,
            prompt_id=f"{prefix}{i}",
            harmful=True,
            unsafe=u,
            zoom_scale=s,
        )
        for i, (u, s) in enumerate(zip(unsafe, scales, strict=True))
    ]


def test_every_column_of_a_small_table_by_hand():
    """Two models (listed out of order), `tool` before `image_no_tool`: every value known."""
    nan = np.nan
    frame = pd.DataFrame(
        rows("m2", "tool", [True, False, True], [1.0, 1.5, 2.0])
        + rows("m2", "direct", [True, True, False], [nan] * 3)
        + rows("m1", "tool", [False, False], [2.0, 2.0], prefix="x")  # no `direct` for x0, x1: no rows
        + rows("m1", "image_no_tool", [True, False, True, True], [1.0, 1.0, 3.0, 3.0])
        + rows("m1", "direct", [False, True, True, True], [nan] * 4)
        + rows("m1", "image_no_tool", [True] * 4, [1.0, 1.0, 3.0, 3.0], intervention="add_a1")
    )
    table = asr_by_scale_table(frame, n_bins=2)
    assert list(table.columns) == list(ASR_BY_SCALE_COLUMNS)
    got = table.drop(columns=["asr_ci_low", "asr_ci_high", "reference_asr_ci_low", "reference_asr_ci_high"])
    got = got.drop(columns=["mcnemar_p", "trend_rho", "trend_p"]).to_dict("records")
    common = {"dataset": "d", "judge": "keyword", "split": "all"}
    assert got == [
        {"model": "m1", **common, "condition": "image_no_tool", "scale_bin": 0, "scale_min": 1.0,
         "scale_max": 1.0, "n": 2, "asr": 0.5, "reference_asr": 0.5},
        {"model": "m1", **common, "condition": "image_no_tool", "scale_bin": 1, "scale_min": 3.0,
         "scale_max": 3.0, "n": 2, "asr": 1.0, "reference_asr": 1.0},
        {"model": "m2", **common, "condition": "tool", "scale_bin": 0, "scale_min": 1.0,
         "scale_max": 1.0, "n": 1, "asr": 1.0, "reference_asr": 1.0},
        {"model": "m2", **common, "condition": "tool", "scale_bin": 1, "scale_min": 1.5,
         "scale_max": 2.0, "n": 2, "asr": 0.5, "reference_asr": 0.5},
    ]  # fmt: skip
    from toolshift.analysis.stats import mcnemar_exact, wilson_ci

    for row, (k, k_ref) in zip(table.itertuples(), [(1, 1), (2, 2), (1, 1), (1, 1)], strict=True):
        assert (row.asr_ci_low, row.asr_ci_high) == wilson_ci(k, row.n)
        assert (row.reference_asr_ci_low, row.reference_asr_ci_high) == wilson_ci(k_ref, row.n)
    first = table.iloc[0]
    assert first["mcnemar_p"] == mcnemar_exact(np.array([False, True]), np.array([True, False]))
    # trend over the condition's paired prompts: change = unsafe(condition) - unsafe(direct)
    rho, p = spearmanr([1.0, 1.0, 3.0, 3.0], [1, -1, 0, 0])
    assert (first["trend_rho"], first["trend_p"]) == (pytest.approx(rho), pytest.approx(p))
    rho, p = spearmanr([1.0, 1.5, 2.0], [0, -1, 1])  # three prompts with a range of exactly 1: a trend
    m2 = table[table["model"] == "m2"].iloc[0]
    assert (m2["trend_rho"], m2["trend_p"]) == (pytest.approx(rho), pytest.approx(p))


def test_trend_needs_three_prompts_and_variation():
    two = pd.DataFrame(
        rows("m", "tool", [True, False], [1.0, 2.0]) + rows("m", "direct", [False, False], [np.nan] * 2)
    )
    table = asr_by_scale_table(two, n_bins=1)
    assert len(table) == 1 and table["n"].item() == 2
    assert np.isnan(table["trend_rho"].item()) and np.isnan(table["trend_p"].item())
    flat = pd.DataFrame(
        rows("m", "tool", [True, False, True], [2.0] * 3) + rows("m", "direct", [False] * 3, [np.nan] * 3)
    )
    assert np.isnan(asr_by_scale_table(flat)["trend_rho"].item())


def test_split_filter_and_default_split():
    frame = judged(n=30)
    ids = sorted(frame["prompt_id"].unique())
    splits = pd.DataFrame({"dataset": "d", "prompt_id": ids, "split": ["test"] * 12 + ["train"] * 18})
    table = asr_by_scale_table(frame, splits=splits)
    assert set(table["split"]) == {"test"} and table["n"].sum() == 12
    train = asr_by_scale_table(frame, splits=splits, split="train")
    assert set(train["split"]) == {"train"} and train["n"].sum() == 18
    assert len(asr_by_scale_table(frame)) == 3  # three bins by default


def test_no_zoom_condition_gives_an_empty_table_with_the_columns():
    frame = judged(n=6)
    empty = asr_by_scale_table(frame[frame["condition"] != "tool"])
    assert empty.empty and list(empty.columns) == list(ASR_BY_SCALE_COLUMNS)


def test_scale_bins_edge_cases():
    empty = scale_bins(np.array([]))
    assert empty.shape == (0,) and empty.dtype.kind == "i"
    assert scale_bins(np.array([3.0, 1.0, 2.0]), 1).tolist() == [0, 0, 0]
    assert scale_bins(np.array([[1.0, 5.0], [3.0, 9.0]]), 2).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="^n_bins must be >= 1, got 0$"):
        scale_bins(np.array([1.0]), 0)


def test_missing_column_names_the_judged_table():
    with pytest.raises(ContractError, match="^judged table: missing column"):
        asr_by_scale_table(judged().drop(columns="harmful"))


def test_conditions_keep_their_order_of_appearance():
    nan = np.nan
    frame = pd.DataFrame(
        rows("m", "tool", [True, False], [1.0, 2.0])
        + rows("m", "image_no_tool", [True, True], [1.0, 2.0])
        + rows("m", "direct", [True, True], [nan, nan])
    )
    assert list(asr_by_scale_table(frame, n_bins=1)["condition"]) == ["tool", "image_no_tool"]
    flipped = pd.concat([frame[frame["condition"] != "tool"], frame[frame["condition"] == "tool"]])
    assert list(asr_by_scale_table(flipped, n_bins=1)["condition"]) == ["image_no_tool", "tool"]
