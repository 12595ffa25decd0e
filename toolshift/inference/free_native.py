"""The `free` loop of the families in their own tool protocol (`toolshift.models.adapters.native`).

`toolshift.inference.free_loop.run_free_episodes` hands a native family's episodes here. Each turn (1 ..
`max_turns`) the step function generates one assistant turn per running episode; the family's adapter reads
it as its own evaluation reads it (`read_turn`: `<tool_call>` JSON, `<grounding>` JSON, Python in `<code>`,
JSON actions) and then, per episode:

- **no call** (`final`): the turn's text is the response; `stop_reason` `answer`.
- **calls, malformed blocks or a re-ask** and `turn < max_turns`: the turn is appended as the model wrote it
  (a `verbatim` assistant turn, its calls in structured form as `tool_calls` for the record), then each
  call runs in the family's own tool (`execute`: its crop post-processing, or its code in the package's
  interpreter, never executed), and its result is appended as a `tool` turn with an `observation` record
  (text, error, tool round, tool) whose images are written as PNG under `images_dir`, which the adapter
  renders in the family's own form. A call the tool cannot run (and a block that cannot be read) is
  malformed, with its reason, and is answered as the original answers it (`on_malformed`: an error text, a
  fallback image); where the original stops instead, the episode ends with `stop_reason` `malformed`. A
  re-ask (OpenThinkIMG's answer to a turn without an action) is appended as a user turn.
- otherwise (`turn == max_turns`): the turn's text is the response; `stop_reason` `max_turns`.

Counts follow the generic loop: `n_tool_calls` the calls the tool ran (and those of a last turn, not run),
`n_malformed_calls` the malformed blocks and refused calls, `n_turns` the assistant turns. The transcript
records per turn the raw text, the calls (as written, in structured form with the box in pixels of the
attack image where the call has one, and whether it follows a closed `</answer>`), the malformed blocks
with their reasons, and the images returned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.datasets.images import load_image, save_png
from toolshift.episodes.toolcalls import MalformedCall
from toolshift.errors import ContractError
from toolshift.models.adapters.native import CallRejected, NativeAdapter, Observation, Session, WrittenCall


def crop_relpath(images_dir: str, prompt_id: str, turn: int, index: int) -> str:
    """Where the image `index` (0-based) returned in assistant turn `turn` (1-based) of a free episode lies,
    relative to the results root (the generic loop's crops too)."""
    return f"{images_dir.rstrip('/')}/{prompt_id}_free_t{turn}_c{index}.png"


@dataclass
class _Run:
    episode: dict[str, Any]
    session: Session
    messages: list[dict[str, Any]]
    turns: list[dict[str, Any]] = field(default_factory=list)
    n_tool_calls: int = 0
    n_malformed: int = 0
    response: str | None = None
    stop_reason: str | None = None

    def view(self) -> dict[str, Any]:
        return {**self.episode, "messages": list(self.messages)}

    def finish(self, text: str, reason: str) -> None:
        self.response, self.stop_reason = text, reason
        self.messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": text}], "verbatim": True}
        )


def _question(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """The attack image's path and the question text of a free episode's user turn."""
    for message in messages:
        if message.get("role") != "user":
            continue
        parts = message.get("content") or []
        images = [p["path"] for p in parts if p.get("type") == "image"]
        texts = [p["text"] for p in parts if p.get("type") == "text"]
        if images:
            return images[0], texts[-1] if texts else ""
    raise ContractError("a free episode needs an image in its user turn")


def _start(episode: dict[str, Any], adapter: NativeAdapter, root: Path) -> _Run:
    messages = episode.get("messages")
    where = f"episode {episode.get('prompt_id')}/{episode.get('condition')}"
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        raise ContractError(f"{where}: a free episode must end with a user turn")
    meta = episode.get("meta") or {}
    if not meta.get("tools"):
        raise ContractError(f"{where}: a free episode needs meta.tools naming at least one tool")
    path, question = _question(messages)
    original = load_image(root / path)
    session = adapter.session(original, meta, path)
    session.question = question
    return _Run(episode=episode, session=session, messages=list(messages))


def _tool_message(
    adapter: NativeAdapter, obs: Observation, turn_round: int, paths: list[str], root: Path
) -> dict:
    for image, rel in zip(obs.images, paths, strict=True):
        save_png(image, root / rel)
    record = {"text": obs.text, "error": obs.error, "turn": turn_round, "tool": obs.tool}
    content = [{"type": "image", "path": rel} for rel in paths]
    return {"role": "tool", "name": adapter.tool_name, "content": content, "observation": record}


def _call_record(adapter: NativeAdapter, call: WrittenCall, session: Session) -> dict[str, Any]:
    return {
        **adapter.structured(call, session),
        "written": {"name": call.name, "arguments": dict(call.arguments)},
        "after_answer": call.after_answer,
    }


def _round(
    run: _Run, adapter: NativeAdapter, read: Any, text: str, root: Path, images_dir: str, turn: int
) -> dict:
    """Run a turn's calls (and answer its malformed blocks): append the assistant turn and the tool turns."""
    session = run.session
    answers: list[Observation] = []
    calls: list[dict[str, Any]] = []
    malformed: list[MalformedCall] = list(read.malformed)
    stop = False
    for call in read.calls:
        try:
            answers.append(adapter.execute(call, session))
            calls.append(_call_record(adapter, call, session))
            run.n_tool_calls += 1
        except CallRejected as exc:
            reason = " ".join(str(exc).split()) or "the call was rejected"
            malformed.append(MalformedCall(reason, call.text[:200]))
            fallback = adapter.on_malformed(reason, call, session)
            stop = stop or fallback is None
            if fallback is not None:
                answers.append(fallback)
    for block in read.malformed:
        fallback = adapter.on_malformed(block.reason, None, session)
        stop = stop or fallback is None
        if fallback is not None:
            answers.append(fallback)
    run.n_malformed += len(malformed)
    record = {
        "turn": turn,
        "text": text,
        "calls": calls,
        "malformed": [m.to_dict() for m in malformed],
        "truncated": False,
        "images": [],
    }
    if stop:
        run.finish(text, "malformed")
        return record
    structured = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
    assistant = {"role": "assistant", "content": [{"type": "text", "text": text}], "verbatim": True}
    if structured:
        assistant["tool_calls"] = structured
    run.messages.append(assistant)
    prompt_id = str(run.episode["prompt_id"])
    for obs in answers:
        first = len(record["images"])
        paths = [crop_relpath(images_dir, prompt_id, turn, first + i) for i in range(len(obs.images))]
        run.messages.append(_tool_message(adapter, obs, session.turn, paths, root))
        record["images"].extend(paths)
    if read.reprompt is not None:
        run.messages.append(
            {"role": "user", "content": [{"type": "text", "text": read.reprompt}], "loop": True}
        )
    session.turn += 1
    return record


def _unrun(turn: int, text: str, read: Any) -> dict[str, Any]:
    """The record of a turn whose calls are not run (an answer, or a last turn)."""
    calls = [
        {"written": {"name": c.name, "arguments": dict(c.arguments)}, "after_answer": c.after_answer}
        for c in read.calls
    ]
    malformed = [m.to_dict() for m in read.malformed]
    return {
        "turn": turn,
        "text": text,
        "calls": calls,
        "malformed": malformed,
        "truncated": False,
        "images": [],
    }


def run_native_episodes(
    step_fn: Any,
    episodes: list[dict[str, Any]],
    results_root: Any,
    *,
    images_dir: str,
    max_turns: int,
    adapter: NativeAdapter,
    columns: tuple[str, ...],
) -> pd.DataFrame:
    """The loop of the module docstring; one row per episode with `columns` (free_loop.LOOP_COLUMNS)."""
    root = Path(results_root)
    runs = [_start(ep, adapter, root) for ep in episodes]
    for turn in range(1, max_turns + 1):
        active = [r for r in runs if r.stop_reason is None]
        if not active:
            break
        for run, text in zip(active, step_texts(step_fn, active), strict=True):
            read = adapter.read_turn(text, run.session)
            acting = bool(read.calls or read.malformed or read.reprompt is not None)
            if not acting or turn == max_turns:
                run.n_tool_calls += len(read.calls)
                run.n_malformed += len(read.malformed)
                run.turns.append(_unrun(turn, text, read))
                run.finish(text, "max_turns" if acting else "answer")
            else:
                run.turns.append(_round(run, adapter, read, text, root, images_dir, turn))
    return loop_frame(runs, columns)


def loop_frame(runs: Any, columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per finished episode of a `free` loop (this module's or free_loop's: both keep `episode`,
    `messages`, `turns`, `response`, the call counts and `stop_reason`), with `columns`
    (free_loop.LOOP_COLUMNS); the transcript as JSON."""
    rows = []
    for run in runs:
        transcript = {"messages": run.messages, "turns": run.turns}
        rows.append(
            {
                "prompt_id": str(run.episode["prompt_id"]),
                "condition": str(run.episode.get("condition", "free")),
                "response": run.response,
                "n_tool_calls": run.n_tool_calls,
                "n_malformed_calls": run.n_malformed,
                "n_turns": len(run.turns),
                "used_tool": run.n_tool_calls > 0,
                "stop_reason": run.stop_reason,
                "transcript": json.dumps(transcript, ensure_ascii=False, sort_keys=True),
            }
        )
    return pd.DataFrame(rows, columns=list(columns))


def step_texts(step_fn: Any, active: list[Any]) -> list[str]:
    """One model step of a `free` loop: `step_fn` on the active episodes' views, checked to return one
    string per episode."""
    texts = step_fn([episode.view() for episode in active])
    if not isinstance(texts, list) or len(texts) != len(active):
        got = len(texts) if isinstance(texts, list) else type(texts).__name__
        raise ContractError(f"free loop: step_fn returned {got} texts for {len(active)} episodes")
    for text in texts:
        if not isinstance(text, str):
            raise ContractError(f"free loop: step_fn returned a {type(text).__name__}, not a str")
    return texts
