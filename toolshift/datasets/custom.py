"""Bring your own dataset: a CSV or JSONL file of prompts, configured as `datasets.<name>.path`.

Each row (a CSV row under a header, or a JSON object per line) has:

- `id`: the prompt id (the id rule of `toolshift.datasets.ids`; an id that breaks it is rewritten and listed
  in `changes.csv` and the book);
- `prompt`: the request in plain words (the prompts table's `question`, what the judges read);
- `harmful`: `true` / `false` (also `yes` / `no`, `1` / `0`; a JSON boolean in JSONL);
- `category`: any label (tables break ASR down by it);
- `image`: a path to the attack image (relative to the file's folder, or absolute), and / or
- `text`: the text drawn as FigStep typography when the row gives no image (the prompts table's
  `instruction`; with an image it only records what the image says, default: the prompt);
- `text_prompt` (optional): the text sent with the image (default: FigStep's text prompt).

The file is read when the config is validated (before any job), so a missing column, an empty field, a
duplicate id or a missing image file stops the run with one line naming the file and the row; images are
decoded and size-checked (`images:` limits) by the prompts rule, the first rule. Everything else about the
dataset (splits, episodes, conditions, judges, the book) is as for the registry's datasets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.datasets.rows import IMAGE_SOURCE_COLUMN, SOURCE_ROW_COLUMN, TEXT_PROMPT_COLUMN, check_rows
from toolshift.datasets.sources import DatasetSpec, LocalImage
from toolshift.datasets.typography import FIGSTEP_PROMPT
from toolshift.errors import DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "prompt", "harmful", "category")
"""The columns every row of a custom dataset has."""

IMAGE_COLUMNS: tuple[str, ...] = ("image", "text")
"""A row gives its attack as an image file, or as text to draw (FigStep typography); the file has at least
one of these columns."""

OPTIONAL_COLUMNS: tuple[str, ...] = (TEXT_PROMPT_COLUMN,)

FORMATS: tuple[str, ...] = (".csv", ".jsonl")

_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def custom_spec(name: str, path: str | os.PathLike[str]) -> DatasetSpec:
    """The registry-like entry of a custom dataset (for the prompts builder and the book)."""
    return DatasetSpec(
        name=name,
        loader=lambda source: load_custom(path, name),
        license="the user's own (see the file)",
        description=f"Prompts of your own, from {path} (a custom dataset: docs/datasets.md).",
        source=str(path),
        attack="figstep",
        classes="both",
    )


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: custom dataset file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: custom dataset file cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}); save it as UTF-8"
        ) from None


def _read_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The file's rows as strings, and how each row is named (`file row N` / `file line N`)."""
    text = _text(path)
    if path.suffix.lower() == ".csv":
        import io

        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
        return df, [f"{path} row {i + 1}" for i in range(len(df))]
    records, named = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
        records.append({k: "" if v is None else v for k, v in record.items()})
        named.append(f"{path} line {number}")
    return pd.DataFrame.from_records(records), named


def _harmful(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    parsed = _BOOLEANS.get(str(value).strip().lower())
    if parsed is None:
        raise DataError(f"{where}: harmful must be true or false, got {value!r}")
    return parsed


def load_custom(path: str | os.PathLike[str], name: str = "custom") -> pd.DataFrame:
    """The rows of a custom dataset file (module docstring), checked like a registry dataset's
    (`check_rows`): ROW_COLUMNS plus `image_source` (a LocalImage, or None where the row is drawn),
    `source_row` and, where the file has it, `text_prompt`. DataError, one line, naming the file and row."""
    file = Path(path)
    if file.suffix.lower() not in FORMATS:
        raise DataError(
            f"{file}: a custom dataset is a .csv or .jsonl file, not {file.suffix or 'no suffix'!r}"
        )
    df, named = _read_table(file)
    if df.empty:
        raise DataError(f"{file}: no rows")
    allowed = REQUIRED_COLUMNS + IMAGE_COLUMNS + OPTIONAL_COLUMNS
    unknown = [c for c in df.columns if c not in allowed]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if unknown or missing:
        what = (
            f"unknown column(s) {', '.join(map(repr, unknown))}"
            if unknown
            else f"missing column(s) {', '.join(missing)}"
        )
        raise DataError(f"{file}: {what} (the columns: {', '.join(allowed)}; docs/datasets.md)")
    if not any(c in df.columns for c in IMAGE_COLUMNS):
        raise DataError(f"{file}: needs a column `image` (a path) or `text` (drawn as FigStep typography)")
    df = df.fillna("")
    rows = []
    for i, record in enumerate(df.to_dict("records")):
        where = named[i]
        image = str(record.get("image", "")).strip()
        text = str(record.get("text", "")).strip()
        if not image and not text:
            raise DataError(f"{where}: gives neither an image nor a text to draw (columns image, text)")
        source = None
        if image:
            image_path = Path(image) if Path(image).is_absolute() else file.parent / image
            if not image_path.is_file():
                raise DataError(f"{where}: image {image!r} not found ({image_path})")
            source = LocalImage(image_path, where)
        row = {
            "prompt_id": str(record["id"]).strip(),
            "category": str(record["category"]).strip(),
            "harmful": _harmful(record["harmful"], where),
            "question": str(record["prompt"]).strip(),
            "instruction": text or str(record["prompt"]).strip(),
            IMAGE_SOURCE_COLUMN: source,
            SOURCE_ROW_COLUMN: where,
        }
        if TEXT_PROMPT_COLUMN in df.columns:
            row[TEXT_PROMPT_COLUMN] = str(record[TEXT_PROMPT_COLUMN]).strip() or FIGSTEP_PROMPT
        rows.append(row)
    return check_rows(pd.DataFrame(rows), f"dataset {name} ({file})")
