"""Planted-truth tests of the tool vector, refusal direction, shifts, cosines and projections."""

from __future__ import annotations

import itertools
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from toolshift import __version__
from toolshift.analysis.probes import DEFAULT_FOLDS, DEFAULT_L2, cross_condition_accuracy, held_out_accuracy
from toolshift.analysis.representation_nulls import (
    QUANTITIES,
    SHIFT_STATISTICS,
    cosine_null,
    mean_difference_null,
)
from toolshift.analysis.vectors import (
    COV_COMPONENTS,
    DEFAULT_N_BOOT,
    N_COMPONENTS,
    VECTOR_VARS,
    compute_vectors,
    cosine,
    covariance_basis,
    evaluation_prompts,
    pca_by_layer,
    read_vectors,
    refusal_position,
    tool_vector_cosines,
    unit,
    write_vectors,
)
from toolshift.datasets.splits import make_splits
from toolshift.errors import ContractError

N_LAYERS, HIDDEN, N_HARMFUL, N_HARMLESS = 4, 64, 40, 40
ANGLES_DEG = np.array([20.0, 50.0, 80.0, 110.0])  # planted angle between tool vector and refusal direction
TOOL_NORM, REFUSAL_NORM = 10.0, 10.0
PROMPT_SD, NOISE_SD = 0.5, 0.2


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _planted(seed: int = 0, hidden: int = HIDDEN) -> dict:
    rng = np.random.default_rng(seed)
    v = np.zeros((N_LAYERS, hidden))
    r = np.zeros((N_LAYERS, hidden))
    for layer in range(N_LAYERS):
        u = _unit(rng.standard_normal(hidden))
        w = rng.standard_normal(hidden)
        w = _unit(w - (w @ u) * u)
        theta = np.deg2rad(ANGLES_DEG[layer])
        v[layer] = TOOL_NORM * u
        r[layer] = REFUSAL_NORM * (np.cos(theta) * u + np.sin(theta) * w)
    ids = [f"x-h-{i:03d}" for i in range(N_HARMFUL)] + [f"x-b-{i:03d}" for i in range(N_HARMLESS)]
    harmful = np.array([True] * N_HARMFUL + [False] * N_HARMLESS)
    base = rng.standard_normal((N_LAYERS, hidden)) * 3
    latent = rng.standard_normal((len(ids), N_LAYERS, hidden)) * PROMPT_SD

    def noise() -> np.ndarray:
        return rng.standard_normal((len(ids), N_LAYERS, hidden)) * NOISE_SD

    h_direct = base + latent + harmful[:, None, None] * r + noise()
    h = {
        "direct": h_direct,
        "tool": h_direct + v + noise(),
        "tool_blank": h_direct + 0.5 * v + noise(),
        "text_trail": h_direct + noise(),
    }

    def to_ds(arr: np.ndarray, condition: str, order: np.ndarray) -> xr.Dataset:
        return xr.Dataset(
            {"resid": (("prompt_id", "layer", "hidden"), arr[order].astype(np.float32))},
            coords={"prompt_id": [ids[i] for i in order], "layer": np.arange(N_LAYERS)},
            attrs={"condition": condition, "position": "last_prompt_token"},
        )

    # every condition stores its prompts in its own order: alignment must go by prompt_id
    acts = {c: to_ds(arr, c, rng.permutation(len(ids))) for c, arr in h.items()}
    prompts = pd.DataFrame({"prompt_id": ids, "harmful": harmful, "dataset": "x"})
    return {"acts": acts, "prompts": prompts, "v": v, "r": r, "h": h, "ids": ids, "harmful": harmful}


@pytest.fixture(scope="module")
def planted() -> dict:
    p = _planted()
    p["ds"] = compute_vectors(p["acts"], p["prompts"], model="m", dataset="x")
    return p


def test_dims_coords_and_attrs(planted):
    ds = planted["ds"]
    for name, dims in VECTOR_VARS.items():
        assert ds[name].dims == dims, name
    assert ds.sizes == {
        "condition": 4,
        "layer": N_LAYERS,
        "hidden": HIDDEN,
        "prompt_id": N_HARMFUL + N_HARMLESS,
        "component": N_COMPONENTS,
        "reference": 3,  # every condition but tool
        "reference_b": 3,
        "cov_component": COV_COMPONENTS,
        "statistic": len(SHIFT_STATISTICS),
        "quantity": len(QUANTITIES),
    }
    assert set(ds["split"].values) == {"train"} and ds.attrs["splits"] == "all"
    assert list(ds["condition"].values) == ["direct", "tool", "tool_blank", "text_trail"]  # CONDITIONS order
    assert list(ds["prompt_id"].values) == list(planted["acts"]["direct"]["prompt_id"].values)
    assert ds.attrs["n_harmful"] == N_HARMFUL and ds.attrs["n_harmless"] == N_HARMLESS
    assert ds.attrs["model"] == "m" and ds.attrs["dataset"] == "x" and ds.attrs["toolshift_version"]
    assert ds["harmful"].sum() == N_HARMFUL


def test_recovers_planted_tool_vector_and_refusal_direction(planted):
    ds = planted["ds"]
    cos_tool = cosine(ds["tool_vector"].values, planted["v"])
    cos_ref = cosine(ds["refusal_direction"].values, planted["r"])
    print("planted-truth cosines: tool", np.round(cos_tool, 4), "refusal", np.round(cos_ref, 4))
    assert np.all(cos_tool > 0.99)
    assert np.all(cos_ref > 0.99)
    np.testing.assert_allclose(ds["norm_tool_vector"].values, TOOL_NORM, rtol=0.05)


def test_recovers_planted_angle(planted):
    ds = planted["ds"]
    recovered = np.rad2deg(np.arccos(ds["cos_tool_refusal"].values))
    print("planted angles", ANGLES_DEG, "recovered", np.round(recovered, 2))
    np.testing.assert_allclose(recovered, ANGLES_DEG, atol=3.0)
    # different layers have different planted vectors, and the estimate tells them apart
    assert abs(cosine(ds["tool_vector"].values[0], ds["tool_vector"].values[1])) < 0.5


def test_shifts_match_the_exact_paired_means(planted):
    ds, h, harmful = planted["ds"], planted["h"], planted["harmful"]
    for c in ("direct", "tool", "tool_blank", "text_trail"):
        expected = (h[c][harmful].astype(np.float32) - h["direct"][harmful].astype(np.float32)).mean(axis=0)
        np.testing.assert_allclose(ds["shift"].sel(condition=c).values, expected, atol=1e-4)
    np.testing.assert_array_equal(ds["shift"].sel(condition="tool").values, ds["tool_vector"].values)
    assert np.all(ds["shift"].sel(condition="direct").values == 0)
    # zero vector -> NaN cosine, documented
    assert np.all(np.isnan(ds["cos_shift_tool"].sel(condition="direct").values))
    assert np.all(np.isnan(ds["cos_shift_refusal"].sel(condition="direct").values))
    assert np.all(ds["cos_shift_tool"].sel(condition="tool").values > 0.9999)
    assert np.all(ds["cos_shift_tool"].sel(condition="tool_blank").values > 0.99)
    np.testing.assert_allclose(
        ds["cos_shift_refusal"].sel(condition="tool").values, ds["cos_tool_refusal"].values
    )


def test_projection_onto_unit_refusal_direction(planted):
    ds, h, ids = planted["ds"], planted["h"], planted["ids"]
    r_hat = ds["refusal_direction"].values / np.linalg.norm(
        ds["refusal_direction"].values, axis=-1, keepdims=True
    )
    order = [ids.index(p) for p in ds["prompt_id"].values]
    expected = np.einsum("plh,lh->pl", h["tool"][order].astype(np.float32).astype(np.float64), r_hat)
    np.testing.assert_allclose(ds["projection"].sel(condition="tool").values, expected, rtol=1e-9, atol=1e-9)
    proj = ds["projection"].sel(condition="direct")
    gap = proj.where(ds["harmful"]).mean("prompt_id") - proj.where(~ds["harmful"]).mean("prompt_id")
    np.testing.assert_allclose(gap.values, np.linalg.norm(ds["refusal_direction"].values, axis=-1))


def test_cosine_is_nan_safe():
    assert np.isnan(cosine(np.zeros(3), np.ones(3)))
    assert cosine(np.array([1.0, 0]), np.array([0.0, 2])) == 0
    assert cosine(np.array([1.0, 1]), np.array([-3.0, -3])) == pytest.approx(-1)


def test_cosine_is_float64_clipped_and_warning_free():
    # float32 inputs are promoted before any arithmetic: in float32 the norm of (1, 1e-4) rounds to 1
    a = np.array([1.0, 1e-4], dtype=np.float32)
    b = np.array([1.0, 0.0], dtype=np.float32)
    a64 = a.astype(np.float64)
    expected = a64[0] / np.sqrt(a64 @ a64)
    assert expected < 1 - 1e-9
    assert cosine(a, b) == pytest.approx(expected, rel=1e-13, abs=0)
    assert cosine(b, a) == pytest.approx(expected, rel=1e-13, abs=0)
    assert cosine(a, b).dtype == np.float64
    # rounding can push v.v / (|v| |v|) past 1: the result stays in [-1, 1]
    v = np.array([0.1, 0.1, 0.3])
    assert np.sum(v * v) / np.linalg.norm(v) ** 2 > 1
    assert cosine(v, v) == 1.0 and cosine(v, -v) == -1.0
    # a zero norm (here one that underflows: |1e-170| squared is below the smallest double) gives NaN,
    # and no floating-point warning, whichever side it is on
    tiny, big = np.array([1e-170]), np.array([1e150])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(cosine(tiny, big)) and np.isnan(cosine(big, tiny))
        assert np.isnan(cosine(np.zeros(3), np.ones(3)))


def test_unit_scales_each_row_to_norm_one():
    v = np.array([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4], [1e-170, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = unit(v)
    np.testing.assert_allclose(out[[0, 2]], [[0.6, 0.8], [0.6, 0.8]], rtol=1e-12)
    assert np.all(np.isnan(out[[1, 3]]))  # zero norm (row 3: it underflows) -> NaN, documented
    f32 = np.array([1.0, 1e-4], dtype=np.float32)  # float32 norm rounds to 1; float64 does not
    f64 = f32.astype(np.float64)
    np.testing.assert_allclose(unit(f32), f64 / np.sqrt(f64 @ f64), rtol=1e-13, atol=0)


def test_missing_condition_errors(planted):
    acts = {c: ds for c, ds in planted["acts"].items() if c != "tool"}
    with pytest.raises(ContractError, match="tool"):
        compute_vectors(acts, planted["prompts"], model="m", dataset="x")


def test_condition_lacking_prompts_errors(planted):
    acts = dict(planted["acts"])
    acts["text_trail"] = acts["text_trail"].isel(prompt_id=slice(1, None))
    with pytest.raises(ContractError, match="text_trail"):
        compute_vectors(acts, planted["prompts"], model="m", dataset="x")


def test_extra_prompts_in_other_conditions_are_ignored(planted):
    acts = dict(planted["acts"])
    acts["direct"] = acts["direct"].isel(prompt_id=slice(0, 60))
    ds = compute_vectors(acts, planted["prompts"], model="m", dataset="x")
    assert ds.sizes["prompt_id"] == 60
    assert ds.attrs["n_harmful"] + ds.attrs["n_harmless"] == 60


def test_no_harmless_prompts_gives_nan_refusal(planted):
    harmful_ids = [p for p, h in zip(planted["ids"], planted["harmful"], strict=True) if h]
    acts = {c: ds.sel(prompt_id=harmful_ids) for c, ds in planted["acts"].items()}
    ds = compute_vectors(acts, planted["prompts"], model="m", dataset="x")
    assert ds.attrs["n_harmless"] == 0
    assert np.all(np.isnan(ds["refusal_direction"].values)) and np.all(
        np.isnan(ds["cos_tool_refusal"].values)
    )
    assert np.all(cosine(ds["tool_vector"].values, planted["v"]) > 0.99)


def test_a_dataset_without_harmless_prompts_borrows_the_configured_refusal_direction(planted):
    """hades, jailbreakv_mini and mmsb_sd_typo have no harmless prompts: the direction comes from the
    dataset their config names (same model), recorded in attrs; the projections use it."""
    source = planted["ds"]  # the direction estimated with harmless prompts (the source dataset)
    harmful_ids = [p for p, h in zip(planted["ids"], planted["harmful"], strict=True) if h]
    acts = {c: ds.sel(prompt_id=harmful_ids) for c, ds in planted["acts"].items()}
    ds = compute_vectors(acts, planted["prompts"], model="m", dataset="hades", refusal_from=source)
    np.testing.assert_array_equal(ds["refusal_direction"].values, source["refusal_direction"].values)
    assert ds.attrs["refusal_source"] == source.attrs["dataset"] != "hades"
    assert source.attrs["refusal_source"] == source.attrs["dataset"]  # estimated there, with harmless prompts
    r_hat = (
        source["refusal_direction"].values
        / np.linalg.norm(source["refusal_direction"].values, axis=-1)[:, None]
    )
    expected = np.einsum("plh,lh->pl", acts["tool"]["resid"].values, r_hat)
    np.testing.assert_allclose(ds["projection"].sel(condition="tool").values, expected)
    assert ds.attrs["selection_criterion"] in ("tool_shift_dz", "fallback_middle")  # no harmless spread here
    undefined = ds.assign_attrs(dataset="x").assign(refusal_direction=ds["refusal_direction"] * np.nan)
    with pytest.raises(ContractError, match="refusal direction of x is not finite"):
        compute_vectors(acts, planted["prompts"], model="m", dataset="hades", refusal_from=undefined)
    with pytest.raises(ContractError, match="another model"):
        compute_vectors(
            acts,
            planted["prompts"],
            model="m",
            dataset="hades",
            refusal_from=source.isel(hidden=slice(1, None)),
        )


def test_netcdf_round_trip(planted, tmp_path):
    path = tmp_path / "vectors" / "m" / "x.nc"
    write_vectors(planted["ds"], path)
    back = read_vectors(path)
    xr.testing.assert_identical(back, planted["ds"])
    assert back["harmful"].dtype == bool
    assert not [p for p in path.parent.iterdir() if p.name != "x.nc"]  # no temporary left behind


def test_read_vectors_rejects_bad_files(planted, tmp_path):
    path = tmp_path / "x.nc"
    write_vectors(planted["ds"], path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ContractError, match=r"x\.nc: cannot be read as netCDF \(OSError: "):
        read_vectors(path)
    netcdf3 = tmp_path / "classic.nc"  # a netCDF3 file (scipy): not the HDF5 netCDF4 that h5netcdf reads
    planted["ds"].to_netcdf(netcdf3, engine="scipy")
    with pytest.raises(ContractError, match=r"classic\.nc: cannot be read as netCDF \(OSError: "):
        read_vectors(netcdf3)
    with pytest.raises(ContractError, match="not found"):
        read_vectors(tmp_path / "absent.nc")
    partial = tmp_path / "partial.nc"
    planted["ds"].drop_vars("projection").to_netcdf(partial, engine="h5netcdf")
    with pytest.raises(ContractError, match="partial.nc.*projection"):
        read_vectors(partial)


# --------------------------------------------------------------------------- splits, probes, PCA, selection


def _with_categories(prompts: pd.DataFrame) -> pd.DataFrame:
    return prompts.assign(category=[f"c{i % 4}" for i in range(len(prompts))])


@pytest.fixture(scope="module")
def split_run(planted) -> dict:
    prompts = _with_categories(planted["prompts"])
    splits = make_splits(prompts, seed=1)
    ds = compute_vectors(planted["acts"], prompts, model="m", dataset="x", splits=splits)
    return {"prompts": prompts, "splits": splits, "ds": ds}


def test_vectors_are_estimated_on_train_prompts_only(planted, split_run):
    ds, splits = split_run["ds"], split_run["splits"]
    split_of = dict(zip(splits["prompt_id"], splits["split"], strict=True))
    assert [split_of[p] for p in ds["prompt_id"].values] == list(ds["split"].values)
    train = np.array([split_of[p] == "train" for p in planted["ids"]])
    harmful = planted["harmful"]
    h = {c: a.astype(np.float32).astype(np.float64) for c, a in planted["h"].items()}
    expected_tool = (h["tool"][train & harmful] - h["direct"][train & harmful]).mean(axis=0)
    expected_ref = h["direct"][train & harmful].mean(axis=0) - h["direct"][train & ~harmful].mean(axis=0)
    np.testing.assert_allclose(ds["tool_vector"].values, expected_tool, atol=1e-9)
    np.testing.assert_allclose(ds["refusal_direction"].values, expected_ref, atol=1e-9)
    assert ds.attrs["n_harmful"] == int((train & harmful).sum()) == 16  # 40 % of 40
    assert ds.attrs["n_prompts"] == 80 and ds.attrs["splits"] == "train/validation/test"
    assert ds.sizes["prompt_id"] == 80  # projections and PCA cover every prompt
    assert set(ds["category"].values) == {"c0", "c1", "c2", "c3"}


def test_test_prompts_cannot_leak_into_the_vectors(planted, split_run):
    splits = split_run["splits"]
    test_ids = set(splits.loc[splits["split"] != "train", "prompt_id"])
    acts = dict(planted["acts"])
    poisoned = acts["tool"].copy(deep=True)
    mask = np.isin(poisoned["prompt_id"].values, list(test_ids))
    poisoned["resid"].values[mask] += 1e3
    acts["tool"] = poisoned
    ds = compute_vectors(acts, split_run["prompts"], model="m", dataset="x", splits=splits)
    np.testing.assert_array_equal(ds["tool_vector"].values, split_run["ds"]["tool_vector"].values)


def test_probe_accuracies(planted, split_run):
    ds = split_run["ds"]
    cv, test = ds["probe_accuracy"], ds["probe_test_accuracy"]
    assert cv.dims == ("condition", "layer") and test.dims == ("condition", "layer")
    print("probe CV accuracy", np.round(cv.values, 3), "test", np.round(test.values, 3))
    # the planted refusal offset (norm 10, noise sd 0.5) separates the classes where nothing moves them
    for c in ("direct", "text_trail"):
        assert np.all(cv.sel(condition=c).values > 0.9) and np.all(test.sel(condition=c).values > 0.9)
    # the tool shift (norm 10) at 20 degrees from the refusal direction (layer 0) pushes harmless
    # prompts over the direct probe's boundary: chance; nearly orthogonal (80 degrees, layer 2) it does not
    for acc in (cv, test):
        assert acc.sel(condition="tool", layer=0) < 0.6 and acc.sel(condition="tool", layer=2) > 0.9
    assert ds.attrs["probe_folds"] == 5
    assert np.all(np.isnan(planted["ds"]["probe_test_accuracy"].values))  # no split: no test prompts


def test_pca_coordinates_and_signs():
    rng = np.random.default_rng(0)
    fit = rng.standard_normal((50, 2, 5)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1])
    coords, ratios = pca_by_layer(fit, fit[None])
    assert coords.shape == (1, 50, 2, 2) and ratios.shape == (2, 2)
    for layer in range(2):
        x = fit[:, layer] - fit[:, layer].mean(axis=0)
        _, sv, vt = np.linalg.svd(x, full_matrices=False)
        for k in range(2):
            comp = vt[k] * np.sign(vt[k][np.argmax(np.abs(vt[k]))])
            np.testing.assert_allclose(coords[0, :, layer, k], x @ comp, atol=1e-9)
        np.testing.assert_allclose(ratios[layer], sv[:2] ** 2 / np.sum(sv**2))
    assert np.all(ratios[:, 0] > 0.8)
    again, _ = pca_by_layer(-fit, -fit[None])  # the sign rule makes the components data-driven
    np.testing.assert_allclose(np.abs(again), np.abs(coords), atol=1e-9)
    small, r = pca_by_layer(fit[:1], fit[None, :1])  # rank 0: zeros, not NaN
    assert np.all(small == 0) and np.all(r == 0)
    one, r = pca_by_layer(fit[:1], fit[None])  # one fitted prompt has no second component: 0 for every state
    assert np.all(one[..., 1] == 0) and np.all(r == 0)
    _, tiny_ratios = pca_by_layer(fit * 1e-3, fit[None] * 1e-3)  # ratios do not depend on the data's scale
    np.testing.assert_allclose(tiny_ratios, ratios, rtol=1e-9)


def test_vectors_pca_separates_tool_from_direct(split_run):
    ds = split_run["ds"]
    pc1 = ds["pca"].sel(component=1)
    gap = (pc1.sel(condition="tool") - pc1.sel(condition="direct")).where(ds["harmful"]).mean("prompt_id")
    spread = pc1.sel(condition="direct").where(ds["harmful"]).std("prompt_id")
    assert np.all(np.abs(gap.values) > 3 * spread.values)  # the tool shift (norm 10) dominates PC1
    assert np.all(ds["pca_explained_variance_ratio"].sum("component").values <= 1 + 1e-12)


def test_layer_selection_is_recorded(split_run):
    ds = split_run["ds"]
    assert ds.attrs["selection_split"] == "validation" and ds.attrs["exclude_last_frac"] == 0.2
    assert ds.attrs["selection_criterion"] == "refusal_shift_sd"
    # 4 layers: the last is excluded; the planted tool/refusal angles are 20, 50, 80, 110 degrees,
    # so the smallest angle (layer 0) moves prompts furthest along the refusal direction
    assert ds.attrs["selected_layer"] == 0
    assert np.isnan(ds["layer_score"].values[3]) and np.all(np.diff(ds["layer_score"].values[:3]) < 0)


def test_tool_vector_cosines(planted, split_run):
    cos = tool_vector_cosines(planted["ds"], split_run["ds"])
    assert cos.dims == ("layer",) and np.all(cos.values > 0.99)
    with pytest.raises(ContractError, match="shapes"):
        tool_vector_cosines(planted["ds"], planted["ds"].isel(layer=slice(0, 2)))


def _tool_vectors(tv: list, layers: list[int]) -> xr.Dataset:
    return xr.Dataset(
        {"tool_vector": (("layer", "hidden"), np.array(tv, dtype=float))}, coords={"layer": layers}
    )


def test_tool_vector_cosines_by_hand():
    source = _tool_vectors([[1, 0], [1, 1], [0, 2]], [2, 5, 7])
    target = _tool_vectors([[3, 0], [-1, 1], [1, 1]], [2, 5, 7])
    cos = tool_vector_cosines(source, target)
    assert cos.dims == ("layer",) and list(cos.coords["layer"].values) == [2, 5, 7]
    np.testing.assert_allclose(cos.values, [1.0, 0.0, 1 / np.sqrt(2)], atol=1e-15)
    for name, a, b in (
        ("source", source.rename(tool_vector="v"), target),
        ("target", source, target.drop_vars("tool_vector")),
    ):
        with pytest.raises(ContractError, match=f"^{name} vectors: missing variable 'tool_vector'$"):
            tool_vector_cosines(a, b)
    other_layers = _tool_vectors([[3, 0], [-1, 1], [1, 1]], [1, 2, 3])  # same shape, other layers
    with pytest.raises(ContractError, match=re.escape("cannot be compared: (3, 2) vs (3, 2)")):
        tool_vector_cosines(source, other_layers)


def test_split_without_harmful_train_prompts_errors(planted):
    prompts = _with_categories(planted["prompts"])
    splits = make_splits(prompts, seed=0)
    splits.loc[splits["harmful"], "split"] = "test"
    with pytest.raises(ContractError, match="no harmful train prompt"):
        compute_vectors(planted["acts"], prompts, model="m", dataset="x", splits=splits)


# --------------------------------------------------------------------------- bad inputs, recorded settings


def _no_direct_no_tool(inputs: dict) -> str:
    inputs["acts"] = {"text_trail": inputs["acts"]["text_trail"]}
    return "vectors for m/x: missing activations of condition(s) direct, tool; got ['text_trail']"


def _no_harmful_column(inputs: dict) -> str:
    inputs["prompts"] = inputs["prompts"].drop(columns="harmful")
    return "prompts table: missing column(s) harmful"


def _no_resid(inputs: dict) -> str:
    inputs["acts"]["tool_blank"] = inputs["acts"]["tool_blank"].rename(resid="state")
    return "activations of condition 'tool_blank': no variable 'resid'"


def _transposed_resid(inputs: dict) -> str:
    inputs["acts"]["tool"] = inputs["acts"]["tool"].transpose("layer", "prompt_id", "hidden")
    return (
        "activations of condition 'tool': resid has dims ('layer', 'prompt_id', 'hidden'), "
        "expected ('prompt_id', 'layer', 'hidden')"
    )


def _duplicate_prompt(inputs: dict) -> str:
    ds = inputs["acts"]["text_trail"]
    inputs["acts"]["text_trail"] = xr.concat([ds, ds.isel(prompt_id=[5])], dim="prompt_id")
    return f"activations of condition 'text_trail': duplicate prompt_id {str(ds['prompt_id'].values[5])!r}"


def _unknown_prompt(inputs: dict) -> str:
    ids = [str(p) for p in inputs["acts"]["direct"]["prompt_id"].values]
    inputs["acts"]["direct"] = inputs["acts"]["direct"].assign_coords(prompt_id=["x-z-999"] + ids[1:])
    return "activations of condition 'direct': prompt_id 'x-z-999' is not in the prompts table (1 unknown)"


def _other_layers(inputs: dict) -> str:
    ds = inputs["acts"]["tool_blank"]
    inputs["acts"]["tool_blank"] = ds.assign_coords(layer=ds["layer"].values + 10)  # same number of layers
    return "activations of condition 'tool_blank': layers differ from those of 'direct'"


def _other_hidden_size(inputs: dict) -> str:
    inputs["acts"]["text_trail"] = inputs["acts"]["text_trail"].isel(hidden=slice(0, 32))
    return f"activations of condition 'text_trail': hidden size 32, 'direct' has {HIDDEN}"


INPUT_CASES = {
    "no direct, no tool": _no_direct_no_tool,
    "prompts table without harmful": _no_harmful_column,
    "no resid variable": _no_resid,
    "resid dims in another order": _transposed_resid,
    "duplicate prompt": _duplicate_prompt,
    "prompt not in the prompts table": _unknown_prompt,
    "same number of layers, other layers": _other_layers,
    "other hidden size": _other_hidden_size,
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_bad_inputs_raise_one_line_errors_naming_the_condition(case):
    planted = _planted()
    inputs = {"acts": planted["acts"], "prompts": planted["prompts"]}
    message = INPUT_CASES[case](inputs)
    with pytest.raises(ContractError, match=f"^{re.escape(message)}$"):
        compute_vectors(inputs["acts"], inputs["prompts"], model="m", dataset="x")


def _train_criterion(h: dict, harmful: np.ndarray, train: np.ndarray, select_on: np.ndarray) -> np.ndarray:
    """Criterion (a) by hand: the mean tool - direct shift of the harmful `select_on` prompts along the
    unit train refusal direction, over the pooled within-class SD of the train direct projections."""
    refusal = h["direct"][train & harmful].mean(axis=0) - h["direct"][train & ~harmful].mean(axis=0)
    r_hat = refusal / np.linalg.norm(refusal, axis=-1, keepdims=True)
    diff = (h["tool"] - h["direct"])[select_on & harmful]
    shift = np.einsum("plh,lh->pl", diff, r_hat).mean(axis=0)
    proj = np.einsum("plh,lh->pl", h["direct"][train], r_hat)
    y = harmful[train]
    ss = ((proj[y] - proj[y].mean(axis=0)) ** 2).sum(axis=0) + ((proj[~y] - proj[~y].mean(axis=0)) ** 2).sum(
        axis=0
    )
    return shift / np.sqrt(ss / (train.sum() - 2))


def _aligned(p: dict, ds: xr.Dataset) -> tuple[dict, np.ndarray]:
    """The planted states (as stored: float32) and labels in the prompt order of `ds`."""
    order = [p["ids"].index(str(i)) for i in ds["prompt_id"].values]
    conditions = [str(c) for c in ds["condition"].values]
    h = {c: p["h"][c][order].astype(np.float32).astype(np.float64) for c in conditions}
    return h, p["harmful"][order]


def test_run_without_splits_records_its_defaults():
    p = _planted(hidden=8)  # a small hidden size keeps the probes fast
    acts = {c: p["acts"][c] for c in ("direct", "tool")}
    ds = compute_vectors(acts, p["prompts"], model="m", dataset="x")
    h, harmful = _aligned(p, ds)
    everything = np.ones(len(harmful), dtype=bool)
    # no split: every prompt is train, and layer selection runs on train; the last 20 % of layers (1 of 4)
    # are excluded
    expected_scores = _train_criterion(h, harmful, everything, everything)
    expected_scores[3] = np.nan
    np.testing.assert_allclose(ds["layer_score"].values, expected_scores, rtol=1e-9)
    assert ds.attrs == {
        "model": "m",
        "dataset": "x",
        "conditions": "direct,tool",
        "n_harmful": N_HARMFUL,
        "n_harmless": N_HARMLESS,
        "n_prompts": N_HARMFUL + N_HARMLESS,
        "splits": "all",
        "selected_layer": int(np.nanargmax(expected_scores)),
        "selection_criterion": "refusal_shift_sd",
        "selection_split": "train",
        "exclude_last_frac": 0.2,
        "probe_folds": DEFAULT_FOLDS,
        "null_layer": int(np.nanargmax(expected_scores)),
        "n_boot": DEFAULT_N_BOOT,
        "refusal_source": "x",  # the dataset the refusal direction was estimated on: this one
        "position": "last_prompt_token",
        "toolshift_version": __version__,
        "note": "cosines are NaN where a vector is zero; refusal_direction is NaN without harmless prompts",
    }
    # the probes' folds come from seed 0 by default (and the folds matter on this data)
    seed0 = cross_condition_accuracy(h, "direct", harmful, k=DEFAULT_FOLDS, seed=0, l2=DEFAULT_L2)
    seed1 = cross_condition_accuracy(h, "direct", harmful, k=DEFAULT_FOLDS, seed=1, l2=DEFAULT_L2)
    assert not np.array_equal(seed0["tool"], seed1["tool"])
    for c in ("direct", "tool"):
        np.testing.assert_array_equal(ds["probe_accuracy"].sel(condition=c).values, seed0[c])
    # activations without a position attribute record an empty position
    bare = {c: xr.Dataset(a.data_vars, coords=a.coords) for c, a in acts.items()}
    assert compute_vectors(bare, p["prompts"], model="m", dataset="x").attrs["position"] == ""


def test_run_with_splits_passes_every_setting_through():
    p = _planted(hidden=8)
    prompts = _with_categories(p["prompts"])
    splits = make_splits(prompts, seed=1)
    # another dataset's rows for the same prompt ids, all test, listed last: only dataset x's rows count
    other = splits.assign(dataset="y", split="test")
    table = pd.concat([splits, other], ignore_index=True)
    settings = {"exclude_last_frac": 0.0, "probe_folds": 3, "probe_l2": 0.1, "seed": 7, "n_boot": 200}
    ds = compute_vectors(p["acts"], prompts, model="m", dataset="x", splits=table, **settings)
    h, harmful = _aligned(p, ds)
    ids = [str(i) for i in ds["prompt_id"].values]
    split = splits.set_index("prompt_id").loc[ids, "split"].to_numpy()
    assert list(ds["split"].values) == list(split)
    train, validation, test = (split == s for s in ("train", "validation", "test"))
    assert ds["category"].dims == ("prompt_id",)
    assert list(ds["category"].values) == list(prompts.set_index("prompt_id").loc[ids, "category"])
    # layer selection on the validation prompts, no layer excluded
    expected_scores = _train_criterion(h, harmful, train, validation)
    np.testing.assert_allclose(ds["layer_score"].values, expected_scores, rtol=1e-9)
    assert ds.attrs["selected_layer"] == int(np.argmax(expected_scores))
    assert (
        ds.attrs["selection_criterion"] == "refusal_shift_sd" and ds.attrs["selection_split"] == "validation"
    )
    assert ds.attrs["exclude_last_frac"] == 0.0 and ds.attrs["probe_folds"] == 3
    assert ds.attrs["n_boot"] == 200 and ds.attrs["null_layer"] == ds.attrs["selected_layer"]
    assert ds.attrs["conditions"] == "direct,tool,tool_blank,text_trail"
    # probes: cross-validated over the train prompts with these folds, seed and l2; held out on test
    cv = cross_condition_accuracy(
        {c: s[train] for c, s in h.items()}, "direct", harmful[train], k=3, seed=7, l2=0.1
    )
    held = held_out_accuracy(
        h["direct"][train], harmful[train], {c: s[test] for c, s in h.items()}, harmful[test], l2=0.1
    )
    for c in h:
        np.testing.assert_array_equal(ds["probe_accuracy"].sel(condition=c).values, cv[c])
        np.testing.assert_array_equal(ds["probe_test_accuracy"].sel(condition=c).values, held[c])


# --------------------------------------------------------------------------- evaluation prompts, positions


def test_evaluation_prompts_are_the_test_split_else_all():
    ds = xr.Dataset(coords={"prompt_id": ["a", "b", "c"]})
    for split in (None, ["train", "validation", "validation"]):
        if split is not None:
            ds = ds.assign_coords(split=("prompt_id", split))
        mask, which = evaluation_prompts(ds)
        assert which == "all" and mask.dtype == bool
        assert list(ds["prompt_id"].values[mask]) == ["a", "b", "c"]
    mask, which = evaluation_prompts(ds.assign_coords(split=("prompt_id", ["train", "test", "validation"])))
    assert which == "test" and list(ds["prompt_id"].values[mask]) == ["b"]


def _projections(projection: np.ndarray, harmful: np.ndarray, split: list[str]) -> xr.Dataset:
    n = projection.shape[1]
    return xr.Dataset(
        {"projection": (("condition", "prompt_id", "layer"), projection)},
        coords={
            "condition": ["direct", "tool"],
            "prompt_id": [f"p{i}" for i in range(n)],
            "layer": np.arange(projection.shape[2]),
            "harmful": ("prompt_id", harmful),
            "split": ("prompt_id", split),
        },
    )


def test_refusal_position_by_hand():
    rng = np.random.default_rng(3)
    harmful = np.array([True] * 4 + [False] * 4)
    split = ["train", "test", "test", "test"] * 2  # evaluation prompts: p1-p3 (harmful), p5-p7 (harmless)
    proj = rng.normal(size=(2, 8, 3)) * 3
    proj[:, [0, 4]] = 100.0  # train prompts: far off, and not used
    proj[0, 1:4, 1], proj[0, 5:8, 1] = [0.6, 0.5, 0.4], [0.1, 0.0, -0.1]  # layer 1: a gap of 0.5
    proj[0, 1:4, 2], proj[0, 5:8, 2] = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]  # layer 2: no gap
    ds = _projections(proj, harmful, split)
    test = np.array(split) == "test"
    direct, y = proj[0, test], harmful[test]
    lo = direct[~y].mean(axis=0)
    gap = direct[y].mean(axis=0) - lo
    assert gap[1] == pytest.approx(0.5) and gap[2] == 0
    expected = (proj[:, test] - lo) / np.where(gap == 0, np.nan, gap)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pos = refusal_position(ds)
        assert pos.dims == ("condition", "prompt_id", "layer")
        assert list(pos["prompt_id"].values) == ["p1", "p2", "p3", "p5", "p6", "p7"]
        np.testing.assert_allclose(pos.values, expected, rtol=1e-12)  # NaN at layer 2
        # harmful stored as 0/1 integers means the same
        as_int = ds.assign_coords(harmful=("prompt_id", harmful.astype(int)))
        np.testing.assert_allclose(refusal_position(as_int).values, expected, rtol=1e-12)
        # no harmless evaluation prompt: NaN everywhere, same dims
        all_harmful = refusal_position(ds.assign_coords(harmful=("prompt_id", np.ones(8, dtype=bool))))
        assert all_harmful.dims == pos.dims and all_harmful.shape == pos.shape
        assert np.all(np.isnan(all_harmful.values))
    with pytest.raises(ContractError, match="^vectors dataset: missing variable 'projection'$"):
        refusal_position(ds.drop_vars("projection"))


def test_write_vectors_names_the_file_in_its_errors(planted, tmp_path):
    ds, path = planted["ds"], tmp_path / "x.nc"
    no_attr = ds.copy()
    del no_attr.attrs["selected_layer"]
    cases = {
        "missing variable 'projection'": ds.drop_vars("projection"),
        "variable 'projection' has dims ('prompt_id', 'condition', 'layer'), "
        "expected ('condition', 'prompt_id', 'layer')": ds.assign(
            projection=ds["projection"].transpose("prompt_id", "condition", "layer")
        ),
        "missing attribute 'selected_layer'": no_attr,
    }
    for message, bad in cases.items():
        with pytest.raises(ContractError, match=f"^{re.escape(f'{path}: {message}')}$"):
            write_vectors(bad, path)
    assert not path.exists()


# --------------------------------------------------------------------------- control-relative vectors, nulls


def test_control_relative_vectors_recover_the_planted_differences(planted):
    """Planted: tool = direct + v, tool_blank = direct + v/2, text_trail = direct (plus noise). So
    h(tool) - h(text_trail) ~ v, h(tool) - h(tool_blank) ~ v/2, and the direct row is the tool vector."""
    ds, h, harmful = planted["ds"], planted["h"], planted["harmful"]
    assert list(ds["reference"].values) == ["direct", "tool_blank", "text_trail"]
    rel = ds["relative_vector"]
    np.testing.assert_array_equal(rel.sel(reference="direct").values, ds["tool_vector"].values)
    for c in ("tool_blank", "text_trail"):
        expected = (h["tool"][harmful].astype(np.float32) - h[c][harmful].astype(np.float32)).mean(axis=0)
        np.testing.assert_allclose(rel.sel(reference=c).values, expected, atol=1e-4)
    assert np.all(cosine(rel.sel(reference="text_trail").values, planted["v"]) > 0.99)
    assert np.all(cosine(rel.sel(reference="tool_blank").values, planted["v"]) > 0.99)
    np.testing.assert_allclose(ds["norm_relative_vector"].sel(reference="text_trail"), TOOL_NORM, rtol=0.05)
    np.testing.assert_allclose(
        ds["norm_relative_vector"].sel(reference="tool_blank"), TOOL_NORM / 2, rtol=0.05
    )
    np.testing.assert_allclose(
        ds["cos_relative_refusal"].sel(reference="direct").values, ds["cos_tool_refusal"].values
    )
    recovered = np.rad2deg(np.arccos(ds["cos_relative_refusal"].sel(reference="text_trail").values))
    np.testing.assert_allclose(recovered, ANGLES_DEG, atol=3.0)
    cos = ds["cos_relative"]
    assert cos.dims == ("reference", "reference_b", "layer")
    np.testing.assert_allclose(cos.sel(reference="direct", reference_b="direct").values, 1.0)
    assert np.all(cos.sel(reference="tool_blank", reference_b="text_trail").values > 0.99)
    np.testing.assert_allclose(cos.values, np.swapaxes(cos.values, 0, 1))


def _trace_world(seed: int = 4) -> dict:
    """A text-trace world: text_trail moves the states exactly as tool does (both by v), so the tool
    vector relative to text_trail is noise; tool_offered does not move them."""
    p = _planted(seed=seed, hidden=16)
    h = dict(p["h"])
    rng = np.random.default_rng(seed + 100)
    h["text_trail"] = h["tool"] - p["h"]["tool"] + p["h"]["direct"] + np.array(p["v"])[None]
    h["text_trail"] = h["text_trail"] + rng.standard_normal(h["tool"].shape) * NOISE_SD
    h["tool_offered"] = h["direct"] + rng.standard_normal(h["tool"].shape) * NOISE_SD
    ids = p["ids"]
    acts = {
        c: xr.Dataset(
            {"resid": (("prompt_id", "layer", "hidden"), h[c].astype(np.float32))},
            coords={"prompt_id": ids, "layer": np.arange(N_LAYERS)},
        )
        for c in ("direct", "tool", "text_trail", "tool_offered")
    }
    ds = compute_vectors(acts, p["prompts"], model="m", dataset="x", n_boot=400, seed=3)
    return {**p, "h": h, "ds": ds}


def test_relative_vector_of_a_trace_world_is_null_and_its_permutation_test_does_not_reject():
    ds = _trace_world()["ds"]
    layer = ds.attrs["selected_layer"]
    assert ds.attrs["null_layer"] == layer
    norms = ds["norm_relative_vector"].sel(layer=layer)
    assert float(norms.sel(reference="text_trail")) < 0.1 * float(norms.sel(reference="direct"))
    null = ds["relative_null"].to_pandas()
    print(null)
    # the tool vector itself (relative to direct) lines up with r_hat: rejected, CI away from 0
    assert null.loc["direct", "p_perm"] < 0.01 and null.loc["direct", "ci_low"] > 0.5
    assert null.loc["direct", "estimate"] == pytest.approx(float(ds["cos_tool_refusal"].sel(layer=layer)))
    # relative to tool_offered (which does not move the states) it is the tool vector again
    assert null.loc["tool_offered", "p_perm"] < 0.01
    # relative to text_trail nothing is left: not rejected, the interval covers 0
    assert null.loc["text_trail", "p_perm"] > 0.05
    assert null.loc["text_trail", "ci_low"] < 0 < null.loc["text_trail", "ci_high"]


def test_shift_nulls_reject_planted_shifts_and_not_a_null_condition(split_run):
    """At the selected layer: tool and tool_blank move the states along v (not orthogonal to r_hat), so
    cos(shift, r_hat) and the refusal position's change are rejected; text_trail moves nothing."""
    ds = split_run["ds"]
    layer = ds.attrs["selected_layer"]
    null = ds["shift_null"]
    assert null.dims == ("condition", "statistic", "quantity")
    assert list(null["statistic"].values) == list(SHIFT_STATISTICS) and list(null["quantity"].values) == list(
        QUANTITIES
    )
    cos = null.sel(statistic="cos_shift_refusal").to_pandas()
    print(null.sel(quantity="p_perm").to_pandas())
    assert np.isnan(cos.loc["direct"]).all()
    for c in ("tool", "tool_blank"):
        assert cos.loc[c, "estimate"] == pytest.approx(
            float(ds["cos_shift_refusal"].sel(condition=c, layer=layer))
        )
        assert (
            cos.loc[c, "p_perm"] < 0.01
            and cos.loc[c, "ci_low"] <= cos.loc[c, "estimate"] <= cos.loc[c, "ci_high"]
        )
    assert (
        cos.loc["text_trail", "p_perm"] > 0.05
        and cos.loc["text_trail", "ci_low"] < 0 < cos.loc["text_trail", "ci_high"]
    )
    shift = null.sel(statistic="refusal_shift").to_pandas()
    position = refusal_position(ds).sel(layer=layer)
    harmful = np.asarray(ds["harmful"].values, dtype=bool)[evaluation_prompts(ds)[0]]
    for c in ("tool", "tool_blank", "text_trail"):
        change = (position.sel(condition=c).values - position.sel(condition="direct").values)[harmful]
        assert shift.loc[c, "estimate"] == pytest.approx(change.mean(), rel=1e-9)
    assert shift.loc["tool", "p_perm"] < 0.01 and shift.loc["tool_blank", "p_perm"] < 0.01
    assert shift.loc["text_trail", "p_perm"] > 0.05
    # probes: the test accuracy as stored, and the change from direct's
    acc = null.sel(statistic="probe_test_accuracy", quantity="estimate").to_pandas()
    change = null.sel(statistic="probe_accuracy_change", quantity="estimate").to_pandas()
    stored = ds["probe_test_accuracy"].sel(layer=layer).to_pandas()
    np.testing.assert_allclose(acc.values, stored.values, rtol=1e-12)
    np.testing.assert_allclose(
        change.drop("direct").values, (stored - stored["direct"]).drop("direct").values
    )
    assert null.sel(statistic="probe_test_accuracy", quantity="p_perm").sel(condition="direct") < 0.01


def test_covariance_basis_is_the_states_covariance():
    rng = np.random.default_rng(5)
    states = rng.standard_normal((30, 2, 6)) @ np.diag([3.0, 2, 1, 0.5, 0.1, 0.0]) + 7.0
    basis = covariance_basis(states)
    assert basis.shape == (2, 6, 6)  # min(COV_COMPONENTS, hidden) axes
    for layer in range(2):
        np.testing.assert_allclose(basis[layer].T @ basis[layer], np.cov(states[:, layer].T), atol=1e-10)
        big = np.argmax(np.abs(basis[layer]), axis=1)
        assert np.all(basis[layer][np.arange(6), big] >= 0)  # each axis' largest loading is positive
        norms = np.linalg.norm(basis[layer], axis=1)
        assert np.all(np.diff(norms) <= 1e-12)  # largest first
    # fewer states than axes: rank n - 1, zero rows after it, still exactly the covariance
    few = covariance_basis(states[:4], n_components=5)
    assert few.shape == (2, 5, 6) and np.abs(few[:, 3:]).max() < 1e-12
    np.testing.assert_allclose(few[0].T @ few[0], np.cov(states[:4, 0].T), atol=1e-10)
    assert not covariance_basis(states[:1]).any()  # one state: no variance


def test_vectors_file_keeps_the_direct_train_covariance(split_run, planted):
    ds = split_run["ds"]
    train = np.asarray(ds["split"].values) == "train"
    ids = [planted["ids"].index(p) for p in np.asarray(ds["prompt_id"].values)[train]]
    direct = planted["h"]["direct"][ids].astype(np.float32).astype(np.float64)
    assert ds["cov_basis"].dims == ("layer", "cov_component", "hidden")
    np.testing.assert_allclose(ds["cov_basis"].values, covariance_basis(direct), atol=1e-9)


@pytest.mark.parametrize("seed", [0])
def test_cosine_null_rejects_a_planted_shift_and_keeps_its_level(seed):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(20)
    planted_shift = u / np.linalg.norm(u) * 1.5 + rng.standard_normal(20) * 0.1
    est, lo, hi, p = cosine_null(planted_shift + rng.standard_normal((25, 20)), u, 500, 1)
    assert p < 0.01 and 0 < lo <= est <= hi
    rejections = [cosine_null(rng.standard_normal((25, 20)), u, 200, s)[3] < 0.05 for s in range(200)]
    print("cosine null, rejection rate without a shift:", np.mean(rejections))
    assert np.mean(rejections) < 0.09
    assert all(math.isnan(x) for x in cosine_null(np.zeros((0, 20)), u, 10, 0))
    assert all(math.isnan(x) for x in cosine_null(np.ones((3, 20)), u * np.nan, 10, 0))


def test_mean_difference_null_matches_the_exact_sign_flip_distribution():
    a = np.array([1.0, 2.5, 0.3, 4.0, 2.2, 1.7, 3.1, 0.9])
    b = np.array([0.5, 1.0, 0.6, 2.0, 1.0, 1.9, 1.1, 0.2])
    d = a - b
    exact = np.mean([abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12 for s in itertools.product((-1, 1), repeat=8)])
    est, lo, hi, p = mean_difference_null(a, b, 4000, 2)
    assert est == pytest.approx(d.mean()) and lo < est < hi
    assert p == pytest.approx(exact, abs=0.015)
    assert all(math.isnan(x) for x in mean_difference_null(np.array([np.nan]), np.array([1.0]), 10, 0))
