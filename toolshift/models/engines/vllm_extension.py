"""The vLLM worker extension of the `vllm` engine: vllm-lens's, plus toolshift's capture (vllm_worker).

Named by its import path in `vllm.LLM(worker_extension_cls=...)`; vLLM mixes it into its worker class, so
`LLM.collective_rpc("toolshift_...")` calls these methods by name in every worker, also when the engine
core runs in another process (no function is pickled). Importing this module imports vLLM.
"""

from __future__ import annotations

from vllm_lens._worker_ext import HiddenStatesExtension

from toolshift.models.engines import vllm_worker


class ToolshiftWorkerExtension(HiddenStatesExtension):
    """vllm-lens's worker extension with toolshift's capture methods."""

    def toolshift_install(self) -> list[int]:
        """vllm_worker.install on this worker."""
        return vllm_worker.install(self)

    def toolshift_pop_captured(self, keys: list[str]) -> bytes:
        """vllm_worker.pop_captured on this worker."""
        return vllm_worker.pop_captured(self, keys)

    def toolshift_reset(self, steering_keys: list[str], hook_keys: list[str]) -> list[str]:
        """vllm_worker.reset on this worker."""
        return vllm_worker.reset(self, steering_keys, hook_keys)
