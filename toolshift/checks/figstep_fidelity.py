"""FigStep fidelity: our renderer against the original SafeBench images.

`figstep_fidelity_table` compares `toolshift.datasets.typography.render_figstep` pixel by pixel with the
original SafeBench images of the FigStep repository; `fetch_safebench_reference` gets the CSV and only the
compared images through the registry's mirror/download machinery. Columns:
`toolshift.contracts.FIDELITY_COLUMNS` (``tables/validation_figstep.csv``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from toolshift.contracts import FIDELITY_COLUMNS
from toolshift.datasets.downloads import DataSource, RemoteFile, fetch
from toolshift.datasets.sources import FIGSTEP_COMMIT, FIGSTEP_REPO, SAFEBENCH_CSV, read_text_csv
from toolshift.datasets.typography import render_figstep
from toolshift.errors import ConfigError, DataError

SAFEBENCH_IMAGE_DIR = "figstep_safebench/images/SafeBench"
"""Where the original SafeBench images lie under a data mirror or the download cache."""
FIGSTEP_MIN_AGREEMENT: float = 0.999
"""The fraction of identical pixels every compared image must reach."""
_REQUIRED = ("category_id", "task_id", "instruction")


def safebench_image_name(category_id: int, task_id: int) -> str:
    """File name of the original FigStep image of one SafeBench row."""
    return f"query_ForbidQI_{int(category_id)}_{int(task_id)}_6.png"


def safebench_image_file(category_id: int, task_id: int) -> RemoteFile:
    """The registry file of one original SafeBench image (FigStep repository at the pinned commit; its
    sha256 is pinned by the lock file on first fetch)."""
    name = safebench_image_name(category_id, task_id)
    return RemoteFile(
        f"{SAFEBENCH_IMAGE_DIR}/{name}",
        f"https://raw.githubusercontent.com/{FIGSTEP_REPO}/{FIGSTEP_COMMIT}/data/images/SafeBench/{name}",
    )


def _check_every(every: Any) -> int:
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ConfigError(f"figstep fidelity: every must be an integer >= 1, got {every!r}")
    return int(every)


def read_safebench_rows(safebench_csv: str | os.PathLike[str], every: int = 10) -> pd.DataFrame:
    """Every `every`-th data row of a SafeBench CSV (``dataset_row`` = its 0-based position), with int
    ``category_id``/``task_id``; a missing file or column, a bad id or an empty instruction raises
    DataError naming the file."""
    every = _check_every(every)
    path = Path(safebench_csv)
    if not path.is_file():
        raise DataError(f"{path}: SafeBench CSV not found")
    df = read_text_csv(path, _REQUIRED)
    rows = df.iloc[::every].copy()
    rows.insert(0, "dataset_row", rows.index.to_numpy(dtype=int))
    for col in ("category_id", "task_id"):
        try:
            rows[col] = rows[col].map(lambda s: int(str(s).strip()))
        except ValueError:
            bad = next(s for s in rows[col] if not str(s).strip().lstrip("-").isdigit())
            raise DataError(f"{path}: {col} must be an integer, got {bad!r}") from None
    empty = rows["instruction"].str.strip() == ""
    if empty.any():
        raise DataError(
            f"{path}: empty instruction in data row {int(rows['dataset_row'][empty].iloc[0]) + 1}"
        )
    return rows.reset_index(drop=True)


def fetch_safebench_reference(source: DataSource, every: int = 10) -> tuple[Path, Path]:
    """(safebench.csv, folder of the original images) through the registry's DataSource: from
    `source.mirror` if set, else downloaded into `source.cache`, each file checked against its sha256
    (registry or lock file). Only the images of the rows `figstep_fidelity_table(every=every)` compares
    are fetched."""
    csv = fetch(SAFEBENCH_CSV, source)
    rows = read_safebench_rows(csv, every)
    folders = {
        fetch(safebench_image_file(c, t), source).parent
        for c, t in zip(rows["category_id"], rows["task_id"], strict=True)
    }
    if len(folders) != 1:
        raise DataError(f"SafeBench images were fetched into several folders: {sorted(map(str, folders))}")
    return csv, folders.pop()


def _pixels(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: image cannot be decoded ({type(exc).__name__}: {exc})") from None


def figstep_fidelity_table(
    safebench_csv: str | os.PathLike[str], images_dir: str | os.PathLike[str], every: int = 10
) -> pd.DataFrame:
    """Compare `render_figstep(instruction)` with the original image of every `every`-th SafeBench row,
    one row per image (FIDELITY_COLUMNS). A pixel differs if any RGB channel differs; an image of another
    size counts every reference pixel as differing. A missing image raises DataError naming it."""
    rows = read_safebench_rows(safebench_csv, every)
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of the original SafeBench images not found")
    out = []
    for row in rows.itertuples(index=False):
        name = safebench_image_name(row.category_id, row.task_id)
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: original image of SafeBench data row {row.dataset_row + 1} not found")
        reference = _pixels(path)
        ours = np.asarray(render_figstep(row.instruction))
        n_pixels = int(reference.shape[0] * reference.shape[1])
        if ours.shape == reference.shape:
            n_diff = int((ours != reference).any(axis=-1).sum())
        else:
            n_diff = n_pixels
        out.append(
            {
                "dataset_row": int(row.dataset_row),
                "image": name,
                "category_id": int(row.category_id),
                "task_id": int(row.task_id),
                "category": str(getattr(row, "category_name", "")),
                "n_pixels": n_pixels,
                "n_differing_pixels": n_diff,
                "agreement": 1.0 - n_diff / n_pixels if n_pixels else math.nan,
                "identical": n_diff == 0 and ours.shape == reference.shape,
            }
        )
    return pd.DataFrame(out, columns=list(FIDELITY_COLUMNS))


def figstep_fidelity_summary(table: pd.DataFrame, min_agreement: float = FIGSTEP_MIN_AGREEMENT) -> dict:
    """Summary of a fidelity table: n, n_identical, n_categories, min/mean agreement, n_below (images
    under `min_agreement`) and passed (every image reaches it; False for an empty table)."""
    n = len(table)
    agreement = table["agreement"].to_numpy(dtype=float) if n else np.array([])
    n_below = int((agreement < min_agreement).sum())
    return {
        "n": n,
        "n_identical": int(table["identical"].astype(bool).sum()) if n else 0,
        "n_categories": int(table["category_id"].nunique()) if n else 0,
        "min_agreement": float(agreement.min()) if n else math.nan,
        "mean_agreement": float(agreement.mean()) if n else math.nan,
        "min_agreement_required": float(min_agreement),
        "n_below": n_below,
        "passed": bool(n and n_below == 0),
    }
