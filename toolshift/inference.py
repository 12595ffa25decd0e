"""Batched greedy generation over episodes, with optional activation capture and interventions."""

from __future__ import annotations

import copy
import os
import sys
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd

from toolshift.errors import ConfigError
from toolshift.hooks import Intervention, apply_intervention, capture_last_token

GENERATION_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "condition",
    "response",
    "n_prompt_tokens",
    "n_new_tokens",
    "max_new_tokens",
    "do_sample",
)
"""The columns `generate` returns (the rest of RESPONSE_COLUMNS comes from the prompts table and config)."""


def shard(episodes: list[dict[str, Any]], n_shards: int, index: int) -> list[dict[str, Any]]:
    """The episodes of shard `index` of `n_shards`: those at positions i with i % n_shards == index."""
    if n_shards < 1 or not 0 <= index < n_shards:
        raise ConfigError(f"shard index {index} is out of range for {n_shards} shard(s)")
    return [ep for i, ep in enumerate(episodes) if i % n_shards == index]


def render_prompts(
    loaded: Any, episodes: list[dict[str, Any]], results_root: str | os.PathLike[str]
) -> tuple[list[str], list[Any]]:
    """Prompt texts (chat template applied, generation prompt added) and the flat list of their images."""
    texts, images = [], []
    for episode in episodes:
        messages, episode_images = loaded.adapter.render_messages(episode, results_root)
        texts.append(
            loaded.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )
        images.extend(episode_images)
    return texts, images


def encode(loaded: Any, episodes: list[dict[str, Any]], results_root: str | os.PathLike[str]) -> Any:
    """Processor inputs for a batch of episodes: left-padded tensors on the model's device, floating-point
    ones (pixel values) cast to the model's dtype."""
    texts, images = render_prompts(loaded, episodes, results_root)
    arguments = loaded.adapter.processor_inputs(loaded.processor, texts, images)
    inputs = loaded.processor(**arguments, padding=True, return_tensors="pt")
    return inputs.to(device=loaded.device, dtype=loaded.model.dtype)


def _generation_config(loaded: Any, max_new_tokens: int) -> Any:
    config = copy.deepcopy(loaded.model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.temperature = None
    config.top_p = None
    config.top_k = None
    tokenizer = loaded.processor.tokenizer
    if config.pad_token_id is None:
        pad = tokenizer.pad_token_id
        config.pad_token_id = pad if pad is not None else config.eos_token_id
    return config


def _stop_ids(config: Any) -> set[int]:
    eos = config.eos_token_id
    ids = set(eos if isinstance(eos, list | tuple) else [eos] if eos is not None else [])
    if config.pad_token_id is not None:
        ids.add(int(config.pad_token_id))
    return ids


def generate(
    loaded: Any,
    episodes: list[dict[str, Any]],
    results_root: str | os.PathLike[str],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    capture: bool = True,
    intervention: Intervention | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Greedy, left-padded, batched generation for `episodes` (deterministic for a fixed batching).

    Returns one row per episode (GENERATION_COLUMNS; `response` is the new tokens up to the first
    eos/pad, special tokens skipped) and, if `capture`, the residual stream after every decoder layer
    at the last prompt token, (n_episodes, n_layers, hidden) float32, recorded with `intervention`
    (if any) applied.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1 or max_new_tokens < 1:
        raise ConfigError(f"batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must be >= 1")
    config = _generation_config(loaded, max_new_tokens)
    stop = _stop_ids(config)
    tokenizer = loaded.processor.tokenizer
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(episodes), desc="generate", unit="episode", file=sys.stderr, disable=not progress)
    capturing = capture_last_token(loaded) if capture else nullcontext(None)
    with bar, apply_intervention(loaded, intervention), capturing as store, torch.inference_mode():
        for start in range(0, len(episodes), batch_size):
            batch = episodes[start : start + batch_size]
            inputs = encode(loaded, batch, results_root)
            output = loaded.model.generate(**inputs, generation_config=config)
            prompt_len = inputs["input_ids"].shape[1]
            new_tokens = output[:, prompt_len:].tolist()
            n_prompt = inputs["attention_mask"].sum(dim=1).tolist()
            for episode, tokens, n_in in zip(batch, new_tokens, n_prompt, strict=True):
                n_new = next((k for k, t in enumerate(tokens) if t in stop), len(tokens))
                rows.append(
                    {
                        "prompt_id": episode["prompt_id"],
                        "condition": episode["condition"],
                        "response": tokenizer.decode(tokens[:n_new], skip_special_tokens=True),
                        "n_prompt_tokens": int(n_in),
                        "n_new_tokens": int(n_new),
                        "max_new_tokens": int(max_new_tokens),
                        "do_sample": False,
                    }
                )
            bar.update(len(batch))
        states = None
        if store is not None:
            empty = np.zeros((0, loaded.n_layers, loaded.hidden_size), np.float32)
            states = store.array() if episodes else empty
    df = pd.DataFrame(rows, columns=list(GENERATION_COLUMNS))
    if states is not None and states.shape[0] != len(df):
        raise RuntimeError(f"captured {states.shape[0]} prefill states for {len(df)} episodes")
    return df, states
