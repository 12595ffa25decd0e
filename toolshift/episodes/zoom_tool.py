"""The zoom-in tool of the episodes: its name and its JSON-schema spec (families with a native zoom tool
map it onto theirs: toolshift.models.adapters)."""

from __future__ import annotations

from typing import Any

TOOL_NAME: str = "zoom_in"

ZOOM_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Zoom in on a region of the image: crop the image to the bounding box and return the "
            "enlarged region as a new image."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "bbox": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 4,
                    "maxItems": 4,
                    "description": (
                        "The region to zoom in on, [x1, y1, x2, y2]: integer pixel coordinates of its "
                        "top-left and bottom-right corners in the original image."
                    ),
                }
            },
            "required": ["bbox"],
        },
    },
}
"""The zoom-in tool as a JSON-schema function spec (the `{"type": "function", "function": ...}` form
that chat templates take as `tools`)."""
