"""toolshift: does explicit image-tool interaction make VLMs safer against multimodal jailbreaks, and why."""

import re
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR: Path = Path(__file__).resolve().parent
"""The installed package folder (its data/ and assets/ ship with it)."""
REPO_ROOT: Path = PACKAGE_DIR.parent
"""The repository toolshift is installed editable from (config/, rules/, workflow_scripts/, book/)."""

OUTCOMES: tuple[str, ...] = ("refusal", "unsafe", "non_answer")
"""The ``outcome`` of every judged response: a refusal, harmful compliance, or a reply that does not
answer (what a non-answer is, and how a judge's verdict becomes an outcome: `toolshift.judges.outcomes`)."""

CONDITIONS: tuple[str, ...] = (
    "direct",
    "tool_offered",
    "tool",
    "tool_unsafe",
    "tool_benign",
    "tool_blank",
    "tool_blank_x0.25",
    "tool_blank_x4",
    "text_trail",
    "text_prior",
    "image_no_tool",
    "image_after",
    "image_turn",
    "text_trail_long",
)
"""The controlled conditions, in the order the tables and figures show them (docs/conditions.md). The
override size dose `tool_blank_x{scale}` (any positive scale, written as `format(scale, "g")`: see
`blank_scale`) follows `tool_blank`; the two scales listed are the shipped configs' dose."""

BLANK_CONDITION: str = "tool_blank"
"""The blank override at the zoom's own size (scale 1); `tool_blank_x{scale}` is the same override with
`scale` times the zoom's pixels (the size dose)."""

_BLANK_DOSE = re.compile(r"tool_blank_x(?P<scale>(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?)")


def blank_scale(condition: str) -> float | None:
    """The pixel scale of a blank-override condition: 1 for `tool_blank`, `s` for `tool_blank_x{s}` (s
    written as `format(s, "g")`, positive, not 1: `tool_blank_x0.25`, `tool_blank_x4`); None for any other
    name, including non-canonical spellings such as `tool_blank_x4.0` or `tool_blank_x1`."""
    if condition == BLANK_CONDITION:
        return 1.0
    match = _BLANK_DOSE.fullmatch(condition)
    if match is None:
        return None
    scale = float(match["scale"])
    if scale <= 0 or scale == 1 or format(scale, "g") != match["scale"]:
        return None
    return scale


def blank_condition(scale: float) -> str:
    """The condition name of the blank override at `scale` times the zoom's pixels (inverse of
    `blank_scale`)."""
    if scale == 1:
        return BLANK_CONDITION
    return f"{BLANK_CONDITION}_x{format(float(scale), 'g')}"


def is_controlled_condition(name: str) -> bool:
    """Whether `name` is a controlled condition: one of CONDITIONS or any blank size dose."""
    return name in CONDITIONS or blank_scale(name) is not None


def condition_order(condition: str) -> tuple[int, float, str]:
    """Sort key of conditions: CONDITIONS order, with every blank override together (`tool_blank`, then its
    size doses by scale, listed or not); unknown names after all, alphabetically."""
    scale = blank_scale(condition)
    if scale is not None:
        return (CONDITIONS.index(BLANK_CONDITION), 0.0 if scale == 1 else scale, "")
    if condition in CONDITIONS:
        return (CONDITIONS.index(condition), 0.0, "")
    return (len(CONDITIONS), 0.0, condition)
