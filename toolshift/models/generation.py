"""Batched greedy generation over episodes, with optional activation capture and interventions."""

from __future__ import annotations

import copy
import logging
import os
import sys
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd

from toolshift.contracts import TOKEN_COLUMNS
from toolshift.errors import ConfigError, ToolshiftError
from toolshift.models.hooks import LastTokenStore, ResidualEdit, apply_intervention, capture_last_token
from toolshift.models.token_counts import Rendered, token_counter

log = logging.getLogger(__name__)

GENERATION_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "condition",
    "response",
    "n_prompt_tokens",
    "n_new_tokens",
    "max_new_tokens",
    "do_sample",
    *TOKEN_COLUMNS,
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
    texts, rendered = render_episodes(loaded, episodes, results_root)
    return texts, [image for r in rendered for image in r.images]


def render_episodes(
    loaded: Any, episodes: list[dict[str, Any]], results_root: str | os.PathLike[str]
) -> tuple[list[str], list[Rendered]]:
    """Prompt texts (chat template applied, generation prompt added) and what each was rendered from
    (its images, the attack text: the token counts)."""
    texts, rendered = [], []
    for episode in episodes:
        one = loaded.adapter.render(episode, results_root, loaded.processor)
        texts.append(loaded.adapter.chat_prompt(loaded.processor, one.messages))
        rendered.append(one)
    return texts, rendered


def encode(loaded: Any, episodes: list[dict[str, Any]], results_root: str | os.PathLike[str]) -> Any:
    """Processor inputs for a batch of episodes: left-padded tensors on the model's device, floating-point
    ones (pixel values) cast to the model's dtype."""
    return _encode(loaded, episodes, results_root, count=False)[0]


def token_counts(
    loaded: Any, episodes: list[dict[str, Any]], results_root: str | os.PathLike[str]
) -> list[dict[str, int]]:
    """The TOKEN_COLUMNS of each episode's prompt, as `generate` records them (and `n_prompt_tokens`)."""
    inputs, counts = _encode(loaded, episodes, results_root)
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    return [{"n_prompt_tokens": int(n), **c} for n, c in zip(lengths, counts, strict=True)]


def _encode(
    loaded: Any, episodes: list[dict[str, Any]], results_root: str | os.PathLike[str], count: bool = True
) -> tuple[Any, list[dict[str, int]]]:
    """`encode`, and (if `count`) the TOKEN_COLUMNS of each prompt (toolshift.models.token_counts)."""
    texts, rendered = render_episodes(loaded, episodes, results_root)
    images = [image for r in rendered for image in r.images]
    arguments = loaded.adapter.processor_inputs(loaded.processor, texts, images)
    inputs = loaded.processor(**arguments, padding=True, return_tensors="pt")
    if not count:
        return inputs.to(device=loaded.device, dtype=loaded.model.dtype), []
    counter = token_counter(loaded.processor, loaded.adapter)
    counts = [
        counter.counts(ids[mask.bool()].tolist(), text, one)
        for ids, mask, text, one in zip(
            inputs["input_ids"], inputs["attention_mask"], arguments["text"], rendered, strict=True
        )
    ]
    return inputs.to(device=loaded.device, dtype=loaded.model.dtype), counts


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


def stop_string_cut(tokenizer: Any, tokens: list[int], n_new: int, stop_strings: tuple[str, ...]) -> int:
    """The number of new tokens kept when generation stops after a stop string: the fewest of the first
    `n_new` tokens whose decoded text holds one (the token completing it included), else `n_new`.

    Under greedy decoding the tokens up to there do not depend on where generation stopped, so cutting
    after generating is exactly stopping there; both engines cut this way."""
    if not stop_strings or n_new == 0:
        return n_new

    def stopped(k: int) -> bool:
        text = tokenizer.decode(tokens[:k], skip_special_tokens=True)
        return any(stop in text for stop in stop_strings)

    if not stopped(n_new):
        return n_new
    low, high = 1, n_new
    while low < high:
        middle = (low + high) // 2
        if stopped(middle):
            high = middle
        else:
            low = middle + 1
    return low


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
    intervention: ResidualEdit | None = None,
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
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(episodes), desc="generate", unit="episode", file=sys.stderr, disable=not progress)
    capturing = capture_last_token(loaded) if capture else nullcontext(None)
    with bar, apply_intervention(loaded, intervention), capturing as store, torch.inference_mode():
        start, size = 0, batch_size
        while start < len(episodes):
            batch = episodes[start : start + size]
            n_records = len(store.records) if store is not None else 0
            try:
                rows.extend(_generate_batch(loaded, batch, results_root, config, stop, max_new_tokens))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                _discard_partial_capture(store, n_records)
                _release_memory()
                if len(batch) == 1:
                    raise ToolshiftError(
                        f"out of memory even at batch size 1 (model {loaded.model_id}, "
                        f"{_prompt_tokens(loaded, batch, results_root)} prompt tokens): use a smaller "
                        "model dtype, a larger accelerator or shorter prompts"
                    ) from None
                size = len(batch) // 2
                log.warning("out of memory at batch size %d: retrying with %d", len(batch), size)
                continue
            start += len(batch)
            bar.update(len(batch))
        states = None
        if store is not None:
            empty = np.zeros((0, loaded.n_layers, loaded.hidden_size), np.float32)
            states = store.array() if episodes else empty
    df = pd.DataFrame(rows, columns=list(GENERATION_COLUMNS))
    if states is not None and states.shape[0] != len(df):
        raise RuntimeError(f"captured {states.shape[0]} prefill states for {len(df)} episodes")
    return df, states


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an accelerator out-of-memory error (torch.cuda.OutOfMemoryError or alike)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _discard_partial_capture(store: LastTokenStore | None, n_records: int) -> None:
    """Drop what a failed batch left in the capture store (a prefill record, a half-filled pass)."""
    if store is not None:
        del store.records[n_records:]
        store._current = [None] * store.n_layers


def _prompt_tokens(loaded: Any, batch: list[dict[str, Any]], results_root: str | os.PathLike[str]) -> int:
    """The prompt length of a one-episode batch, in tokens (for the out-of-memory message)."""
    texts, images = render_prompts(loaded, batch, results_root)
    arguments = loaded.adapter.processor_inputs(loaded.processor, texts, images)
    return int(loaded.processor(**arguments, padding=True, return_tensors="pt")["input_ids"].shape[1])


def _generate_batch(
    loaded: Any,
    batch: list[dict[str, Any]],
    results_root: str | os.PathLike[str],
    config: Any,
    stop: set[int],
    max_new_tokens: int,
) -> list[dict[str, Any]]:
    """Generate one batch; one GENERATION_COLUMNS row per episode."""
    tokenizer = loaded.processor.tokenizer
    inputs, counts = _encode(loaded, batch, results_root)
    stops = loaded.adapter.stop_strings  # stop early where the family's evaluation stops (cut exactly below)
    extra = {"stop_strings": list(stops), "tokenizer": tokenizer} if stops else {}
    output = loaded.model.generate(**inputs, generation_config=config, **extra)
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = output[:, prompt_len:].tolist()
    n_prompt = inputs["attention_mask"].sum(dim=1).tolist()
    rows = []
    for episode, tokens, n_in, count in zip(batch, new_tokens, n_prompt, counts, strict=True):
        n_new = next((k for k, t in enumerate(tokens) if t in stop), len(tokens))
        n_new = stop_string_cut(tokenizer, tokens, n_new, loaded.adapter.stop_strings)
        rows.append(
            {
                "prompt_id": episode["prompt_id"],
                "condition": episode["condition"],
                "response": tokenizer.decode(tokens[:n_new], skip_special_tokens=True),
                "n_prompt_tokens": int(n_in),
                "n_new_tokens": int(n_new),
                "max_new_tokens": int(max_new_tokens),
                "do_sample": False,
                **{column: int(count[column]) for column in TOKEN_COLUMNS},
            }
        )
    return rows
