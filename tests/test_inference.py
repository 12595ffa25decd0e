"""Batched greedy generation and last-prompt-token capture on fixture models.

Tolerance for batched vs one-by-one states: |diff| <= 1e-4 * max|state| (float32). Left padding changes
the shapes of the matrix products and the length of the attention reductions (the padded keys get
exactly zero weight, but the summation order differs), so the states differ by float32 rounding only:
about 1e-7 relative per operation, observed ~2e-8 absolute on states of magnitude ~0.1. A masking or
position bug would differ at order 1 relative. Greedy text must be identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from toolshift.errors import ConfigError
from toolshift.models.fixtures import FIXTURE_FAMILIES, synthetic_episodes
from toolshift.models.generation import GENERATION_COLUMNS, encode, generate, shard
from toolshift.models.hooks import capture_last_token
from toolshift.models.loading import load_model

N_EPISODES = 6
MAX_NEW = 8
REL_TOL = 1e-4


@pytest.fixture(scope="session")
def results_root(tmp_path_factory):
    return tmp_path_factory.mktemp("inference_results")


@pytest.fixture(scope="session")
def episodes(results_root):
    return synthetic_episodes(results_root, N_EPISODES)


@pytest.fixture(scope="session")
def model_dirs(fixture_model_dirs):
    return fixture_model_dirs


@pytest.fixture(scope="session")
def models(fixture_models):
    return fixture_models


@pytest.fixture(scope="session")
def batched(models, episodes, results_root):
    """Each family's episodes generated in one batch (with capture)."""
    return {
        f: generate(m, episodes, results_root, batch_size=N_EPISODES, max_new_tokens=MAX_NEW, progress=False)
        for f, m in models.items()
    }


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_captured_states_equal_hf_hidden_states(family, models, episodes, results_root):
    """hidden_states[0] is the embedding input; [l+1] is layer l's raw output for l < L-1; the last
    entry is the final norm applied to the last layer's output (transformers 5.x replaces it with
    `last_hidden_state`)."""
    loaded = models[family]
    inputs = encode(loaded, episodes[:4], results_root)
    with capture_last_token(loaded) as store, torch.inference_mode():
        out = loaded.model(**inputs, output_hidden_states=True)
    states = store.array()
    n_layers = loaded.n_layers
    assert states.shape == (4, n_layers, loaded.hidden_size) and states.dtype == np.float32
    assert len(out.hidden_states) == n_layers + 1
    for layer in range(n_layers - 1):
        np.testing.assert_array_equal(states[:, layer], out.hidden_states[layer + 1][:, -1].numpy())
    final_norm = loaded.model.model.language_model.norm
    with torch.inference_mode():
        normed = final_norm(torch.from_numpy(states[:, -1])).numpy()
    np.testing.assert_allclose(normed, out.hidden_states[-1][:, -1].numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(states[:, -1], out.hidden_states[-1][:, -1].numpy())  # i.e. it is post-norm


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_generate_capture_equals_plain_forward(family, models, batched, episodes, results_root):
    loaded = models[family]
    inputs = encode(loaded, episodes, results_root)
    with capture_last_token(loaded) as store, torch.inference_mode():
        loaded.model(**inputs)
    _, states = batched[family]
    np.testing.assert_allclose(states, store.array(), rtol=0, atol=REL_TOL * np.abs(states).max())


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_batch_equals_one_by_one(family, models, batched, episodes, results_root):
    df, states = batched[family]
    single_df, single_states = generate(
        models[family], episodes, results_root, batch_size=1, max_new_tokens=MAX_NEW, progress=False
    )
    assert df["response"].tolist() == single_df["response"].tolist()
    assert df["n_new_tokens"].tolist() == single_df["n_new_tokens"].tolist()
    assert df["n_prompt_tokens"].tolist() == single_df["n_prompt_tokens"].tolist()
    np.testing.assert_allclose(states, single_states, rtol=0, atol=REL_TOL * np.abs(states).max())
    # the prompts really had different lengths, so the batch was padded
    assert df["n_prompt_tokens"].nunique() > 1


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_greedy_rerun_is_identical(family, models, batched, episodes, results_root):
    df, states = batched[family]
    again_df, again_states = generate(
        models[family], episodes, results_root, batch_size=N_EPISODES, max_new_tokens=MAX_NEW, progress=False
    )
    assert again_df.equals(df)
    np.testing.assert_array_equal(again_states, states)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_response_columns(family, models, batched, episodes, results_root):
    df, states = batched[family]
    assert tuple(df.columns) == GENERATION_COLUMNS
    assert df["prompt_id"].tolist() == [e["prompt_id"] for e in episodes]
    assert df["condition"].tolist() == [e["condition"] for e in episodes]
    assert (df["max_new_tokens"] == MAX_NEW).all() and not df["do_sample"].any()
    assert df["n_new_tokens"].between(0, MAX_NEW).all()
    assert df["response"].map(type).eq(str).all()
    # n_prompt_tokens is the unpadded length: the same episode encoded alone
    for i in (0, 1):
        alone = encode(models[family], [episodes[i]], results_root)
        assert df["n_prompt_tokens"][i] == alone["input_ids"].shape[1]
    no_capture, none = generate(
        models[family], episodes[:2], results_root, max_new_tokens=MAX_NEW, capture=False, progress=False
    )
    assert none is None and no_capture.equals(df.iloc[:2])


def test_generation_stops_at_eos(model_dirs, episodes, results_root):
    """Make the token the model emits third an eos token: the response then ends before it."""
    loaded = load_model(model_dirs["llava"], "llava")
    episode = episodes[:1]
    inputs = encode(loaded, episode, results_root)
    with torch.inference_mode():
        tokens = loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, -3:].tolist()
    loaded.model.generation_config.eos_token_id = [tokens[2]]
    df, _ = generate(loaded, episode, results_root, max_new_tokens=MAX_NEW, progress=False)
    n_new = tokens.index(tokens[2])
    assert df["n_new_tokens"][0] == n_new
    assert df["response"][0] == loaded.processor.tokenizer.decode(tokens[:n_new], skip_special_tokens=True)


def test_empty_episode_list(models, results_root):
    df, states = generate(models["llava"], [], results_root, progress=False)
    assert df.empty and tuple(df.columns) == GENERATION_COLUMNS
    assert states.shape == (0, 4, 64)


def test_shard_partitions_by_position():
    items = [{"prompt_id": str(i)} for i in range(7)]
    shards = [shard(items, 3, k) for k in range(3)]
    assert [[e["prompt_id"] for e in s] for s in shards] == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert shard(items, 1, 0) == items
    with pytest.raises(ConfigError, match="shard index 3"):
        shard(items, 3, 3)


def test_bad_arguments(models, episodes, results_root):
    with pytest.raises(ConfigError, match="batch_size"):
        generate(models["llava"], episodes, results_root, batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        load_model("unused", "gpt2")
    with pytest.raises(ConfigError, match="dtype"):
        load_model("unused", "llava", dtype="int8")


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_every_response_records_its_token_counts(family, models, batched, episodes, results_root):
    """The token columns of `generate` are those of each prompt encoded alone (padding and batching do not
    change them), add up to the prompt length, and count the images and the tokens after the attack text."""
    from toolshift.contracts import TOKEN_COLUMNS
    from toolshift.models.generation import token_counts

    df, _ = batched[family]
    alone = pd.DataFrame([token_counts(models[family], [ep], results_root)[0] for ep in episodes])
    for column in ("n_prompt_tokens", *TOKEN_COLUMNS):
        assert df[column].tolist() == alone[column].tolist(), column
        assert pd.api.types.is_integer_dtype(df[column]) and (df[column] >= 0).all(), column
    assert (df["n_visual_tokens"] + df["n_text_tokens"] == df["n_prompt_tokens"]).all()
    images = {"direct": 1, "tool": 2, "text_trail": 1, "image_no_tool": 2}
    assert df["n_images"].tolist() == [images[c] for c in df["condition"]]
    assert ((df["n_visual_after_instruction"] > 0) == (df["condition"] == "tool")).all()  # the zoom after T
    direct = df[df["condition"] == "direct"]
    assert (direct["n_after_instruction"] == direct["n_after_instruction"].iloc[0]).all()  # the gen. prompt
    assert (
        df.loc[df["condition"] == "tool", "n_after_instruction"] > direct["n_after_instruction"].max()
    ).all()


def test_a_prompt_without_its_attack_text_counts_the_rest_and_warns(models, episodes, results_root, caplog):
    """A template that rewrites the attack text: the counts after it are -1 (not a guess), the others are
    made, and the job says so once."""
    from dataclasses import replace

    from toolshift.models.generation import render_episodes
    from toolshift.models.token_counts import TokenCounter

    loaded = models["qwen2_5_vl"]
    texts, rendered = render_episodes(loaded, episodes[:2], results_root)
    counter = TokenCounter(loaded.processor, loaded.adapter)
    ids = encode(loaded, episodes[:1], results_root)["input_ids"][0].tolist()
    good = counter.counts(ids, texts[0], rendered[0])
    with caplog.at_level("WARNING"):
        bad = [
            counter.counts(ids, texts[0], replace(rendered[0], instruction="not in the prompt")) for _ in "ab"
        ]
    assert bad[0] == {**good, "n_after_instruction": -1, "n_visual_after_instruction": -1} == bad[1]
    assert good["n_after_instruction"] > 0
    assert caplog.text.count("tokens after the instruction not counted (-1)") == 1
