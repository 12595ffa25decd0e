"""Datasets: the registry, the embedded `mini` dataset and the prompts-table builder.

`mini` (package data `toolshift/data/mini.csv`) was written for this project: short FigStep-style
instructions ("Steps to ...", "Methods to ...", "List of ...") over the ten SafeBench topics, each harmful
request paired with a harmless twin of the same form and topic (`mini-h-NNN` <-> `mini-b-NNN`). It holds
requests only, never an answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from toolshift.contracts import PROMPT_COLUMNS, write_parquet
from toolshift.errors import ConfigError, ContractError, DataError
from toolshift.images import save_png
from toolshift.typography import render_figstep

TOPICS: tuple[str, ...] = (
    "Illegal Activity",
    "Hate Speech",
    "Malware Generation",
    "Physical Harm",
    "Fraud",
    "Adult Content",
    "Privacy Violation",
    "Legal Opinion",
    "Financial Advice",
    "Health Consultation",
)
"""The ten SafeBench topics (FigStep, Gong et al. 2025), in SafeBench's order."""

ROW_COLUMNS: tuple[str, ...] = ("prompt_id", "category", "harmful", "question", "instruction")
"""The columns a dataset loader returns (the prompts table adds `dataset` and `image`)."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: how to load a dataset and where it comes from."""

    name: str
    loader: Callable[[], pd.DataFrame]
    license: str
    description: str
    source: str = "embedded"
    sha256: str | None = None


def _mini_path() -> Path:
    return Path(str(resources.files("toolshift") / "data" / "mini.csv"))


def check_rows(rows: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check a loader's rows (ROW_COLUMNS present, no empty field, unique safe ids, boolean `harmful`)
    and return them with ROW_COLUMNS only; a problem raises DataError naming `where`."""
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
    rows = rows.loc[:, list(ROW_COLUMNS)].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{where}: no rows")
    for col in ("prompt_id", "category", "question", "instruction"):
        bad = rows[col].isna() | (rows[col].astype(str).str.strip() == "")
        if bad.any():
            raise DataError(f"{where}: empty {col} in row {int(bad.idxmax()) + 1}")
        rows[col] = rows[col].astype(str)
    harmful = rows["harmful"]
    if harmful.dtype != bool:
        mapped = harmful.astype(str).str.strip().str.lower().map({"true": True, "false": False})
        if mapped.isna().any():
            i = int(mapped.isna().idxmax())
            raise DataError(f"{where}: harmful must be true/false, got {harmful.iloc[i]!r} in row {i + 1}")
        rows["harmful"] = mapped.astype(bool)
    dup = rows["prompt_id"][rows["prompt_id"].duplicated()]
    if len(dup):
        raise DataError(f"{where}: duplicate prompt_id {dup.iloc[0]!r}")
    for pid in rows["prompt_id"]:
        if not _SAFE_ID.match(pid):
            raise DataError(f"{where}: prompt_id {pid!r} is not a safe file name (letters, digits, . _ -)")
    return rows


def load_mini() -> pd.DataFrame:
    """The embedded `mini` dataset: 50 harmful and 50 harmless twins over the ten SafeBench topics."""
    path = _mini_path()
    if not path.is_file():
        raise DataError(f"{path}: package data missing (reinstall toolshift)")
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    return check_rows(rows, str(path))


DATASETS: dict[str, DatasetSpec] = {
    "mini": DatasetSpec(
        name="mini",
        loader=load_mini,
        license="same license as toolshift (written for this project)",
        description=(
            "Embedded default: 50 short harmful FigStep-style requests (5 per SafeBench topic) and 50 "
            "harmless twins of the same form and topic; requests only, no answers."
        ),
    ),
}
"""Dataset registry: name -> DatasetSpec. Real benchmarks (SafeBench, MM-SafetyBench) join it later."""


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of a dataset (unknown name -> ConfigError listing the known ones)."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def load_dataset(name: str) -> pd.DataFrame:
    """Load a registered dataset's rows (ROW_COLUMNS), checked."""
    spec = get_dataset(name)
    return check_rows(spec.loader(), f"dataset {name}")


def select_rows(rows: pd.DataFrame, limit_per_class: int | None = None) -> pd.DataFrame:
    """The first `limit_per_class` harmful and the first `limit_per_class` harmless rows, stratified by
    category: round-robin over the categories (in order of first appearance), taking each category's
    rows in file order. None keeps every row. The selected rows keep their original order."""
    if limit_per_class is None:
        return rows.reset_index(drop=True)
    if isinstance(limit_per_class, bool) or not isinstance(limit_per_class, int) or limit_per_class < 1:
        raise ConfigError(f"limit_per_class must be a positive integer or null, got {limit_per_class!r}")
    keep: list[int] = []
    for harmful in (True, False):
        cls = rows[rows["harmful"] == harmful]
        queues = [list(group.index) for _, group in cls.groupby("category", sort=False)]
        picked: list[int] = []
        depth = 0
        while len(picked) < limit_per_class and any(depth < len(q) for q in queues):
            for q in queues:
                if depth < len(q) and len(picked) < limit_per_class:
                    picked.append(q[depth])
            depth += 1
        keep.extend(picked)
    return rows.loc[sorted(keep)].reset_index(drop=True)


def image_relpath(dataset: str, prompt_id: str) -> str:
    """Where a prompt's attack image lies, relative to the results root."""
    return f"data/{dataset}/images/{prompt_id}.png"


def build_prompts(dataset: str, rows: pd.DataFrame, results_root: str | os.PathLike[str],
                  limit_per_class: int | None = None) -> pd.DataFrame:
    """Render each row's instruction as a FigStep image under `results_root` and return the prompts
    table (PROMPT_COLUMNS; `image` relative to the results root). Images are written atomically."""
    if not isinstance(dataset, str) or not _SAFE_ID.match(dataset):
        raise ConfigError(f"dataset name {dataset!r} is not usable as a directory name")
    rows = select_rows(check_rows(rows, f"dataset {dataset}"), limit_per_class)
    root = Path(results_root)
    images = []
    for row in rows.itertuples(index=False):
        rel = image_relpath(dataset, row.prompt_id)
        save_png(render_figstep(row.instruction), root / rel)
        images.append(rel)
    out = rows.assign(dataset=dataset, image=images)
    out["harmful"] = out["harmful"].astype(bool)
    return out.loc[:, list(PROMPT_COLUMNS)]


def build_dataset_prompts(dataset: str, results_root: str | os.PathLike[str],
                          limit_per_class: int | None = None) -> pd.DataFrame:
    """Load a registered dataset and build its prompts table and attack images (see build_prompts)."""
    return build_prompts(dataset, load_dataset(dataset), results_root, limit_per_class=limit_per_class)


def write_prompts(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Check a prompts table against its contract and write it as parquet, atomically."""
    missing = [c for c in PROMPT_COLUMNS if c not in df.columns]
    if missing:
        raise ContractError(f"{path}: prompts table lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise ContractError(f"{path}: no prompts")
    dup = df["prompt_id"][df["prompt_id"].duplicated()]
    if len(dup):
        raise ContractError(f"{path}: duplicate prompt_id {dup.iloc[0]!r}")
    if df["harmful"].dtype != bool:
        raise ContractError(f"{path}: column harmful must be boolean, got {df['harmful'].dtype}")
    write_parquet(df.loc[:, list(PROMPT_COLUMNS)].reset_index(drop=True), path)
