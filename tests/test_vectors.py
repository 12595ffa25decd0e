"""Planted-truth tests of the tool vector, refusal direction, shifts, cosines and projections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from toolshift.analysis.vectors import (
    N_COMPONENTS,
    VECTOR_VARS,
    compute_vectors,
    cosine,
    pca_by_layer,
    read_vectors,
    tool_vector_cosines,
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


def _planted(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    v = np.zeros((N_LAYERS, HIDDEN))
    r = np.zeros((N_LAYERS, HIDDEN))
    for layer in range(N_LAYERS):
        u = _unit(rng.standard_normal(HIDDEN))
        w = rng.standard_normal(HIDDEN)
        w = _unit(w - (w @ u) * u)
        theta = np.deg2rad(ANGLES_DEG[layer])
        v[layer] = TOOL_NORM * u
        r[layer] = REFUSAL_NORM * (np.cos(theta) * u + np.sin(theta) * w)
    ids = [f"x-h-{i:03d}" for i in range(N_HARMFUL)] + [f"x-b-{i:03d}" for i in range(N_HARMLESS)]
    harmful = np.array([True] * N_HARMFUL + [False] * N_HARMLESS)
    base = rng.standard_normal((N_LAYERS, HIDDEN)) * 3
    latent = rng.standard_normal((len(ids), N_LAYERS, HIDDEN)) * PROMPT_SD

    def noise() -> np.ndarray:
        return rng.standard_normal((len(ids), N_LAYERS, HIDDEN)) * NOISE_SD

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
    with pytest.raises(ContractError, match="x.nc"):
        read_vectors(path)
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


def test_split_without_harmful_train_prompts_errors(planted):
    prompts = _with_categories(planted["prompts"])
    splits = make_splits(prompts, seed=0)
    splits.loc[splits["harmful"], "split"] = "test"
    with pytest.raises(ContractError, match="no harmful train prompt"):
        compute_vectors(planted["acts"], prompts, model="m", dataset="x", splits=splits)
