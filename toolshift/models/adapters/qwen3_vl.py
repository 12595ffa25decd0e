"""Qwen3-VL: Qwen-Agent's `image_zoom_in_tool` (relative 0-1000 `bbox_2d`, `label`, `img_idx`)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from toolshift.models.adapters.base import (
    EPISODE_ZOOM_TOOL,
    FamilyAdapter,
    check_zoom_tools,
    episode_image_size,
    zoom_bbox,
)

# Qwen3-VL's zoom tool as Qwen-Agent declares it (the tool the "think with images" cookbook,
# github.com/QwenLM/Qwen3-VL cookbooks/think_with_images.ipynb, gives the model). Source:
# github.com/QwenLM/Qwen-Agent at commit 31a4d36d123688581a9e9744427272b33ce940e0,
# qwen_agent/tools/image_zoom_in_qwen3vl.py (ImageZoomInToolQwen3VL: name, description, parameters),
# rendered into the system prompt by qwen_agent/llm/fncall_prompts/nous_fncall_prompt.py, whose
# FN_CALL_TEMPLATE is the Hermes section of FamilyAdapter.tool_prompt. `bbox_2d` is in relative
# coordinates, 0-1000 of the image's width and height (the cookbook's note; the tool maps it back).
QWEN3_VL_ZOOM_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "image_zoom_in_tool",
        "description": (
            "Zoom in on a specific region of an image by cropping it based on a bounding box (bbox) and an "
            "optional object label"
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "bbox_2d": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 4,
                    "maxItems": 4,
                    "description": (
                        "The bounding box of the region to zoom in, as [x1, y1, x2, y2], where (x1, y1) "
                        "is the top-left corner and (x2, y2) is the bottom-right corner"
                    ),
                },
                "label": {
                    "type": "string",
                    "description": "The name or label of the object in the specified bounding box",
                },
                "img_idx": {
                    "type": "number",
                    "description": "The index of the zoomed-in image (starting from 0)",
                },
            },
            "required": ["bbox_2d", "label", "img_idx"],
        },
    },
}


def relative_bbox(bbox: list[float], image_size: list[int] | tuple[int, int]) -> list[int]:
    """Absolute pixel box [x1, y1, x2, y2] of an image of size (width, height) -> integer 0-1000
    coordinates (Qwen3-VL grounding), rounded half up and clamped to [0, 1000]."""
    width, height = image_size
    scale = (1000 / width, 1000 / height, 1000 / width, 1000 / height)
    return [min(1000, max(0, math.floor(v * s + 0.5))) for v, s in zip(bbox, scale, strict=True)]


class Qwen3VLAdapter(FamilyAdapter):
    """Qwen3-VL: Qwen-Agent's `image_zoom_in_tool` (relative 0-1000 `bbox_2d`, `label`, `img_idx`).

    The episode's absolute pixel bbox is converted with `meta.image_size`; the box is on the first image
    (`img_idx` 0, the attack image); `label` is the call's own if it has one, else `zoom_label`.
    Arguments are written in the order the model writes them in the cookbook (label, bbox_2d, img_idx).
    """

    family = "qwen3_vl"
    protocol_source = (
        "QwenLM/Qwen-Agent: qwen_agent/tools/image_zoom_in_qwen3vl.py "
        "@ 31a4d36d123688581a9e9744427272b33ce940e0 (QwenLM/Qwen3-VL: cookbooks/think_with_images.ipynb)"
    )
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    zoom_label: ClassVar[str] = "the text in the image"

    def tool_prompt(self, tools: list[dict[str, Any]]) -> str:
        check_zoom_tools(tools, self.family)
        return super().tool_prompt([QWEN3_VL_ZOOM_TOOL])

    def call_payload(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
        bbox = zoom_bbox(call, self.family, where)
        size = episode_image_size(meta, where)
        arguments = call["arguments"]
        return {
            "name": QWEN3_VL_ZOOM_TOOL["function"]["name"],
            "arguments": {
                "label": arguments.get("label", self.zoom_label),
                "bbox_2d": relative_bbox(bbox, size),
                "img_idx": arguments.get("img_idx", 0),
            },
        }

    def episode_call(self, call: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """`image_zoom_in_tool` -> `zoom_in` with `bbox` in absolute pixels (floats; clamping and
        rounding are the caller's), as Qwen-Agent's tool maps `bbox_2d` back; `label`, `img_idx` kept."""
        if call.get("name") != QWEN3_VL_ZOOM_TOOL["function"]["name"]:
            return super().episode_call(call, meta)
        arguments = dict(call["arguments"])
        width, height = episode_image_size(meta, "image_zoom_in_tool call")
        box = arguments.pop("bbox_2d")
        arguments["bbox"] = [v * s / 1000 for v, s in zip(box, (width, height, width, height), strict=True)]
        return {"name": EPISODE_ZOOM_TOOL, "arguments": arguments}
