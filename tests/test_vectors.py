"""Planted-truth tests of the tool vector, refusal direction, shifts, cosines and projections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from toolshift.errors import ContractError
from toolshift.vectors import VECTOR_VARS, compute_vectors, cosine, read_vectors, write_vectors

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
    }
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
