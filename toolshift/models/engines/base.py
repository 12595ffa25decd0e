"""What every inference engine offers: many runs (conditions or interventions) through one loaded model.

A job opens one engine for a (model, dataset, shard) and hands it `RunRequest`s: the episodes of one run,
whether to capture the residual stream at the last prompt token, and the intervention hook (if any).
`Engine.generate` returns one `RunResult` per request, in order: the GENERATION_COLUMNS table (one row per
episode, in episode order) and, if captured, the states (n_episodes, n_layers, hidden) float32. An engine
may batch requests together (vLLM batches all of them continuously); its results do not depend on it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from toolshift.models.adapters import FamilyAdapter
from toolshift.models.hooks import ResidualEdit

ENGINES: tuple[str, ...] = ("hf", "vllm")
"""The engines `generation.engine` (or a model entry's `engine`) can name."""


@dataclass
class RunRequest:
    """One run of a job: `name` (a condition or an intervention id), its episodes, capture or not, hook."""

    name: str
    episodes: list[dict[str, Any]]
    capture: bool = False
    intervention: ResidualEdit | None = None


@dataclass
class RunResult:
    """What an engine returns for one RunRequest: the generation table, the states and the engine name."""

    table: pd.DataFrame
    states: np.ndarray | None
    engine: str
    info: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """A loaded model that generates for many runs. Subclasses: HFEngine, VLLMEngine."""

    name: ClassVar[str]
    adapter: FamilyAdapter
    model_id: str
    revision: str
    n_layers: int
    hidden_size: int

    @abstractmethod
    def generate(
        self,
        requests: Sequence[RunRequest],
        results_root: str | os.PathLike[str],
        *,
        max_new_tokens: int,
        progress: bool = False,
    ) -> list[RunResult]:
        """Greedy generation for every request (see the module docstring)."""

    def supports(self, intervention: ResidualEdit | None) -> bool:
        """Whether this engine can apply `intervention` exactly (otherwise the run falls back to `hf`)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional: engines without resources to release keep it
        """Release the model (and any worker process)."""
