"""The `free` condition: a bounded multi-turn loop in which the model decides whether to call the tool.

An episode of condition `free` is system (+ meta.tools) and user [I, T]. For every episode still
running, each turn (1 .. `max_turns`) the step function generates one assistant turn (batched over the
episodes), and `toolshift.episodes.toolcalls.parse_tool_calls` reads the tool calls in it (JSON only, never
evaluated). Then, per episode:

- **valid call(s)** and `turn < max_turns`: the assistant turn is appended in structured form (its
  text outside the call blocks as content, the parsed calls in the episode's form, `zoom_in` with a
  clamped pixel box, as `tool_calls`: the adapter renders them back in the family's form), then
  one `tool` turn per call holding `zoom(I, bbox)` (the same zoom the `tool` condition shows: the crop of
  the *original* image, enlarged by the episode's `meta.zoom_resize`, the config's `episodes.zoom_resize`
  that the scripted conditions use), and the loop goes on. Malformed blocks in the same
  turn are recorded and dropped from the conversation.
- **no valid call** (plain answer, or only malformed calls): the turn's full text is the final
  response; `stop_reason` is `answer`, or `malformed` if the turn held malformed calls. A malformed call
  is never fatal and never retried: the model is not told it erred, so the text it wrote is its answer.
- **valid call(s) at turn `max_turns`**: the loop stops without running them; the turn's text is the
  final response and `stop_reason` is `max_turns`.

Families in their own tool protocol (`toolshift.models.adapters.NATIVE_FAMILIES`: Chain-of-Focus, Mini-o3,
Pixel-Reasoner, Thyme, DeepEyesV2, OpenThinkIMG) run the same bounded loop in
`toolshift.inference.free_native`: their calls are read, run and answered as each family's own evaluation
does (model-written code is never executed).

Family tool formats: the calls are read as the model family writes them, through its adapter
(`toolshift.models.adapters`). A call is accepted only under a tool name the adapter showed the model
(`shown_tool_names`: `zoom_in` for the Hermes families, `image_zoom_in_tool` for DeepEyes and
Qwen3-VL), and every accepted call is mapped back by `adapter.episode_call` (`episode_mapper`), e.g.
Qwen3-VL's relative 0-1000 `bbox_2d` to pixels of I, before its box is checked and clamped to I. A call
under a name the model was not shown (Hermes `zoom_in` for Qwen3-VL) is malformed, as is a call that
asks to zoom into an image other than I (`img_idx` other than 0: Qwen-Agent's tool would crop an
earlier crop, which the loop does not do); a call without `img_idx` zooms into I. Which box key a
family's tool takes is its adapter's `episode_call`: Qwen3-VL's `image_zoom_in_tool` needs `bbox_2d`
(as Qwen-Agent's tool does; a `bbox` is malformed), DeepEyes' takes `bbox_2d` or `bbox`, and the Hermes
families' `zoom_in` either, kept under the key the model wrote.

Counts: `n_tool_calls` is the number of valid calls the model wrote over the episode (including those
of a last turn that hit `max_turns`, which are not run); `n_malformed_calls` the malformed blocks;
`n_turns` the assistant turns generated; `used_tool` is `n_tool_calls > 0`. `transcript` is a JSON
string: `{"messages": the whole conversation, final assistant turn included, "turns": per turn the raw
text, the parsed calls (each as written, in the episode's form with its box in pixels before and after
clamping), the malformed blocks with their reasons and the
crop paths}`.

Crops are written to disk (atomically, as PNG) at `{images_dir}/{prompt_id}_free_t{turn}_c{k}.png`,
relative to the results root, so that the adapters render them like any other image part and the
transcript points at the exact pixels the model saw. `images_dir` is given by the caller because the
crops depend on the model (each model picks its own boxes): the runner puts them in the run directory,
`runs/{model}/{dataset}/free/images`, never in the model-agnostic `episodes/` tree.

Activation capture (`model_step_fn(..., capture=True)`): the residual stream after every decoder layer
at the last prompt token of the **first** turn, i.e. the state on the prompt (system + tool spec + user
[I, T]) just before the model decides whether to call the tool. Later turns are not captured.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolshift.contracts import FREE_COLUMNS, TOKEN_COLUMNS
from toolshift.datasets.images import load_image, save_png, zoom
from toolshift.episodes.toolcalls import MAX_CALLS, CallRejected, EpisodeMapper, ParseResult, parse_tool_calls
from toolshift.errors import ConfigError, ContractError
from toolshift.inference.free_native import crop_relpath, loop_frame, run_native_episodes, step_texts
from toolshift.models.adapters import FamilyAdapter, NativeAdapter
from toolshift.models.generation import GENERATION_COLUMNS

DEFAULT_ZOOM_RESIZE: str = "longer_side"
"""How a crop is enlarged when the episode's meta names no `zoom_resize` (an episode written before the
`free` episodes recorded it): `toolshift.datasets.images.zoom`'s default."""

DEFAULT_MAX_TURNS: int = 4
"""Default bound on the assistant turns of a `free` episode (config `free.max_turns`)."""

STOP_REASONS: tuple[str, ...] = ("answer", "malformed", "max_turns")
"""Why a `free` episode ended (see the module docstring)."""


LOOP_COLUMNS: tuple[str, ...] = ("prompt_id", "condition", "response") + FREE_COLUMNS
COUNT_COLUMNS: tuple[str, ...] = ("n_prompt_tokens", "n_new_tokens", *TOKEN_COLUMNS)
"""The token counts a free row takes from its final turn."""
"""The columns `run_free_episodes` returns."""

StepFn = Callable[[list[dict[str, Any]]], list[str]]
"""Generates one assistant turn for each episode of a batch (episodes whose messages end in a user or
tool turn); returns the generated texts in the same order."""


@dataclass
class _Episode:
    episode: dict[str, Any]
    image_path: str
    tools: frozenset[str]
    to_episode: EpisodeMapper
    messages: list[dict[str, Any]]
    turns: list[dict[str, Any]] = field(default_factory=list)
    n_tool_calls: int = 0
    n_malformed: int = 0
    response: str | None = None
    stop_reason: str | None = None

    def view(self) -> dict[str, Any]:
        """The episode with the conversation so far (what the step function renders)."""
        return {**self.episode, "messages": list(self.messages)}


def _tool_names(tools: list[Any]) -> frozenset[str]:
    """The function names of a tool spec list (`{"type": "function", "function": {...}}` or bare)."""
    names = set()
    for tool in tools:
        spec = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            names.add(spec["name"])
    return frozenset(names)


_PROBE_BBOX: list[int] = [0, 0, 1, 1]
"""The box of the probe call through which `shown_tool_names` asks an adapter for a tool's shown name."""


def shown_tool_names(adapter: FamilyAdapter, meta: dict[str, Any], where: str) -> frozenset[str]:
    """The tool names the adapter shows the model for the episode tools `meta.tools`.

    Each episode tool's name is the name under which the adapter renders a call to it (a probe call
    through `adapter.call_payload`), e.g. `image_zoom_in_tool` for DeepEyes' and Qwen3-VL's `zoom_in`;
    the adapter must map a call under that name back to the episode tool (`adapter.episode_call`), or
    ContractError. A tool the family cannot render raises the adapter's ConfigError.
    """
    names = _tool_names(meta.get("tools") or [])
    if not names:
        raise ContractError(f"{where}: a free episode needs meta.tools naming at least one tool")
    shown = set()
    for name in sorted(names):
        probe = {"name": name, "arguments": {"bbox": list(_PROBE_BBOX)}}
        payload = adapter.call_payload(probe, meta, where)
        back = adapter.episode_call(payload, meta)
        if back.get("name") != name:
            raise ContractError(
                f"{where}: family {adapter.family} shows tool {name!r} as {payload['name']!r} but maps "
                f"{payload['name']!r} back to {back.get('name')!r}"
            )
        shown.add(payload["name"])
    return frozenset(shown)


def episode_mapper(adapter: FamilyAdapter, meta: dict[str, Any]) -> EpisodeMapper:
    """The `toolshift.episodes.toolcalls` mapper of an episode: `adapter.episode_call(call, meta)` (the
    family's
    call as written -> the episode's `zoom_in` call, box in pixels of the attack image), rejecting a call
    that names an image other than the attack image (`img_idx` other than 0)."""

    def to_episode(call: dict[str, Any]) -> dict[str, Any]:
        episode = adapter.episode_call(call, meta)
        arguments = episode.get("arguments")
        index = arguments.get("img_idx", 0) if isinstance(arguments, dict) else 0
        if isinstance(index, bool) or not isinstance(index, numbers.Real) or index != 0:
            text = repr(index) if len(repr(index)) <= 40 else repr(index)[:40] + "..."
            raise CallRejected(f"img_idx {text}: only image 0, the attack image, can be zoomed into")
        return episode

    return to_episode


def _start(episode: dict[str, Any], adapter: FamilyAdapter, where: str) -> _Episode:
    messages = episode.get("messages")
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        raise ContractError(f"{where}: a free episode must end with a user turn")
    meta = episode.get("meta") or {}
    names = shown_tool_names(adapter, meta, where)
    images = [p["path"] for m in messages for p in m.get("content") or [] if p.get("type") == "image"]
    if not images:
        raise ContractError(f"{where}: a free episode needs an image in its user turn")
    return _Episode(
        episode=episode,
        image_path=images[0],
        tools=names,
        to_episode=episode_mapper(adapter, meta),
        messages=list(messages),
    )


def _image_size(state: _Episode, root: Path, sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """The attack image's size, checked against meta.image_size (the size the adapter converts with)."""
    if state.image_path not in sizes:
        sizes[state.image_path] = load_image(root / state.image_path).size
    size = sizes[state.image_path]
    declared = (state.episode.get("meta") or {}).get("image_size")
    if declared is not None and (not isinstance(declared, list | tuple) or list(declared) != list(size)):
        raise ContractError(
            f"episode {state.episode.get('prompt_id')}: meta.image_size {declared!r} is not the size "
            f"{list(size)} of its image {state.image_path}"
        )
    return size


def _finish(state: _Episode, text: str, reason: str) -> None:
    state.response = text
    state.stop_reason = reason
    state.messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})


def _run_calls(state: _Episode, parsed: ParseResult, root: Path, images_dir: str, turn: int) -> list[str]:
    """Append the structured assistant turn and one tool turn per call; return the crop paths."""
    content = [{"type": "text", "text": parsed.content}] if parsed.content else []
    state.messages.append(
        {"role": "assistant", "content": content, "tool_calls": [c.structured() for c in parsed.calls]}
    )
    original = load_image(root / state.image_path)
    mode = (state.episode.get("meta") or {}).get("zoom_resize") or DEFAULT_ZOOM_RESIZE
    paths = []
    for k, call in enumerate(parsed.calls):
        rel = crop_relpath(images_dir, str(state.episode["prompt_id"]), turn, k)
        save_png(zoom(original, call.bbox, mode=mode), root / rel)
        state.messages.append(
            {"role": "tool", "name": call.name, "content": [{"type": "image", "path": rel}]}
        )
        paths.append(rel)
    return paths


def run_free_episodes(
    step_fn: StepFn,
    episodes: list[dict[str, Any]],
    results_root: str | os.PathLike[str],
    *,
    images_dir: str,
    max_turns: int = DEFAULT_MAX_TURNS,
    max_calls_per_turn: int = MAX_CALLS,
    adapter: FamilyAdapter | None = None,
) -> pd.DataFrame:
    """Run the bounded tool loop (module docstring) for `episodes`; one row per episode (LOOP_COLUMNS).

    Each turn calls `step_fn` once with every episode still running, in input order. Crops are written
    under `results_root / images_dir`. `adapter` is the family whose tool format the model was shown and
    writes (the one `step_fn` renders with); None is the generic Hermes format (`zoom_in`, as written).
    """
    adapter = FamilyAdapter() if adapter is None else adapter
    if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
        raise ConfigError(f"free.max_turns must be an integer >= 1, got {max_turns!r}")
    root = Path(results_root)
    ids = [str(ep.get("prompt_id")) for ep in episodes]
    if len(set(ids)) != len(ids):
        raise ContractError("free episodes: duplicate prompt_id")
    if isinstance(adapter, NativeAdapter):  # a family in its own tool protocol
        return run_native_episodes(
            step_fn,
            episodes,
            root,
            images_dir=images_dir,
            max_turns=max_turns,
            adapter=adapter,
            columns=LOOP_COLUMNS,
        )
    states = [
        _start(ep, adapter, f"episode {pid}/{ep.get('condition')}")
        for ep, pid in zip(episodes, ids, strict=True)
    ]
    sizes: dict[str, tuple[int, int]] = {}
    for turn in range(1, max_turns + 1):
        active = [s for s in states if s.stop_reason is None]
        if not active:
            break
        for state, text in zip(active, step_texts(step_fn, active), strict=True):
            parsed = parse_tool_calls(
                text,
                _image_size(state, root, sizes),
                known_tools=state.tools,
                to_episode=state.to_episode,
                max_calls=max_calls_per_turn,
            )
            state.n_tool_calls += len(parsed.calls)
            state.n_malformed += len(parsed.malformed)
            record = {"turn": turn, "text": text, **parsed.to_dict(), "images": []}
            if parsed.calls and turn < max_turns:
                record["images"] = _run_calls(state, parsed, root, images_dir, turn)
            else:
                reason = "max_turns" if parsed.calls else "malformed" if parsed.malformed else "answer"
                _finish(state, text, reason)
            state.turns.append(record)
    return loop_frame(states, LOOP_COLUMNS)


class ModelStep:
    """A `StepFn` over an inference engine (toolshift.models.engines; a loaded HF model is wrapped in the `hf`
    engine): batched greedy generation of one assistant turn per episode.

    It keeps, per prompt_id, the token counts of the latest turn (`counts`) and, if `capture`, the
    residual stream at the last prompt token of the episode's first turn (`first_states`).
    """

    def __init__(
        self,
        model: Any,
        results_root: str | os.PathLike[str],
        max_new_tokens: int,
        *,
        batch_size: int = 8,
        capture: bool = True,
        intervention: Any = None,
        progress: bool = False,
    ) -> None:
        from toolshift.models.engines.hf import as_engine

        self.engine = as_engine(model, batch_size=batch_size)
        self.results_root = results_root
        self.max_new_tokens = max_new_tokens
        self.capture = capture
        self.intervention = intervention
        self.progress = progress
        self.first_states: dict[str, np.ndarray] = {}
        self.counts: dict[str, dict[str, int]] = {}

    def _generate(self, episodes: list[dict[str, Any]], capture: bool) -> tuple[pd.DataFrame, Any]:
        from toolshift.models.engines.base import RunRequest

        request = RunRequest("free", episodes, capture=capture, intervention=self.intervention)
        (result,) = self.engine.generate(
            [request], self.results_root, max_new_tokens=self.max_new_tokens, progress=self.progress
        )
        return result.table, result.states

    def __call__(self, episodes: list[dict[str, Any]]) -> list[str]:
        ids = [str(ep["prompt_id"]) for ep in episodes]
        first = [i for i, pid in enumerate(ids) if self.capture and pid not in self.first_states]
        later = sorted(set(range(len(episodes))) - set(first))
        texts: dict[int, str] = {}
        for indices, capture in ((first, True), (later, False)):
            if not indices:
                continue
            df, states = self._generate([episodes[i] for i in indices], capture)
            for j, i in enumerate(indices):
                texts[i] = str(df["response"].iloc[j])
                self.counts[ids[i]] = {c: int(df[c].iloc[j]) for c in COUNT_COLUMNS}
                if capture:
                    self.first_states[ids[i]] = states[j]
        return [texts[i] for i in range(len(episodes))]

    def states(self, prompt_ids: list[str]) -> np.ndarray:
        """The first-turn states of `prompt_ids`, stacked: (n, n_layers, hidden) float32."""
        if not prompt_ids:
            return np.zeros((0, self.engine.n_layers, self.engine.hidden_size), np.float32)
        missing = [p for p in prompt_ids if p not in self.first_states]
        if missing:
            raise ContractError(f"free loop: no first-turn state captured for prompt_id {missing[0]!r}")
        return np.stack([self.first_states[p] for p in prompt_ids]).astype(np.float32)


def model_step_fn(
    model: Any,
    results_root: str | os.PathLike[str],
    max_new_tokens: int,
    *,
    batch_size: int = 8,
    capture: bool = True,
    intervention: Any = None,
    progress: bool = False,
) -> ModelStep:
    """The step function of an engine or a loaded model (see ModelStep)."""
    return ModelStep(
        model,
        results_root,
        max_new_tokens,
        batch_size=batch_size,
        capture=capture,
        intervention=intervention,
        progress=progress,
    )


def run_free(
    model: Any,
    episodes: list[dict[str, Any]],
    results_root: str | os.PathLike[str],
    *,
    images_dir: str,
    max_turns: int = DEFAULT_MAX_TURNS,
    max_calls_per_turn: int = MAX_CALLS,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    capture: bool = True,
    intervention: Any = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """`generate`'s counterpart for `free` episodes: the tool loop on an engine (or a loaded HF model),
    whose calls are read in its family's tool format (`model.adapter`).

    Returns GENERATION_COLUMNS + FREE_COLUMNS (`response` is the final turn's text; `n_prompt_tokens`,
    `n_new_tokens` and TOKEN_COLUMNS are those of the final turn) and, if `capture`, the first-turn states
    (n_episodes, n_layers, hidden) float32 in episode order.
    """
    step = model_step_fn(
        model,
        results_root,
        max_new_tokens,
        batch_size=batch_size,
        capture=capture,
        intervention=intervention,
        progress=progress,
    )
    loop = run_free_episodes(
        step,
        episodes,
        results_root,
        images_dir=images_dir,
        max_turns=max_turns,
        max_calls_per_turn=max_calls_per_turn,
        adapter=step.engine.adapter,
    )
    ids = loop["prompt_id"].tolist()
    for column in COUNT_COLUMNS:
        loop[column] = [step.counts[p][column] for p in ids]
    loop["max_new_tokens"] = int(max_new_tokens)
    loop["do_sample"] = False
    table = loop[list(GENERATION_COLUMNS) + list(FREE_COLUMNS)]
    return table, (step.states(ids) if capture else None)
