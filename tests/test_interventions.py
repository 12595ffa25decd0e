"""Intervention ids, config expansion, layer rules and the vectors the hooks use."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import toolshift
from toolshift.analysis.interventions import (
    CONFIG_KEYS,
    KINDS,
    MIN_RANDOM_SEEDS,
    InterventionSpec,
    ablate_refusal_conditions,
    all_intervention_ids,
    expand_interventions,
    parse_intervention_id,
    resolve_layer,
    skipped_interventions,
    transfer_alphas,
    transfer_id,
    transfer_pairs,
    transfer_sources,
    vectors_dataset,
)
from toolshift.analysis.steering import intervention_vector, residual_edit, vector_at
from toolshift.common.config import load_config, validate_config
from toolshift.errors import ConfigError, ContractError

CFG = {
    "layer": "auto",
    "add": {"alphas": [0, 0.5, 1, 2]},
    "subtract": True,
    "ablate": True,
    "random": {"alphas": [1], "seeds": [0, 1, 2]},
}


@pytest.fixture(scope="module")
def vectors() -> xr.Dataset:
    rng = np.random.default_rng(1)
    tv = rng.standard_normal((3, 16)) * np.array([[1.0], [2.0], [5.0]])
    return xr.Dataset({"tool_vector": (("layer", "hidden"), tv)}, coords={"layer": np.arange(3)})


def test_ids():
    assert InterventionSpec("add", alpha=0.5).id == "add_a0.5"
    assert InterventionSpec("add", alpha=1).id == "add_a1"
    assert InterventionSpec("add", alpha=2.0).id == "add_a2"
    assert InterventionSpec("add", alpha=-1).id == "add_a-1"
    assert InterventionSpec("subtract").id == "subtract"
    assert InterventionSpec("ablate").id == "ablate"
    assert InterventionSpec("random", alpha=1, seed=0).id == "random_a1_s0"
    assert InterventionSpec("random", alpha=0.25, seed=12).id == "random_a0.25_s12"


def test_defaults_by_kind():
    assert InterventionSpec("add").alpha == 1.0
    s = InterventionSpec("subtract")
    assert (s.alpha, s.base_condition, s.seed, s.prompts) == (-1.0, "tool", None, "all")
    assert InterventionSpec("ablate").base_condition == "tool"
    assert InterventionSpec("add", alpha=2).base_condition == "direct"
    assert InterventionSpec("random", seed=3).base_condition == "direct"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "scale"},
        {"kind": "subtract", "alpha": 2},
        {"kind": "ablate", "alpha": 0.5},
        {"kind": "random"},
        {"kind": "random", "seed": -1},
        {"kind": "add", "seed": 0},
        {"kind": "add", "alpha": float("nan")},
        {"kind": "add", "alpha": True},
        {"kind": "add", "base_condition": "tool"},
        {"kind": "add", "prompts": "harmful"},
        {"kind": "ablate_refusal"},
        {"kind": "ablate_refusal", "base_condition": "free"},
        {"kind": "ablate_refusal", "base_condition": "nope"},
        {"kind": "ablate_refusal", "base_condition": "tool", "alpha": 2},
        {"kind": "ablate_refusal", "base_condition": "tool", "seed": 0},
        {"kind": "ablate_refusal", "base_condition": "tool", "source": "mini"},
    ],
)
def test_bad_specs(kwargs):
    with pytest.raises(ConfigError):
        InterventionSpec(**kwargs)


def test_spec_is_frozen_and_hashable():
    s = InterventionSpec("add", alpha=1)
    with pytest.raises(AttributeError):
        s.alpha = 2.0
    assert {s, InterventionSpec("add", alpha=1.0)} == {s}


@pytest.mark.parametrize(
    "iid",
    [
        "add_a0",
        "add_a0.5",
        "add_a1",
        "add_a2",
        "add_a-1",
        "add_a1e-05",
        "subtract",
        "ablate",
        "random_a1_s0",
        "random_a0.5_s17",
        "ablate_refusal_direct",
        "ablate_refusal_tool",
        "ablate_refusal_text_prior",
        "ablate_refusal_image_no_tool",
    ],
)
def test_id_round_trip(iid):
    assert parse_intervention_id(iid).id == iid


def test_spec_round_trip():
    for spec in expand_interventions(CFG):
        assert parse_intervention_id(spec.id) == spec


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "none",
        "add",
        "add_a",
        "add_a1.0",
        "add_ax",
        "random_a1",
        "random_a1_s-1",
        "Subtract",
        "ablate_a1",
        "add_anan",
        "ablate_refusal",
        "ablate_refusal_",
        "ablate_refusal_free",
        "ablate_refusal_nope",
        "ablate_refusal_Tool",
        "ablate_refusal_tool_",
    ],
)
def test_bad_ids_name_the_id(bad):
    with pytest.raises(ConfigError, match=repr(bad).replace("(", r"\(")):
        parse_intervention_id(bad)


def test_expand_from_config():
    ids = [s.id for s in expand_interventions(CFG)]
    assert ids == [
        "add_a0",
        "add_a0.5",
        "add_a1",
        "add_a2",
        "subtract",
        "ablate",
        "random_a1_s0",
        "random_a1_s1",
        "random_a1_s2",
    ]


def test_expand_missing_sections_mean_none():
    assert expand_interventions({}) == []
    assert expand_interventions(None) == []
    assert [s.id for s in expand_interventions({"layer": 3, "ablate": True})] == ["ablate"]
    assert [s.id for s in expand_interventions({"subtract": False, "random": {"seeds": [5]}})] == [
        "random_a1_s5"
    ]
    assert [s.id for s in expand_interventions({"add": {"alphas": [1, 1.0, 2]}})] == ["add_a1", "add_a2"]


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"add": [1, 2]}, "interventions.add"),
        ({"add": {"alphas": []}}, "interventions.add.alphas"),
        ({"add": {"alphas": ["1"]}}, "interventions.add.alphas"),
        ({"subtract": "yes"}, "interventions.subtract"),
        ({"random": {"alphas": [1]}}, "interventions.random"),
        ({"random": {"seeds": [0.5]}}, "interventions.random.seeds"),
        ({"scale": True}, "scale"),
    ],
)
def test_expand_bad_config(cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        expand_interventions(cfg)


def test_resolve_layer_rules():
    assert resolve_layer("auto", 28) == 14
    assert resolve_layer("auto", 3) == 1
    assert resolve_layer("auto", 1) == 0
    assert resolve_layer(0, 4) == 0
    assert resolve_layer(3, 4) == 3
    assert resolve_layer(-1, 4) == 3
    assert resolve_layer(-4, 4) == 0
    assert resolve_layer(np.int64(2), 4) == 2
    for bad in (4, -5, 100):
        with pytest.raises(ConfigError, match=str(bad)):
            resolve_layer(bad, 4)
    for bad in ("middle", "2", 1.0, True, None):
        with pytest.raises(ConfigError):
            resolve_layer(bad, 4)
    with pytest.raises(ConfigError):
        resolve_layer(0, 0)


def test_intervention_vectors(vectors):
    tv = vectors["tool_vector"].values
    np.testing.assert_array_equal(intervention_vector(InterventionSpec("add", alpha=2), vectors, 1), tv[1])
    np.testing.assert_array_equal(intervention_vector(InterventionSpec("subtract"), vectors, 1), tv[1])
    ab = intervention_vector(InterventionSpec("ablate"), vectors, 2)
    assert np.linalg.norm(ab) == pytest.approx(1.0)
    np.testing.assert_allclose(ab, tv[2] / np.linalg.norm(tv[2]))


def test_random_vector_norm_seed_and_reproducibility(vectors):
    tv = vectors["tool_vector"].values
    for layer in range(3):
        vs = [intervention_vector(InterventionSpec("random", seed=s), vectors, layer) for s in (0, 1, 2)]
        for v in vs:
            assert np.linalg.norm(v) == pytest.approx(np.linalg.norm(tv[layer]), rel=1e-12)
        assert not np.allclose(vs[0], vs[1]) and not np.allclose(vs[1], vs[2])
        again = intervention_vector(InterventionSpec("random", seed=1), vectors, layer)
        np.testing.assert_array_equal(again, vs[1])
    # stable across platforms: PCG64 from default_rng(0) is specified, so pin the first draws
    v = intervention_vector(InterventionSpec("random", seed=0), vectors, 0)
    expected = np.random.default_rng(0).standard_normal(16)
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected) * np.linalg.norm(tv[0]))
    np.testing.assert_allclose(
        np.random.default_rng(0).standard_normal(2), [0.12573022, -0.13210486], rtol=1e-7
    )


def test_hook_intervention(vectors):
    tv = vectors["tool_vector"].values
    h = residual_edit(InterventionSpec("add", alpha=0.5), vectors, 1)
    assert h.kind == "add" and h.layer == 1 and h.alpha == 0.5
    np.testing.assert_array_equal(h.vector, np.float32(tv[1]))
    h = residual_edit(InterventionSpec("subtract"), vectors, 2)
    assert (h.kind, h.layer, h.alpha) == ("add", 2, -1.0)
    h = residual_edit(InterventionSpec("ablate"), vectors, 2)
    assert (h.kind, h.layer, h.alpha) == ("ablate", None, 1.0)
    h = residual_edit(InterventionSpec("random", alpha=2, seed=0), vectors, 0)
    assert (h.kind, h.layer, h.alpha) == ("add", 0, 2.0)


def test_bad_layer_and_zero_vector(vectors):
    with pytest.raises(ConfigError, match="layer 7"):
        intervention_vector(InterventionSpec("add"), vectors, 7)
    zero = vectors.copy(deep=True)
    zero["tool_vector"][:] = 0
    with pytest.raises(ContractError, match="zero"):
        intervention_vector(InterventionSpec("ablate"), zero, 0)
    with pytest.raises(ContractError, match="zero"):
        intervention_vector(InterventionSpec("random", seed=0), zero, 0)


def test_transfer_ids_round_trip_and_validation():
    spec = InterventionSpec("transfer", alpha=2, source="figstep_safebench")
    assert spec.id == "transfer_a2_from_figstep_safebench" and spec.base_condition == "direct"
    assert parse_intervention_id(spec.id) == spec
    assert parse_intervention_id("transfer_a0.5_from_mini.v2").source == "mini.v2"
    for bad in (
        {"kind": "transfer"},
        {"kind": "transfer", "source": "a b"},
        {"kind": "add", "source": "mini"},
    ):
        with pytest.raises(ConfigError):
            InterventionSpec(**bad)
    with pytest.raises(ConfigError, match="transfer_a1.0_from_x"):
        parse_intervention_id("transfer_a1.0_from_x")


def test_expand_transfer_per_target_dataset():
    cfg = dict(
        CFG, exclude_last_frac=0.2, transfer={"pairs": [["a", "b"], ["c", "b"], ["b", "a"]], "alphas": [1, 4]}
    )
    base = [s.id for s in expand_interventions(CFG)]
    assert [s.id for s in expand_interventions(cfg)] == base  # no dataset: no transfer runs
    assert [s.id for s in expand_interventions(cfg, "b")] == base + [
        "transfer_a1_from_a",
        "transfer_a4_from_a",
        "transfer_a1_from_c",
        "transfer_a4_from_c",
    ]
    assert [s.id for s in expand_interventions(cfg, "c")] == base
    ids = all_intervention_ids(cfg, ["a", "b", "c"])
    assert (
        ids[: len(base)] == base
        and "transfer_a4_from_b" in ids
        and len(ids) == len(set(ids)) == len(base) + 6
    )
    assert transfer_pairs(cfg) == [("a", "b"), ("c", "b"), ("b", "a")]
    assert vectors_dataset("transfer_a1_from_a", "b") == "a" and vectors_dataset("add_a1", "b") == "b"
    assert [s.id for s in expand_interventions({"transfer": {"pairs": [["a", "b"]]}}, "b")] == [
        "transfer_a1_from_a"
    ]


@pytest.mark.parametrize(
    "transfer",
    [
        [["a", "b"]],
        {"pairs": [["a", "a"]]},
        {"pairs": [["a"]]},
        {"pairs": "ab"},
        {"pairs": [["a", "b"]], "x": 1},
    ],
)
def test_bad_transfer_config(transfer):
    with pytest.raises(ConfigError, match="interventions.transfer"):
        expand_interventions({"transfer": transfer}, "b")


def test_transfer_hook_uses_the_given_vectors_file(vectors):
    h = residual_edit(InterventionSpec("transfer", alpha=0.5, source="other"), vectors, 2)
    assert (h.kind, h.layer, h.alpha) == ("add", 2, 0.5)
    np.testing.assert_array_equal(h.vector, np.float32(vectors["tool_vector"].values[2]))
    assert MIN_RANDOM_SEEDS == 5


# ----------------------------------------------------------------- ablate_refusal (the positive control)


def test_ablate_refusal_ids_cover_every_controlled_condition():
    assert "ablate_refusal" in KINDS and "ablate_refusal" in CONFIG_KEYS
    for condition in toolshift.CONDITIONS:
        spec = InterventionSpec("ablate_refusal", base_condition=condition)
        assert spec.id == f"ablate_refusal_{condition}"
        assert (spec.alpha, spec.seed, spec.source, spec.base_condition) == (1.0, None, None, condition)
        assert parse_intervention_id(spec.id) == spec
        assert vectors_dataset(spec.id, "mini") == "mini"
    assert parse_intervention_id("ablate_refusal_tool").kind == "ablate_refusal"
    assert parse_intervention_id("ablate").kind == "ablate"  # the tool-vector ablation is unchanged


def test_ablate_refusal_reads_the_conditions_when_called(monkeypatch):
    """A condition added to toolshift.CONDITIONS (e.g. tool_offered) is accepted without other changes."""
    monkeypatch.setattr(toolshift, "CONDITIONS", (*toolshift.CONDITIONS, "tool_offered_x"))
    spec = parse_intervention_id("ablate_refusal_tool_offered_x")
    assert spec.base_condition == "tool_offered_x" and spec.id == "ablate_refusal_tool_offered_x"
    ids = [
        s.id for s in expand_interventions({"ablate_refusal": True}, conditions=["tool_offered_x", "free"])
    ]
    assert ids == ["ablate_refusal_tool_offered_x"]


def test_expand_ablate_refusal_true_list_false():
    conditions = ["direct", "tool", "text_prior", "free"]
    cfg = dict(CFG, ablate_refusal=True)
    ids = [s.id for s in expand_interventions(cfg, conditions=conditions)]
    base = [s.id for s in expand_interventions(CFG)]
    assert ids == base + ["ablate_refusal_direct", "ablate_refusal_tool", "ablate_refusal_text_prior"]
    # without the config's conditions, true means every controlled condition
    assert ablate_refusal_conditions({"ablate_refusal": True}) == list(toolshift.CONDITIONS)
    assert ablate_refusal_conditions({"ablate_refusal": ["tool", "direct", "tool"]}, conditions) == [
        "tool",
        "direct",
    ]
    for off in (False, None, []):
        assert ablate_refusal_conditions({"ablate_refusal": off}, conditions) == []
    assert [
        s.id for s in expand_interventions(dict(CFG, ablate_refusal=False), conditions=conditions)
    ] == base
    # before the dataset's transfer runs, so a job's first output is always a common run
    tr = dict(ablate_refusal=["tool"], transfer={"pairs": [["a", "b"]]})
    assert [s.id for s in expand_interventions(tr, "b")] == ["ablate_refusal_tool", "transfer_a1_from_a"]
    assert all_intervention_ids(tr, ["a", "b"], ["direct", "tool"]) == [
        "ablate_refusal_tool",
        "transfer_a1_from_a",
    ]
    # each base condition reads its own episodes
    specs = expand_interventions({"ablate_refusal": ["tool_blank", "direct"]})
    assert [s.base_condition for s in specs] == ["tool_blank", "direct"]


@pytest.mark.parametrize(
    "value, bad",
    [
        ("yes", "yes"),
        (1, "1"),
        (["free"], "free"),
        (["tool", "nope"], "nope"),
        (["image_no_tool"], "image_no_tool"),  # a controlled condition, but not configured
        ([None], "None"),
    ],
)
def test_expand_ablate_refusal_bad_values(value, bad):
    with pytest.raises(ConfigError, match=rf"interventions\.ablate_refusal: .*{bad}") as info:
        expand_interventions({"ablate_refusal": value}, conditions=["direct", "tool", "free"])
    assert "\n" not in str(info.value)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_config() -> dict:
    return load_config(REPO / "config" / "config.yaml")


def test_ablate_refusal_in_the_shipped_configs(default_config):
    assert default_config["interventions"]["ablate_refusal"] == ["direct", "tool"]
    ids = [
        s.id
        for s in expand_interventions(default_config["interventions"], None, default_config["conditions"])
    ]
    assert [i for i in ids if i.startswith("ablate_refusal")] == [
        "ablate_refusal_direct",
        "ablate_refusal_tool",
    ]
    paper = load_config(REPO / "config" / "paper.yaml")
    assert paper["interventions"]["ablate_refusal"] is True
    expected = [f"ablate_refusal_{c}" for c in paper["conditions"] if c in toolshift.CONDITIONS]
    ids = [s.id for s in expand_interventions(paper["interventions"], None, paper["conditions"])]
    assert [i for i in ids if i.startswith("ablate_refusal")] == expected and "ablate_refusal_free" not in ids


@pytest.mark.parametrize(
    "value, conditions, message",
    [
        ("yes", None, "interventions.ablate_refusal: expected boolean or array, got str 'yes'"),
        (["nope"], None, "interventions.ablate_refusal.0: unknown value 'nope'"),
        (["free"], None, "interventions.ablate_refusal: 'free' is not a controlled condition"),
        (
            ["text_prior"],
            ["direct", "tool"],
            "interventions.ablate_refusal: 'text_prior' is not in conditions",
        ),
    ],
)
def test_config_validation_names_key_and_value(default_config, value, conditions, message):
    cfg = copy.deepcopy(default_config)
    cfg["interventions"]["ablate_refusal"] = value
    if conditions is not None:
        cfg["conditions"] = conditions
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)
    cfg["interventions"]["ablate_refusal"] = False
    assert validate_config(cfg)["interventions"]["ablate_refusal"] is False
    del cfg["interventions"]["ablate_refusal"]
    assert validate_config(cfg)["interventions"]["ablate_refusal"] is False  # the schema default


@pytest.fixture(scope="module")
def planted() -> xr.Dataset:
    """Tool vector and refusal direction planted orthogonal at every layer, with different norms."""
    rng = np.random.default_rng(7)
    tv = rng.standard_normal((3, 16))
    r = rng.standard_normal((3, 16))
    r -= (r * tv).sum(-1, keepdims=True) / (tv * tv).sum(-1, keepdims=True) * tv  # r orthogonal to tv
    r *= np.array([[0.5], [3.0], [7.0]])
    return xr.Dataset(
        {"tool_vector": (("layer", "hidden"), tv), "refusal_direction": (("layer", "hidden"), r)},
        coords={"layer": np.arange(3)},
    )


def test_ablate_refusal_uses_the_refusal_direction_not_the_tool_vector(planted):
    tv, r = planted["tool_vector"].values, planted["refusal_direction"].values
    for layer in range(3):
        for condition in ("direct", "tool"):
            spec = parse_intervention_id(f"ablate_refusal_{condition}")
            v = intervention_vector(spec, planted, layer)
            np.testing.assert_allclose(v, r[layer] / np.linalg.norm(r[layer]), rtol=1e-12)
            assert abs(v @ tv[layer]) < 1e-9  # orthogonal to the tool vector: it is not v_hat
            h = residual_edit(spec, planted, layer)
            assert (h.kind, h.layer, h.alpha) == ("ablate", None, 1.0)
            np.testing.assert_array_equal(h.vector, np.float32(v))
        # and the tool-vector ablation still uses v_hat
        ab = intervention_vector(InterventionSpec("ablate"), planted, layer)
        np.testing.assert_allclose(ab, tv[layer] / np.linalg.norm(tv[layer]), rtol=1e-12)


def test_ablate_refusal_needs_a_finite_nonzero_refusal_direction(planted, vectors):
    spec = parse_intervention_id("ablate_refusal_tool")
    with pytest.raises(ContractError, match="refusal_direction"):
        intervention_vector(spec, vectors, 0)  # a vectors file without it
    nan = planted.copy(deep=True)
    nan["refusal_direction"][:] = np.nan  # no harmless train prompts
    with pytest.raises(ContractError, match="refusal_direction at layer 1 is not finite"):
        intervention_vector(spec, nan, 1)
    zero = planted.copy(deep=True)
    zero["refusal_direction"][:] = 0
    with pytest.raises(ContractError, match="ablate_refusal_tool is undefined"):
        intervention_vector(spec, zero, 1)


def test_runs_read_their_base_condition_episodes():
    from toolshift.inference.runner import is_condition, run_episodes

    files = ["e/direct.jsonl", "e/tool.jsonl", "e/tool_blank.jsonl"]
    assert run_episodes("ablate_refusal_tool_blank", files) == "e/tool_blank.jsonl"
    assert run_episodes("ablate_refusal_direct", files) == "e/direct.jsonl"
    assert not is_condition("ablate_refusal_tool")
    with pytest.raises(ConfigError, match="text_prior.jsonl"):
        run_episodes("ablate_refusal_text_prior", files)


# ----------------------------------------------------------------- exact messages, edge rules, DAG helpers


def _exactly(message: str) -> str:
    """A pytest.raises pattern matching `message` and nothing more."""
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "scale"}, "intervention kind 'scale' is not one of " + ", ".join(KINDS)),
        ({"kind": "add", "alpha": float("nan")}, "intervention add: alpha nan must be a finite number"),
        ({"kind": "subtract", "alpha": 2}, "intervention subtract: alpha is fixed at -1, got 2"),
        ({"kind": "random", "seed": -1}, "intervention random: seed -1 must be a non-negative integer"),
        ({"kind": "add", "seed": 0}, "intervention add: takes no seed, got 0"),
        (
            {"kind": "add", "base_condition": "tool"},
            "intervention add: base_condition must be 'direct', got 'tool'",
        ),
        ({"kind": "add", "prompts": "subset"}, "intervention add: prompts 'subset' must be 'all'"),
        ({"kind": "transfer", "source": "a b"}, "intervention transfer: source 'a b' must be a dataset name"),
        ({"kind": "add", "source": "mini"}, "intervention add: takes no source, got 'mini'"),
    ],
)
def test_bad_specs_name_the_field_and_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=_exactly(message)):
        InterventionSpec(**kwargs)


def test_seed_is_stored_as_a_python_int():
    spec = InterventionSpec("random", seed=np.int64(3))
    assert type(spec.seed) is int and spec.id == "random_a1_s3"


def test_ablate_refusal_messages_list_the_conditions(monkeypatch):
    monkeypatch.setattr(toolshift, "CONDITIONS", ("direct", "tool", "text_prior"))
    with pytest.raises(
        ConfigError,
        match=_exactly(
            "intervention ablate_refusal: base_condition 'free' must be a controlled condition "
            "(direct, tool, text_prior)"
        ),
    ):
        InterventionSpec("ablate_refusal", base_condition="free")
    with pytest.raises(
        ConfigError,
        match=_exactly(
            "interventions.ablate_refusal: 'free' is not a controlled condition "
            "(one of direct, tool, text_prior)"
        ),
    ):
        ablate_refusal_conditions({"ablate_refusal": ["free"]}, ["direct", "tool", "free"])
    with pytest.raises(
        ConfigError,
        match=_exactly("interventions.ablate_refusal: 'text_prior' is not in conditions (direct, tool)"),
    ):
        ablate_refusal_conditions({"ablate_refusal": ["text_prior"]}, ["direct", "tool"])
    assert ablate_refusal_conditions(True) == []  # a section that is not a mapping names no condition


def test_parse_messages():
    with pytest.raises(ConfigError, match=_exactly("intervention id 3 must be a string")):
        parse_intervention_id(3)
    with pytest.raises(
        ConfigError,
        match=_exactly(
            "intervention id 'scale_a1' is not one of add_a<alpha>, subtract, ablate, "
            "random_a<alpha>_s<seed>, transfer_a<alpha>_from_<dataset>, ablate_refusal_<condition>, "
            "subtract_direct, ablate_direct, covrandom_a<alpha>_s<seed>, covrandom_subtract_s<seed>, "
            "covrandom_ablate_s<seed>, shift_a<alpha>_<condition>, relative_a<alpha>_<condition>, "
            "add_orth_a<alpha>"
        ),
    ):
        parse_intervention_id("scale_a1")


TRANSFER_SHAPE = "expected {pairs: [[source, target]], alphas: [numbers]}"


@pytest.mark.parametrize(
    "cfg, message",
    [
        ([1], "interventions: expected a mapping, got [1]"),
        (
            {"zoom": 1, "scale": True},
            "interventions: unknown key(s) scale, zoom; known: " + ", ".join(CONFIG_KEYS),
        ),
        ({"add": True}, "interventions.add: expected {alphas: [numbers]}, got True"),
        (
            {"add": {"alphas": [1], "seeds": [0]}},
            "interventions.add: expected {alphas: [numbers]}, got {'alphas': [1], 'seeds': [0]}",
        ),
        ({"add": {"alphas": ["1"]}}, "interventions.add.alphas: '1' is not a number"),
        ({"random": True}, "interventions.random: expected {alphas: [numbers], seeds: [integers]}, got True"),
        ({"random": {"alphas": ["x"], "seeds": [0]}}, "interventions.random.alphas: 'x' is not a number"),
        ({"random": {"seeds": [0.5]}}, "interventions.random.seeds: 0.5 is not an integer"),
        (
            {"transfer": {"pairs": [["a", "b"]], "alphas": ["x"]}},
            "interventions.transfer.alphas: 'x' is not a number",
        ),
        ({"transfer": True}, f"interventions.transfer: {TRANSFER_SHAPE}, got True"),
        ({"transfer": {"alphas": [1]}}, f"interventions.transfer: {TRANSFER_SHAPE}, got {{'alphas': [1]}}"),
    ],
)
def test_expand_bad_config_messages(cfg, message):
    with pytest.raises(ConfigError, match=_exactly(message)):
        expand_interventions(cfg, "b")


def test_expand_false_sections_and_random_alphas():
    off = {k: False for k in ("add", "subtract", "ablate", "random", "ablate_refusal", "transfer")}
    assert expand_interventions(off, "b") == [] and transfer_pairs({"transfer": False}) == []
    specs = expand_interventions({"random": {"alphas": [0.5, 2], "seeds": [3, 0]}})
    assert [s.id for s in specs] == ["random_a0.5_s3", "random_a0.5_s0", "random_a2_s3", "random_a2_s0"]
    assert [(s.alpha, s.seed) for s in specs] == [(0.5, 3), (0.5, 0), (2.0, 3), (2.0, 0)]
    # the config's conditions reach every dataset's expansion
    assert all_intervention_ids({"ablate_refusal": True}, ["a", "b"], ["tool", "free", "direct"]) == [
        "ablate_refusal_tool",
        "ablate_refusal_direct",
    ]
    assert transfer_pairs({"transfer": {"pairs": [["a", "b"], ("a", "b"), ["b", "a"]]}}) == [
        ("a", "b"),
        ("b", "a"),
    ]


def test_transfer_alphas_and_sources():
    cfg = {"transfer": {"pairs": [["a", "b"], ["c", "b"], ["b", "a"], ["a", "b"]], "alphas": [1, 0.5]}}
    alphas = transfer_alphas(cfg)
    assert alphas == [1.0, 0.5] and [type(a) for a in alphas] == [float, float]
    default = transfer_alphas({"transfer": {"pairs": [["a", "b"]]}})
    assert default == [1.0] and type(default[0]) is float
    for none in (
        None,
        {},
        {"transfer": None},
        {"transfer": False},
        {"transfer": {"pairs": [], "alphas": [2]}},
    ):
        assert transfer_alphas(none) == [] and transfer_sources(none, "b") == []
    assert transfer_sources(cfg, "b") == ["a", "c"]
    assert transfer_sources(cfg, "a") == ["b"] and transfer_sources(cfg, "c") == []
    # the DAG's transfer runs of a target are exactly the expansion's
    ids = [s.id for s in expand_interventions(cfg, "b")]
    assert ids == [transfer_id(a, s) for s in transfer_sources(cfg, "b") for a in alphas]
    assert ids == ["transfer_a1_from_a", "transfer_a0.5_from_a", "transfer_a1_from_c", "transfer_a0.5_from_c"]
    bad = {"transfer": {"pairs": [["a", "b"]], "alphas": []}}
    with pytest.raises(
        ConfigError, match=_exactly("interventions.transfer.alphas: expected a non-empty list, got []")
    ):
        transfer_alphas(bad)
    bad = {"transfer": {"pairs": [["a", "b"]], "alphas": [True]}}
    with pytest.raises(ConfigError, match=_exactly("interventions.transfer.alphas: True is not a number")):
        transfer_alphas(bad)
    with pytest.raises(
        ConfigError,
        match=_exactly(
            "interventions.transfer.pairs: ['a', 'a'] is not a [source, target] pair of two datasets"
        ),
    ):
        transfer_sources({"transfer": {"pairs": [["a", "a"]]}}, "a")


def test_resolve_layer_messages_and_edges():
    def selected(layer):
        return xr.Dataset(attrs={"selected_layer": layer})

    assert resolve_layer("auto", 4, selected(0)) == 0 and resolve_layer("auto", 4, selected(np.int64(3))) == 3
    for bad in (1.5, True, "1"):
        with pytest.raises(
            ContractError, match=_exactly(f"vectors file: selected_layer {bad!r} is not an integer")
        ):
            resolve_layer("auto", 4, selected(bad))
    for n_layers in (0, -2, 4.0, True):
        message = f"interventions.layer: the model has {n_layers!r} layers, expected a positive integer"
        with pytest.raises(ConfigError, match=_exactly(message)):
            resolve_layer("auto", n_layers)
    with pytest.raises(
        ConfigError, match=_exactly("interventions.layer: 'middle' must be 'auto' or an integer")
    ):
        resolve_layer("middle", 4)
    for layer in (4, -5):
        message = (
            f"interventions.layer: {layer} is out of range for a model with 4 layers (expected -4..3): "
            "set interventions.layer to auto or to a layer in that range"
        )
        with pytest.raises(ConfigError, match=_exactly(message)):
            resolve_layer(layer, 4)


def test_non_finite_vector_messages(vectors, planted):

    np.testing.assert_array_equal(vector_at(vectors, 1), vectors["tool_vector"].values[1])  # the default
    nan = vectors.copy(deep=True)
    nan["tool_vector"][1, 0] = np.nan
    with pytest.raises(
        ContractError, match=_exactly("vectors dataset: tool_vector at layer 1 is not finite")
    ):
        intervention_vector(InterventionSpec("add"), nan, 1)
    inf = planted.copy(deep=True)
    inf["refusal_direction"][1, 3] = np.inf
    message = "vectors dataset: refusal_direction at layer 1 is not finite (NaN: no harmless train prompts)"
    with pytest.raises(ContractError, match=_exactly(message)):
        intervention_vector(InterventionSpec("ablate_refusal", base_condition="tool"), inf, 1)


# ----------------------------------------------------------------- the mechanism's specificity controls


NEW_IDS = [
    ("subtract_direct", "subtract", {"base_condition": "direct"}),
    ("ablate_direct", "ablate", {"base_condition": "direct"}),
    ("covrandom_a1_s0", "covrandom", {"alpha": 1, "seed": 0}),
    ("covrandom_a0.5_s12", "covrandom", {"alpha": 0.5, "seed": 12}),
    ("covrandom_subtract_s3", "covrandom_subtract", {"seed": 3}),
    ("covrandom_ablate_s0", "covrandom_ablate", {"seed": 0}),
    ("shift_a1_text_trail", "shift", {"alpha": 1, "control": "text_trail"}),
    ("shift_a0.5_tool_offered", "shift", {"alpha": 0.5, "control": "tool_offered"}),
    ("relative_a2_text_trail", "relative", {"alpha": 2, "control": "text_trail"}),
    ("add_orth_a1", "add_orth", {"alpha": 1}),
    ("relative_a0.5_image_turn", "relative", {"alpha": 0.5, "control": "image_turn"}),
    ("shift_a1_tool_blank_x0.25", "shift", {"alpha": 1, "control": "tool_blank_x0.25"}),  # a size dose
    ("shift_a1_tool_blank_x9", "shift", {"alpha": 1, "control": "tool_blank_x9"}),  # any scale
]


@pytest.mark.parametrize("iid, kind, kwargs", NEW_IDS)
def test_control_ids_round_trip(iid, kind, kwargs):
    spec = InterventionSpec(kind, **kwargs)
    assert spec.id == iid and parse_intervention_id(iid) == spec
    base = {"subtract": "tool", "ablate": "tool", "covrandom_subtract": "tool", "covrandom_ablate": "tool"}
    assert spec.base_condition == kwargs.get("base_condition", base.get(kind, "direct"))
    fixed = {"subtract": -1.0, "covrandom_subtract": -1.0, "ablate": 1.0, "covrandom_ablate": 1.0}
    assert spec.alpha == float(kwargs.get("alpha", fixed.get(kind, 1.0)))
    assert not is_condition_run(iid)


def is_condition_run(iid: str) -> bool:
    from toolshift.inference.runner import is_condition

    return is_condition(iid)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("subtract_tool", "is not one of"),  # the default base is never written
        ("ablate_text_trail", "is not one of"),
        ("covrandom_a1", "is not one of"),
        ("covrandom_subtract_a1_s0", "is not one of"),
        ("shift_a1_direct", "control 'direct' must be a control condition"),
        ("shift_a1_tool", "control 'tool' must be a control condition"),
        ("relative_a1_nope", "control 'nope' must be a control condition"),
        ("relative_a1_free", "control 'free' must be a control condition"),
        ("shift_a1.0_text_trail", "is not canonical; write 'shift_a1_text_trail'"),
        ("shift_a1_tool_blank_x1", "control 'tool_blank_x1' must be a control condition"),
        ("add_orth_a1.50", "is not canonical; write 'add_orth_a1.5'"),
        ("covrandom_a01_s0", "is not canonical; write 'covrandom_a1_s0'"),
    ],
)
def test_bad_control_ids(bad, message):
    with pytest.raises(ConfigError, match=re.escape(repr(bad)) + ".*" + re.escape(message)):
        parse_intervention_id(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "subtract", "base_condition": "text_trail"}, "base_condition must be 'tool' or 'direct'"),
        (
            {"kind": "covrandom_ablate", "seed": 0, "base_condition": "direct"},
            "base_condition must be 'tool'",
        ),
        ({"kind": "covrandom", "alpha": 1}, "seed None must be a non-negative integer"),
        ({"kind": "covrandom_subtract", "seed": 0, "alpha": 1}, "alpha is fixed at -1"),
        ({"kind": "shift", "alpha": 1}, "control None must be a control condition"),
        ({"kind": "add", "control": "text_trail"}, "takes no control"),
        ({"kind": "add_orth", "seed": 1}, "takes no seed"),
    ],
)
def test_bad_control_specs(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        InterventionSpec(**kwargs)


CONTROLS_CFG = {
    "add": {"alphas": [1]},
    "subtract": ["tool", "direct"],
    "ablate": ["direct", "tool"],
    "random": {"seeds": [0]},
    "covrandom": {"alphas": [1, 2], "seeds": [0, 1]},
    "control_shift": {"conditions": ["text_trail", "text_prior"], "alphas": [1]},
    "relative": {"conditions": ["tool_offered"]},
    "add_orth": {"alphas": [0.5]},
    "covrandom_remove": {"seeds": [4]},
    "ablate_refusal": ["direct"],
}


def test_expand_controls_in_order_and_skip_absent_conditions():
    conditions = ["direct", "tool", "text_trail", "tool_offered"]  # no text_prior
    ids = [s.id for s in expand_interventions(CONTROLS_CFG, "b", conditions)]
    assert ids == [
        "add_a1",
        "subtract",
        "subtract_direct",
        "ablate_direct",
        "ablate",
        "random_a1_s0",
        "shift_a1_text_trail",
        "relative_a1_tool_offered",
        "covrandom_a1_s0",
        "covrandom_a1_s1",
        "covrandom_a2_s0",
        "covrandom_a2_s1",
        "add_orth_a0.5",
        "covrandom_subtract_s4",
        "covrandom_ablate_s4",
        "ablate_refusal_direct",
    ]
    assert skipped_interventions(CONTROLS_CFG, conditions) == {
        "shift_a1_text_prior": "not run: condition text_prior is not in this run's conditions"
    }
    # every condition configured (None): nothing skipped, text_prior runs
    assert skipped_interventions(CONTROLS_CFG, None) == {}
    assert "shift_a1_text_prior" in [s.id for s in expand_interventions(CONTROLS_CFG)]
    assert skipped_interventions(None, conditions) == {} and skipped_interventions([1], conditions) == {}
    # covrandom_remove follows the removals that run on tool
    only_subtract = {"subtract": True, "covrandom_remove": {"seeds": [0, 1]}}
    assert [s.id for s in expand_interventions(only_subtract)] == [
        "subtract",
        "covrandom_subtract_s0",
        "covrandom_subtract_s1",
    ]
    on_direct = {"ablate": ["direct"], "covrandom_remove": {"seeds": [0]}}
    with pytest.raises(
        ConfigError, match="covrandom_remove: its runs are the controls of subtract and ablate"
    ):
        expand_interventions(on_direct)
    assert set(CONFIG_KEYS) >= {"covrandom", "control_shift", "relative", "add_orth", "covrandom_remove"}


@pytest.mark.parametrize(
    "cfg, message",
    [
        (
            {"subtract": ["tool", "text_trail"]},
            "interventions.subtract: expected true, false or a list of tool",
        ),
        ({"ablate": []}, "interventions.ablate: expected true, false or a list"),
        ({"covrandom": {"alphas": [1]}}, "interventions.covrandom: expected {alphas: [...], seeds: [...]}"),
        ({"covrandom": {"seeds": [0.5]}}, "interventions.covrandom.seeds: 0.5 is not an integer"),
        (
            {"control_shift": {"alphas": [1]}},
            "interventions.control_shift: expected {alphas: [...], conditions",
        ),
        (
            {"control_shift": {"conditions": ["tool"]}},
            "'tool' is not a control condition (one of tool_offered",
        ),
        ({"relative": {"conditions": ["direct"]}}, "interventions.relative.conditions: 'direct' is not a"),
        ({"relative": {"conditions": []}}, "interventions.relative.conditions: expected a non-empty list"),
        (
            {"relative": {"conditions": ["text_trail"], "alphas": ["x"]}},
            "relative.alphas: 'x' is not a number",
        ),
        ({"add_orth": True}, "interventions.add_orth: expected {alphas: [...]}, got True"),
        ({"covrandom_remove": {"seeds": []}}, "covrandom_remove.seeds: expected a non-empty list"),
    ],
)
def test_bad_control_config(cfg, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        expand_interventions(cfg)


IN_MECH_VECTORS = [iid for iid, _, kw in NEW_IDS if kw.get("control") in (None, "text_trail", "tool_offered")]
"""The ids of NEW_IDS whose control condition `mech_vectors` has."""


@pytest.fixture(scope="module")
def mech_vectors() -> xr.Dataset:
    """Tool vector, refusal direction, two conditions' shifts and a rank-2 covariance basis, 3 layers."""
    rng = np.random.default_rng(11)
    n_layers, hidden = 3, 16
    tv = rng.standard_normal((n_layers, hidden)) * 2
    r = rng.standard_normal((n_layers, hidden))
    conditions = ["direct", "tool", "text_trail", "tool_offered"]
    shift = np.stack(
        [np.zeros_like(tv), tv, 0.3 * rng.standard_normal((n_layers, hidden)), np.zeros_like(tv)]
    )
    references = [c for c in conditions if c != "tool"]
    relative = np.stack([tv - shift[conditions.index(c)] for c in references])
    axes = np.linalg.qr(rng.standard_normal((hidden, 2)))[0].T  # two orthonormal axes
    basis = np.stack([np.stack([5.0 * axes[0], 0.5 * axes[1], np.zeros(hidden)]) for _ in range(n_layers)])
    return xr.Dataset(
        {
            "tool_vector": (("layer", "hidden"), tv),
            "refusal_direction": (("layer", "hidden"), r),
            "shift": (("condition", "layer", "hidden"), shift),
            "relative_vector": (("reference", "layer", "hidden"), relative),
            "cov_basis": (("layer", "cov_component", "hidden"), basis),
        },
        coords={"layer": np.arange(n_layers), "condition": conditions, "reference": references},
        attrs={"axes": axes.tolist()},
    )


def test_control_vectors_are_what_the_kinds_say(mech_vectors):
    ds = mech_vectors
    tv, r = ds["tool_vector"].values, ds["refusal_direction"].values
    norm = np.linalg.norm(tv[1])
    v = intervention_vector(parse_intervention_id("subtract_direct"), ds, 1)
    np.testing.assert_array_equal(v, tv[1])
    np.testing.assert_allclose(
        intervention_vector(parse_intervention_id("ablate_direct"), ds, 1), tv[1] / norm
    )
    # the control's shift, rescaled to the tool vector's norm; a control with a zero shift adds nothing
    tt = ds["shift"].sel(condition="text_trail").values[1]
    v = intervention_vector(parse_intervention_id("shift_a2_text_trail"), ds, 1)
    np.testing.assert_allclose(v, tt / np.linalg.norm(tt) * norm, rtol=1e-12)
    zero = intervention_vector(parse_intervention_id("shift_a1_tool_offered"), ds, 1)
    assert not zero.any()
    # float rounding is not a shift: below ZERO_SHIFT * |v| nothing is added, above it the direction counts
    from toolshift.analysis.steering import ZERO_SHIFT, norm_matched

    u = np.ones(16) / 4.0
    assert not norm_matched(u * 0.999 * ZERO_SHIFT * norm, norm).any()
    np.testing.assert_allclose(norm_matched(u * 1.001 * ZERO_SHIFT * norm, norm), u * norm, rtol=1e-12)
    # the control-relative vector, as stored: the tool vector minus the control's shift
    v = intervention_vector(parse_intervention_id("relative_a1_text_trail"), ds, 2)
    np.testing.assert_allclose(v, tv[2] - ds["shift"].sel(condition="text_trail").values[2], rtol=1e-12)
    # the component of v orthogonal to r_hat: v = orth + (v . r_hat) r_hat
    orth = intervention_vector(parse_intervention_id("add_orth_a1"), ds, 0)
    r_hat = r[0] / np.linalg.norm(r[0])
    assert abs(orth @ r_hat) < 1e-10
    np.testing.assert_allclose(orth + (tv[0] @ r_hat) * r_hat, tv[0], rtol=1e-12)
    # edits: add at the layer with the spec's alpha, or ablate at every layer
    edits = {iid: residual_edit(parse_intervention_id(iid), ds, 1) for iid in IN_MECH_VECTORS}
    kinds = {iid: (e.kind, e.layer, e.alpha) for iid, e in edits.items()}
    assert kinds["subtract_direct"] == ("add", 1, -1.0) and kinds["ablate_direct"] == ("ablate", None, 1.0)
    assert kinds["covrandom_subtract_s3"] == ("add", 1, -1.0)
    assert kinds["covrandom_ablate_s0"] == ("ablate", None, 1.0)
    assert kinds["shift_a0.5_tool_offered"] == ("add", 1, 0.5) and kinds["add_orth_a1"] == ("add", 1, 1.0)


def test_every_kind_is_an_edit_both_engines_apply_exactly(mech_vectors):
    from toolshift.models.engines.base import Engine
    from toolshift.models.engines.vllm import VLLMEngine

    ids = IN_MECH_VECTORS + ["add_a1", "subtract", "ablate", "random_a1_s0"]
    for iid in ids + ["ablate_refusal_tool", "transfer_a1_from_x"]:
        edit = residual_edit(parse_intervention_id(iid), mech_vectors, 1)
        assert VLLMEngine.supports(object(), edit) and Engine.supports(object(), edit), iid


def test_covariance_directions(mech_vectors):
    from toolshift.analysis.steering import covariance_direction

    ds = mech_vectors
    axes = np.array(ds.attrs["axes"])
    norm = np.linalg.norm(ds["tool_vector"].values[0])
    draws = np.stack(
        [intervention_vector(parse_intervention_id(f"covrandom_a1_s{s}"), ds, 0) for s in range(400)]
    )
    np.testing.assert_allclose(np.linalg.norm(draws, axis=1), norm, rtol=1e-12)
    # every direction lies in the span of the basis, mostly along its large axis (sd 5 against 0.5)
    inside = draws @ axes.T
    np.testing.assert_allclose(np.linalg.norm(inside, axis=1), norm, rtol=1e-9)
    share_big = np.mean(np.abs(inside[:, 0]) > np.abs(inside[:, 1]))
    print("covariance directions along the large axis:", share_big)
    assert share_big > 0.9
    # isotropic random directions of the same norm are not confined to the span
    iso = np.stack([intervention_vector(parse_intervention_id(f"random_a1_s{s}"), ds, 0) for s in range(50)])
    assert np.all(np.linalg.norm(iso @ axes.T, axis=1) < 0.9 * norm)
    # the same seed: the same direction for the add, subtract and ablate controls
    seed7 = intervention_vector(parse_intervention_id("covrandom_a1_s7"), ds, 0)
    np.testing.assert_array_equal(
        intervention_vector(parse_intervention_id("covrandom_subtract_s7"), ds, 0), seed7
    )
    np.testing.assert_allclose(
        intervention_vector(parse_intervention_id("covrandom_ablate_s7"), ds, 0), seed7 / norm, rtol=1e-12
    )
    # pinned: z from default_rng(seed), one draw per component, times the basis
    z = np.random.default_rng(7).standard_normal(3)
    g = z @ ds["cov_basis"].values[0]
    np.testing.assert_allclose(seed7, g / np.linalg.norm(g) * norm, rtol=1e-12)
    with pytest.raises(ContractError, match="cov_basis is zero"):
        covariance_direction(0, np.zeros((2, 4)), 1.0)


def test_control_vectors_fail_clearly(mech_vectors):
    ds = mech_vectors
    with pytest.raises(
        ContractError, match="shift has no condition 'text_prior' \\(conditions: direct, tool"
    ):
        intervention_vector(parse_intervention_id("shift_a1_text_prior"), ds, 0)
    with pytest.raises(ContractError, match="relative_vector has no reference 'text_prior'"):
        intervention_vector(parse_intervention_id("relative_a1_text_prior"), ds, 0)
    with pytest.raises(ContractError, match="missing variable 'cov_basis'"):
        intervention_vector(parse_intervention_id("covrandom_a1_s0"), ds.drop_vars("cov_basis"), 0)
    zero_r = ds.copy(deep=True)
    zero_r["refusal_direction"][:] = 0
    with pytest.raises(ContractError, match="refusal_direction at layer 0 is zero; add_orth_a1 is undefined"):
        intervention_vector(parse_intervention_id("add_orth_a1"), zero_r, 0)
    zero_v = ds.copy(deep=True)
    zero_v["tool_vector"][:] = 0
    with pytest.raises(ContractError, match="tool_vector at layer 0 is zero; covrandom_a1_s0 is undefined"):
        intervention_vector(parse_intervention_id("covrandom_a1_s0"), zero_v, 0)
