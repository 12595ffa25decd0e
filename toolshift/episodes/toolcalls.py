"""Parse the tool calls a model writes into structured calls, safely.

The model-generated text of one assistant turn is scanned for Hermes / Qwen blocks
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (whitespace inside and around the tags is
tolerated: `< tool_call >`, `</ tool_call>`, newlines around the JSON). Each block's payload is read
with `json.loads` and nothing else: the text is data, never evaluated, imported or formatted.

A block becomes a `ToolCall` only if its payload is a JSON object with a string `name` that is one of
the known tools (the names the model was shown), and `arguments` that is an object (or a string holding
a JSON object) with exactly one box argument, `bbox` or `bbox_2d` (the DeepEyes / Qwen spelling), that is
a list of 4 finite JSON numbers (booleans and numeric strings are rejected); integers beyond +-2**53 are
first limited to that range, so a huge number is clamped, not an error. Every known tool is a zoom-style
tool that takes such a box.

The call as written is then mapped to the episode's call by `to_episode` (a model family's own tool, e.g.
Qwen3-VL's `image_zoom_in_tool` with a box in 0-1000 coordinates, becomes `zoom_in` with a box in pixels:
`toolshift.inference.free_loop.episode_mapper`); without one it is kept as written. The mapper only ever sees
a call whose box passed the checks above. It rejects a call by raising `CallRejected`; a KeyError, IndexError,
TypeError, ValueError or ArithmeticError it raises also makes the block malformed (the written call does not
fit the family's tool), while a `toolshift.errors` exception (a caller's bug, e.g. no image size) propagates.
The mapped call's box (in pixels of the image) is checked again as above and clamped to the image with
`toolshift.datasets.images.clamp_bbox`: corners ordered, rounded outward to integers, kept inside the image
and at least 1 pixel wide and high.

Any other block is a `MalformedCall` with a one-line reason and an excerpt of the raw text. Limits
bound the work on any input: only the first `max_text_chars` characters are scanned, a payload over
`max_payload_chars` is rejected unread, and blocks after the first `max_calls` are recorded as
malformed ("over the limit") without being parsed. `parse_tool_calls` never raises on a string (given a
mapper that keeps to the rules above).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from toolshift.datasets.images import clamp_bbox
from toolshift.errors import ContractError

MAX_TEXT_CHARS: int = 16_384
"""Characters of a generated turn that are scanned for tool calls (the rest is ignored)."""

MAX_PAYLOAD_CHARS: int = 2_048
"""Largest JSON payload of one `<tool_call>` block that is parsed."""

MAX_CALLS: int = 4
"""Tool-call blocks parsed per turn; later blocks are recorded as malformed."""

EXCERPT_CHARS: int = 200
"""Characters of a malformed block kept in its record."""

BBOX_KEYS: tuple[str, ...] = ("bbox", "bbox_2d")
"""The argument names a box may be given under."""

COORD_LIMIT: int = 2**53
"""Coordinates are limited to [-COORD_LIMIT, COORD_LIMIT] before clamping (any float can hold them)."""

EpisodeMapper = Callable[[dict[str, Any]], dict[str, Any]]
"""Maps a call as the model wrote it (`{"name", "arguments"}`, box checked) to the episode's call."""

_MAPPING_ERRORS = (KeyError, IndexError, TypeError, ValueError, ArithmeticError)
"""What a mapper may raise on a written call that does not fit its tool (the block is then malformed)."""

_OPEN = re.compile(r"<\s*tool_call\s*>")
_CLOSE = re.compile(r"<\s*/\s*tool_call\s*>")


class CallRejected(Exception):
    """Raised by an `EpisodeMapper`: the call is malformed, for the given one-line reason."""


@dataclass(frozen=True)
class ToolCall:
    """A valid call in the episode's form: the tool name, its arguments with the box in pixels, clamped.

    `raw_bbox` is the box as the model wrote it (in the coordinates of the tool it was shown),
    `pixel_bbox` that box in pixels of the image before clamping, `bbox` the clamped box, `clamped`
    whether clamping changed it, and `written` the call as the model wrote it (`{"name", "arguments"}`).
    """

    name: str
    arguments: dict[str, Any]
    bbox: list[int]
    raw_bbox: list[float | int]
    pixel_bbox: list[float | int]
    clamped: bool
    written: dict[str, Any]

    def structured(self) -> dict[str, Any]:
        """The episodes contract's form of the call: `{"name": ..., "arguments": {...}}`."""
        return {"name": self.name, "arguments": dict(self.arguments)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record of the call."""
        return {
            **self.structured(),
            "raw_bbox": list(self.raw_bbox),
            "pixel_bbox": list(self.pixel_bbox),
            "clamped": self.clamped,
            "written": {"name": self.written["name"], "arguments": dict(self.written["arguments"])},
        }


@dataclass(frozen=True)
class MalformedCall:
    """A `<tool_call>` block that was not accepted: why, and the start of its raw text."""

    reason: str
    excerpt: str

    def to_dict(self) -> dict[str, str]:
        """A JSON-serialisable record of the block."""
        return {"reason": self.reason, "excerpt": self.excerpt}


@dataclass(frozen=True)
class ParseResult:
    """The calls found in one generated turn.

    `content` is the scanned text outside the tool-call blocks, stripped; `truncated` says the text was
    longer than the scan limit.
    """

    calls: tuple[ToolCall, ...] = ()
    malformed: tuple[MalformedCall, ...] = ()
    content: str = ""
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record of the parse."""
        return {
            "calls": [c.to_dict() for c in self.calls],
            "malformed": [m.to_dict() for m in self.malformed],
            "truncated": self.truncated,
        }


class _Reject(Exception):
    """Internal: a block is malformed for the given reason."""


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _loads(payload: str, max_payload_chars: int) -> Any:
    if len(payload) > max_payload_chars:
        raise _Reject(f"payload of {len(payload)} characters is over the limit of {max_payload_chars}")
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise _Reject(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise _Reject("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise _Reject(f"not valid JSON ({str(exc).splitlines()[0][:80]})") from None


def _coordinate(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Reject(f"bbox must hold 4 numbers, got an element {_short_repr(value)}")
    if isinstance(value, numbers.Integral):
        return max(-COORD_LIMIT, min(COORD_LIMIT, int(value)))
    number = float(value)
    if not math.isfinite(number):
        raise _Reject(f"bbox holds a non-finite number {value!r}")
    return max(-float(COORD_LIMIT), min(float(COORD_LIMIT), number))


def _box(arguments: dict[str, Any]) -> tuple[str, list[float | int]]:
    """The one box argument of `arguments`: its key and its 4 numbers (limited to +-COORD_LIMIT)."""
    keys = [k for k in BBOX_KEYS if k in arguments]
    if len(keys) != 1:
        raise _Reject(f"arguments must hold exactly one of {', '.join(BBOX_KEYS)}, got {len(keys)}")
    key = keys[0]
    raw = arguments[key]
    if not isinstance(raw, list) or len(raw) != 4:
        what = f"{len(raw)} elements" if isinstance(raw, list) else f"a JSON {type(raw).__name__}"
        raise _Reject(f"{key} must be a list of 4 numbers, got {what}")
    return key, [_coordinate(v) for v in raw]


def _mapped(written: dict[str, Any], to_episode: EpisodeMapper) -> dict[str, Any]:
    """The episode's call for a written call, or _Reject where the mapper rejects it."""
    name = written["name"]
    try:
        episode = to_episode({"name": name, "arguments": dict(written["arguments"])})
    except CallRejected as exc:
        raise _Reject(" ".join(str(exc).split()) or f"{name} call rejected") from None
    except _MAPPING_ERRORS as exc:
        detail = " ".join(f"{type(exc).__name__} {_short_repr(str(exc))}".split())
        raise _Reject(f"{_short_repr(name)} call does not map to an episode call ({detail})") from None
    if (
        not isinstance(episode, dict)
        or not isinstance(episode.get("name"), str)
        or not isinstance(episode.get("arguments"), dict)
    ):
        got = _short_repr(episode)
        raise ContractError(f"tool-call mapper returned {got}, not a {{name, arguments}} call")
    return episode


def _call(
    payload_text: str,
    size: tuple[int, int],
    known: frozenset[str],
    max_payload_chars: int,
    to_episode: EpisodeMapper | None,
) -> ToolCall:
    payload = _loads(payload_text.strip(), max_payload_chars)
    if not isinstance(payload, dict):
        raise _Reject(f"payload is a JSON {type(payload).__name__}, not an object")
    name = payload.get("name")
    if not isinstance(name, str):
        raise _Reject("payload has no string 'name'")
    if name not in known:
        raise _Reject(f"unknown tool {_short_repr(name)}; known: {', '.join(sorted(known))}")
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI-style arguments: a JSON object inside a string
        arguments = _loads(arguments, max_payload_chars)
    if not isinstance(arguments, dict):
        raise _Reject(f"'arguments' is a JSON {type(arguments).__name__}, not an object")
    key, raw_bbox = _box(arguments)
    written = {"name": name, "arguments": {**arguments, key: raw_bbox}}
    if to_episode is None:
        episode, episode_key, pixel_bbox = written, key, raw_bbox
    else:
        episode = _mapped(written, to_episode)
        try:
            episode_key, pixel_bbox = _box(episode["arguments"])
        except _Reject as exc:
            raise _Reject(f"as the episode's {_short_repr(episode['name'])} call: {exc}") from None
    bbox = clamp_bbox(pixel_bbox, size)
    clamped = any(float(a) != float(b) for a, b in zip(pixel_bbox, bbox, strict=True))
    return ToolCall(
        name=episode["name"],
        arguments={**episode["arguments"], episode_key: bbox},
        bbox=bbox,
        raw_bbox=raw_bbox,
        pixel_bbox=pixel_bbox,
        clamped=clamped,
        written=written,
    )


def _image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ContractError(f"image_size must be (width, height), got {image_size!r}") from None
    if width < 1 or height < 1:
        raise ContractError(f"image_size must be positive, got {image_size!r}")
    return width, height


def parse_tool_calls(
    text: str,
    image_size: Sequence[int],
    *,
    known_tools: Iterable[str] = ("zoom_in",),
    to_episode: EpisodeMapper | None = None,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_payload_chars: int = MAX_PAYLOAD_CHARS,
    max_calls: int = MAX_CALLS,
) -> ParseResult:
    """The tool calls in one generated assistant turn (see the module docstring for the rules).

    `image_size` is the (width, height) in pixels of the image the boxes are clamped to; `known_tools`
    the tool names the model was shown; `to_episode` maps a call as written to the episode's call (box in
    pixels), None keeps it as written. A non-string `text`, a bad `image_size` or a mapper that returns no
    call raises ContractError (a caller's bug); any string gives a ParseResult.
    """
    if not isinstance(text, str):
        raise ContractError(f"tool-call text must be a string, got {type(text).__name__}")
    size = _image_size(image_size)
    known = frozenset(known_tools)
    truncated = len(text) > max_text_chars
    scanned = text[:max_text_chars]
    calls: list[ToolCall] = []
    malformed: list[MalformedCall] = []
    outside: list[str] = []
    pos = 0
    n_blocks = 0
    while True:
        opening = _OPEN.search(scanned, pos)
        if opening is None:
            outside.append(scanned[pos:])
            break
        outside.append(scanned[pos : opening.start()])
        closing = _CLOSE.search(scanned, opening.end())
        if closing is None:
            rest = scanned[opening.start() :]
            malformed.append(MalformedCall("unclosed <tool_call> block", _excerpt(rest)))
            break
        block = scanned[opening.start() : closing.end()]
        n_blocks += 1
        if n_blocks > max_calls:
            malformed.append(
                MalformedCall(f"over the limit of {max_calls} tool calls per turn", _excerpt(block))
            )
        else:
            try:
                payload = scanned[opening.end() : closing.start()]
                calls.append(_call(payload, size, known, max_payload_chars, to_episode))
            except _Reject as exc:
                malformed.append(MalformedCall(str(exc), _excerpt(block)))
        pos = closing.end()
    content = "".join(outside).strip()
    return ParseResult(calls=tuple(calls), malformed=tuple(malformed), content=content, truncated=truncated)
