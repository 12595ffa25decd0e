"""Markdown formatting for the book: percentages with intervals, p-values, escaped cells, pipe tables.

Pure string functions over values read from result files; nothing here computes a statistic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

DASH = "—"
"""What a cell shows for a value that is missing or does not apply."""


def is_missing(x: Any) -> bool:
    """None, NaN or a pandas missing value."""
    return x is None or (isinstance(x, float) and math.isnan(x)) or (not isinstance(x, str) and pd.isna(x))


def pct(x: Any) -> str:
    """A fraction as a percentage with one decimal (`0.4231` -> `42.3`), or a dash."""
    return DASH if is_missing(x) else f"{100 * float(x):.1f}"


def with_ci(x: Any, lo: Any, hi: Any) -> str:
    """`x [lo, hi]` in percent; the interval is left out when either end is missing."""
    if is_missing(x):
        return DASH
    if is_missing(lo) or is_missing(hi):
        return pct(x)
    return f"{pct(x)} [{pct(lo)}, {pct(hi)}]"


def number_with_ci(x: Any, lo: Any, hi: Any, digits: int = 3) -> str:
    """`x [lo, hi]` with `digits` significant digits (no percent scaling)."""
    if is_missing(x):
        return DASH
    if is_missing(lo) or is_missing(hi):
        return f"{float(x):.{digits}g}"
    return f"{float(x):.{digits}g} [{float(lo):.{digits}g}, {float(hi):.{digits}g}]"


def p_value(x: Any) -> str:
    """A p-value: three decimals, or scientific notation below 0.001."""
    if is_missing(x):
        return DASH
    x = float(x)
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def cell(x: Any) -> str:
    """A value made safe for one cell of a pipe table."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def code(x: Any) -> str:
    """A value as inline code in a table cell."""
    return f"`{cell(x)}`"


def value(x: Any) -> str:
    """A generic cell: floats with three significant digits, missing values as a dash."""
    if isinstance(x, float):
        return DASH if math.isnan(x) else f"{x:.3g}"
    if is_missing(x):
        return DASH
    return cell(x)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub/MyST pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ref_label(prefix: str, name: str) -> str:
    """A MyST label (`{ref}` target) for `name`: `{prefix}-` and its lower-case letters and digits."""
    return f"{prefix}-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


NOT_FOR_API_MODELS = (
    "Not available for API models: an API model (backend openai) returns text only, no activations, so it "
    "has no tool vector, refusal direction, representation analyses or interventions."
)
"""What the book says where a result needs activations and the study has no model on the hf backend."""
