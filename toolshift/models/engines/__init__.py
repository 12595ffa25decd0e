"""Inference engines: one loaded model serves every run of a job (conditions or interventions).

`hf` (toolshift.models.engines.hf) is the reference: transformers `generate` with forward hooks for capture
and interventions. `vllm` (toolshift.models.engines.vllm) runs the same requests through a vLLM engine with
continuous batching, capture and steering through vllm-lens; it lives in its own Python environment (`make
vllm-env`, or `envs/vllm.yml` under conda), and `toolshift.models.engines.environment` finds it. Both return
the same tables and states (tests/test_vllm_engine.py checks them against each other).
"""

from toolshift.models.engines.base import ENGINES, Engine, RunRequest, RunResult
from toolshift.models.engines.loader import open_engine

__all__ = ["ENGINES", "Engine", "RunRequest", "RunResult", "open_engine"]
