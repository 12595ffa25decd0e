"""OpenThinkIMG (Qwen2-VL weights, `Warrieryes/OpenThinkIMG-Chart-Qwen2-2B-VL`) in its own protocol: one
JSON object per turn, `{"thought": ..., "actions": [{"name": ..., "arguments": ...}]}`, ending with the
`Terminate` action.

Source: github.com/zhaochen0110/OpenThinkIMG at commit 45d295f0f4b15502fb9573d9a8da6fb2f28be06d:
tool_server/tf_eval/models/template_instruct.py (`eval_prompt`), tool_server/tf_eval/models/vllm_models.py
(`generate_conversation_fn`, `append_conversation_fn`), tool_server/tf_eval/tool_inferencer/base_inferencer.py
(`extract_actions`, `batch_parse_tool_config`, `batch_get_tool_response`,
`batch_tool_response_to_next_round_input`), tool_server/tf_eval/tool_inferencer/dynamic_batch_manager/
dynamic_batch_manager.py (`update_item_status`), tool_server/tool_workers/online_workers/crop_worker.py
(the `crop` tool), tool_server/tool_workers/online_workers/SelectSubplot_worker.py (`ZoomInSubfigure`),
tool_server/tf_eval/utils/utils.py and tool_server/utils/utils.py (images sent as JPEG).

As the evaluation does: the system prompt is `eval_prompt`; the user turn is the text "Question: " + text
followed by the image (text first); every image travels as JPEG (Pillow's default quality); a turn holding
"Terminate" ends the episode; otherwise the first action of the turn's `"actions"` list is run: its result
comes back as a user turn "OBSERVATION:\\n{name} model outputs: {text}\\nPlease summarize the model outputs
and answer my first question." with the tool's image after it, and a tool that is not served answers
"There is no tool names {name}."; a turn with no readable action is answered with the question again (text
only), as the original does.

Actions: the crop/zoom actions are served here: `ZoomInSubfigure`, and the `crop` worker, with a box
"[x1, y1, x2, y2]" (integer pixels of the current image: the last image a tool returned, else the input)
as the crop worker reads it: a plain crop, "Image cropped successfully.". A `ZoomInSubfigure` naming a
subfigure in words needs the original's second model (Gemini picks the subplot) and the other actions are
served by other models (OCR, Point: Molmo, SegmentRegionAroundPoint: SAM) or are not crop/zoom actions
(the line drawers): each is refused with its recorded reason and answered as an unserved tool. The
scripted `tool` call is `ZoomInSubfigure` with a description, the form of the model's own examples, and
returns the episode's region ("Select subplot done.", the subplot worker's message).

The question turn keeps the original's order, text before images, so in this family `image_after` and
`image_no_tool` show the same turn (every image already follows the text). Conditions without tools get
`eval_prompt` without its tool actions (only Terminate stays) and without
"or use external tools to assist in solving". Unverified: the thought and the description of the scripted
call (this project's).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from PIL import Image

from toolshift.episodes.toolcalls import EXCERPT_CHARS
from toolshift.models.adapters.base import ChatMessage
from toolshift.models.adapters.native import (
    CallRejected,
    NativeAdapter,
    Observation,
    Session,
    TurnRead,
    WrittenCall,
    structured_zoom,
)

OPENTHINKIMG_SYSTEM_PROMPT = (
    "You are a visual assistant capable of generating and solving steps for chart-based "
    "reasoning. Your goal is to answer chart-related questions. You can rely on your own "
    "capabilities or use external tools to assist in solving. Here are the available actions:\n"
    '- **OCR**: Extracts text from an image. Example: `{"name": "OCR", "arguments": {"image": '
    '"img_1"}}`\n'
    "- **Point**: Identifies a point in the image based on description and returns "
    'coordinates. Example: `{"name": "Point", "arguments": {"image": "img_1", "param": "x-axis '
    'value 1970"}}`\n'
    '- **ZoomInSubfigure**: Crops the image to the specified subfigure. Example: `{"name": '
    '"ZoomInSubfigure", "arguments": {"image": "img_1", "param": "Downstream vs. Concept: Toy"}}`\n'
    "- **SegmentRegionAroundPoint**: Segments a region around a given point. Example: "
    '`{"name": "SegmentRegionAroundPoint", "arguments": {"image": "img_1", "param": "x="21.5" '
    'y="28.5""}}`\n'
    "- **DrawHorizontalLineByY**: Draws a horizontal line at a given y-coordinate. Example: "
    '`{"name": "DrawHorizontalLineByY", "arguments": {"image": "img_1", "param": "y=28.5"}}`\n'
    "- **DrawVerticalLineByX**: Draws a vertical line at a given x-coordinate. Example: "
    '`{"name": "DrawVerticalLineByX", "arguments": {"image": "img_1", "param": "x=21.5"}}`\n'
    '- **Terminate**: Ends the task and provides the final answer. Example: `{"name": '
    '"Terminate", "arguments": {"ans": "1985"}}`\n'
    "\n"
    "To solve the problem:\n"
    "1. Select actions from the provided tools list, combining them logically and building on "
    "previous steps. Call one action at a time, using its output for the next.\n"
    "2. To use `SegmentRegionAroundPoint`, `DrawHorizontalLineByY`, or `DrawVerticalLineByX`, "
    'first call "Point" to get coordinates for further actions.\n'
    "\n"
    "Your output should be in a strict JSON format as follows:\n"
    '{"thought": "the reasoning process", "actions": [{"name": "action", "arguments": '
    '{"argument1": "value1", "argument2": "value2"}}]}\n'
)
_TOOL_LINES = ("- **OCR**", "- **Point**", "- **ZoomInSubfigure**", "- **SegmentRegionAroundPoint**")
_TOOL_LINES += ("- **DrawHorizontalLineByY**", "- **DrawVerticalLineByX**", "2. To use `Segment")
OPENTHINKIMG_TOOL_PARTS: tuple[str, ...] = tuple(
    line + "\n" for line in OPENTHINKIMG_SYSTEM_PROMPT.split("\n") if line.startswith(_TOOL_LINES)
) + (" or use external tools to assist in solving",)
"""The lines and words of the system prompt about tools other than Terminate, removed without tools."""
OPENTHINKIMG_OBSERVATION = (
    "OBSERVATION:\n{name} model outputs: {text}\n"
    "Please summarize the model outputs and answer my first question."
)
OPENTHINKIMG_THOUGHT = "The text in the image is what I need to read. I will zoom in on it to see it clearly."
ZOOM_DESCRIPTION = "the text in the image"
_NO_MODEL = "in the original; this study runs no second model"
_NO_ZOOM = "draws, it does not crop or zoom; only crop/zoom actions are served"
SERVED_ELSEWHERE: dict[str, str] = {
    "OCR": f"OCR is served by an OCR model {_NO_MODEL}",
    "Point": f"Point is served by Molmo {_NO_MODEL}",
    "SegmentRegionAroundPoint": f"SegmentRegionAroundPoint is served by SAM {_NO_MODEL}",
    "DrawHorizontalLineByY": f"DrawHorizontalLineByY {_NO_ZOOM}",
    "DrawVerticalLineByX": f"DrawVerticalLineByX {_NO_ZOOM}",
}
"""Why each action the original serves with another model (or that is no crop/zoom action) is refused."""
ZOOM_BY_NAME = (
    "ZoomInSubfigure naming a subfigure in words is served by Gemini (SelectSubplot_worker) in the original; "
    "this study runs no second model"
)
_ACTIONS = re.compile(r'"actions"\s*:\s*(\[(?:[^\[\]]|\[(?:[^\[\]]|\[(?:[^\[\]]|\[[^\[\]]*\])*\])*\])*\])')
TERMINATE_ACTION = "Terminate"
"""The action that ends an OpenThinkIMG episode with its answer (`{"name": "Terminate", "arguments": {"ans":
...}}`): a reply holding it answers, it does not call a tool."""
_BOX = re.compile(r"\[\s*([\d,\s]+)\s*\]")


def jpeg(image: Image.Image) -> Image.Image:
    """An image after OpenThinkIMG's `pil_to_base64` round trip (JPEG at Pillow's default quality)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


class OpenThinkIMGAdapter(NativeAdapter):
    """OpenThinkIMG: JSON actions, ZoomInSubfigure / crop served (see the module docstring)."""

    family = "openthinkimg"
    model_types = ("qwen2_vl",)
    question_text_first = True
    tool_name = "ZoomInSubfigure"
    protocol_source = (
        "zhaochen0110/OpenThinkIMG: tool_server/tf_eval/ @ 45d295f0f4b15502fb9573d9a8da6fb2f28be06d"
    )
    tool_format_parts = OPENTHINKIMG_TOOL_PARTS

    def system_prompt(self, framed: bool) -> str:
        if framed:
            return OPENTHINKIMG_SYSTEM_PROMPT
        text = OPENTHINKIMG_SYSTEM_PROMPT
        for part in OPENTHINKIMG_TOOL_PARTS:
            text = text.replace(part, "")
        return text

    def question(self, text: str, framed: bool, meta: dict[str, Any]) -> str:
        return "Question: " + text

    def user_content(
        self, content: list[dict[str, Any]], framed: bool, meta: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The text, then the images (`generate_conversation_fn` puts the question first)."""
        content = super().user_content(content, framed, meta)
        return [p for p in content if p["type"] == "text"] + [p for p in content if p["type"] == "image"]

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        return jpeg(image)

    def scripted_call(self, bbox: list[float], meta: dict[str, Any]) -> WrittenCall:
        arguments = {"image": "img_1", "param": ZOOM_DESCRIPTION, "bbox": [int(round(v)) for v in bbox]}
        return WrittenCall("ZoomInSubfigure", arguments)

    def turn_text(self, call: WrittenCall) -> str:
        arguments = {k: v for k, v in call.arguments.items() if k != "bbox"}
        action = {"name": call.name, "arguments": arguments}
        return json.dumps({"thought": OPENTHINKIMG_THOUGHT, "actions": [action]}, ensure_ascii=False)

    def read_turn(self, text: str, session: Session) -> TurnRead:
        if TERMINATE_ACTION in text:
            return TurnRead(final=True)
        match = _ACTIONS.search(text)
        try:
            action = json.loads(match.group(1))[0] if match else None
            if action is not None:  # the original's tool config needs these keys (else: no action)
                action["arguments"]["image" if action["name"] == "OCR" else "param"]
        except (json.JSONDecodeError, RecursionError, IndexError, KeyError, TypeError):
            action = None
        if action is None or not isinstance(action.get("arguments"), dict):
            return TurnRead(reprompt=session.question)
        call = WrittenCall(str(action["name"]), dict(action["arguments"]), _cut(match.group(0)))
        return TurnRead(calls=[call])

    def execute(self, call: WrittenCall, session: Session) -> Observation:
        if "bbox" in call.arguments and call.name == "ZoomInSubfigure":  # the scripted call: its region
            box = [int(v) for v in call.arguments["bbox"]]
            image = jpeg(session.held.crop(tuple(box)))
            return Observation(images=[image], text="Select subplot done.", tool=call.name)
        if call.name in SERVED_ELSEWHERE:
            raise CallRejected(SERVED_ELSEWHERE[call.name])
        if call.name not in ("ZoomInSubfigure", "crop"):
            raise CallRejected(f"{call.name} is not an action of OpenThinkIMG")
        param = call.arguments.get("param")
        match = _BOX.match(param) if isinstance(param, str) else None
        if match is None:
            if call.name == "ZoomInSubfigure":
                raise CallRejected(ZOOM_BY_NAME)
            return Observation(text=f"Parameter format mismatch: {param}", tool=call.name)
        try:
            box = [int(v) for v in match.group(1).split(",")]
        except ValueError as exc:
            return Observation(text=f"Error processing line parameters '{param}': {exc}", tool=call.name)
        if len(box) != 4:
            reason = f"Error processing line parameters '{param}': Invalid number of coordinates: {box}"
            return Observation(text=reason, tool=call.name)
        image = session.observations[-1] if session.observations else session.held
        cropped = jpeg(image.crop(tuple(box)))
        session.observations.append(cropped)
        return Observation(images=[cropped], text="Image cropped successfully.", tool=call.name)

    def on_malformed(self, reason: str, call: WrittenCall | None, session: Session) -> Observation:
        """An action not served here gets the original's answer to a tool it does not have."""
        name = call.name if call is not None else ""
        return Observation(error=f"There is no tool names {name}.", tool=name)

    def observation_turn(self, messages: list[ChatMessage], obs: Observation, turn: int) -> None:
        text = OPENTHINKIMG_OBSERVATION.format(
            name=obs.tool, text=obs.error if obs.error is not None else obs.text
        )
        slot = [{"type": "text", "text": obs.trail}] if obs.trail is not None else list(obs.images)
        messages.append({"role": "user", "content": [{"type": "text", "text": text}, *slot]})

    def structured(self, call: WrittenCall, session: Session) -> dict[str, Any]:
        param = call.arguments.get("param")
        match = _BOX.match(param) if isinstance(param, str) else None
        if call.name in ("ZoomInSubfigure", "crop") and match and len(session.observations) == 1:
            box = [int(v) for v in match.group(1).split(",") if v.strip()]
            if len(box) == 4:
                return structured_zoom(box)
        return super().structured(call, session)


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."
