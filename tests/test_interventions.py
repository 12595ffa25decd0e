"""Intervention ids, config expansion, layer rules and the vectors the hooks use."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from toolshift.errors import ConfigError, ContractError
from toolshift.interventions import (
    MIN_RANDOM_SEEDS,
    InterventionSpec,
    all_intervention_ids,
    expand_interventions,
    hook_intervention,
    intervention_vector,
    parse_intervention_id,
    resolve_layer,
    transfer_pairs,
    vectors_dataset,
)

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
    h = hook_intervention(InterventionSpec("add", alpha=0.5), vectors, 1)
    assert h["kind"] == "add" and h["layer"] == 1 and h["alpha"] == 0.5
    np.testing.assert_array_equal(h["vector"], tv[1])
    h = hook_intervention(InterventionSpec("subtract"), vectors, 2)
    assert (h["kind"], h["layer"], h["alpha"]) == ("add", 2, -1.0)
    h = hook_intervention(InterventionSpec("ablate"), vectors, 2)
    assert (h["kind"], h["layer"], h["alpha"]) == ("ablate", None, 1.0)
    h = hook_intervention(InterventionSpec("random", alpha=2, seed=0), vectors, 0)
    assert (h["kind"], h["layer"], h["alpha"]) == ("add", 0, 2.0)


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
    h = hook_intervention(InterventionSpec("transfer", alpha=0.5, source="other"), vectors, 2)
    assert (h["kind"], h["layer"], h["alpha"]) == ("add", 2, 0.5)
    np.testing.assert_array_equal(h["vector"], vectors["tool_vector"].values[2])
    assert MIN_RANDOM_SEEDS == 5
