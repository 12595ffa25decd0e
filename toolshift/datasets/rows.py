"""A dataset loader's rows: their columns, the checks every row passes (`check_rows`), and prompt ids.

Every loader (the registry's, `mini`, a custom dataset's) returns ROW_COLUMNS and, where it has them, the
optional columns; `check_rows` checks them (no empty field, boolean `harmful`, unique ids) before any image
is drawn.

A prompt id goes into file names (`data/{dataset}/images/{id}.png`, `{id}_zoom.png`, the free loop's
`{id}_free_t{turn}_c{k}.png`, the book's copies and every temporary name beside them), which file systems
cap at 255 bytes. So an id is at most `PROMPT_ID_MAX_CHARS` characters of `PROMPT_ID_CHARS`. An id that
breaks the rule is rewritten by one function, `safe_prompt_id` (never a path, never `.` or `..`); the
prompts rule lists every rewritten id in `data/{dataset}/changes.csv` and the book shows that table. Two
ids that are equal, in the file or once rewritten, stop the build with one line naming both source rows.
"""

from __future__ import annotations

import hashlib
import re

import pandas as pd

from toolshift.errors import DataError

PROMPT_ID_MAX_CHARS = 100
"""The longest prompt id. Ids go into file names (attack images, zoom crops, the free loop's crops, the
book's copies, their temporary names), which file systems cap at 255 bytes."""

PROMPT_ID_CHARS = "letters A-Z a-z, digits, '.', '_' and '-', starting with a letter or digit"
"""The characters of a prompt id (the rule `safe_prompt_id` enforces)."""

ROW_COLUMNS: tuple[str, ...] = ("prompt_id", "category", "harmful", "question", "instruction")
"""The columns a dataset loader returns (the prompts table adds `dataset` and `image`)."""

TEXT_PROMPT_COLUMN = "text_prompt"
"""Optional column of a loader's rows and of `prompts.parquet`: the text sent with the attack image. The
prompts table has it when the dataset's attack is not FigStep; without it every row takes FIGSTEP_PROMPT."""

IMAGE_SOURCE_COLUMN = "image_source"
"""Optional column of a loader's rows: where a downloaded attack image comes from (never written out)."""

SOURCE_ID_COLUMN = "source_id"
"""Optional column of checked rows: the id a row had in its file, where `check_rows` rewrote it (else None);
listed in `changes.csv`, never written to the prompts table."""

SOURCE_ROW_COLUMN = "source_row"
"""Optional column of a loader's rows: which row of which file a prompt comes from (e.g. `my.csv line 7`),
for messages and `changes.csv`; without it a row is named by its number in the loader's table."""

OPTIONAL_ROW_COLUMNS: tuple[str, ...] = (
    TEXT_PROMPT_COLUMN,
    IMAGE_SOURCE_COLUMN,
    SOURCE_ID_COLUMN,
    SOURCE_ROW_COLUMN,
)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
ID_RULE = f"at most {PROMPT_ID_MAX_CHARS} {PROMPT_ID_CHARS}"
"""The prompt-id rule, in words (docs/datasets.md)."""


def safe_prompt_id(raw: str) -> str:
    """The prompt id `raw` becomes under the id rule (`ID_RULE`): itself when it follows the rule; else runs
    of other characters (`/`, spaces, ...) become `_`, leading `.`, `_`, `-` go, and an id longer than
    PROMPT_ID_MAX_CHARS is cut and ends in `-` and 8 hex digits of its sha256 (so long ids that share a start
    stay apart). Never a path: no `/`, never `.` or `..`."""
    raw = str(raw)
    if len(raw) <= PROMPT_ID_MAX_CHARS and _SAFE_ID.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    text = _UNSAFE_RUN.sub("_", raw.strip()).lstrip("._-")
    if not text:
        return f"id-{digest}"
    if len(text) > PROMPT_ID_MAX_CHARS:
        text = text[: PROMPT_ID_MAX_CHARS - 9].rstrip("._-") + "-" + digest
    return text


def source_rows(rows: pd.DataFrame) -> list[str]:
    """How each row is named in messages: its `source_row` where the loader gave one, else `row N`."""
    given = rows[SOURCE_ROW_COLUMN] if SOURCE_ROW_COLUMN in rows.columns else [None] * len(rows)
    return [g if isinstance(g, str) and g else f"row {i + 1}" for i, g in enumerate(given)]


def rewrite_ids(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Ids that break the id rule rewritten (`safe_prompt_id`; the source ids kept in a `source_id` column,
    added only when some id was rewritten); a duplicate, in the file or once rewritten, raises DataError
    naming both source rows."""
    named = source_rows(rows)
    first: dict[str, int] = {}
    for i, pid in enumerate(rows["prompt_id"]):
        if pid in first:
            j = first[pid]
            raise DataError(
                f"{where}: duplicate prompt_id {pid!r} ({named[j]} and {named[i]}): ids must be unique"
            )
        first[pid] = i
    known = list(rows[SOURCE_ID_COLUMN]) if SOURCE_ID_COLUMN in rows.columns else [None] * len(rows)
    safe = [safe_prompt_id(pid) for pid in rows["prompt_id"]]
    taken: dict[str, int] = {}
    for i, new in enumerate(safe):
        if new in taken:
            j = taken[new]
            a, b = rows["prompt_id"].iloc[j], rows["prompt_id"].iloc[i]
            raise DataError(
                f"{where}: prompt ids {a!r} ({named[j]}) and {b!r} ({named[i]}) both become {new!r} under "
                f"the id rule ({ID_RULE}): rename one of them"
            )
        taken[new] = i
    if SOURCE_ID_COLUMN not in rows.columns and safe == list(rows["prompt_id"]):
        return rows  # nothing rewritten: no source_id column
    rows[SOURCE_ID_COLUMN] = [
        old if isinstance(old, str) else (pid if new != pid else None)
        for old, pid, new in zip(known, rows["prompt_id"], safe, strict=True)
    ]
    rows["prompt_id"] = safe
    return rows


def check_rows(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check a loader's rows (ROW_COLUMNS present, no empty field, unique safe ids, boolean `harmful`)
    and return them with ROW_COLUMNS (plus `text_prompt` / `image_source` where present); a problem raises
    DataError naming `where`."""
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
    keep = list(ROW_COLUMNS) + [c for c in OPTIONAL_ROW_COLUMNS if c in rows.columns]
    rows = rows.loc[:, keep].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{where}: no rows")
    for col in ("prompt_id", "category", "question", "instruction"):
        bad = rows[col].isna() | (rows[col].astype(str).str.strip() == "")
        if bad.any():
            raise DataError(f"{where}: empty {col} in row {int(bad.idxmax()) + 1}")
        rows[col] = rows[col].astype(str)
    if TEXT_PROMPT_COLUMN in rows.columns:  # a missing prompt (NaN) takes the dataset's default later
        given = rows[TEXT_PROMPT_COLUMN]
        bad = given.notna() & (given.astype(str).str.strip() == "")
        if bad.any():
            raise DataError(f"{where}: empty {TEXT_PROMPT_COLUMN} in row {int(bad.idxmax()) + 1}")
    harmful = rows["harmful"]
    if harmful.dtype != bool:
        mapped = harmful.astype(str).str.strip().str.lower().map({"true": True, "false": False})
        if mapped.isna().any():
            i = int(mapped.isna().idxmax())
            raise DataError(f"{where}: harmful must be true/false, got {harmful.iloc[i]!r} in row {i + 1}")
        rows["harmful"] = mapped.astype(bool)
    return rewrite_ids(rows, where)
