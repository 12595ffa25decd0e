"""The file contracts between DAG stages: column lists, validators and atomic writers.

Every rule reads and writes files through these helpers, so a replacement rule (another inference
backend, another judge) only has to write files that pass the same validators.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.errors import ContractError

PROMPT_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "dataset",
    "category",
    "harmful",
    "question",
    "instruction",
    "image",
)
"""`prompts.parquet`: one row per prompt; `image` is a path relative to the results root."""

RESPONSE_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "dataset",
    "category",
    "harmful",
    "model",
    "condition",
    "intervention",
    "response",
    "n_prompt_tokens",
    "n_new_tokens",
    "max_new_tokens",
    "do_sample",
    "engine",
    "zoom_scale",
)
"""`responses.parquet`: one row per generation; `intervention` is `none` or the intervention id; `engine`
the inference engine that generated it (`hf`, `vllm`, `api`); `zoom_scale` the episode's zoom
magnification (`meta.zoom_scale`; NaN in conditions without a zoom box)."""

JUDGED_COLUMNS: tuple[str, ...] = RESPONSE_COLUMNS + ("judge", "unsafe", "judge_raw")
"""Judged tables: a responses table plus the judge's verdict."""

ASR_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "condition",
    "intervention",
    "judge",
    "n",
    "n_unsafe",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "rel_reduction",
    "rel_reduction_ci_low",
    "rel_reduction_ci_high",
    "mcnemar_p",
)
"""`tables/asr.csv`: ASR per (model, dataset, condition, intervention, judge) on harmful prompts."""

EPISODE_KEYS: tuple[str, ...] = ("prompt_id", "condition", "messages", "meta")
"""`episodes/{dataset}/{condition}.jsonl`: the keys of every line."""

MESSAGE_ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})

ACTIVATION_DIMS: tuple[str, ...] = ("prompt_id", "layer", "hidden")
"""`activations.nc`: variable `resid` with these dims."""

ACTIVATION_ATTRS: tuple[str, ...] = (
    "model",
    "revision",
    "condition",
    "position",
    "dtype",
    "toolshift_version",
)


# --------------------------------------------------------------------------- atomic writing

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failed or killed step therefore never leaves a file that Snakemake would take as complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a CSV table atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a malformed line is reported with its file and line number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ContractError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return records


# --------------------------------------------------------------------------- validation


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: str | os.PathLike[str]) -> None:
    """Raise a one-line ContractError naming the file and every missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(f"{path}: missing column(s) {', '.join(missing)}")


def read_table(path: str | os.PathLike[str], columns: Iterable[str]) -> pd.DataFrame:
    """Read a parquet or CSV contract table and check that it has the given columns."""
    p = Path(path)
    if not p.exists():
        raise ContractError(f"{p}: file not found")
    try:
        df = pd.read_csv(p) if p.suffix == ".csv" else pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a contract failure
        raise ContractError(f"{p}: cannot be read as a table ({type(exc).__name__}: {exc})") from None
    require_columns(df, columns, p)
    return df


def read_prompts(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read `prompts.parquet` and check its contract (columns, unique ids, boolean `harmful`)."""
    df = read_table(path, PROMPT_COLUMNS)
    if df.empty:
        raise ContractError(f"{path}: no prompts")
    dup = df["prompt_id"][df["prompt_id"].duplicated()]
    if len(dup):
        raise ContractError(f"{path}: duplicate prompt_id {dup.iloc[0]!r}")
    if df["harmful"].dtype != bool:
        raise ContractError(f"{path}: column harmful must be boolean, got {df['harmful'].dtype}")
    return df


def read_responses(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a `responses.parquet` and check its columns."""
    return read_table(path, RESPONSE_COLUMNS)


def validate_episode(record: dict[str, Any], where: str) -> None:
    """Check one episode object against the episodes contract; `where` names file and line."""
    missing = [k for k in EPISODE_KEYS if k not in record]
    if missing:
        raise ContractError(f"{where}: episode lacks key(s) {', '.join(missing)}")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ContractError(f"{where}: messages must be a non-empty list")
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in MESSAGE_ROLES:
            raise ContractError(
                f"{where}: message {i} has role {role!r}, expected one of {sorted(MESSAGE_ROLES)}"
            )
        for part in msg.get("content", []):
            if part.get("type") not in ("text", "image"):
                raise ContractError(f"{where}: message {i} has a content part of type {part.get('type')!r}")
            if part["type"] == "image" and "path" not in part:
                raise ContractError(f"{where}: message {i} has an image part without a path")
        for call in msg.get("tool_calls", []) or []:
            if not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), dict):
                raise ContractError(f"{where}: message {i} has a malformed tool call {call!r}")


def read_episodes(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate an episodes JSONL file."""
    records = read_jsonl(path)
    if not records:
        raise ContractError(f"{path}: no episodes")
    for lineno, record in enumerate(records, start=1):
        validate_episode(record, f"{path}:{lineno}")
    return records
