"""ASR by zoom scale: bins, paired reference, the trend test recovers a planted dependence on scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, spearmanr

from toolshift.errors import ContractError
from toolshift.magnification import ASR_BY_SCALE_COLUMNS, asr_by_scale_table, scale_bins


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
