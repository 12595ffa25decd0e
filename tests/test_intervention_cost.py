"""KL cost of interventions on harmless prompts, on tiny fixture models: 0 at alpha 0, growing with alpha."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from toolshift.analysis.intervention_cost import intervention_cost_table, read_costs
from toolshift.analysis.vectors import compute_vectors, write_vectors
from toolshift.contracts import COST_COLUMNS, COST_TABLE_COLUMNS, write_jsonl, write_parquet
from toolshift.datasets.splits import make_splits, write_splits
from toolshift.inference.intervention_cost import next_token_kl, run_intervention_costs
from toolshift.models.fixtures import synthetic_episodes
from toolshift.models.hooks import ResidualEdit

LAYER = 1


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("cost_results")


@pytest.fixture(scope="module")
def llava(fixture_models):
    return fixture_models["llava"]


@pytest.fixture(scope="module")
def episodes(root):
    return synthetic_episodes(root, 2, conditions=("direct", "tool"))


def unit_vector(hidden: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(hidden)
    return v / np.linalg.norm(v)


def test_alpha_zero_costs_nothing_and_cost_grows_with_alpha(llava, episodes, root):
    v = unit_vector(llava.hidden_size)
    means = []
    for alpha in (0.0, 0.05, 0.2, 1.0, 4.0):
        df = next_token_kl(
            llava, episodes, root, ResidualEdit("add", LAYER, v, alpha), batch_size=2, n_generated=3
        )
        assert list(df["prompt_id"]) == [e["prompt_id"] for e in episodes]
        assert (df["n_prompt_positions"] == 16).all() and (df["n_generated_positions"] <= 2).all()
        if alpha == 0:
            assert (df[["kl_prompt", "kl_last"]] == 0).all().all()
            assert ((df["kl_generated"] == 0) | df["kl_generated"].isna()).all()
        means.append(df["kl_prompt"].mean())
    print("mean KL over the last 16 prompt positions by alpha 0, 0.05, 0.2, 1, 4:", np.round(means, 5))
    assert means[0] == 0 and all(b > a for a, b in zip(means, means[1:], strict=False))


def test_no_hook_and_ablation(llava, episodes, root):
    none = next_token_kl(llava, episodes, root, None, n_generated=0)
    assert (none[["kl_prompt", "kl_last"]] == 0).all().all() and none["kl_generated"].isna().all()
    ablated = next_token_kl(
        llava,
        episodes,
        root,
        ResidualEdit("ablate", None, unit_vector(llava.hidden_size, 1)),
        prompt_positions=4,
    )
    assert (ablated["kl_prompt"] > 0).all() and (ablated["n_prompt_positions"] == 4).all()


def test_qwen_teacher_forcing_extends_per_token_inputs(fixture_models, root):
    qwen = fixture_models["qwen2_5_vl"]
    eps = synthetic_episodes(root, 2, conditions=("tool",))
    v = unit_vector(qwen.hidden_size)
    zero = next_token_kl(qwen, eps, root, ResidualEdit("add", LAYER, v, 0.0), n_generated=3)
    some = next_token_kl(qwen, eps, root, ResidualEdit("add", LAYER, v, 2.0), n_generated=3)
    assert (zero["kl_prompt"] == 0).all() and (some["kl_prompt"] > 0).all()
    assert (some["kl_generated"].isna() | (some["kl_generated"] > 0)).all()


def _study_files(root, llava):
    """Prompts, episodes (direct, tool), splits and a vectors file for 8 synthetic prompts."""
    direct = synthetic_episodes(root, 8, conditions=("direct",))
    tool = synthetic_episodes(root, 8, conditions=("tool",))
    ids = [e["prompt_id"] for e in direct]
    prompts = pd.DataFrame(
        {
            "prompt_id": ids,
            "dataset": "syn",
            "category": ["a", "b"] * 4,
            "harmful": [True] * 4 + [False] * 4,
            "question": "q",
            "instruction": "i",
            "image": "synthetic/images/x.png",
        }
    )
    write_parquet(prompts, root / "prompts.parquet")
    write_jsonl(direct, root / "direct.jsonl")
    write_jsonl(tool, root / "tool.jsonl")
    splits = make_splits(prompts, seed=0, fractions={"train": 0.5, "validation": 0.25, "test": 0.25})
    write_splits(splits, root / "splits.parquet")
    rng = np.random.default_rng(0)
    acts = {
        c: xr.Dataset(
            {
                "resid": (
                    ("prompt_id", "layer", "hidden"),
                    rng.standard_normal((8, llava.n_layers, llava.hidden_size)),
                )
            },
            coords={"prompt_id": ids, "layer": np.arange(llava.n_layers)},
        )
        for c in ("direct", "tool")
    }
    vectors = compute_vectors(acts, prompts, model="llava", dataset="syn", splits=splits)
    write_vectors(vectors, root / "vectors.nc")
    return prompts, splits, vectors


def test_run_intervention_costs_and_table(llava, tmp_path):
    prompts, splits, vectors = _study_files(tmp_path, llava)
    out = tmp_path / "costs" / "llava" / "syn.parquet"
    ids = ["add_a0", "add_a1", "ablate", "random_a1_s0"]
    table = run_intervention_costs(
        model_name="llava",
        entry={"family": "llava"},
        model_dir=llava.model_id,
        dataset="syn",
        episodes_paths={"direct": tmp_path / "direct.jsonl", "tool": tmp_path / "tool.jsonl"},
        prompts_path=tmp_path / "prompts.parquet",
        splits_path=tmp_path / "splits.parquet",
        vectors_paths={"syn": tmp_path / "vectors.nc"},
        results_root=tmp_path,
        interventions=ids,
        layer="auto",
        generation={"device": "cpu", "batch_size": 4},
        out=out,
        n_generated=2,
    )
    back = read_costs(out)
    assert list(back.columns) == list(COST_COLUMNS)
    pd.testing.assert_frame_equal(back, table)
    # the harmless validation prompts (what selection reads) and test prompts (reported), each labelled
    held_out = splits[splits["split"].isin(["validation", "test"]) & ~splits["harmful"]]
    split_of = dict(zip(held_out["prompt_id"], held_out["split"], strict=True))
    assert sorted(split_of.values()) == ["test", "validation"]
    for iid in ids:
        rows = table[table["intervention"] == iid]
        assert dict(zip(rows["prompt_id"], rows["split"], strict=True)) == split_of
    layer = vectors.attrs["selected_layer"]
    assert set(table.loc[table["intervention"] == "add_a1", "layer"]) == {layer}
    assert table.loc[
        table["intervention"] == "ablate", ["condition", "layer"]
    ].drop_duplicates().values.tolist() == [["tool", -1]]
    summary = intervention_cost_table(table, n_boot=200)
    assert list(summary.columns) == list(COST_TABLE_COLUMNS)
    assert list(summary["intervention"]) == [i for i in ids for _ in range(2)]  # add, ablate, random order
    assert list(summary["split"]) == ["validation", "test"] * len(ids)  # one row per split, each reported
    s = summary[summary["split"] == "test"].set_index("intervention")
    assert (s.loc["add_a0", "kl_mean"], s.loc["add_a0", "kl_ci_low"], s.loc["add_a0", "kl_ci_high"]) == (
        0,
        0,
        0,
    )
    assert s.loc["add_a1", "kl_mean"] > 0 and s.loc["add_a1", "n"] == 1
    assert s.loc["add_a1", "kl_ci_low"] <= s.loc["add_a1", "kl_mean"] <= s.loc["add_a1", "kl_ci_high"]


def test_an_intervention_job_measures_the_same_costs_with_its_own_load(llava, tmp_path):
    """The costs an `intervene` job writes beside its responses (two shards, merged) equal the standalone
    `run_intervention_costs` rows on the same files, and a repeated (intervention, prompt) is refused."""
    from toolshift.errors import ContractError
    from toolshift.inference.runner import (
        InferenceJob,
        RunOutput,
        merge_costs,
        merge_runs,
        run_episodes,
        run_job,
        shard_costs,
        shard_outputs,
    )

    _study_files(tmp_path, llava)
    # the refusal-direction ablation (positive control) runs in the same job, on each base condition
    ids = ["add_a0", "add_a1", "ablate", "random_a1_s0", "ablate_refusal_direct", "ablate_refusal_tool"]
    reference = run_intervention_costs(
        model_name="llava", entry={"family": "llava"}, model_dir=llava.model_id, dataset="syn",
        episodes_paths={"direct": tmp_path / "direct.jsonl", "tool": tmp_path / "tool.jsonl"},
        prompts_path=tmp_path / "prompts.parquet", splits_path=tmp_path / "splits.parquet",
        vectors_paths={"syn": tmp_path / "vectors.nc"}, results_root=tmp_path, interventions=ids,
        layer="auto", generation={"device": "cpu", "batch_size": 4}, out=tmp_path / "reference.parquet",
        n_generated=2,
    )  # fmt: skip
    base = {i: run_episodes(i, [str(tmp_path / "direct.jsonl"), str(tmp_path / "tool.jsonl")]) for i in ids}
    assert base["ablate_refusal_tool"] == base["ablate"] == str(tmp_path / "tool.jsonl")
    assert base["ablate_refusal_direct"] == base["add_a1"] == str(tmp_path / "direct.jsonl")
    shards = []
    for shard in range(2):
        folder = tmp_path / "shards" / f"{shard:03d}"
        outputs = shard_outputs(folder, ids)
        job = InferenceJob(
            model="llava", entry={"family": "llava"}, model_dir=str(llava.model_id), dataset="syn",
            prompts=str(tmp_path / "prompts.parquet"), results_root=str(tmp_path),
            generation={"device": "cpu", "batch_size": 4, "max_new_tokens": 2}, shard=shard, n_shards=2,
            runs=[RunOutput(i, base[i], responses) for i, (responses, _) in zip(ids, outputs, strict=True)],
            vectors={"syn": str(tmp_path / "vectors.nc")}, layer="auto",
            splits=str(tmp_path / "splits.parquet"),
            costs=str(shard_costs(folder)), cost={"n_generated": 2},
        )  # fmt: skip
        run_job(job)
        shards.append(folder)
    merge_costs(shards, [], tmp_path / "merged.parquet")
    merged = read_costs(tmp_path / "merged.parquet")
    key = ["intervention", "prompt_id"]
    pd.testing.assert_frame_equal(
        merged.sort_values(key).reset_index(drop=True),
        reference.sort_values(key).reset_index(drop=True),
        check_exact=False,
        rtol=1e-5,
        atol=1e-7,
    )
    with pytest.raises(ContractError, match="appears twice"):
        merge_costs(shards, [tmp_path / "merged.parquet"], tmp_path / "twice.parquet")
    assert not (tmp_path / "twice.parquet").exists()
    refusal = merged[merged["intervention"].str.startswith("ablate_refusal_")]
    assert sorted(map(tuple, refusal[["intervention", "condition", "layer"]].drop_duplicates().values)) == [
        ("ablate_refusal_direct", "direct", -1),
        ("ablate_refusal_tool", "tool", -1),
    ]
    # each run's responses: its base condition, its id; the refusal ablation differs from the tool one
    outs = [str(tmp_path / "merged" / i / "responses.parquet") for i in ids]
    merge_runs(shards, ids, outs)
    tables = {i: pd.read_parquet(out).set_index("prompt_id") for i, out in zip(ids, outs, strict=True)}
    for i in ("ablate_refusal_direct", "ablate_refusal_tool"):
        assert set(tables[i]["intervention"]) == {i} and set(tables[i]["condition"]) == {i.split("_", 2)[2]}
    kl = merged.groupby("intervention")["kl_prompt"].mean()
    assert kl["ablate_refusal_tool"] > 0 and kl["ablate_refusal_tool"] != kl["ablate"]
