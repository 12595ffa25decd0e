"""Residual-stream hooks on the text decoder: capture, add a vector, ablate a direction.

"Residual stream after layer l" is the hidden state a decoder layer returns (before the model's final
norm). Decoder layers in transformers 5.x return a tensor (4.x returned a tuple whose first element is
the hidden state); every hook here accepts both. Intervention hooks are registered with `prepend=True`
so they run before any other forward hook on the same layer (transformers' own `output_hidden_states`
recorder, or `capture_last_token`), which therefore see the intervened stream. All hooks are removed when
the context exits, also on error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolshift.errors import ConfigError

INTERVENTION_KINDS = ("add", "ablate")


@dataclass
class ResidualEdit:
    """An edit of the residual stream that forward hooks apply during generation (an intervention run's
    hook; toolshift.analysis.steering.residual_edit makes it from an intervention spec).

    `add`: add `alpha * vector` to the output of decoder layer `layer` at every position.
    `ablate`: remove the component along `vector / |vector|` from the residual stream at every layer
    (`layer` is ignored and may be None).
    """

    kind: str
    layer: int | None
    vector: np.ndarray
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in INTERVENTION_KINDS:
            kinds = ", ".join(INTERVENTION_KINDS)
            raise ConfigError(f"intervention kind {self.kind!r} is not one of {kinds}")
        self.vector = np.asarray(self.vector, dtype=np.float32)
        if self.vector.ndim != 1 or not np.all(np.isfinite(self.vector)):
            shape = self.vector.shape
            raise ConfigError(f"intervention vector must be a finite 1-d array, got shape {shape}")
        if self.kind == "add" and self.layer is None:
            raise ConfigError("intervention kind 'add' needs a layer")


# --------------------------------------------------------------------------- helpers


def _layers(loaded: Any) -> Any:
    return loaded.adapter.decoder_layers(loaded.model)


def _hidden(output: Any) -> Any:
    """The hidden-state tensor of a decoder layer's output (a tensor in 5.x, a tuple in 4.x)."""
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: Any) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _as_tensor(vector: Any, hidden_size: int, what: str) -> Any:
    import torch

    v = torch.as_tensor(np.asarray(vector, dtype=np.float32))
    if v.shape != (hidden_size,):
        raise ConfigError(f"{what} must have shape ({hidden_size},), got {tuple(v.shape)}")
    return v


def _check_layer(layer: int, n_layers: int) -> int:
    if not isinstance(layer, int | np.integer) or not -n_layers <= int(layer) < n_layers:
        raise ConfigError(f"layer {layer!r} is out of range for a decoder with {n_layers} layers")
    return int(layer) % n_layers


@contextmanager
def _registered(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- capture


class LastTokenStore:
    """Residual-stream states at the last prompt position, one record per prefill pass.

    A prefill pass is a forward pass whose sequence length is > 1 (the first forward of `generate`;
    the cached decoding steps have length 1 and are ignored). The last position is the last prompt
    token because batches are left-padded.
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.records: list[np.ndarray] = []
        self._current: list[np.ndarray | None] = [None] * n_layers

    def _record(self, index: int, hidden: Any) -> None:
        if hidden.dim() != 3 or hidden.shape[1] <= 1:
            return
        if index == 0:
            self._current = [None] * self.n_layers
        self._current[index] = hidden[:, -1, :].detach().float().cpu().numpy()
        if index == self.n_layers - 1:
            if any(x is None for x in self._current):
                raise RuntimeError("capture_last_token: a decoder layer was skipped in a prefill pass")
            self.records.append(np.stack(self._current, axis=1))  # type: ignore[arg-type]
            self._current = [None] * self.n_layers

    def array(self) -> np.ndarray:
        """All recorded passes concatenated on the batch axis: (batch, n_layers, hidden) float32."""
        if not self.records:
            raise RuntimeError("capture_last_token recorded no prefill pass")
        return np.concatenate(self.records, axis=0)

    def clear(self) -> None:
        self.records.clear()


@contextmanager
def capture_last_token(loaded: Any) -> Iterator[LastTokenStore]:
    """Record every decoder layer's output at the last prompt position on each prefill pass."""
    layers = _layers(loaded)
    store = LastTokenStore(len(layers))
    handles = []
    for i, layer in enumerate(layers):

        def hook(module: Any, args: Any, output: Any, i: int = i) -> None:
            store._record(i, _hidden(output))

        handles.append(layer.register_forward_hook(hook))
    with _registered(handles):
        yield store


# --------------------------------------------------------------------------- interventions


@contextmanager
def add_vector(loaded: Any, layer: int, vector: Any, alpha: float = 1.0) -> Iterator[None]:
    """Add `alpha * vector` to decoder layer `layer`'s output at every position (prompt and generated)."""
    layers = _layers(loaded)
    index = _check_layer(layer, len(layers))
    v = _as_tensor(vector, loaded.hidden_size, "add_vector vector") * float(alpha)

    def hook(module: Any, args: Any, output: Any) -> Any:
        h = _hidden(output)
        return _replace_hidden(output, h + v.to(device=h.device, dtype=h.dtype))

    with _registered([layers[index].register_forward_hook(hook, prepend=True)]):
        yield


@contextmanager
def ablate_direction(loaded: Any, direction: Any) -> Iterator[None]:
    """Remove the component along unit(`direction`) from the residual stream at every layer.

    Arditi et al.-style directional ablation on the states between layers: the input and the output of
    every decoder layer, at every position. Projecting every layer's input too matters for families
    that add features to the stream between layers (Qwen3-VL's deepstack visual features). The state
    inside a layer, between its attention and MLP blocks, is not touched. Computed in float32.
    """
    import torch

    layers = _layers(loaded)
    d = _as_tensor(direction, loaded.hidden_size, "ablation direction")
    norm = float(torch.linalg.vector_norm(d))
    if not norm > 0:
        raise ConfigError("ablation direction has zero norm")
    d = d / norm

    def project_out(h: Any) -> Any:
        u = d.to(device=h.device)
        h32 = h.to(torch.float32)
        return (h32 - (h32 @ u).unsqueeze(-1) * u).to(h.dtype)

    def pre_hook(module: Any, args: Any, kwargs: Any) -> Any:
        if args:
            return (project_out(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = project_out(kwargs["hidden_states"])
        return args, kwargs

    def hook(module: Any, args: Any, output: Any) -> Any:
        return _replace_hidden(output, project_out(_hidden(output)))

    handles = [layer.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True) for layer in layers]
    handles += [layer.register_forward_hook(hook, prepend=True) for layer in layers]
    with _registered(handles):
        yield


def apply_intervention(loaded: Any, intervention: ResidualEdit | None) -> Any:
    """The context manager that applies `intervention` (a no-op context for None)."""
    if intervention is None:
        return nullcontext()
    if intervention.kind == "add":
        assert intervention.layer is not None
        return add_vector(loaded, intervention.layer, intervention.vector, intervention.alpha)
    return ablate_direction(loaded, intervention.vector)
