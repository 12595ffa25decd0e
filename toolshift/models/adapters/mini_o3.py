"""Mini-o3 (Qwen2.5-VL weights, `Mini-o3/Mini-o3-7B-v1`) in its own protocol.

Source: github.com/Mini-o3/Mini-o3 at commit 8654dbf42d2ea98b9d81b6cc7179026dd0598fdf:
verl/trainer/constants.py (TOOL_CROP_SYSTEM_PROMPT, TOOL_CALL_CROP_MULTI_TRUN_PROMPT,
ERROR_INFO_MULTI_TURN_PROMPT), verl/workers/rollout/vllm_rollout/vllm_async_engine.py (the multi-turn loop,
`process_tool_call`, `process_image`), verl/workers/rollout/vllm_rollout/function_tools.py
(`prepare_grounding_inputs_multi_turn`, `crop_image`), verl/utils/dataset/multimodal_dataset.py (the input
image's `process_image`), with the evaluation settings of README.md (`use_relative_coordinates=True`,
`data.max_pixels=2000000`, `data.min_pixels=40000`, `use_raw_image=True`, stop `</grounding>`; rollout
`max_pixels` 12845056 and `min_pixels` 3136 from verl/trainer/config/ppo_trainer.yaml).

As the evaluation does: the system prompt is TOOL_CROP_SYSTEM_PROMPT; the question follows the image
after a newline (the data's `problem` is `"<image>\\n" + question`, docs/mini_o3_demo.md); the image shown
is resized under 2,000,000 and over 40,000 pixels (Lanczos); generation stops after `</grounding>`; a turn
holding `<grounding>...</grounding>` is a call (the last block is read) with `bbox_2d` in coordinates
normalised to 0-1 and `source` `original_image` (the raw image, not the resized one) or `observation_i`
(the i-th crop); the box is scaled to that image's pixels, truncated, clipped to [0, w-1] x [0, h-1], the
crop is returned unscaled (`crop_image(..., resize=1)`) and shown resized by `process_image` (nearest),
in a user turn: "After the above Action k, here is the the zoom-in image (Observation k+1):" + image +
the instruction to continue (k: the tool round, 0-based). A call the tool cannot run is answered with a
user turn "ERROR occurs during grounding. Error Information: ...\\n" + ERROR_INFO_MULTI_TURN_PROMPT and the
loop goes on.

Deviation: the original reads the block with a regular expression and `eval()`s the box; here the block is
read as JSON (never evaluated), so a block the original's pattern rejects for its key order or spacing but
that is valid JSON is accepted. Conditions without tools get the system prompt without its zoom sentence.
Unverified: the reasoning before the scripted call (this project's) and the box's precision (3 decimals).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from PIL import Image

from toolshift.episodes.toolcalls import EXCERPT_CHARS, MalformedCall
from toolshift.models.adapters.base import ChatMessage, episode_image_size
from toolshift.models.adapters.native import (
    CallRejected,
    NativeAdapter,
    Observation,
    Session,
    TurnRead,
    WrittenCall,
    structured_zoom,
)

MINI_O3_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the user's question based on the image provided. "
    "Output your thinking process within the <think> and </think> tags. Whenever you find "
    "anything unclear, you can zoom in a specific region in the given image to see more "
    'clearly by outputing <grounding>{"bbox_2d": [x0, y0, x1, y1], "source": '
    '"original_image"}</grounding>, where (x0, y0) and (x1, y1) are the top-left and '
    "bottom-right coordinates of the region that you want to zoom in, respectively (suppose "
    "the width and height of the image are 1.0), and 'source' refers to the image that you "
    "zoom in and could be either 'original_image' or 'observation_i'. Once the final answer is "
    "confirmed, put it within <answer> and </answer>."
)
MINI_O3_TOOL_PARTS: tuple[str, ...] = (
    MINI_O3_SYSTEM_PROMPT[MINI_O3_SYSTEM_PROMPT.index("Whenever") : MINI_O3_SYSTEM_PROMPT.index("Once")],
)
"""The zoom sentence of the system prompt, removed for the conditions without tools."""
MINI_O3_OBSERVATION_PROMPT = (
    "After the above Action {action_turn}, here is the the zoom-in image (Observation "
    "{observation_turn}):\n"
    "<|vision_start|><|image_pad|><|vision_end|>.\n"
    "Continue your reasoning process inside <think> and </think>. If needed, you can continue "
    "to zoom in on the original image or any of the observations, by outputting <grounding> "
    "and </grounding> as before. If the final answer is confirmed, put your final answer "
    "inside <answer> and </answer>."
)
MINI_O3_ERROR_PROMPT = (
    "Please analyze the error information obtained from the function tool and adjust your "
    "response. Countinue your reasoning process inside <think> and </think>."
)
_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
MINI_O3_REASONING = "The text in the image is what I need to read. I will zoom in on it to see it clearly."
_BLOCK = re.compile(r"<grounding>(.*?)</grounding>", re.DOTALL)


def mini_o3_process_image(
    image: Image.Image, max_pixels: int, min_pixels: int, resample: int, extreme: bool = False
) -> Image.Image:
    """Mini-o3's `process_image`: scale under `max_pixels`, over `min_pixels` (int-truncated sides); with
    `extreme` (the rollout's version) also sides of at least 28 and aspect ratios under 200."""
    if image.width * image.height > max_pixels:
        factor = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)), resample=resample)
    if image.width * image.height < min_pixels:
        factor = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)), resample=resample)
    if extreme:
        if image.width < 28 or image.height < 28:
            factor = 28 / min(image.width, image.height)
            size = (int(image.width * factor + 1), int(image.height * factor + 1))
            image = image.resize(size, resample=resample)
        if image.width / image.height >= 200:
            image = image.resize((image.width, int(image.width / 190 + 1)), resample=resample)
        if image.height / image.width >= 200:
            image = image.resize((int(image.height / 190 + 1), image.height), resample=resample)
    return image.convert("RGB") if image.mode != "RGB" else image


class MiniO3Adapter(NativeAdapter):
    """Mini-o3: `<grounding>` with a normalised box on the original image or an earlier observation."""

    family = "mini_o3"
    tool_name = "grounding"
    protocol_source = (
        "Mini-o3/Mini-o3: verl/trainer/constants.py, verl/workers/rollout/vllm_rollout/ "
        "@ 8654dbf42d2ea98b9d81b6cc7179026dd0598fdf"
    )
    stop_strings = ("</grounding>",)
    tool_format_parts = MINI_O3_TOOL_PARTS

    def system_prompt(self, framed: bool) -> str:
        return MINI_O3_SYSTEM_PROMPT if framed else MINI_O3_SYSTEM_PROMPT.replace(MINI_O3_TOOL_PARTS[0], "")

    def question(self, text: str, framed: bool, meta: dict[str, Any]) -> str:
        return "\n" + text

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        return mini_o3_process_image(image, 2_000_000, 40_000, Image.Resampling.LANCZOS)

    def scripted_call(self, bbox: list[float], meta: dict[str, Any]) -> WrittenCall:
        width, height = episode_image_size(meta, "Mini-o3 box")
        box = [round(v / s, 3) for v, s in zip(bbox, (width, height, width, height), strict=True)]
        return WrittenCall("grounding", {"bbox_2d": box, "source": "original_image"})

    def turn_text(self, call: WrittenCall) -> str:
        return f"<think>{MINI_O3_REASONING}</think> <grounding>{json.dumps(call.arguments)}</grounding>"

    def read_turn(self, text: str, session: Session) -> TurnRead:
        blocks = list(_BLOCK.finditer(text))
        if not blocks:
            return TurnRead(final=True)
        block = blocks[-1]
        after = "</answer>" in text[: block.start()]
        try:
            payload = json.loads(block.group(1).strip())
        except (json.JSONDecodeError, RecursionError) as exc:
            return TurnRead(
                malformed=[MalformedCall(f"the grounding block is not JSON ({exc})", _cut(block.group(0)))]
            )
        if not isinstance(payload, dict):
            return TurnRead(
                malformed=[MalformedCall("the grounding block is not a JSON object", _cut(block.group(0)))]
            )
        return TurnRead(calls=[WrittenCall("grounding", payload, block.group(0), after)])

    def execute(self, call: WrittenCall, session: Session) -> Observation:
        obj = call.arguments
        if "bbox_2d" not in obj:
            raise CallRejected(f"There is no 'bbox_2d' in grounding argument: {obj}")
        if "source" not in obj:
            raise CallRejected(f"There is no 'source' in grounding argument: {obj}")
        bbox, source = obj["bbox_2d"], obj["source"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not isinstance(source, str):
            raise CallRejected("bbox_2d must be a list of 4 numbers and source a string")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
            raise CallRejected(f"bbox_2d must hold numbers: {bbox}")
        observations = [session.original, *session.observations]
        if source == "original_image":
            index = 0
        else:
            match = re.match("observation_([0-9]*)", source, re.DOTALL)
            if match is None or not match.group(1):
                raise CallRejected(
                    f"The 'source' argument \"{source}\" does not match the pattern 'observation_([0-9]*)'."
                )
            index = int(match.group(1))
        if index >= len(observations):
            raise CallRejected(f'Error in predicting the source observation: "{source}".')
        image = observations[index]
        w, h = image.size
        box = [int(v * s) for v, s in zip(bbox, (w, h, w, h), strict=True)]
        box = [max(box[0], 0), max(box[1], 0), min(box[2], w - 1), min(box[3], h - 1)]
        if not box[0] <= box[2] - 1:
            raise CallRejected(f"The bounding box is not valid in width: {box}")
        if not box[1] <= box[3] - 1:
            raise CallRejected(f"The bounding box is not valid in height: {box}")
        width_box, height_box = box[2] - box[0], box[3] - box[1]
        if width_box / height_box >= 200 or height_box / width_box >= 200:
            raise CallRejected(
                "The absolute aspect ratio of the bounding box exceeds 200, which is too large."
            )
        crop = image.crop(tuple(box))
        session.observations.append(crop)
        shown = mini_o3_process_image(crop, 12_845_056, 3136, Image.Resampling.NEAREST, extreme=True)
        return Observation(images=[shown])

    def on_malformed(self, reason: str, call: WrittenCall | None, session: Session) -> Observation:
        return Observation(error=f"ERROR occurs during grounding. Error Information: {reason}.\n")

    def observation_turn(self, messages: list[ChatMessage], obs: Observation, turn: int) -> None:
        if obs.error is not None:
            text = obs.error + MINI_O3_ERROR_PROMPT
            messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
            return
        prompt = MINI_O3_OBSERVATION_PROMPT.format(action_turn=turn, observation_turn=turn + 1)
        before, after = prompt.split(_IMAGE)
        slot = [{"type": "text", "text": obs.trail}] if obs.trail is not None else list(obs.images)
        content = [{"type": "text", "text": before}, *slot, {"type": "text", "text": after}]
        messages.append({"role": "user", "content": content})

    def trail_text(self, call: WrittenCall, meta: dict[str, Any]) -> str:
        from toolshift.episodes.build import text_trail_line

        return text_trail_line(list(call.arguments["bbox_2d"]), "grounding")

    def structured(self, call: WrittenCall, session: Session) -> dict[str, Any]:
        bbox = call.arguments.get("bbox_2d")
        if call.arguments.get("source") != "original_image" or not isinstance(bbox, list) or len(bbox) != 4:
            return super().structured(call, session)
        w, h = session.original.size
        return structured_zoom([int(v * s) for v, s in zip(bbox, (w, h, w, h), strict=True)])


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
