"""Chain-of-Focus (Qwen2.5-VL weights, `xintongzhang/CoF-rl-model-7b`) in its own protocol.

Source: github.com/xtong-zhang/Chain-of-Focus at commit 431ff0dd703f83d8a624ec1ba1d2ef6a834b78bc,
eval/vstar/vllm_inference.py (SYSTEM_PROMPT, USER_PROMPT, resize_image, find_absolute_bboxes, do_crop,
run_inference_loop) with the settings of slurm_jobs/eval/inference_vstar.sh (scaleup 2, enlarge 1.5,
min_resolution 112); the call layout (`<think>` block, then `<tool_call>` JSON with `bbox_2d` and `label`) is
the repository's own example in verl/recipe/deepeyes/deepeyes.py (test case 3).

As the evaluation does: the system prompt is SYSTEM_PROMPT; the question is `"Question: " + text +
USER_PROMPT`; the image is first resized with smart_resize (factor 28, min 112 x 112, max 3840 x 3840 pixels,
Lanczos) and the boxes are in pixels of that **resized** image; a reply holding `<tool_call>` is a call
(only the first block is read, and its name is not checked); the tool enlarges the box 1.5 times about its
centre (clipped to the image), truncates it to integers, crops the resized image, doubles the crop's size,
smart-resizes it (min 112 x 112) and returns it (Lanczos) as a user turn [image, USER_PROMPT] with no
wrapper. A box the evaluation's check refuses (outside the image, empty, not 4 numbers) or a block that is
not JSON makes its `do_crop` crop nothing, i.e. return the whole resized image doubled: the call is
malformed (recorded) and that image comes back. Generation stops at the end of the turn only.

Conditions without tools get the system prompt without its tool section ("You are a helpful assistant.")
and USER_PROMPT without its tool parts (COF_TOOL_PARTS). Unverified: the reasoning sentence before the
scripted call is this project's (as for DeepEyes); the label is the project's.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from PIL import Image

from toolshift.episodes.toolcalls import MalformedCall
from toolshift.models.adapters.base import ChatMessage, episode_image_size
from toolshift.models.adapters.imaging import smart_resize
from toolshift.models.adapters.native import (
    CallRejected,
    NativeAdapter,
    Observation,
    Session,
    TurnRead,
    WrittenCall,
    structured_zoom,
)

COF_SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "\n"
    "# Tools\n"
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name":"image_zoom_in_tool","description":"Zoom in on a '
    "specific region of an image by cropping it based on a bounding box (bbox_2d) and an "
    'optional object label.","parameters":{"properties":{"bbox_2d":{"type":"array","items":{"typ'
    'e":"number"},"minItems":4,"maxItems":4,"description":"The bounding box of the region to '
    "zoom in, as [x1, y1, x2, y2], where (x1, y1) is the top-left corner and (x2, y2) is the "
    'bottom-right corner."},"label":{"type":"string","description":"The name or label of the '
    'object in the specified bounding box (optional)."}},"required":["bbox_2d"], '
    '"type":"object"},"args_format": "Format the arguments as a JSON object."}}\n'
    "</tools>\n"
    "\n"
    "For the function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)
COF_USER_PROMPT = (
    "\n"
    "Think in the mind first, and then decide whether to call tools one or more times OR "
    "provide final answer. Format strictly as: <think>...</think> <tool_call>...</tool_call> "
    "<tool_call>...</tool_call> (if any tools needed) OR <answer>...</answer> (if no tools needed)."
)
COF_TOOL_PARTS: tuple[str, ...] = (
    COF_SYSTEM_PROMPT.removeprefix("You are a helpful assistant."),
    ", and then decide whether to call tools one or more times OR provide final answer",
    "<tool_call>...</tool_call> <tool_call>...</tool_call> (if any tools needed) OR ",
    " (if no tools needed)",
)
"""The parts of COF_SYSTEM_PROMPT and COF_USER_PROMPT about tools, taken out for the conditions without
tools."""
COF_ANSWER_FORMAT = COF_USER_PROMPT
for _part in COF_TOOL_PARTS[1:]:
    COF_ANSWER_FORMAT = COF_ANSWER_FORMAT.replace(_part, "")
COF_TOOL_NAME = "image_zoom_in_tool"
COF_REASONING = "The text in the image is what I need to read. I will zoom in on it to see it clearly."
COF_MIN_PIXELS = 112 * 112
COF_MAX_PIXELS = 3840 * 3840
COF_ENLARGE = 1.5
COF_SCALEUP = 2
COF_UNREAD = "the call cannot be read"
"""The reason's start for a call CoF's loop fails on outside `do_crop` (it returns the image unchanged)."""
_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def cof_resize(image: Image.Image) -> Image.Image:
    """CoF's `resize_image`: smart_resize (factor 28, min 112^2, max 3840^2 pixels), Lanczos."""
    height, width = smart_resize(image.height, image.width, 28, COF_MIN_PIXELS, COF_MAX_PIXELS)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def cof_crop(image: Image.Image, box: list[int] | None) -> Image.Image:
    """CoF's `do_crop` after its box check: crop (`None`: the whole image), double, smart_resize, Lanczos."""
    crop = image.crop(tuple(box)) if box is not None else image.copy()
    height, width = smart_resize(
        crop.height * COF_SCALEUP, crop.width * COF_SCALEUP, 28, COF_MIN_PIXELS, COF_MAX_PIXELS
    )
    return crop.resize((width, height), Image.Resampling.LANCZOS).convert("RGB")


def cof_box(bbox: Any, width: int, height: int) -> list[int]:
    """CoF's `check_absolute_bbox_format` and enlargement (1.5x about the centre, clipped, truncated);
    CallRejected with the check's reason."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise CallRejected(f"Bounding box must contain 4 elements: {bbox!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        raise CallRejected(f"All bounding box elements must be numeric: {bbox!r}")
    x0, y0, x1, y1 = bbox
    if not (0 <= x0 < width and 0 <= y0 < height and 0 < x1 <= width and 0 < y1 <= height):
        raise CallRejected(
            f"Bounding box values must be within image bounds [0, 0, {width}, {height}]: {bbox}"
        )
    if x1 <= x0 or y1 <= y0:
        raise CallRejected(f"Invalid bounding box coordinates: x1 must be > x0 and y1 must be > y0: {bbox}")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = (x1 - x0) * COF_ENLARGE, (y1 - y0) * COF_ENLARGE
    box = (max(0, cx - bw / 2), max(0, cy - bh / 2), min(width, cx + bw / 2), min(height, cy + bh / 2))
    return [int(v) for v in box]


class ChainOfFocusAdapter(NativeAdapter):
    """Chain-of-Focus: `image_zoom_in_tool` on the smart-resized image (see the module docstring)."""

    family = "chain_of_focus"
    tool_name = COF_TOOL_NAME
    protocol_source = (
        "xtong-zhang/Chain-of-Focus: eval/vstar/vllm_inference.py @ 431ff0dd703f83d8a624ec1ba1d2ef6a834b78bc"
    )
    tool_format_parts: ClassVar[tuple[str, ...]] = COF_TOOL_PARTS
    zoom_label: ClassVar[str] = "the text in the image"

    def system_prompt(self, framed: bool) -> str:
        return COF_SYSTEM_PROMPT if framed else COF_SYSTEM_PROMPT.replace(COF_TOOL_PARTS[0], "")

    def question(self, text: str, framed: bool, meta: dict[str, Any]) -> str:
        return f"Question: {text}{COF_USER_PROMPT if framed else COF_ANSWER_FORMAT}"

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        return cof_resize(image)

    def resized_size(self, meta: dict[str, Any]) -> tuple[int, int]:
        width, height = episode_image_size(meta, "Chain-of-Focus box")
        h, w = smart_resize(height, width, 28, COF_MIN_PIXELS, COF_MAX_PIXELS)
        return w, h

    def scripted_call(self, bbox: list[float], meta: dict[str, Any]) -> WrittenCall:
        width, height = episode_image_size(meta, "Chain-of-Focus box")
        rw, rh = self.resized_size(meta)
        scale = (rw / width, rh / height, rw / width, rh / height)
        box = [round(v * s) for v, s in zip(bbox, scale, strict=True)]
        return WrittenCall(COF_TOOL_NAME, {"bbox_2d": box, "label": self.zoom_label})

    def turn_text(self, call: WrittenCall) -> str:
        payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        return f"<think>\n{COF_REASONING}\n</think>\n<tool_call>\n{payload}\n</tool_call>"

    def read_turn(self, text: str, session: Session) -> TurnRead:
        if "<tool_call>" not in text:
            return TurnRead(final=True)
        block = _BLOCK.search(text)
        after = "</answer>" in text[: text.index("<tool_call>")]
        if block is None:
            return TurnRead(malformed=[MalformedCall("unclosed <tool_call> block", _excerpt(text))])
        try:
            payload = json.loads(block.group(1).strip())
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = f"Failed to parse tool_call JSON ({type(exc).__name__})"
            return TurnRead(malformed=[MalformedCall(reason, _excerpt(block.group(0)))])
        arguments = payload.get("arguments") if isinstance(payload, dict) else None
        bbox = arguments.get("bbox_2d") if isinstance(arguments, dict) else None
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            reason = f"{COF_UNREAD} (arguments.bbox_2d of 4 values is missing)"
            return TurnRead(malformed=[MalformedCall(reason, _excerpt(block.group(0)))])
        name = payload["name"] if isinstance(payload.get("name"), str) else ""
        return TurnRead(calls=[WrittenCall(name, dict(arguments), block.group(0), after)])

    def execute(self, call: WrittenCall, session: Session) -> Observation:
        box = cof_box(call.arguments.get("bbox_2d"), *session.held.size)
        return Observation(images=[cof_crop(session.held, box)])

    def on_malformed(self, reason: str, call: WrittenCall | None, session: Session) -> Observation:
        """A box CoF's check refuses, or a block that is no JSON: `do_crop` crops nothing (the whole image,
        doubled); a JSON call without `arguments.bbox_2d` raises in CoF's loop, which then returns the
        resized image itself."""
        if reason.startswith(COF_UNREAD):
            return Observation(images=[session.held.copy()])
        return Observation(images=[cof_crop(session.held, None)])

    def observation_turn(self, messages: list[ChatMessage], obs: Observation, turn: int) -> None:
        slot = [{"type": "text", "text": obs.trail}] if obs.trail is not None else list(obs.images)
        messages.append({"role": "user", "content": [*slot, {"type": "text", "text": COF_USER_PROMPT}]})

    def structured(self, call: WrittenCall, session: Session) -> dict[str, Any]:
        bbox = call.arguments.get("bbox_2d")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            return super().structured(call, session)
        (w, h), (rw, rh) = session.original.size, session.held.size
        pixels = [v * s for v, s in zip(bbox, (w / rw, h / rh, w / rw, h / rh), strict=True)]
        extra = {"label": call.arguments["label"]} if "label" in call.arguments else {}
        return structured_zoom(pixels, extra)


def _excerpt(text: str) -> str:
    from toolshift.episodes.toolcalls import EXCERPT_CHARS

    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
