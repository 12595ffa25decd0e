"""toolshift: does explicit image-tool interaction make VLMs safer against multimodal jailbreaks, and why."""

__version__ = "0.1.0"

CONDITIONS: tuple[str, ...] = (
    "direct",
    "tool_offered",
    "tool",
    "tool_unsafe",
    "tool_benign",
    "tool_blank",
    "text_trail",
    "text_prior",
    "image_no_tool",
)
"""The nine controlled conditions, in the order the tables and figures show them."""
