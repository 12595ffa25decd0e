"""Out-of-memory back-off in `toolshift.models.generation.generate`, on the CPU by injecting the CUDA error.

The fake runs the real `model.generate` first (so the capture hooks record a prefill pass, as a real
OOM during decoding would leave behind) and then raises `torch.cuda.OutOfMemoryError` for batches larger
than a limit. The backed-off run must give the same responses as an un-OOM'd run; its states equal the
reference within the batching tolerance of tests/test_inference.py (1e-4 relative: batch composition
changes the float32 summation order only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from toolshift.errors import ToolshiftError
from toolshift.models.fixtures import build_fixture, synthetic_episodes
from toolshift.models.generation import generate, is_out_of_memory
from toolshift.models.loading import load_model

N_EPISODES = 5
BATCH = 4
MAX_NEW = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("oom")
    model_dir = build_fixture("qwen2_5_vl", root / "model", seed=0, hidden_size=32, num_layers=2, num_heads=2)
    loaded = load_model(model_dir, "qwen2_5_vl")
    episodes = synthetic_episodes(root, N_EPISODES)
    reference = generate(loaded, episodes, root, batch_size=BATCH, max_new_tokens=MAX_NEW, progress=False)
    return loaded, episodes, root, reference


def inject_oom(monkeypatch, loaded, limit: int) -> list[int]:
    """Make `loaded.model.generate` raise a CUDA OOM for batches of more than `limit` prompts."""
    real = loaded.model.generate
    sizes: list[int] = []

    def fake(**kwargs):
        n = int(kwargs["input_ids"].shape[0])
        sizes.append(n)
        out = real(**kwargs)
        if n > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return out

    monkeypatch.setattr(loaded.model, "generate", fake)
    return sizes


@pytest.mark.parametrize("limit", [1, 2])
def test_backoff_halves_the_batch_and_gives_the_same_results(setup, monkeypatch, limit):
    loaded, episodes, root, (ref_df, ref_states) = setup
    sizes = inject_oom(monkeypatch, loaded, limit)
    df, states = generate(loaded, episodes, root, batch_size=BATCH, max_new_tokens=MAX_NEW, progress=False)
    pd.testing.assert_frame_equal(df, ref_df)
    assert states.shape == ref_states.shape
    scale = float(np.abs(ref_states).max())
    assert np.abs(states - ref_states).max() <= 1e-4 * scale
    # 4 fails, then halves until it fits; the smaller size is kept for the rest of the shard
    expected = {1: [4, 2, 1, 1, 1, 1, 1], 2: [4, 2, 2, 1]}[limit]
    assert sizes == expected


def test_oom_at_batch_size_one_fails_with_one_line(setup, monkeypatch):
    loaded, episodes, root, _ = setup
    sizes = inject_oom(monkeypatch, loaded, 0)
    message = r"out of memory even at batch size 1 \(model .*model, \d+ prompt tokens\)"
    with pytest.raises(ToolshiftError, match=message):
        generate(loaded, episodes, root, batch_size=BATCH, max_new_tokens=MAX_NEW, progress=False)
    assert sizes == [4, 2, 1]


def test_other_errors_are_not_retried(setup, monkeypatch):
    loaded, episodes, root, _ = setup
    calls = []

    def broken(**kwargs):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(loaded.model, "generate", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(loaded, episodes, root, batch_size=BATCH, max_new_tokens=MAX_NEW, progress=False)
    assert calls == [1]


def test_is_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float"))
    assert not is_out_of_memory(ValueError("out of range"))
