"""Rule `prompts`: the prompts table of a dataset, from the embedded `mini` dataset or a public benchmark.

`DATASETS` holds the embedded `mini` dataset and the public benchmarks of `toolshift.datasets.sources`
(FigStep SafeBench, MM-SafetyBench, JailbreakV-28K, HADES, JBB-Behaviors, ...), whose files are fetched
through `toolshift.datasets.downloads` (a local mirror folder, else pooch downloads into a cache, every file
checked against its sha256 or the lock file).

`mini` (package data `toolshift/data/mini.csv`) was written for this project: short FigStep-style
instructions ("Steps to ...", "Methods to ...", "List of ...") over the ten SafeBench topics, each harmful
request paired with a harmless twin of the same form and topic (`mini-h-NNN` <-> `mini-b-NNN`). It holds
requests only, never an answer.

A prompts table may pair a harmful dataset with a harmless control dataset (option `harmless`): the
refusal direction and the over-refusal table need harmless rows. The harmless rows are drawn with the
harmful dataset's attack typography (for FigStep: the FigStep layout of the harmless instruction) and keep
their own ids and categories. A dataset whose attack images are downloaded (MM-SafetyBench SD_TYPO,
JailbreakV-28K, HADES) cannot draw harmless rows in its layout: for it, `harmless` names another dataset
of the study with harmless prompts whose refusal direction it borrows (`refusal_source`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from toolshift.contracts import (
    PROMPT_CHANGES_COLUMNS,
    PROMPT_COLUMNS,
    SKIPPED_COLUMNS,
    check_prompts,
    write_parquet,
)
from toolshift.datasets.downloads import DataSource, data_source
from toolshift.datasets.images import ImageLimits, fit_image, save_png
from toolshift.datasets.rows import (  # the row columns and checks (ROW_COLUMNS re-exported)
    ID_RULE,
    IMAGE_SOURCE_COLUMN,
    ROW_COLUMNS,  # noqa: F401
    SOURCE_ID_COLUMN,
    TEXT_PROMPT_COLUMN,
    check_rows,
    source_rows,
)
from toolshift.datasets.sources import BENCHMARKS, RENDERED_ATTACKS, SAFEBENCH_TOPICS, DatasetSpec
from toolshift.datasets.typography import FIGSTEP_PROMPT, figstep_problem, render_figstep
from toolshift.datasets.typography_mmsb import mmsb_typo_problem, render_mmsb_typo
from toolshift.errors import ConfigError, ContractError, DataError
from toolshift.files import atomic_path

TOPICS: tuple[str, ...] = SAFEBENCH_TOPICS
"""The ten SafeBench topics (FigStep, Gong et al. 2025), in SafeBench's order."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _mini_path() -> Path:
    return Path(str(resources.files("toolshift") / "data" / "mini.csv"))


def load_mini(source: DataSource | None = None) -> pd.DataFrame:
    """The embedded `mini` dataset: 50 harmful and 50 harmless twins over the ten SafeBench topics
    (package data; `source` is accepted for the loader interface and not used)."""
    path = _mini_path()
    if not path.is_file():
        raise DataError(f"{path}: package data missing (reinstall toolshift)")
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    return check_rows(rows, str(path))


DATASETS: dict[str, DatasetSpec] = {
    "mini": DatasetSpec(
        name="mini",
        n_rows=100,
        loader=load_mini,
        license="same license as toolshift (written for this project)",
        description=(
            "Embedded default: 50 short harmful FigStep-style requests (5 per SafeBench topic) and 50 "
            "harmless twins of the same form and topic; requests only, no answers."
        ),
    ),
    **BENCHMARKS,
}
"""Dataset registry: name -> DatasetSpec (`mini` and the public benchmarks of toolshift.datasets.sources)."""


def dataset_names() -> list[str]:
    """The names of every registered dataset, sorted (what a config's `datasets:` may name)."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of a dataset (unknown name -> ConfigError listing the known ones)."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))} (a dataset of your own takes a "
            "`path`: docs/datasets.md)"
        ) from None


def question_set(name: str) -> str:
    """The question set a dataset asks (`DatasetSpec.question_set`): datasets sharing one ask the same
    questions (MM-SafetyBench TYPO and SD_TYPO). An unregistered name is its own set."""
    spec = DATASETS.get(name)
    return (spec.question_set or spec.name) if spec is not None else str(name)


def _default_source() -> DataSource:
    return data_source("results")


def load_dataset(name: str, source: DataSource | None = None) -> pd.DataFrame:
    """Load a registered dataset's rows (ROW_COLUMNS, plus `text_prompt` / `image_source` where the
    dataset has them), checked. Files come from `source` (default: downloads under `results/`)."""
    spec = get_dataset(name)
    return check_rows(spec.loader(source or _default_source()), f"dataset {name}")


def check_dataset_options(name: str, options: Mapping[str, Any] | None) -> None:
    """Config checks of one `datasets:` entry that need the registry: the dataset is known, and a
    `harmless` control is a known dataset with harmless rows that the attack can draw. ConfigError with
    one line naming the key otherwise. A dataset of the user's own (`path` set, toolshift.datasets.custom)
    takes a name the registry does not use."""
    path = (options or {}).get("path")
    if path is not None:
        from toolshift.datasets.custom import custom_spec

        if name in DATASETS:
            raise ConfigError(
                f"datasets.{name}.path: {name!r} is a registry dataset, fetched from its source; give a "
                "dataset of your own a name of its own (e.g. custom)"
            )
        spec = custom_spec(name, path)
    else:
        spec = get_dataset(name)
    harmless = (options or {}).get("harmless")
    if harmless is None:
        return
    where = f"datasets.{name}.harmless"
    if harmless not in DATASETS:
        raise ConfigError(f"{where}: unknown dataset {harmless!r} (known: {', '.join(sorted(DATASETS))})")
    if harmless == name:
        raise ConfigError(f"{where}: a dataset cannot be its own harmless control")
    if spec.attack not in RENDERED_ATTACKS:
        # downloaded images cannot be redrawn with harmless text: `harmless` names the dataset of the study
        # whose refusal direction this one borrows (`refusal_source`; toolshift.common.config checks it)
        return
    if DATASETS[harmless].classes == "harmful":
        raise ConfigError(f"{where}: {harmless!r} holds no harmless rows")


def has_harmless_prompts(name: str, options: Mapping[str, Any] | None) -> bool:
    """Whether the prompts table of a `datasets:` entry holds harmless prompts: its dataset has harmless
    rows, or its attack draws the rows of a `harmless` control dataset in its layout. A name the registry
    does not know (a dataset of the user's own file) is taken to have them: its own checks read the file."""
    spec = DATASETS.get(name)
    if spec is None:
        return True
    return spec.classes != "harmful" or (
        spec.attack in RENDERED_ATTACKS and (options or {}).get("harmless") is not None
    )


def refusal_source(name: str, options: Mapping[str, Any] | None) -> str | None:
    """The dataset whose refusal direction a `datasets:` entry uses when it has no harmless prompts of its
    own: its `harmless` option (a dataset with downloaded attack images cannot draw harmless rows in its
    layout, so `harmless` names another dataset of the study instead). None when the dataset has harmless
    prompts (it estimates its own direction) or names no source."""
    if has_harmless_prompts(name, options):
        return None
    return (options or {}).get("harmless")


def prompt_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options the prompts of a `datasets:` entry are built with (`build_dataset_prompts`): the entry,
    less a `harmless` that names a refusal-direction source (`refusal_source`), which adds no rows."""
    options = dict(options or {})
    if refusal_source(name, options) is not None:
        options.pop("harmless")
    return options


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


def _own_image(row: Mapping[str, Any]) -> Any:
    """The row's image source (`image_source`: a downloaded or a user's own image), or None."""
    image_source = row.get(IMAGE_SOURCE_COLUMN)
    return image_source if hasattr(image_source, "open") else None


def attack_image(attack: str, row: Mapping[str, Any], source: DataSource | None = None) -> Image.Image:
    """The attack image of one row: the row's own image when it has one (`image_source`: `image` datasets,
    and the rows of a `custom` dataset that give an image); else `figstep` draws the instruction in
    FigStep's layout and `mmsb_typo` in MM-SafetyBench's TYPO layout."""
    own = _own_image(row)
    if own is not None:
        return own.open(source or _default_source())
    if attack == "figstep":
        return render_figstep(row["instruction"])
    if attack == "mmsb_typo":
        return render_mmsb_typo(row["instruction"])
    if attack == "image":
        raise DataError(f"prompt {row['prompt_id']}: no attack image to download (image_source missing)")
    raise ConfigError(f"unknown attack {attack!r}; known: figstep, mmsb_typo, image")


UNRENDERABLE_ACTIONS: tuple[str, ...] = ("stop", "skip")
"""What the prompts builder does with a row whose attack image would not carry its text (option
`datasets.<name>.on_unrenderable`): stop with one line, or leave the row out and record it."""


def attack_problem(attack: str, row: Mapping[str, Any]) -> str | None:
    """Why the attack image of one row would not carry its text (a glyph the font lacks, a text too long
    for the layout), or None. Images of the row's own (downloaded or given) are taken as they are."""
    if _own_image(row) is not None:
        return None
    if attack == "figstep":
        return figstep_problem(row["instruction"])
    if attack == "mmsb_typo":
        return mmsb_typo_problem(row["instruction"])
    return None


def write_skipped(skipped: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write the skipped prompts (SKIPPED_COLUMNS; a header alone when none) as CSV, atomically."""
    with atomic_path(Path(path)) as tmp:
        skipped.loc[:, list(SKIPPED_COLUMNS)].to_csv(tmp, index=False)


def write_changes(changes: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write what the prompts rule changed (PROMPT_CHANGES_COLUMNS; a header alone when none), atomically."""
    with atomic_path(Path(path)) as tmp:
        changes.loc[:, list(PROMPT_CHANGES_COLUMNS)].to_csv(tmp, index=False)


def _id_changes(rows: pd.DataFrame, named: Mapping[str, str]) -> list[dict[str, str]]:
    """One `id_rewritten` change per row whose id the id rule rewrote (`named`: prompt id -> source row)."""
    if SOURCE_ID_COLUMN not in rows.columns:
        return []
    return [
        {
            "prompt_id": pid,
            "source": named[pid],
            "change": "id_rewritten",
            "detail": f"source id {old!r} ({ID_RULE})",
        }
        for pid, old in zip(rows["prompt_id"], rows[SOURCE_ID_COLUMN], strict=True)
        if isinstance(old, str)
    ]


def build_prompts(
    dataset: str,
    rows: pd.DataFrame,
    results_root: str | os.PathLike[str],
    limit_per_class: int | None = None,
    *,
    attack: str = "figstep",
    text_prompt: str = FIGSTEP_PROMPT,
    source: DataSource | None = None,
    on_unrenderable: str = "stop",
    skipped_csv: str | os.PathLike[str] | None = None,
    images: Mapping[str, Any] | None = None,
    changes_csv: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Make each selected row's attack image under `results_root` and return the prompts table
    (PROMPT_COLUMNS; `image` relative to the results root). Images are written atomically.

    With a non-FigStep attack, or rows that give their own `text_prompt`, the table adds the column
    `text_prompt` (the row's own text prompt, else `text_prompt`); a FigStep table has no such column
    (every row takes FIGSTEP_PROMPT).

    A row whose attack image would not carry its text (`attack_problem`) stops the build with DataError
    naming the prompt and the reason (`on_unrenderable="stop"`), or is left out (`"skip"`). Each image then
    meets the `images` limits (`toolshift.datasets.images.fit_image`: a side below `min_side` stops or is
    skipped, more than `max_pixels` is downscaled or stops). The rows left out are written to `skipped_csv`
    (SKIPPED_COLUMNS), what was changed in the rows kept (rewritten ids, downscaled images) to `changes_csv`
    (PROMPT_CHANGES_COLUMNS); each a header alone when none.
    """
    if not isinstance(dataset, str) or not _SAFE_ID.match(dataset):
        raise ConfigError(f"dataset name {dataset!r} is not usable as a directory name")
    if on_unrenderable not in UNRENDERABLE_ACTIONS:
        raise ConfigError(
            f"datasets.{dataset}.on_unrenderable: {on_unrenderable!r} is not one of "
            f"{', '.join(UNRENDERABLE_ACTIONS)}"
        )
    limits = ImageLimits.from_mapping(images)
    checked = check_rows(rows, f"dataset {dataset}")
    named = dict(zip(checked["prompt_id"], source_rows(checked), strict=True))  # rows as the loader gave them
    rows = select_rows(checked, limit_per_class)
    skipped = []
    for row in rows.to_dict("records"):
        problem = attack_problem(attack, row)
        if problem is None:
            continue
        if on_unrenderable == "stop":
            raise DataError(
                f"dataset {dataset}, prompt {row['prompt_id']}: {problem}; fix or shorten that row, or set "
                f"datasets.{dataset}.on_unrenderable: skip to leave such prompts out (the book lists them)"
            )
        skipped.append({**{c: row[c] for c in SKIPPED_COLUMNS[:-1]}, "reason": problem})
    text_skipped = {r["prompt_id"] for r in skipped}
    root = Path(results_root)
    images_rel, changes = {}, []
    for row in rows.to_dict("records"):
        pid = row["prompt_id"]
        if pid in text_skipped:
            continue
        where = f"dataset {dataset}, prompt {pid} ({named[pid]})"
        fitted = fit_image(attack_image(attack, row, source), limits, where)
        if fitted.image is None:
            skipped.append({**{c: row[c] for c in SKIPPED_COLUMNS[:-1]}, "reason": fitted.problem})
            continue
        if fitted.note:
            changes.append(
                {"prompt_id": pid, "source": named[pid], "change": "image_downscaled", "detail": fitted.note}
            )
        rel = image_relpath(dataset, pid)
        save_png(fitted.image, root / rel)
        images_rel[pid] = rel
    skipped_frame = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    rows = rows[rows["prompt_id"].isin(images_rel)].reset_index(drop=True)
    if rows.empty:
        raise DataError(
            f"dataset {dataset}: no prompt can be drawn ({len(skipped)} skipped; first, "
            f"{skipped[0]['prompt_id']}: {skipped[0]['reason']})"
        )
    if skipped_csv is not None:
        write_skipped(skipped_frame, skipped_csv)
    if changes_csv is not None:
        write_changes(
            pd.DataFrame(_id_changes(rows, named) + changes, columns=list(PROMPT_CHANGES_COLUMNS)),
            changes_csv,
        )
    out = rows.assign(dataset=dataset, image=[images_rel[pid] for pid in rows["prompt_id"]])
    out["harmful"] = out["harmful"].astype(bool)
    columns = list(PROMPT_COLUMNS)
    if attack != "figstep" or TEXT_PROMPT_COLUMN in out.columns:
        given = (
            out[TEXT_PROMPT_COLUMN] if TEXT_PROMPT_COLUMN in out.columns else pd.Series(None, index=out.index)
        )
        out[TEXT_PROMPT_COLUMN] = [t if isinstance(t, str) and t.strip() else text_prompt for t in given]
        columns.append(TEXT_PROMPT_COLUMN)
    return out.loc[:, columns]


def build_dataset_prompts(
    dataset: str,
    results_root: str | os.PathLike[str],
    limit_per_class: int | None = None,
    harmless: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    data_mirror: str | os.PathLike[str] | None = None,
    data_cache: str | os.PathLike[str] | None = None,
    data_lock: str | os.PathLike[str] | None = None,
    on_unrenderable: str = "stop",
    skipped_csv: str | os.PathLike[str] | None = None,
    images: Mapping[str, Any] | None = None,
    changes_csv: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Load a registered dataset, or a `custom` one from the file `path` (toolshift.datasets.custom), with
    the harmless rows of the `harmless` control dataset, drawn with the same attack, and build its prompts
    table and attack images (see build_prompts; a row its attack cannot draw stops the build or, with
    `on_unrenderable="skip"`, goes to `skipped_csv`; `images` holds the size limits, `changes_csv` gets the
    rewritten ids and downscaled images).

    Files come from `data_mirror` when given, else are downloaded into `data_cache` (default
    `<results_root>/cache/downloads`); hashes not pinned by the registry are checked against `data_lock`
    (default: the committed `config/datasets.lock.yaml`, never written by a run: new entries go to
    `<results_root>/datasets.lock.yaml`, see toolshift.datasets.downloads)."""
    source = data_source(results_root, data_mirror, data_cache, data_lock)
    if path is not None:
        from toolshift.datasets.custom import custom_spec, load_custom

        spec = custom_spec(dataset, path)
        check_dataset_options(dataset, {"harmless": harmless, "path": path})
        rows = load_custom(path, dataset)
    else:
        spec = get_dataset(dataset)
        check_dataset_options(dataset, {"harmless": harmless})
        rows = load_dataset(dataset, source)
    if harmless is not None:
        control = load_dataset(harmless, source)
        control = control[~control["harmful"]]
        if control.empty:
            raise DataError(f"dataset {harmless}: no harmless rows to pair with {dataset}")
        rows = pd.concat(
            [rows, control.drop(columns=[IMAGE_SOURCE_COLUMN], errors="ignore")], ignore_index=True
        )
        rows = check_rows(rows, f"dataset {dataset} with harmless control {harmless}")
    return build_prompts(
        dataset,
        rows,
        results_root,
        limit_per_class=limit_per_class,
        attack=spec.attack,
        text_prompt=spec.text_prompt,
        source=source,
        on_unrenderable=on_unrenderable,
        skipped_csv=skipped_csv,
        images=images,
        changes_csv=changes_csv,
    )


def text_prompts(prompts: pd.DataFrame) -> list[str]:
    """The text sent with each row's attack image: the `text_prompt` column where the table has one (and
    the row a value), else FIGSTEP_PROMPT. For episode builders."""
    if TEXT_PROMPT_COLUMN not in prompts.columns:
        return [FIGSTEP_PROMPT] * len(prompts)
    return [t if isinstance(t, str) and t.strip() else FIGSTEP_PROMPT for t in prompts[TEXT_PROMPT_COLUMN]]


def write_prompts(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Check a prompts table against its contract and write it as parquet, atomically (PROMPT_COLUMNS,
    plus `text_prompt` when the table has it)."""
    missing = [c for c in PROMPT_COLUMNS if c not in df.columns]
    if missing:
        raise ContractError(f"{path}: prompts table lacks column(s) {', '.join(missing)}")
    check_prompts(df, path)
    columns = list(PROMPT_COLUMNS) + ([TEXT_PROMPT_COLUMN] if TEXT_PROMPT_COLUMN in df.columns else [])
    write_parquet(df.loc[:, columns].reset_index(drop=True), path)
