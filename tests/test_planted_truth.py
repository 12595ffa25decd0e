"""Planted truth, end to end through the analysis library: splits -> vectors -> layer selection -> ASR
tables -> headline, on synthetic activations and verdicts with a known direction, layer and effect.

Recovery: the tool vector and refusal direction (estimated on train prompts only) have cosine > 0.99
with the planted ones; the planted layer is selected on validation prompts (and a stronger decoy in the
last 20 % of layers is not); the planted ASR reduction is significant on the test prompts and inside
the CIs. Null: on data without an effect, every test's false-positive rate over many seeds is at most
the nominal 5 % plus Monte Carlo error: the count of false positives must not exceed the 99.9 %
quantile of Binomial(n_seeds, 0.05) (bounds printed with the measured rates).

The synthetic study comes from `toolshift.checks.planted_truth`, which also turns these checks into the
report's table (tests/test_validation.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolshift.analysis.headline import MEAN_MODEL, headline_table
from toolshift.analysis.selection import candidate_layers
from toolshift.analysis.stats import holm_adjust, mcnemar_exact, paired_bootstrap_ci
from toolshift.analysis.tables import asr_table
from toolshift.analysis.vectors import compute_vectors, cosine
from toolshift.checks.planted_truth import (
    DECOY_LAYER,
    MODELS,
    N_LAYERS,
    NOMINAL,
    PLANTED_LAYER,
    PLANTED_RR,
    fp_bound,
    planted_study,
    planted_verdicts,
)
from toolshift.datasets.splits import make_splits


@pytest.fixture(scope="module")
def study() -> dict:
    per_model = {}
    judged = []
    for k, model in enumerate(MODELS):
        planted = planted_study(seed=100 + k)
        splits = make_splits(planted.prompts, seed=0)
        vectors = compute_vectors(planted.acts, planted.prompts, model=model, dataset="syn", splits=splits)
        per_model[model] = {"planted": planted, "splits": splits, "vectors": vectors}
        judged.append(planted_verdicts(planted.prompts, model, seed=200 + k))
    splits = per_model[MODELS[0]]["splits"]  # same prompts, same seed: the same split in every model
    for s in per_model.values():
        pd.testing.assert_frame_equal(s["splits"], splits)
    return {"per_model": per_model, "judged": pd.concat(judged, ignore_index=True), "splits": splits}


def test_planted_directions_are_recovered_from_train_prompts(study):
    for model, s in study["per_model"].items():
        ds = s["vectors"]
        assert ds.attrs["n_harmful"] == 60 and ds.attrs["n_harmless"] == 60  # 40 % of 150 per class
        cos_tool = cosine(ds["tool_vector"].values, s["planted"].tool_vector)
        cos_ref = cosine(ds["refusal_direction"].values, s["planted"].refusal_direction)
        print(f"{model}: min cos(tool) {cos_tool.min():.4f}, min cos(refusal) {cos_ref.min():.4f}")
        assert np.all(cos_tool > 0.99) and np.all(cos_ref > 0.99)
        assert ds["cos_tool_refusal"].sel(layer=PLANTED_LAYER) == pytest.approx(0.9, abs=0.02)


def test_planted_layer_is_selected_and_the_decoy_excluded(study):
    assert DECOY_LAYER not in candidate_layers(N_LAYERS, 0.2) and PLANTED_LAYER in candidate_layers(N_LAYERS)
    for model, s in study["per_model"].items():
        ds = s["vectors"]
        scores = ds["layer_score"].values
        print(f"{model}: selected layer {ds.attrs['selected_layer']}, scores {np.round(scores, 2)}")
        assert ds.attrs["selected_layer"] == PLANTED_LAYER
        assert ds.attrs["selection_criterion"] == "refusal_shift_sd"
        assert ds.attrs["selection_split"] == "validation"
        assert np.isnan(scores[DECOY_LAYER])
        others = np.delete(scores[: len(candidate_layers(N_LAYERS))], PLANTED_LAYER)
        assert scores[PLANTED_LAYER] > 5 * np.nanmax(np.abs(others))


def test_planted_effect_is_significant_on_the_test_split(study):
    table = asr_table(study["judged"], n_boot=1000, seed=0, splits=study["splits"], split="test")
    assert set(table["split"]) == {"test"}
    for model in MODELS:
        rows = table[table["model"] == model].set_index("condition")
        tool, trail = rows.loc["tool"], rows.loc["text_trail"]
        assert tool["n"] == 60  # 40 % of the 150 harmful prompts
        print(
            f"{model}: rr {tool['rel_reduction']:.3f} [{tool['rel_reduction_ci_low']:.3f}, "
            f"{tool['rel_reduction_ci_high']:.3f}], McNemar p {tool['mcnemar_p']:.2g}, "
            f"Holm {tool['holm_p']:.2g}"
        )
        assert tool["mcnemar_p"] < 0.01 and tool["holm_p"] < 0.05
        assert tool["rel_reduction_ci_low"] > 0
        assert (
            tool["rel_reduction_ci_low"] < PLANTED_RR + 0.2
            and tool["rel_reduction_ci_high"] > PLANTED_RR - 0.2
        )
        assert trail["holm_p"] >= trail["mcnemar_p"]


def test_planted_headline_is_recovered(study):
    table = headline_table(study["judged"], judge="keyword", splits=study["splits"], n_boot=2000, seed=0)
    row = table[table["model"] == MEAN_MODEL].iloc[0]
    print(
        f"headline: {row['rel_reduction']:.3f} [{row['rel_reduction_ci_low']:.3f}, "
        f"{row['rel_reduction_ci_high']:.3f}] (planted {PLANTED_RR})"
    )
    assert row["n_models"] == 3 and row["n"] == 180
    assert row["rel_reduction_ci_low"] <= PLANTED_RR <= row["rel_reduction_ci_high"]
    assert row["rel_reduction_ci_low"] > 0.1


def test_probes_see_the_planted_class_signal(study):
    ds = study["per_model"][MODELS[0]]["vectors"]
    acc = ds["probe_test_accuracy"].sel(condition="direct").values
    print("probe test accuracy (direct) per layer", np.round(acc, 3))
    assert np.all(acc > 0.9)


# --------------------------------------------------------------------------- null data


def _null_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    p = rng.uniform(0.3, 0.8)
    return rng.random(n) < p, rng.random(n) < p


def test_null_false_positive_rates_of_mcnemar_bootstrap_and_holm():
    n_seeds, n = 1000, 60
    mc = boot = holm = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        base, treat = _null_pairs(rng, n)
        mc += mcnemar_exact(base, treat) < NOMINAL
        lo, hi = paired_bootstrap_ci(base, treat, n_boot=500, seed=seed)
        boot += lo > 0 or hi < 0
        # a family of 7 null conditions against one direct run
        p = rng.uniform(0.3, 0.8)
        direct = rng.random(n) < p
        ps = [mcnemar_exact(direct, rng.random(n) < p) for _ in range(7)]
        holm += bool((holm_adjust(ps) < NOMINAL).any())
    bound = fp_bound(n_seeds)
    print(
        f"null FPR over {n_seeds} seeds: McNemar {mc / n_seeds:.3f}, bootstrap CI excludes 0 "
        f"{boot / n_seeds:.3f}, Holm family-wise (7 tests) {holm / n_seeds:.3f}; bound {bound / n_seeds:.3f}"
    )
    assert mc <= bound and boot <= bound and holm <= bound


def test_null_false_positive_rate_of_the_headline():
    n_seeds, n = 300, 60
    conds = ("direct", "tool")
    ids = [f"p{i:03d}" for i in range(n)]
    positives = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(10_000 + seed)
        frames = []
        for model in MODELS:
            p = rng.uniform(0.3, 0.8)
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "dataset": "d",
                        "condition": np.repeat(conds, n),
                        "intervention": "none",
                        "judge": "keyword",
                        "prompt_id": ids * 2,
                        "harmful": True,
                        "unsafe": rng.random(2 * n) < p,
                    }
                )
            )
        table = headline_table(pd.concat(frames), judge="keyword", n_boot=500, seed=seed)
        row = table[table["model"] == MEAN_MODEL].iloc[0]
        positives += row["rel_reduction_ci_low"] > 0 or row["rel_reduction_ci_high"] < 0
    bound = fp_bound(n_seeds)
    print(f"headline null FPR over {n_seeds} seeds: {positives / n_seeds:.3f} (bound {bound / n_seeds:.3f})")
    assert positives <= bound


def test_null_data_selects_no_layer_with_a_large_score():
    """Without a planted alignment, the selection scores stay small (the criterion is not noise-driven)."""
    s = planted_study(seed=7)
    acts = dict(s.acts)
    acts["tool"] = acts["text_trail"]  # a tool run without any shift
    ds = compute_vectors(acts, s.prompts, model="m", dataset="syn", splits=make_splits(s.prompts))
    scores = ds["layer_score"].values[: len(candidate_layers(N_LAYERS))]
    print("null selection scores", np.round(scores, 3))
    assert np.nanmax(np.abs(scores)) < 0.5
