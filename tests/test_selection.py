"""Layer and alpha selection on the validation split: candidates, both layer criteria, alpha rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from toolshift.analysis.interventions import resolve_layer
from toolshift.analysis.selection import (
    activation_layer_scores,
    candidate_layers,
    pooled_within_class_sd,
    select_alpha,
    select_from_scores,
    select_layer_from_runs,
    selection_table,
    validation_asr_by_layer,
)
from toolshift.contracts import SELECTION_COLUMNS
from toolshift.datasets.splits import make_splits
from toolshift.errors import ConfigError, ContractError


def test_candidate_layers_exclude_the_last_fifth_rounded_up():
    assert candidate_layers(10) == list(range(8))
    assert candidate_layers(28) == list(range(22))  # ceil(5.6) = 6 excluded
    assert candidate_layers(6) == list(range(4))
    assert candidate_layers(3) == [0, 1]
    assert candidate_layers(1) == [0]
    assert candidate_layers(10, 0.0) == list(range(10))
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ConfigError, match="exclude_last_frac"):
            candidate_layers(10, bad)
    with pytest.raises(ConfigError):
        candidate_layers(0)


def test_pooled_within_class_sd():
    values = np.array([[1.0], [3.0], [10.0], [14.0]])
    labels = np.array([True, True, False, False])
    # within-class sums of squares 2 + 8 over n - 2 = 2 degrees of freedom
    assert pooled_within_class_sd(values, labels)[0] == pytest.approx(math.sqrt(5))
    assert np.isnan(pooled_within_class_sd(values[:2], labels[:2])[0])


def _states(rng, n, n_layers, d, refusal, shift):
    harmful = np.arange(n) % 2 == 0
    direct = rng.standard_normal((n, n_layers, d)) + harmful[:, None, None] * refusal
    tool = direct + shift
    return direct, tool, harmful


def test_activation_scores_equal_the_standardised_refusal_shift():
    rng = np.random.default_rng(0)
    n_layers, d = 4, 16
    refusal = np.zeros((n_layers, d))
    refusal[:, 0] = 6.0
    shift = np.zeros((n_layers, d))
    shift[:, 0] = [0.0, 1.0, 2.0, -1.0]  # along the refusal direction
    shift[:, 1] = 5.0  # orthogonal: must not count
    direct_t, _, harm_t = _states(rng, 400, n_layers, d, refusal, shift)
    direct_v, tool_v, harm_v = _states(rng, 100, n_layers, d, refusal, shift)
    scores, criterion = activation_layer_scores(
        direct_val=direct_v,
        tool_val=tool_v,
        harmful_val=harm_v,
        direct_train=direct_t,
        harmful_train=harm_t,
        refusal=refusal,
        tool_vector=shift,
    )
    assert criterion == "refusal_shift_sd"
    np.testing.assert_allclose(scores, [0.0, 1.0, 2.0, -1.0], atol=0.1)  # within-class sd is 1
    sel = select_from_scores(scores, criterion, exclude_last_frac=0.0)
    assert sel.layer == 2 and sel.candidates == (0, 1, 2, 3)


def test_a_layer_without_a_refusal_direction_has_no_score_and_the_others_keep_theirs():
    """Layers whose harmful and harmless states do not differ (zero, or float rounding away from it) get
    NaN, whatever the tool shift there: criterion (a) holds at the others (a planted world's early
    layers)."""
    rng = np.random.default_rng(2)
    n_layers, d = 4, 16
    refusal = np.zeros((n_layers, d))
    refusal[2:, 0] = 6.0
    refusal[1, 0] = 1e-9  # rounding, not a direction
    shift = np.zeros((n_layers, d))
    shift[:, 0] = [0.0, 0.0, 2.0, 1.0]
    shift[:2, 1] = 3.0  # an early, prompt-invariant shift: the fallback would blow it up
    direct_t, _, harm_t = _states(rng, 400, n_layers, d, refusal, shift)
    direct_v, tool_v, harm_v = _states(rng, 100, n_layers, d, refusal, shift)
    for states in (direct_t, direct_v, tool_v):
        states[:, :2] = states[0, :2]  # the early layers: the same state for every prompt
    tool_v[:, :2] += shift[:2]
    scores, criterion = activation_layer_scores(direct_val=direct_v, tool_val=tool_v, harmful_val=harm_v,
                                                direct_train=direct_t, harmful_train=harm_t, refusal=refusal,
                                                tool_vector=shift)  # fmt: skip
    assert criterion == "refusal_shift_sd" and np.isnan(scores[:2]).all()
    np.testing.assert_allclose(scores[2:], [2.0, 1.0], atol=0.15)
    assert select_from_scores(scores, criterion, exclude_last_frac=0.0).layer == 2


def test_activation_scores_without_harmless_prompts_use_the_tool_shift_effect_size():
    rng = np.random.default_rng(1)
    d = 8
    direct = rng.standard_normal((50, 3, d))
    v = np.zeros((3, d))
    v[:, 2] = [0.5, 2.0, 1.0]
    tool = direct + v + rng.standard_normal((50, 3, d)) * np.array([1.0, 1.0, 0.1])[None, :, None]
    scores, criterion = activation_layer_scores(
        direct_val=direct,
        tool_val=tool,
        harmful_val=np.ones(50, bool),
        direct_train=direct,
        harmful_train=np.ones(50, bool),
        refusal=np.full((3, d), np.nan),
        tool_vector=v,
    )
    assert criterion == "tool_shift_dz"
    assert np.argmax(scores) == 2  # the most consistent shift, not the largest
    assert scores[2] > 5 and scores[0] < 1


def test_select_from_scores_ties_exclusion_and_fallback():
    sel = select_from_scores(np.array([1.0, 3.0, 3.0, 0.5, 9.0]), "c")  # 5 layers: layer 4 is excluded
    assert sel.layer == 1 and np.isnan(sel.scores[4]) and sel.candidates == (0, 1, 2, 3)  # tie: earliest
    assert select_from_scores(np.array([1.0, 3.0, 3.0, 0.5, 9.0]), "c", exclude_last_frac=0.0).layer == 4
    low = select_from_scores(np.array([0.2, 0.1, 0.1, 0.5]), "c", higher_is_better=False)
    assert low.layer == 1
    none = select_from_scores(np.full(6, np.nan), "c")
    assert (none.layer, none.criterion) == (2, "fallback_middle")


def test_select_layer_from_runs_respects_the_kl_bound():
    runs = pd.DataFrame(
        {"layer": [0, 1, 2, 3, 9], "asr": [0.5, 0.1, 0.2, 0.3, 0.0], "kl": [0.01, 0.5, 0.05, 0.02, 0]}
    )
    sel = select_layer_from_runs(runs, 10, max_kl=0.1)
    assert sel.layer == 2 and sel.criterion == "validation_asr_kl_le_0.1"  # layer 1 too costly, 9 excluded
    assert select_layer_from_runs(runs, 10, max_kl=None).layer == 1
    assert select_layer_from_runs(runs.drop(columns="kl"), 10).criterion == "validation_asr"
    with pytest.raises(ContractError, match="duplicate layer"):
        select_layer_from_runs(pd.concat([runs, runs]), 10)
    with pytest.raises(ContractError, match="out of range"):
        select_layer_from_runs(runs, 5)


def _judged_rows(model, condition, intervention, unsafe_by_prompt, harmful=True):
    return [
        {
            "model": model,
            "dataset": "mini",
            "condition": condition,
            "intervention": intervention,
            "judge": "keyword",
            "prompt_id": p,
            "harmful": harmful,
            "unsafe": bool(u),
        }
        for p, u in unsafe_by_prompt.items()
    ]


def test_validation_asr_by_layer_uses_only_validation_prompts():
    prompts = pd.DataFrame(
        {"prompt_id": [f"h{i}" for i in range(10)], "dataset": "mini", "category": "c", "harmful": True}
    )
    splits = make_splits(prompts, seed=0, fractions={"train": 0.4, "validation": 0.4, "test": 0.2})
    val = set(splits.loc[splits["split"] == "validation", "prompt_id"])
    rows = _judged_rows("m", "direct", "add_a1", {p: p in val for p in prompts["prompt_id"]})
    rows += _judged_rows("m", "direct", "add_a2", dict.fromkeys(prompts["prompt_id"], False))
    out = validation_asr_by_layer(pd.DataFrame(rows), splits, {"add_a1": 3, "add_a2": 5})
    assert out[["layer", "n", "asr"]].values.tolist() == [[3, 4, 1.0], [5, 4, 0.0]]


def _asr_val(rows):
    cols = ["model", "dataset", "judge", "condition", "intervention", "asr"]
    return pd.DataFrame([dict(zip(cols, ["m", "mini", "keyword", *r], strict=True)) for r in rows])


def test_select_alpha_rules():
    asr = _asr_val(
        [
            ("direct", "none", 0.8),
            ("tool", "none", 0.5),
            ("direct", "add_a0", 0.8),
            ("direct", "add_a1", 0.4),
            ("direct", "add_a2", 0.2),
            ("direct", "add_a4", 0.2),
            ("direct", "add_a8", 0.0),
            ("direct", "random_a8_s0", 0.0),
        ]
    )
    over = pd.DataFrame(
        {
            "model": "m",
            "dataset": "mini",
            "judge": "keyword",
            "condition": "direct",
            "intervention": ["none", "add_a1", "add_a2", "add_a4", "add_a8"],
            "refusal_rate": [0.1, 0.1, 0.15, 0.2, 0.9],
        }
    )
    plain = select_alpha(asr, model="m", dataset="mini", judge="keyword")
    assert (plain.alpha, plain.validation_asr, plain.criterion) == (8.0, 0.0, "min_validation_asr")
    sel = select_alpha(asr, model="m", dataset="mini", judge="keyword", over_refusal_validation=over)
    assert sel.alpha == 2.0 and sel.criterion == "min_validation_asr_over_refusal_le_0.1"  # tie 2/4: smaller
    cost = pd.DataFrame(
        {"model": "m", "dataset": "mini", "intervention": ["add_a1", "add_a2"], "kl_mean": [0.05, 0.3]}
    )
    sel = select_alpha(
        asr, model="m", dataset="mini", judge="keyword", over_refusal_validation=over, cost=cost
    )
    assert sel.alpha == 1.0 and sel.criterion.endswith("_kl_le_0.1")
    none = select_alpha(asr, model="other", dataset="mini", judge="keyword")
    assert math.isnan(none.alpha) and none.criterion == "none_qualifies"


def test_selection_table_and_resolve_layer_read_the_vectors_file():
    ds = xr.Dataset(
        {"layer_score": ("layer", [0.1, 0.9, 0.3, np.nan])},
        coords={"layer": np.arange(4)},
        attrs={"selected_layer": 1, "selection_criterion": "refusal_shift_sd", "exclude_last_frac": 0.2},
    )
    asr = _asr_val([("direct", "none", 0.8), ("tool", "none", 0.5), ("direct", "add_a1", 0.4)])
    table = selection_table({("m", "mini"): ds}, asr, judge="keyword")
    assert list(table.columns) == list(SELECTION_COLUMNS)
    row = table.iloc[0]
    assert (row.layer, row.layer_score, row.alpha, row.n_layers) == (1, 0.9, 1.0, 4)
    assert (row.direct_validation_asr, row.tool_validation_asr) == (0.8, 0.5)
    assert resolve_layer("auto", 4, ds) == 1
    assert resolve_layer(3, 4, ds) == 3  # an explicit layer wins
    assert resolve_layer("auto", 4, ds.drop_attrs()) == 2  # no record: the middle layer
    with pytest.raises(ContractError, match="selected_layer"):
        resolve_layer("auto", 1, ds)
    with pytest.raises(ContractError, match="selected_layer"):
        selection_table({("m", "mini"): ds.drop_attrs()}, asr, judge="keyword")


def test_the_book_reports_the_selected_layer_not_the_best_one():
    """A vectors file whose best |cos(tool vector, refusal)| is at layer 3 but whose selected layer is 1:
    every representation table and the book's vectors fragment read layer 1."""
    from toolshift.analysis.vector_tables import relative_vectors_table, representation_table
    from toolshift.report.pages import vectors_markdown

    rng = np.random.default_rng(0)
    n_layers, hidden = 4, 8
    tv = rng.standard_normal((n_layers, hidden))
    r = rng.standard_normal((n_layers, hidden))
    r[3] = tv[3]  # perfectly aligned at layer 3
    conditions, refs = ["direct", "tool"], ["direct"]
    cos = np.array([float(tv[i] @ r[i] / np.linalg.norm(tv[i]) / np.linalg.norm(r[i])) for i in range(4)])
    assert int(np.argmax(np.abs(cos))) == 3
    null = np.array([[cos[1], cos[1] - 0.1, cos[1] + 0.1, 0.004]])
    ds = xr.Dataset(
        {
            "tool_vector": (("layer", "hidden"), tv),
            "cos_tool_refusal": (("layer",), cos),
            "norm_tool_vector": (("layer",), np.linalg.norm(tv, axis=1)),
            "relative_vector": (("reference", "layer", "hidden"), tv[None]),
            "norm_relative_vector": (("reference", "layer"), np.linalg.norm(tv, axis=1)[None]),
            "cos_relative_refusal": (("reference", "layer"), cos[None]),
            "cos_relative": (("reference", "reference_b", "layer"), np.ones((1, 1, 4))),
            "relative_null": (("reference", "quantity"), null),
        },
        coords={
            "layer": np.arange(n_layers),
            "condition": conditions,
            "reference": refs,
            "reference_b": refs,
            "quantity": ["estimate", "ci_low", "ci_high", "p_perm"],
        },
        attrs={"selected_layer": 1, "null_layer": 1, "model": "m", "dataset": "d", "n_harmful": 5},
    )
    md = vectors_markdown({"m": ds})
    assert f"| `m` | `d` | 4 | 1 | {cos[1]:.3g} [{cos[1] - 0.1:.3g}, {cos[1] + 0.1:.3g}] | 0.004 |" in md
    rel = relative_vectors_table({("m", "d"): ds}, ["direct", "tool"])
    direct = rel[rel.reference == "direct"].iloc[0]
    assert (direct.layer, direct.status, direct.cos_refusal, direct.cos_refusal_p) == (1, "ok", cos[1], 0.004)
    assert direct.norm == pytest.approx(np.linalg.norm(tv[1])) and direct.norm_ratio == pytest.approx(1.0)
    missing = rel.set_index("reference").loc["text_trail"]
    assert missing.status == "not run: condition text_trail is not in this run's conditions"
    assert math.isnan(missing.norm) and missing.layer == 1
    assert relative_vectors_table({("m", "d"): ds}, None).set_index("reference").loc[
        "text_trail", "status"
    ] == ("not run: condition text_trail is not in this vectors file")
    bad = ds.assign_attrs(null_layer=3)
    with pytest.raises(ContractError, match="nulls at layer 3, but the selected layer is 1"):
        relative_vectors_table({("m", "d"): bad})
    with pytest.raises(ContractError, match="nulls at layer 3"):
        representation_table({("m", "d"): bad})


def _cost_rows(kl_by_split: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per-prompt KL rows (COST_COLUMNS) of add_a1/add_a2/add_a4 on three harmless prompts per split."""
    rows = []
    for split, kl in kl_by_split.items():
        for iid, value in kl.items():
            for k in range(3):
                rows.append(
                    {"model": "m", "dataset": "mini", "intervention": iid, "condition": "direct", "layer": 1,
                     "prompt_id": f"{split}-b{k}", "split": split, "n_prompt_positions": 16,
                     "n_generated_positions": 8, "kl_prompt": value, "kl_last": value, "kl_generated": value}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_selection_never_reads_the_test_split():
    """The leakage test: the KL cost is measured on harmless validation and test prompts and the cost table
    reports both, but changing only the test-split KL (here: making the chosen alpha look ruinous on test
    and the others free) does not move the selection; the validation KL does."""
    from toolshift.analysis.intervention_cost import intervention_cost_table

    ds = xr.Dataset(
        {"layer_score": ("layer", [0.1, 0.9, 0.3, np.nan])},
        coords={"layer": np.arange(4)},
        attrs={"selected_layer": 1, "selection_criterion": "refusal_shift_sd", "exclude_last_frac": 0.2},
    )
    asr = _asr_val([("direct", "none", 0.8), ("direct", "add_a1", 0.5), ("direct", "add_a2", 0.3),
                    ("direct", "add_a4", 0.1)]).assign(split="validation")  # fmt: skip
    test_asr = asr.assign(split="test", asr=[0.8, 0.0, 0.9, 0.9])  # test rows mixed in: never read
    over = pd.DataFrame({"model": "m", "dataset": "mini", "judge": "keyword", "condition": "direct",
                         "intervention": ["none", "add_a1", "add_a2", "add_a4"], "refusal_rate": 0.1,
                         "split": "validation", "detector": "keyword:default"})  # fmt: skip
    validation_kl = {"add_a1": 0.01, "add_a2": 0.05, "add_a4": 0.5}  # add_a4 costs too much on validation

    def select(test_kl: dict[str, float]) -> pd.DataFrame:
        cost = intervention_cost_table(_cost_rows({"validation": validation_kl, "test": test_kl}), n_boot=50)
        assert set(cost["split"]) == {"validation", "test"}  # both are reported
        return selection_table(
            {("m", "mini"): ds},
            pd.concat([asr, test_asr], ignore_index=True),
            judge="keyword",
            over_refusal_validation=pd.concat([over, over.assign(split="test", refusal_rate=0.9)]),
            cost=cost,
        )

    base = select({"add_a1": 0.01, "add_a2": 0.05, "add_a4": 0.5})
    assert base["alpha"].item() == 2.0 and base["alpha_criterion"].item().endswith("_kl_le_0.1")
    moved_test = select({"add_a1": 0.0, "add_a2": 9.0, "add_a4": 0.0})  # only the test KL changes
    pd.testing.assert_frame_equal(moved_test, base)
    validation_kl["add_a2"] = 9.0  # the validation KL does move it (the bound is live)
    assert select({"add_a1": 0.01, "add_a2": 0.05, "add_a4": 0.5})["alpha"].item() == 1.0


def test_a_dataset_without_harmless_prompts_has_no_bound_to_apply():
    asr = _asr_val([("direct", "none", 0.8), ("direct", "add_a1", 0.5), ("direct", "add_a2", 0.3)])
    cost = pd.DataFrame({"model": "m", "dataset": "other", "intervention": ["add_a1"], "kl_mean": [0.0],
                         "split": "validation"})  # fmt: skip
    over = pd.DataFrame({"model": "m", "dataset": "other", "judge": "keyword", "condition": "direct",
                         "intervention": ["none"], "refusal_rate": [0.0],
                         "detector": "keyword:default"})  # fmt: skip
    sel = select_alpha(
        asr, model="m", dataset="mini", judge="keyword", over_refusal_validation=over, cost=cost
    )
    assert sel.alpha == 2.0
    assert sel.criterion == "min_validation_asr_over_refusal_unmeasured_kl_unmeasured"
