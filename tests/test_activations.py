"""activations.nc: round trip, dims and attrs, corrupt files, shard concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import toolshift
from toolshift.contracts import ACTIVATION_ATTRS, ACTIVATION_DIMS
from toolshift.errors import ContractError
from toolshift.models.activations import concat_shards, read_activations, to_dataset, write_activations

ATTRS = {"model": "fixture-llava", "revision": "fixture-seed0", "condition": "tool"}


def states(n: int, seed: int = 0, layers: int = 4, hidden: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, layers, hidden)).astype(np.float32)


def ids(start: int, n: int) -> list[str]:
    return [f"mini-h-{i:03d}" for i in range(start, start + n)]


def test_to_dataset_dims_coords_and_attrs():
    ds = to_dataset(states(3), ids(0, 3), ATTRS)
    assert tuple(ds["resid"].dims) == ACTIVATION_DIMS == ("prompt_id", "layer", "hidden")
    assert ds["resid"].dtype == np.float32
    assert list(ds["prompt_id"].values) == ids(0, 3)
    assert list(ds["layer"].values) == [0, 1, 2, 3]
    assert set(ACTIVATION_ATTRS) <= set(ds.attrs)
    assert ds.attrs["position"] == "last_prompt_token"
    assert ds.attrs["toolshift_version"] == toolshift.__version__
    assert ds.attrs["dtype"] == "float32"
    assert to_dataset(states(3), ids(0, 3), {**ATTRS, "dtype": "bfloat16"}).attrs["dtype"] == "bfloat16"


def test_round_trip(tmp_path):
    ds = to_dataset(states(5, seed=1), ids(0, 5), ATTRS)
    path = tmp_path / "runs" / "activations.nc"
    write_activations(ds, path)
    back = read_activations(path)
    xr.testing.assert_identical(back, ds)
    np.testing.assert_array_equal(back["resid"].values, ds["resid"].values)
    assert back.attrs == ds.attrs
    assert [p.name for p in path.parent.iterdir()] == ["activations.nc"]  # no temporary left behind


def test_bad_inputs_to_to_dataset():
    with pytest.raises(ContractError, match="shape"):
        to_dataset(states(3)[0], ids(0, 3), ATTRS)
    with pytest.raises(ContractError, match="shape"):
        to_dataset(states(3), ids(0, 2), ATTRS)
    with pytest.raises(ContractError, match="duplicate"):
        to_dataset(states(2), ["a", "a"], ATTRS)
    with pytest.raises(ContractError, match="condition"):
        to_dataset(states(2), ids(0, 2), {"model": "m", "revision": "r"})


def test_truncated_file_is_contract_error_naming_it(tmp_path):
    path = tmp_path / "activations.nc"
    write_activations(to_dataset(states(4), ids(0, 4), ATTRS), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ContractError) as err:
        read_activations(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    garbage = tmp_path / "garbage.nc"
    garbage.write_text("not a netCDF file")
    with pytest.raises(ContractError, match="garbage.nc"):
        read_activations(garbage)
    with pytest.raises(ContractError, match="not found"):
        read_activations(tmp_path / "missing.nc")


def test_missing_variable_dims_or_attrs_is_contract_error(tmp_path):
    good = to_dataset(states(2), ids(0, 2), ATTRS)
    other = good.rename({"resid": "other"})
    path = tmp_path / "other.nc"
    other.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ContractError, match="other.nc: no variable 'resid'"):
        read_activations(path)
    transposed = good.transpose("layer", "prompt_id", "hidden")
    path = tmp_path / "transposed.nc"
    transposed.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ContractError, match="dims"):
        read_activations(path)
    bare = good.copy()
    bare.attrs = {k: v for k, v in good.attrs.items() if k != "revision"}
    path = tmp_path / "bare.nc"
    bare.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(ContractError, match="revision"):
        read_activations(path)
    with pytest.raises(ContractError, match="revision"):
        write_activations(bare, tmp_path / "never.nc")
    assert not (tmp_path / "never.nc").exists()


def test_concat_shards(tmp_path):
    a = to_dataset(states(3, seed=1), ids(0, 3), ATTRS)
    b = to_dataset(states(2, seed=2), ids(3, 2), ATTRS)
    for i, ds in enumerate((a, b)):
        write_activations(ds, tmp_path / f"shard{i}.nc")
    merged = concat_shards([read_activations(tmp_path / f"shard{i}.nc") for i in range(2)])
    assert list(merged["prompt_id"].values) == ids(0, 5)
    np.testing.assert_array_equal(merged["resid"].values, np.concatenate([states(3, 1), states(2, 2)]))
    assert merged.attrs == a.attrs
    write_activations(merged, tmp_path / "activations.nc")
    xr.testing.assert_identical(read_activations(tmp_path / "activations.nc"), merged)


def test_concat_rejects_mismatched_shards():
    a = to_dataset(states(2), ids(0, 2), ATTRS)
    with pytest.raises(ContractError, match="no shards"):
        concat_shards([])
    with pytest.raises(ContractError, match="appears in more than one shard"):
        concat_shards([a, to_dataset(states(2), ids(1, 2), ATTRS)])
    with pytest.raises(ContractError, match="condition"):
        concat_shards([a, to_dataset(states(2), ids(2, 2), {**ATTRS, "condition": "direct"})])
    with pytest.raises(ContractError, match="differs from shard 0"):
        concat_shards([a, to_dataset(states(2, hidden=6), ids(2, 2), ATTRS)])
