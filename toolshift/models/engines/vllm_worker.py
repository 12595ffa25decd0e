"""What runs inside vLLM's worker for the `vllm` engine (called through
toolshift.models.engines.vllm_extension).

Capture: a forward hook on every decoder layer keeps, for each request whose `SamplingParams.extra_args`
carries a CAPTURE_KEY, the residual stream (vLLM's fused `hidden + residual`) at the last prompt token and
nothing else. The token's row in a forward pass is found from the runner's own bookkeeping (tokens computed
before this step, prompt length, the step's query offsets), so it does not matter how the prompt was split
into chunks, batched with other requests, or recomputed after a preemption. These hooks are registered
after vllm-lens's, so they see the stream with any steering or hook of the request applied, as the HF
engine's capture does.

Interventions use vllm-lens itself (toolshift.models.engines.vllm): `SteeringVector` for `add`, a pre- and a
post-`Hook` with `ProjectOut` on every layer for `ablate`.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import numpy as np

CAPTURE_KEY = "toolshift_capture"
"""The `extra_args` key whose value names a request's captured states (any string)."""


class ProjectOut:
    """A vllm-lens hook function: remove the component along a unit direction, computed in float32
    (the same arithmetic as toolshift.models.hooks.ablate_direction)."""

    def __init__(self, direction: np.ndarray) -> None:
        d = np.asarray(direction, dtype=np.float32)
        self.unit = d / np.float32(np.linalg.norm(d))
        self._cache: dict[Any, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"unit": self.unit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.unit = state["unit"]
        self._cache = {}

    def __call__(self, ctx: Any, hidden: Any) -> Any:
        import torch

        u = self._cache.get(hidden.device)
        if u is None:
            u = self._cache[hidden.device] = torch.as_tensor(self.unit).to(hidden.device)
        h32 = hidden.to(torch.float32)
        return (h32 - (h32 @ u).unsqueeze(-1) * u).to(hidden.dtype)


class CaptureStore:
    """The captured rows of one worker: {capture key: {layer index: (hidden,) float32 tensor}}."""

    def __init__(self) -> None:
        self.data: dict[str, dict[int, Any]] = {}
        self._step: Any = None
        self._rows: list[tuple[str, int]] = []

    def rows(self, worker: Any) -> list[tuple[str, int]]:
        """(key, row in this forward pass) of the capturing requests whose last prompt token is in it."""
        from vllm.forward_context import get_forward_context, is_forward_context_available

        if not is_forward_context_available():
            return []
        context = get_forward_context()
        if context is self._step:
            return self._rows
        self._step, self._rows = context, []
        runner = worker.model_runner
        batch = runner.input_batch
        n_reqs = batch.num_reqs
        if n_reqs == 0:
            return self._rows
        # only requests still in their prompt can hold their last prompt token in this step
        done = np.asarray(batch.num_computed_tokens_cpu[:n_reqs])
        prompt = np.asarray(batch.num_prompt_tokens[:n_reqs])
        prefilling = np.flatnonzero(done < prompt)
        if prefilling.size == 0:
            return self._rows
        starts = _query_start_loc(context)
        if starts is None:
            return self._rows
        starts = [int(x) for x in starts[: n_reqs + 1].tolist()]
        for i in prefilling.tolist():
            state = runner.requests.get(batch.req_ids[i])
            params = getattr(state, "sampling_params", None)
            key = (getattr(params, "extra_args", None) or {}).get(CAPTURE_KEY)
            if key is None:
                continue
            last = int(prompt[i]) - 1 - int(done[i])
            if last < starts[i + 1] - starts[i]:
                self._rows.append((str(key), starts[i] + last))
        return self._rows


def _query_start_loc(context: Any) -> Any:
    """The step's query offsets per request (as vllm-lens finds them in the attention metadata)."""
    metadata = context.attn_metadata
    if isinstance(metadata, list):
        metadata = metadata[0] if metadata else None
    if metadata is None:
        return None
    values = metadata.values() if isinstance(metadata, dict) else [metadata]
    for item in values:
        starts = getattr(item, "query_start_loc", None)
        if starts is not None:
            return starts.cpu() if hasattr(starts, "cpu") else starts
    return None


def _capture_hook(worker: Any, layer_index: int) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        if not getattr(worker, "_should_capture", True):  # tensor-parallel ranks > 0: rank 0 captures
            return None
        store: CaptureStore = worker._toolshift_capture
        rows = store.rows(worker)
        if not rows:
            return None
        import torch

        index = torch.tensor([row for _, row in rows], dtype=torch.long)
        if isinstance(output, tuple):
            hidden = output[0].index_select(0, index.to(output[0].device))
            if len(output) > 1 and output[1] is not None:
                hidden = hidden + output[1].index_select(0, index.to(output[1].device))
        else:
            hidden = output.index_select(0, index.to(output.device))
        hidden = hidden.detach().to(torch.float32).cpu()
        for (key, _), state in zip(rows, hidden, strict=True):
            store.data.setdefault(key, {})[layer_index] = state
        return None

    return hook


class HookErrors(logging.Handler):
    """Keeps the warnings vllm-lens logs when one of its hooks fails: it skips the hook and goes on, which
    would leave a run unsteered or unablated without an error. `generate` raises on them instead."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 5:
            info = f" ({record.exc_info[1]!r})" if record.exc_info and record.exc_info[1] else ""
            self.messages.append(record.getMessage() + info)


# --------------------------------------------------------------------------- the extension's methods


def install(worker: Any) -> list[int]:
    """Install vllm-lens's hooks, then the capture hooks after them (idempotent); the decoder layer indices
    found on this worker."""
    from vllm_lens._worker_ext import _discover_layer_modules

    worker.install_hooks()
    layers = _discover_layer_modules(worker)
    if getattr(worker, "_toolshift_capture", None) is None:
        worker._toolshift_errors = HookErrors()
        logging.getLogger("vllm_lens._worker_ext").addHandler(worker._toolshift_errors)
        worker._toolshift_capture = CaptureStore()
        for index, layer in sorted(layers.items()):
            layer.register_forward_hook(_capture_hook(worker, index))
    return sorted(layers)


def pop_captured(worker: Any, keys: list[str]) -> bytes:
    """The captured states of `keys`, removed from the store: pickled {key: {layer: float32 array}}.

    Only ranks that capture answer (vllm-lens captures on tensor-parallel rank 0; pipeline stages each
    answer for their own layers).
    """
    store: CaptureStore = worker._toolshift_capture
    out: dict[str, dict[int, np.ndarray]] = {}
    for key in keys:
        layers = store.data.pop(key, None)
        if layers is not None:
            out[key] = {index: state.numpy() for index, state in layers.items()}
    return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)


def reset(worker: Any, steering_keys: list[str], hook_keys: list[str]) -> list[str]:
    """Drop what one `generate` call left on the worker: its steering vectors, hooks, hook contexts and any
    captured state not collected (a failed call). Returns the vllm-lens hook errors logged since the last
    reset (empty when every hook ran)."""
    for key in steering_keys:
        worker.clear_steering_data(key)
    for key in hook_keys:
        worker.clear_hook_data(key)
    worker._hook_contexts = {}
    store = getattr(worker, "_toolshift_capture", None)
    if store is not None:
        store.data.clear()
        store._step, store._rows = None, []
    errors = getattr(worker, "_toolshift_errors", None)
    if errors is None:
        return []
    messages, errors.messages = errors.messages, []
    return messages
