"""toolshift: does explicit image-tool interaction make VLMs safer against multimodal jailbreaks, and why."""

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
    "text_trail",
    "text_prior",
    "image_no_tool",
)
"""The nine controlled conditions, in the order the tables and figures show them."""
