"""DeepEyes (Qwen2.5-VL weights): its own system prompt, zoom tool, user suffix and tool turn, verbatim."""

from __future__ import annotations

from typing import Any

from toolshift.models.adapters.base import (
    DEFAULT_SYSTEM_PROMPT,
    EPISODE_ZOOM_TOOL,
    check_zoom_tools,
    zoom_bbox,
)
from toolshift.models.adapters.qwen2_5_vl import Qwen25VLAdapter

# DeepEyes' prompts, verbatim (the study must show the model what it was trained and evaluated with).
# Source: github.com/Visual-Agent/DeepEyes at commit 6c5e79671dbff958a6f9d44848ba2ca87854f0b0,
# verl/workers/agent/envs/mm_process_engine/prompt.py: PROMPT.SYSTEM_PROMPT_V2 and PROMPT.USER_PROMPT_V2,
# which eval/eval_vstar.py uses unchanged (as instruction_prompt_system and USER_PROMPT_V2). The tool
# schema's `"required":["bbox"]` (the property is `bbox_2d`) is a bug of the original, kept as it is. The
# lines "**Example**:", "<tool_call>" and the example call end in two spaces in the original too.
DEEPEYES_SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "\n"
    "# Tools\n"
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type":"function","function":{"name":"image_zoom_in_tool","description":"Zoom in on a specific region '
    'of an image by cropping it based on a bounding box (bbox) and an optional object label.",'
    '"parameters":{"type":"object","properties":{"bbox_2d":{"type":"array","items":{"type":"number"},'
    '"minItems":4,"maxItems":4,"description":"The bounding box of the region to zoom in, as [x1, y1, x2, '
    'y2], where (x1, y1) is the top-left corner and (x2, y2) is the bottom-right corner."},"label":'
    '{"type":"string","description":"The name or label of the object in the specified bounding box '
    '(optional)."}},"required":["bbox"]}}}\n'
    "</tools>\n"
    "\n"
    "# How to call a tool\n"
    "Return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>\n"
    "\n"
    "**Example**:  \n"
    "<tool_call>  \n"
    '{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 100, 200], "label": "the apple on '
    'the desk"}}  \n'
    "</tool_call>"
)
DEEPEYES_USER_PROMPT = (
    "\nThink first, call **image_zoom_in_tool** if needed, then answer. Format strictly as:  "
    "<think>...</think>  <tool_call>...</tool_call> (if tools needed)  <answer>...</answer> "
)
DEEPEYES_TOOL_NAME = "image_zoom_in_tool"
DEEPEYES_TOOL_PARTS: tuple[str, ...] = (
    "call **image_zoom_in_tool** if needed, ",
    "<tool_call>...</tool_call> (if tools needed)  ",
)
"""The parts of DEEPEYES_USER_PROMPT that are about the tool: conditions without tools get the prompt
without them (the same answer format, `<think>` then `<answer>`, and nothing about a tool)."""
DEEPEYES_ANSWER_FORMAT = DEEPEYES_USER_PROMPT
for _part in DEEPEYES_TOOL_PARTS:
    DEEPEYES_ANSWER_FORMAT = DEEPEYES_ANSWER_FORMAT.replace(_part, "")
DEEPEYES_CALL_REASONING = (
    "<think>The text in the image is what I need to read. I will zoom in on it to see it clearly.</think>"
)
"""The `<think>` block before DeepEyes' scripted zoom call: its format asks for reasoning before a call."""


class DeepEyesAdapter(Qwen25VLAdapter):
    """DeepEyes (Qwen2.5-VL weights): its own system prompt, zoom tool, user suffix and tool turn.

    As DeepEyes' eval does: the system prompt is DEEPEYES_SYSTEM_PROMPT (its tool section follows the
    episode's system text), the call is `image_zoom_in_tool` with `bbox_2d` in absolute pixels, preceded by
    a `<think>` block (DEEPEYES_CALL_REASONING), the user question ends with DEEPEYES_USER_PROMPT, and the
    tool result is a user turn: text `<tool_response>`, the result's parts, DEEPEYES_USER_PROMPT again, text
    `</tool_response>` (parts joined with nothing between). Conditions without tools get the same system
    text without the tool section and the same answer format without its tool parts
    (DEEPEYES_ANSWER_FORMAT), so that direct-vs-tool does not also change the answer format.
    """

    family = "deepeyes"
    protocol_source = (
        "Visual-Agent/DeepEyes: eval/eval_vstar.py, verl/workers/agent/envs/mm_process_engine/prompt.py "
        "@ 6c5e79671dbff958a6f9d44848ba2ca87854f0b0"
    )
    call_reasoning = DEEPEYES_CALL_REASONING
    tool_format_parts = DEEPEYES_TOOL_PARTS

    def answer_format(self, framed: bool) -> str:
        return DEEPEYES_USER_PROMPT if framed else DEEPEYES_ANSWER_FORMAT

    def tool_prompt(self, tools: list[dict[str, Any]]) -> str:
        check_zoom_tools(tools, self.family)
        return DEEPEYES_SYSTEM_PROMPT.removeprefix(DEFAULT_SYSTEM_PROMPT + "\n\n")

    def call_payload(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"bbox_2d": zoom_bbox(call, self.family, where)}
        if "label" in call["arguments"]:
            arguments["label"] = call["arguments"]["label"]
        return {"name": DEEPEYES_TOOL_NAME, "arguments": arguments}

    def episode_call(self, call: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        if call.get("name") != DEEPEYES_TOOL_NAME:
            return super().episode_call(call, meta)
        arguments = dict(call["arguments"])
        arguments["bbox"] = arguments.pop("bbox_2d", arguments.get("bbox"))
        return {"name": EPISODE_ZOOM_TOOL, "arguments": arguments}

    def tool_turn(self, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"type": "text", "text": "<tool_response>"},
            *content,
            {"type": "text", "text": DEEPEYES_USER_PROMPT},
            {"type": "text", "text": "</tool_response>"},
        ]
