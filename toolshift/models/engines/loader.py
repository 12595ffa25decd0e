"""Which engine a model entry runs on, and opening its model in that engine (`hf` or `vllm`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from toolshift.errors import ConfigError
from toolshift.models.engines.base import ENGINES, Engine


def engine_name(entry: Mapping[str, Any], generation: Mapping[str, Any]) -> str:
    """The engine of a model entry: its own `engine`, else `generation.engine`, else `hf`."""
    name = entry.get("engine") or generation.get("engine") or "hf"
    if name not in ENGINES:
        raise ConfigError(f"engine {name!r} is not one of {', '.join(ENGINES)}")
    return str(name)


def open_engine(
    name: str,
    model_dir: str | os.PathLike[str],
    entry: Mapping[str, Any],
    generation: Mapping[str, Any],
    *,
    device: str = "auto",
) -> Engine:
    """Load the model of `entry` from `model_dir` into engine `name` (`hf` or `vllm`)."""
    if name == "hf":
        from toolshift.models.engines.hf import HFEngine

        return HFEngine.open(model_dir, entry, generation, device=device)
    if name == "vllm":
        from toolshift.models.engines.vllm import VLLMEngine

        return VLLMEngine.open(model_dir, entry, generation, device=device)
    raise ConfigError(f"engine {name!r} is not one of {', '.join(ENGINES)}")
