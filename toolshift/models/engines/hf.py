"""The reference engine: transformers `generate` on a model loaded once, forward hooks for capture and
interventions (toolshift.models.generation, toolshift.models.hooks).

Within a run, episodes are batched by prompt size (the sum of their images' areas, then their text length)
so that a batch holds prompts of similar length and little padding; the rows and states come back in
episode order. The batch size is `generation.batch_size`, halved on an out-of-memory error (see
toolshift.models.generation.generate).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolshift.datasets.images import image_size
from toolshift.models.engines.base import Engine, RunRequest, RunResult
from toolshift.models.generation import generate
from toolshift.models.loading import LoadedModel, load_model

log = logging.getLogger(__name__)


def prompt_size_key(episode: Mapping[str, Any], results_root: str | os.PathLike[str]) -> tuple[int, int]:
    """A cheap stand-in for an episode's prompt length: (sum of image areas in pixels, text characters).

    Image sizes are read from the file headers (nothing is decoded).
    """
    area, chars = 0, 0
    for message in episode.get("messages") or []:
        content = message.get("content") or []
        if isinstance(content, str):
            chars += len(content)
            continue
        for part in content:
            if part.get("type") == "image":
                width, height = image_size(Path(results_root) / part["path"])
                area += width * height
            elif part.get("type") == "text":
                chars += len(part.get("text") or "")
    return area, chars


def by_prompt_size(episodes: Sequence[Mapping[str, Any]], results_root: str | os.PathLike[str]) -> list[int]:
    """The episode indices sorted by `prompt_size_key` (ties keep episode order: deterministic)."""
    keys = [prompt_size_key(ep, results_root) for ep in episodes]
    return sorted(range(len(episodes)), key=lambda i: (keys[i], i))


class HFEngine(Engine):
    """transformers `generate` with hooks, one request after the other."""

    name = "hf"

    def __init__(self, loaded: LoadedModel, batch_size: int = 8) -> None:
        self.loaded = loaded
        self.batch_size = int(batch_size)
        self.adapter = loaded.adapter
        self.model_id = loaded.model_id
        self.revision = loaded.revision
        self.n_layers = loaded.n_layers
        self.hidden_size = loaded.hidden_size

    @classmethod
    def open(
        cls,
        model_dir: str | os.PathLike[str],
        entry: Mapping[str, Any],
        generation: Mapping[str, Any],
        *,
        device: str = "auto",
    ) -> HFEngine:
        """Load `entry`'s model from `model_dir` (toolshift.models.loading.load_model)."""
        loaded = load_model(
            model_dir,
            entry["family"],
            revision=entry.get("revision"),
            dtype=entry.get("dtype", "float32"),
            device=device,
            trust_remote_code=entry.get("trust_remote_code", False),
        )
        return cls(loaded, batch_size=int(generation.get("batch_size", 8)))

    def generate(
        self,
        requests: Sequence[RunRequest],
        results_root: str | os.PathLike[str],
        *,
        max_new_tokens: int,
        progress: bool = False,
    ) -> list[RunResult]:
        results = []
        for request in requests:
            started = time.perf_counter()
            order = by_prompt_size(request.episodes, results_root)
            table, states = generate(
                self.loaded,
                [request.episodes[i] for i in order],
                results_root,
                batch_size=self.batch_size,
                max_new_tokens=max_new_tokens,
                capture=request.capture,
                intervention=request.intervention,
                progress=progress,
            )
            back = np.argsort(np.asarray(order, dtype=np.int64), kind="stable")
            table = table.iloc[back].reset_index(drop=True)
            if states is not None:
                states = states[back]
            results.append(RunResult(table=table, states=states, engine=self.name))
            log.info(
                "%s: %d episodes, %d new tokens in %.1f s",
                request.name,
                len(table),
                int(table["n_new_tokens"].sum()),
                time.perf_counter() - started,
            )
        return results


def as_engine(model: Engine | LoadedModel, batch_size: int = 8) -> Engine:
    """`model` itself if it is an engine, else the `hf` engine over a loaded model."""
    return model if isinstance(model, Engine) else HFEngine(model, batch_size=batch_size)
