"""Pixel-Reasoner (Qwen2.5-VL weights, `TIGER-Lab/PixelReasoner-RL-v1`) in its own protocol.

Source: github.com/TIGER-AI-Lab/Pixel-Reasoner at commit a3a6c3a557a87d89ffaec825bd8c8d09b719fb97:
curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py (CropImageNormalized, SelectFrames,
`crop_image_normalized`, `execute_tool`, `parse_last_tool`, `resize_cropped`, `get_required_messages`,
`get_prompt_from_messages`, the evaluation loop of `_generate_vllm`) and
curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py (`templates["vcot"]`, `templates["notool"]`), with
the evaluation settings of curiosity_driven_rl/scripts/example_eval.sh (`sys=vcot`) and the evaluation's
image bounds (inputs 256-8000 x 28 x 28 pixels, crops 256-5120 x 28 x 28). The tool section is Qwen-Agent's
NousFnCallPrompt (`FamilyAdapter.tool_prompt`), read at github.com/QwenLM/Qwen-Agent commit
11ee6aa73177b66b8f38e5d9381df4f72cc027fb (2025-05-22); unverified: Pixel-Reasoner installs a fork
(cjakfskvnad/Qwen-Agent) that could not be fetched here.

As the evaluation does: the system turn is "You are a helpful assistant." with the Nous tool section
declaring `crop_image_normalized` and `select_frames`; the question is `text + "\\n\\n" + vcot` (vcot itself
starts with two newlines); the image is resized with qwen_vl_utils (smart_resize, bicubic); a reply
ending in `</tool_call>` is a call (the last block is read as JSON); `crop_image_normalized` takes
`bbox_2d` normalised to 0-1 (absolute pixels if any value is 1 or more) and `target_image` counted from 1,
pads the box by 0.1 on every side (clipped to the image), refuses a crop of 28 pixels or less, and the crop
is smart-resized (bicubic) and returned as a user turn "\\nHere is the cropped image (Image Size: WxH):" +
image; a call that fails is answered "\\nExecution error:\\n{error}\\n" and the loop goes on
(`select_frames` on an image fails with the original's own message).

Conditions without tools get the original's `notool` setting: no tool section, and the question followed by
"\\n\\n" + templates["notool"]. Unverified: the reasoning sentence before the scripted call (this project's;
the model writes free text) and the box's precision (3 decimals).
"""

from __future__ import annotations

import json
from typing import Any

from toolshift.episodes.toolcalls import EXCERPT_CHARS, MalformedCall
from toolshift.models.adapters.base import ChatMessage, FamilyAdapter, episode_image_size
from toolshift.models.adapters.imaging import smart_resized
from toolshift.models.adapters.native import (
    CallRejected,
    NativeAdapter,
    Observation,
    Session,
    TurnRead,
    WrittenCall,
    structured_zoom,
)

PIXEL_REASONER_TOOLS: list[dict[str, Any]] = [
    {
        "name": "crop_image_normalized",
        "description": (
            "Zoom in on the image based on the bounding box coordinates. It is useful when the object or "
            "text in the image is too small to be seen."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "bbox_2d": {
                    "type": "array",
                    "description": (
                        "coordinates for bounding box of the area you want to zoom in. Values should be "
                        "within [0.0,1.0]."
                    ),
                    "items": {"type": "number"},
                },
                "target_image": {
                    "type": "number",
                    "description": (
                        "The index of the image to crop. Index from 1 to the number of images. Choose 1 to "
                        "operate on original image."
                    ),
                },
            },
            "required": ["bbox_2d", "target_image"],
        },
    },
    {
        "name": "select_frames",
        "description": "Select frames from a video.",
        "parameters": {
            "type": "object",
            "properties": {
                "target_frames": {
                    "type": "array",
                    "description": (
                        "List of frame indices to select from the video (no more than 8 frames in total)."
                    ),
                    "items": {"type": "integer", "description": "Frame index from 1 to 16."},
                }
            },
            "required": ["target_frames"],
        },
    },
]
"""The functions Pixel-Reasoner's evaluation declares (`BaseTool.function`: name, description, parameters)."""
PIXEL_REASONER_VCOT = (
    "\n"
    "\n"
    "Guidelines: Understand the given visual information and the user query. Determine if it "
    "is beneficial to employ the given visual operations (tools). For a video, we can look "
    "closer by `select_frames`. For an image, we can look closer by `crop_image`. Reason with "
    "the visual information step by step, and put your final answer within \\boxed{}."
)
PIXEL_REASONER_NOTOOL = "Please think step by step, and put your final answer within \\boxed{}."
PIXEL_REASONER_REASONING = (
    "The text in the image is what I need to read. I will zoom in on it to see it clearly."
)
SELECT_FRAMES_ON_IMAGE = (
    "Execution Error: You attempted to `select_frames` from **image** not **video**. You should use "
    "`crop_image_normalized` instead for inspecting **image**."
)
INPUT_PIXELS = (256 * 28 * 28, 8000 * 28 * 28)
CROP_PIXELS = (256 * 28 * 28, 5120 * 28 * 28)
PADDING = 0.1
EDGE = 0.999
"""The largest normalised coordinate the scripted call writes: the original reads a box holding any value of
1 or more as pixels, so a box to the image's edge is written 0.999, not 1.0."""


def crop_image_normalized(image: Any, bbox_2d: list[float], padding: float = PADDING) -> Any:
    """Pixel-Reasoner's `CropImageNormalized.call`: normalised (or pixel) box padded by `padding`, clipped,
    cropped; CallRejected for a crop of 28 pixels or less on a side."""
    img_x, img_y = image.size
    if all(v < 1 for v in bbox_2d):
        box = (bbox_2d[0] - padding, bbox_2d[1] - padding, bbox_2d[2] + padding, bbox_2d[3] + padding)
    else:
        box = (
            bbox_2d[0] / img_x - padding,
            bbox_2d[1] / img_y - padding,
            bbox_2d[2] / img_x + padding,
            bbox_2d[3] / img_y + padding,
        )
    x1, y1, x2, y2 = (min(max(0, float(v)), 1) for v in box)
    cropped = image.crop((x1 * img_x, y1 * img_y, x2 * img_x, y2 * img_y))
    w, h = cropped.size
    if not (w > 28 and h > 28):
        raise CallRejected(f"Cropped image is too small: {w}x{h}")
    return cropped


class PixelReasonerAdapter(NativeAdapter):
    """Pixel-Reasoner: Qwen-Agent's Nous tool calls, `crop_image_normalized` (see the module docstring)."""

    family = "pixel_reasoner"
    tool_name = "crop_image_normalized"
    protocol_source = (
        "TIGER-AI-Lab/Pixel-Reasoner: curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py "
        "@ a3a6c3a557a87d89ffaec825bd8c8d09b719fb97"
    )
    tool_format_parts = (PIXEL_REASONER_VCOT,)

    def system_prompt(self, framed: bool) -> str:
        system = "You are a helpful assistant."
        if not framed:
            return system
        return system + "\n\n" + FamilyAdapter().tool_prompt(PIXEL_REASONER_TOOLS)

    def question(self, text: str, framed: bool, meta: dict[str, Any]) -> str:
        return text + "\n\n" + (PIXEL_REASONER_VCOT if framed else PIXEL_REASONER_NOTOOL)

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        return smart_resized(image, min_pixels=INPUT_PIXELS[0], max_pixels=INPUT_PIXELS[1])

    def scripted_call(self, bbox: list[float], meta: dict[str, Any]) -> WrittenCall:
        width, height = episode_image_size(meta, "Pixel-Reasoner box")
        box = [min(round(v / s, 3), EDGE) for v, s in zip(bbox, (width, height, width, height), strict=True)]
        return WrittenCall("crop_image_normalized", {"bbox_2d": box, "target_image": 1})

    def turn_text(self, call: WrittenCall) -> str:
        payload = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        return f"{PIXEL_REASONER_REASONING}\n<tool_call>\n{payload}\n</tool_call>"

    def read_turn(self, text: str, session: Session) -> TurnRead:
        if not text.endswith("</tool_call>"):
            return TurnRead(final=True)
        raw = text.split("<tool_call>")[-1].split("</tool_call>")[0]
        after = "</answer>" in text[: text.rfind("<tool_call>")] if "<tool_call>" in text else False
        try:
            payload = json.loads(raw)
            name, arguments = payload["name"], payload["arguments"]
        except (json.JSONDecodeError, RecursionError, KeyError, TypeError) as exc:
            reason = str(exc) if not isinstance(exc, KeyError) else repr(exc.args[0])
            return TurnRead(malformed=[MalformedCall(reason, _cut("<tool_call>" + raw + "</tool_call>"))])
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return TurnRead(
                malformed=[MalformedCall("the call needs a string name and object arguments", _cut(raw))]
            )
        return TurnRead(calls=[WrittenCall(name, arguments, "<tool_call>" + raw + "</tool_call>", after)])

    def execute(self, call: WrittenCall, session: Session) -> Observation:
        if call.name == "select_frames":
            raise CallRejected(SELECT_FRAMES_ON_IMAGE)
        if call.name != "crop_image_normalized":
            raise CallRejected(repr(call.name))  # str(KeyError(name)): the original's operations lookup
        try:
            index = int(call.arguments["target_image"]) - 1
            bbox = [float(v) for v in call.arguments["bbox_2d"]]
        except KeyError as exc:
            raise CallRejected(repr(exc.args[0])) from None
        except (TypeError, ValueError) as exc:
            raise CallRejected(str(exc)) from None
        images = [session.held, *session.observations]
        if index >= len(images):
            raise CallRejected(
                "Execution Error: Incorrect `target_image` argument in `crop_image_normalized` operation. "
                f"You can only pick an image within [1,{len(images)}]"
            )
        if len(bbox) != 4:
            raise CallRejected(f"bbox_2d must hold 4 values, got {len(bbox)}")
        crop = crop_image_normalized(images[index], bbox)
        shown = smart_resized(crop.convert("RGB"), min_pixels=CROP_PIXELS[0], max_pixels=CROP_PIXELS[1])
        session.observations.append(shown)
        return Observation(images=[shown], text=_size_text(shown.size))

    def on_malformed(self, reason: str, call: WrittenCall | None, session: Session) -> Observation:
        return Observation(error=f"\nExecution error:\n{reason}\n")

    def observation_turn(self, messages: list[ChatMessage], obs: Observation, turn: int) -> None:
        if obs.error is not None:
            messages.append({"role": "user", "content": [{"type": "text", "text": obs.error}]})
            return
        if obs.trail is not None:
            content = [{"type": "text", "text": obs.text}, {"type": "text", "text": obs.trail}]
        else:
            text = obs.text
            if len(obs.images) == 1 and "image" in obs.images[0]:  # an override: its own size
                text = _size_text(obs.images[0]["image"].size)
            content = [{"type": "text", "text": text}, *obs.images]
        messages.append({"role": "user", "content": content})

    def structured(self, call: WrittenCall, session: Session) -> dict[str, Any]:
        bbox = call.arguments.get("bbox_2d")
        if call.arguments.get("target_image") != 1 or not isinstance(bbox, list) or len(bbox) != 4:
            return super().structured(call, session)
        w, h = session.original.size
        return structured_zoom([float(v) * s for v, s in zip(bbox, (w, h, w, h), strict=True)])


def _size_text(size: tuple[int, int]) -> str:
    return "\nHere is the cropped image (Image Size: {}x{}):".format(*size)


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
