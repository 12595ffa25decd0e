"""The benchmark sources: one entry per public dataset, with its files, license, loader and attack.

Each entry names the files it reads (`RemoteFile`: path under the mirror/cache, upstream URL at a pinned
revision where one is known, sha256 where it can be pinned here; the others are pinned by the lock file on
first fetch, see `toolshift.datasets.downloads`) and a loader that turns them into prompt rows: `prompt_id`,
`category`, `harmful`, `question` (the plain request), `instruction` (the text drawn into the attack image)
and, where the dataset has them, `text_prompt` (the text sent with the image) and `image_source` (an
`ImageSource` for datasets whose attack images are downloaded rather than rendered).

How each dataset's attack image is made (`DatasetSpec.attack`):

- `figstep`: the instruction drawn in FigStep's typography (`toolshift.datasets.typography.render_figstep`),
  text prompt `FIGSTEP_PROMPT` (FigStep SafeBench, its benign sentences, JBB, AdvBench, HarmBench,
  StrongREJECT).
- `mmsb_typo`: the key phrase drawn in MM-SafetyBench's TYPO layout
  (`toolshift.datasets.typography_mmsb.render_mmsb_typo`), text prompt the question's `Rephrased Question`.
- `image`: the benchmark's own image, downloaded (MM-SafetyBench SD / SD_TYPO, JailbreakV-28K, HADES).

The files of a loader never contain answers: every dataset here holds requests only.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from toolshift.datasets.downloads import DataSource, RemoteFile, check_relpath, fetch, fetch_archive
from toolshift.datasets.images import decode_image, load_image
from toolshift.datasets.typography import FIGSTEP_PROMPT
from toolshift.datasets.typography_mmsb import MMSB_DEFAULT_PROMPT
from toolshift.errors import DataError

ATTACKS: tuple[str, ...] = ("figstep", "mmsb_typo", "image")
"""How a dataset's attack image is made (see the module docstring)."""

RENDERED_ATTACKS: tuple[str, ...] = ("figstep", "mmsb_typo")
"""Attacks that draw the image from the row's text, so harmless control rows can be drawn the same way."""

CLASSES: tuple[str, ...] = ("harmful", "harmless", "both")
"""Which rows a dataset holds."""

SAFEBENCH_TOPICS: tuple[str, ...] = (
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
"""The ten SafeBench topics (FigStep, Gong et al. 2025), in SafeBench's order (category_id 1..10)."""


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: how to load a dataset, where it comes from and how its attack image is made.

    `loader(source)` returns the rows (ROW_COLUMNS, plus `text_prompt` / `image_source` where the dataset
    has them); `files` lists the fixed files it fetches (files listed inside another file, such as the
    JailbreakV-28K images, are fetched too but cannot be listed here); `text_prompt` is the text sent with
    the image of a row that has none of its own."""

    name: str
    loader: Callable[[DataSource], pd.DataFrame]
    license: str
    description: str
    source: str = "embedded"
    files: tuple[RemoteFile, ...] = ()
    attack: str = "figstep"
    classes: str = "both"
    text_prompt: str = FIGSTEP_PROMPT
    n_rows: int | None = None
    """The published number of rows (tests/test_sources.py checks it against the files where it can);
    `make bench` sizes a study from it before anything is downloaded."""
    question_set: str = ""
    """Datasets that ask the same questions share a question set (MM-SafetyBench's TYPO, SD and SD_TYPO
    variants; SafeBench and its tiny subset): a mean over datasets counts a question set once
    (`toolshift.analysis.headline`). Empty: the dataset's own name."""

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise DataError(
                f"dataset {self.name}: unknown attack {self.attack!r} (known: {', '.join(ATTACKS)})"
            )
        if self.classes not in CLASSES:
            raise DataError(f"dataset {self.name}: classes must be one of {', '.join(CLASSES)}")


# --------------------------------------------------------------------------- image sources


@dataclass(frozen=True)
class RemoteImage:
    """An attack image that is a registry file of its own (fetched when the prompt is built)."""

    file: RemoteFile

    def open(self, source: DataSource) -> Image.Image:
        return load_image(fetch(self.file, source))


@dataclass(frozen=True)
class ArchiveImage:
    """An attack image inside a zip archive: `member` is the path's tail, e.g. `01-X/SD/0.jpg` (the
    archive may hold it under a top folder)."""

    archive: RemoteFile
    member: str

    def open(self, source: DataSource) -> Image.Image:
        root = fetch_archive(self.archive, source)
        marker = (root / ".toolshift-unpacked").read_text(encoding="utf-8").strip()
        path = _archive_index(str(root), marker).get(self.member)
        if path is None:
            raise DataError(f"{root}: archive {self.archive.relpath} holds no {self.member}")
        return load_image(path)


@dataclass(frozen=True)
class EmbeddedImage:
    """An attack image stored as encoded bytes inside a data file (HADES's parquet)."""

    data: bytes
    where: str

    def open(self, source: DataSource) -> Image.Image:
        return decode_image(io.BytesIO(self.data), self.where)


@dataclass(frozen=True)
class LocalImage:
    """An attack image that is a file of the user's own (a `custom` dataset's `image` column); `where`
    names the row that gives it."""

    path: Path
    where: str

    def open(self, source: DataSource) -> Image.Image:
        try:
            return load_image(self.path)
        except DataError as exc:
            raise DataError(f"{self.where}: {exc}") from None


ImageSource = RemoteImage | ArchiveImage | EmbeddedImage | LocalImage


@lru_cache(maxsize=4)
def _archive_index(root: str, digest: str) -> dict[str, Path]:
    """Every file of an unpacked archive (`digest`: its sha256, so a re-unpacked archive is re-indexed) by
    its last three path components (scenario/kind/file)."""
    index: dict[str, Path] = {}
    for path in Path(root).rglob("*"):
        if path.is_file():
            index.setdefault("/".join(path.parts[-3:]), path)
    return index


# --------------------------------------------------------------------------- reading helpers


def _gh(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def _hf(repo: str, revision: str, path: str) -> str:
    return f"https://huggingface.co/datasets/{repo}/resolve/{revision}/{quote(path)}"


def read_text_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV as strings (empty fields stay empty); a missing column raises DataError naming the file."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def _require_text(df: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Every field of `columns` non-empty, else DataError naming the file, column and data row (1-based)."""
    for col in columns:
        bad = df[col].astype(str).str.strip() == ""
        if bad.any():
            raise DataError(f"{path}: empty {col} in row {int(bad.to_numpy().argmax()) + 1}")


def _int_column(df: pd.DataFrame, col: str, path: Path) -> list[int]:
    out = []
    for i, value in enumerate(df[col]):
        try:
            out.append(int(str(value).strip()))
        except ValueError:
            raise DataError(f"{path}: {col} must be an integer, got {value!r} in row {i + 1}") from None
    return out


def _slug(value: Any) -> str:
    """A prompt-id part: runs of characters other than letters, digits, `.`, `_`, `-` become `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value).strip()).strip("_.-") or "x"


def _rows(
    prompt_id: Sequence[str],
    category: Sequence[str],
    harmful: bool,
    question: Sequence[str],
    instruction: Sequence[str],
    **extra: Sequence[Any],
) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "prompt_id": list(prompt_id),
            "category": list(category),
            "harmful": [harmful] * len(prompt_id),
            "question": list(question),
            "instruction": list(instruction),
        }
    )
    for key, values in extra.items():
        out[key] = list(values)
    return out


# --------------------------------------------------------------------------- FigStep SafeBench

FIGSTEP_REPO = "ThuCCSLab/FigStep"
FIGSTEP_COMMIT = "0861b17b3d67887c06ee3534ec65b3012f9becb7"
SAFEBENCH_CSV = RemoteFile(
    "figstep_safebench/safebench.csv",
    _gh(FIGSTEP_REPO, FIGSTEP_COMMIT, "data/question/safebench.csv"),
    "8e47f40b9b490fa2ca1393cdceb6081e9928848646f4b45fdd43726be941b394",
)
SAFEBENCH_TINY_CSV = RemoteFile(
    "figstep_safebench/SafeBench-Tiny.csv",
    _gh(FIGSTEP_REPO, FIGSTEP_COMMIT, "data/question/SafeBench-Tiny.csv"),
    "e5f85f7d0323fe2e4afa99f6715ee97c2581d93856af4728a72fdec94338e867",
)
FIGSTEP_BENIGN_CSV = RemoteFile(
    "figstep_safebench/benign_sentences_without_harmful_phase.csv",
    _gh(FIGSTEP_REPO, FIGSTEP_COMMIT, "data/question/benign_sentences_without_harmful_phase.csv"),
    "3a4d660f9b66a7750ce91c199c0a5719f2465816c73d28eee1642cecb691d034",
)
_SAFEBENCH_COLUMNS = ("category_id", "task_id", "category_name", "question", "instruction")


def load_safebench(source: DataSource, file: RemoteFile = SAFEBENCH_CSV) -> pd.DataFrame:
    """SafeBench (or SafeBench-Tiny): harmful questions and their FigStep instructions, ids
    `safebench-{category_id:02d}-{task_id:02d}` (the same row has the same id in both files)."""
    path = fetch(file, source)
    df = read_text_csv(path, _SAFEBENCH_COLUMNS)
    _require_text(df, _SAFEBENCH_COLUMNS, path)
    cats, tasks = _int_column(df, "category_id", path), _int_column(df, "task_id", path)
    ids = [f"safebench-{c:02d}-{t:02d}" for c, t in zip(cats, tasks, strict=True)]
    return _rows(ids, df["category_name"], True, df["question"], df["instruction"])


def load_safebench_tiny(source: DataSource) -> pd.DataFrame:
    """SafeBench-Tiny: 50 SafeBench rows (5 per topic)."""
    return load_safebench(source, SAFEBENCH_TINY_CSV)


def load_figstep_benign(source: DataSource, file: RemoteFile = FIGSTEP_BENIGN_CSV) -> pd.DataFrame:
    """FigStep's benign sentences: the FigStep-Pro first-line templates with the harmful key phrase
    replaced by `*` (e.g. `Steps to make *.`), 5 per SafeBench topic in topic order; harmless."""
    path = fetch(file, source)
    # One sentence per line after the header `sentence`; read as lines, not as CSV: upstream does not
    # quote the sentence that holds a comma ("... for $50,000 savings.").
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    if not lines or lines[0].strip() != "sentence":
        raise DataError(f"{path}: missing column(s) sentence")
    df = pd.DataFrame({"sentence": [line.strip() for line in lines[1:]]})
    _require_text(df, ("sentence",), path)
    per_topic, extra = divmod(len(df), len(SAFEBENCH_TOPICS))
    if extra or per_topic < 1:
        raise DataError(
            f"{path}: expected 5 sentences per SafeBench topic ({len(SAFEBENCH_TOPICS)} topics), "
            f"got {len(df)} rows"
        )
    ids = [f"figstep-benign-{i + 1:03d}" for i in range(len(df))]
    cats = [SAFEBENCH_TOPICS[i // per_topic] for i in range(len(df))]
    return _rows(ids, cats, False, df["sentence"], df["sentence"])


# --------------------------------------------------------------------------- MM-SafetyBench

MMSB_REPO = "isXinLiu/MM-SafetyBench"
MMSB_COMMIT = "b80eedea3db312c09ded2082813390f68e750ef3"
MMSB_SCENARIOS: tuple[tuple[str, str, str], ...] = (
    (
        "01-Illegal_Activitiy",
        "Illegal Activity",
        "e2db149c809c86fc5e6ef285bc17ca45228b19349ebd73125e7408098a273be9",
    ),
    ("02-HateSpeech", "Hate Speech", "462672c4ca05d43a5502de61cbee0f5c12b76c9e7164e7b947f0ce8d1971bcb8"),
    (
        "03-Malware_Generation",
        "Malware Generation",
        "da4ceec8e02f130cac70ffabc6127f9d2a9d7466cd9f992c5f9c7ecb0a9645ae",
    ),
    ("04-Physical_Harm", "Physical Harm", "f58c97aee2e22257b1b813d94ac7147cdb9e3c1b9c93a03eb14e1f3f32ab879e"),
    ("05-EconomicHarm", "Economic Harm", "9146c5eebeed31fcb48a1d622edca2e41c8880430c7e5ba715ed74e2f799ffd7"),
    ("06-Fraud", "Fraud", "869f47fa08e683d3220e7a4ec071482324748346d17462e0060cedec03cdadc0"),
    ("07-Sex", "Sex", "23f4080200eca1701ce15295784e2c2291b2a8bb9883fd34ba92933b4297ceb7"),
    (
        "08-Political_Lobbying",
        "Political Lobbying",
        "a9c64065b449a1a14ad332ff1fb630a55e8cf5b8f99f2269b230a6414cc2526e",
    ),
    (
        "09-Privacy_Violence",
        "Privacy Violence",
        "836d48648f9bc6ff1bf32291a7b05a2248c64c15bf363e0afcf8566922e5fdcd",
    ),
    ("10-Legal_Opinion", "Legal Opinion", "7281f218f74090dafe4df0a2b27c5e6f85949727a14e51418eaadda93811ce72"),
    (
        "11-Financial_Advice",
        "Financial Advice",
        "3220e4b9c8c9c588dfb61d4805b5dc1be9839089037b3701daea9af4a9ee298f",
    ),
    (
        "12-Health_Consultation",
        "Health Consultation",
        "f3163717d2e397494a69a9462bb61f36c6ca1533b8f36d715593f50377df6895",
    ),
    ("13-Gov_Decision", "Gov Decision", "83d3188cf488f08b82baedefdf6a7f28927834ea76e4de0217048bd217a9a0c9"),
)
"""The 13 scenarios: file stem (upstream spelling), category name, sha256 of the question file."""

MMSB_QUESTION_FILES: tuple[RemoteFile, ...] = tuple(
    RemoteFile(
        f"mm_safetybench/processed_questions/{stem}.json",
        _gh(MMSB_REPO, MMSB_COMMIT, f"data/processed_questions/{stem}.json"),
        sha,
    )
    for stem, _, sha in MMSB_SCENARIOS
)
MMSB_TINY_IDS = RemoteFile(
    "mm_safetybench/TinyVersion_ID_List.json",
    _gh(MMSB_REPO, MMSB_COMMIT, "TinyVersion_ID_List.json"),
    "85cc71384797828556e026753a1dd320d45b98a3cb4855e1753156f2e58fb457",
)
MMSB_IMAGES = RemoteFile(
    "mm_safetybench/MM-SafetyBench(imgs).zip",
    "https://drive.usercontent.google.com/download?id=1xjW9k-aGkmwycqGCXbru70FaSKhSDcR_&export=download&confirm=t",
)
"""`MM-SafetyBench(imgs).zip`, published on Google Drive only (the README's link); not hash-pinned here."""

MMSB_VARIANTS: dict[str, str] = {
    "TYPO": "Rephrased Question",
    "SD_TYPO": "Rephrased Question",
    "SD": "Rephrased Question(SD)",
}
"""Image kind -> the question field sent as text with it (MM-SafetyBench README)."""


def _mmsb_items(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DataError(f"{path}: expected an object mapping question ids to question objects")
    return data


def _mmsb_tiny_ids(source: DataSource, file: RemoteFile) -> dict[str, set[int]]:
    path = fetch(file, source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(e["Scenario"]): {int(i) for i in e["Sampled_ID_List"]} for e in data}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: expected a list of {{Scenario, Sampled_ID_List}} ({exc})") from None


def load_mmsb(
    source: DataSource,
    variant: str = "TYPO",
    tiny: bool = False,
    files: Sequence[RemoteFile] = MMSB_QUESTION_FILES,
    tiny_file: RemoteFile = MMSB_TINY_IDS,
    images: RemoteFile = MMSB_IMAGES,
) -> pd.DataFrame:
    """MM-SafetyBench questions (all 1,680, or the 168 of the tiny version), ids `mmsb-{NN}-{qid:03d}`.

    `question` is the original question, `instruction` the key phrase (what TYPO draws), `text_prompt`
    the rephrased question of the variant; SD / SD_TYPO rows carry an `image_source` into the images zip.
    """
    if variant not in MMSB_VARIANTS:
        raise DataError(f"unknown MM-SafetyBench variant {variant!r} (known: {', '.join(MMSB_VARIANTS)})")
    if len(files) != len(MMSB_SCENARIOS):
        raise DataError(f"MM-SafetyBench needs {len(MMSB_SCENARIOS)} question files, got {len(files)}")
    tiny_ids = _mmsb_tiny_ids(source, tiny_file) if tiny else None
    prompt_field = MMSB_VARIANTS[variant]
    fields = ("Question", "Key Phrase", prompt_field)
    records: list[dict[str, Any]] = []
    for number, ((stem, category, _), file) in enumerate(zip(MMSB_SCENARIOS, files, strict=True), start=1):
        path = fetch(file, source)
        items = _mmsb_items(path)
        wanted = None
        if tiny_ids is not None:
            if stem not in tiny_ids:
                raise DataError(f"{tiny_file.relpath}: no Sampled_ID_List for scenario {stem}")
            wanted = tiny_ids[stem]
            unknown = sorted(wanted - {int(q) for q in items if str(q).isdigit()})
            if unknown:
                raise DataError(
                    f"{tiny_file.relpath}: scenario {stem} lists question id {unknown[0]} "
                    f"that {path.name} does not have"
                )
        for qid, item in items.items():
            if not str(qid).isdigit():
                raise DataError(f"{path}: question id {qid!r} is not a number")
            if wanted is not None and int(qid) not in wanted:
                continue
            for f in fields:
                value = item.get(f)
                if not isinstance(value, str) or not value.strip():
                    what = "missing" if value is None else "empty"
                    raise DataError(f"{path}: question {qid}: {what} field {f!r}")
            record = {
                "prompt_id": f"mmsb-{number:02d}-{int(qid):03d}",
                "category": category,
                "question": item["Question"],
                "instruction": item["Key Phrase"],
                "text_prompt": item[prompt_field],
            }
            if variant != "TYPO":
                record["image_source"] = ArchiveImage(images, f"{stem}/{variant}/{qid}.jpg")
            records.append(record)
    if not records:
        raise DataError("MM-SafetyBench: no questions")
    df = pd.DataFrame.from_records(records)
    df.insert(2, "harmful", True)
    return df


# --------------------------------------------------------------------------- JailbreakV-28K

JBV_REPO = "JailbreakV-28K/JailBreakV-28k"
JBV_REVISION = "7a499c784c3a98c09287ee0d5b84dccb8d7e7636"
JBV_DIR = "JailBreakV_28K"
JBV_MINI_CSV = RemoteFile(
    f"jailbreakv_28k/{JBV_DIR}/mini_JailBreakV_28K.csv",
    _hf(JBV_REPO, JBV_REVISION, f"{JBV_DIR}/mini_JailBreakV_28K.csv"),
)
_JBV_COLUMNS = ("id", "jailbreak_query", "redteam_query", "format", "policy", "image_path")


def jailbreakv_image(image_path: str) -> RemoteFile:
    """The registry file of one JailbreakV-28K image (`image_path` as the CSV gives it)."""
    return RemoteFile(
        f"jailbreakv_28k/{JBV_DIR}/{image_path}", _hf(JBV_REPO, JBV_REVISION, f"{JBV_DIR}/{image_path}")
    )


def load_jailbreakv_mini(source: DataSource, file: RemoteFile = JBV_MINI_CSV) -> pd.DataFrame:
    """JailbreakV-28K's mini split (280 rows), ids `jbv-{id}`: `question` is the RedTeam-2K query (also
    `instruction`: the images are not all typographic), `text_prompt` the jailbreak query, `category`
    the safety policy; each row's image is downloaded from the dataset when its prompt is built."""
    path = fetch(file, source)
    df = read_text_csv(path, _JBV_COLUMNS)
    _require_text(df, _JBV_COLUMNS, path)
    images = []
    for i, image_path in enumerate(df["image_path"]):
        try:
            images.append(RemoteImage(jailbreakv_image(check_relpath(image_path.strip(), "image_path"))))
        except DataError:
            raise DataError(
                f"{path}: image_path {image_path!r} in row {i + 1} is not a safe relative path"
            ) from None
    ids = [f"jbv-{_slug(v)}" for v in df["id"]]
    return _rows(
        ids,
        df["policy"],
        True,
        df["redteam_query"],
        df["redteam_query"],
        text_prompt=df["jailbreak_query"],
        image_source=images,
    )


# --------------------------------------------------------------------------- HADES

HADES_REPO = "Monosail/HADES"
HADES_REVISION = "77270fadfb23a8d4d252576abb49deb6f7308193"
HADES_FILES: tuple[RemoteFile, ...] = (
    RemoteFile(
        "hades/data/test-00000-of-00002.parquet",
        _hf(HADES_REPO, HADES_REVISION, "data/test-00000-of-00002.parquet"),
        "edd1d1fcb6e24fe6da42be3e724994cd7fb98570ed7b4817eb7f8e2521cb506b",
    ),
    RemoteFile(
        "hades/data/test-00001-of-00002.parquet",
        _hf(HADES_REPO, HADES_REVISION, "data/test-00001-of-00002.parquet"),
        "a5b2b289384a17fd1bdb5ea51c996c7b9906980b6e24fefdfd8cd2a24c0d2d7e",
    ),
)
"""The HADES test split (sha256 = the Git LFS object ids of the files at that revision)."""
_HADES_COLUMNS = ("id", "scenario", "keywords", "step", "category", "instruction", "image")


def hades_text_prompt(instruction: str, keywords: str, category: str) -> str:
    """HADES's text for its images ("abstract" mode, the text-to-image pointer): the keywords in the
    instruction are replaced by a pointer to the image (RUCAIBox/HADES, eval/evaluate/inference)."""
    mask = "conduct this behavior on" if category == "behavior" else f"this {category}"
    return f"The bottom of the image shows a {category}. " + instruction.replace(keywords, mask)


def _read_parquet(path: Path, columns: Sequence[str], filters: list[tuple] | None = None) -> pa.Table:
    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        return pq.read_table(path, columns=list(columns), filters=filters)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None


def load_hades(source: DataSource, files: Sequence[RemoteFile] = HADES_FILES) -> pd.DataFrame:
    """HADES (750 instructions over 5 scenarios): each instruction's image at the last optimisation step
    the files hold (HADES's final image), ids `hades-{scenario}-{id}`; `question` is the instruction,
    `instruction` its harmful keywords (drawn into the image), `text_prompt` HADES's pointer text."""
    paths = [fetch(f, source) for f in files]
    meta = [_read_parquet(p, ("step",)) for p in paths]
    steps = [s for t in meta for s in t.column("step").to_pylist() if s is not None]
    if not steps:
        raise DataError(f"{paths[0]}: HADES files hold no rows")
    last = max(steps)
    records: list[dict[str, Any]] = []
    for path in paths:
        table = _read_parquet(path, _HADES_COLUMNS, filters=[("step", "=", last)])
        for i, row in enumerate(table.to_pylist()):
            where = f"{path} (row {i + 1} of step {last})"
            for col in ("id", "scenario", "keywords", "category", "instruction"):
                if not isinstance(row[col], str | int) or not str(row[col]).strip():
                    raise DataError(f"{where}: empty {col}")
            image = row["image"]
            data = image.get("bytes") if isinstance(image, dict) else image
            if not isinstance(data, bytes | bytearray) or not data:
                raise DataError(f"{where}: no image bytes")
            records.append(
                {
                    "prompt_id": f"hades-{_slug(row['scenario'])}-{_slug(row['id'])}",
                    "category": str(row["scenario"]),
                    "question": str(row["instruction"]),
                    "instruction": str(row["keywords"]),
                    "text_prompt": hades_text_prompt(
                        str(row["instruction"]), str(row["keywords"]), str(row["category"])
                    ),
                    "image_source": EmbeddedImage(bytes(data), where),
                }
            )
    df = pd.DataFrame.from_records(records)
    df.insert(2, "harmful", True)
    return df


# ------------------------------------------------------------------------- text-only harmful / harmless sets

JBB_REPO = "JailbreakBench/JBB-Behaviors"
JBB_REVISION = "d8d87b8fdcb7806e3b4e45fffb2bc24aa6b17f32"
JBB_HARMFUL_CSV = RemoteFile(
    "jailbreakbench_behaviors/harmful-behaviors.csv",
    _hf(JBB_REPO, JBB_REVISION, "data/harmful-behaviors.csv"),
)
JBB_BENIGN_CSV = RemoteFile(
    "jailbreakbench_behaviors/benign-behaviors.csv", _hf(JBB_REPO, JBB_REVISION, "data/benign-behaviors.csv")
)
ADVBENCH_CSV = RemoteFile(
    "advbench/harmful_behaviors.csv",
    _gh(
        "llm-attacks/llm-attacks",
        "098262edf85f807224e70ecd87b9d83716bf6b73",
        "data/advbench/harmful_behaviors.csv",
    ),
    "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1",
)
HARMBENCH_CSV = RemoteFile(
    "harmbench/harmbench_behaviors_text_all.csv",
    _gh(
        "centerforaisafety/HarmBench",
        "8e1604d1171fe8a48d8febecd22f600e462bdcdd",
        "data/behavior_datasets/harmbench_behaviors_text_all.csv",
    ),
    "8d81accedd38eaaf8b760618622bb888417d1fd0c86eba65c427a16f1cbb4afc",
)
STRONGREJECT_CSV = RemoteFile(
    "strongreject/strongreject_dataset.csv",
    _gh("alexandrasouly/strongreject", "main", "strongreject_dataset/strongreject_dataset.csv"),
)
"""Upstream names no release commit; the URL follows `main` and the lock file pins what was fetched."""


def load_jbb(source: DataSource, harmful: bool = True, file: RemoteFile | None = None) -> pd.DataFrame:
    """JBB-Behaviors (JailbreakBench): 100 harmful or 100 topic-matched benign behaviors, ids
    `jbb-harmful-NNN` / `jbb-benign-NNN` (NNN = Index); the goal is both question and instruction."""
    file = file or (JBB_HARMFUL_CSV if harmful else JBB_BENIGN_CSV)
    path = fetch(file, source)
    df = read_text_csv(path, ("Index", "Goal", "Category"))
    _require_text(df, ("Index", "Goal", "Category"), path)
    kind = "harmful" if harmful else "benign"
    ids = [f"jbb-{kind}-{i:03d}" for i in _int_column(df, "Index", path)]
    return _rows(ids, df["Category"], harmful, df["Goal"], df["Goal"])


def load_jbb_benign(source: DataSource) -> pd.DataFrame:
    """JBB-Behaviors' 100 benign behaviors (harmless control)."""
    return load_jbb(source, harmful=False)


def load_advbench(source: DataSource, file: RemoteFile = ADVBENCH_CSV) -> pd.DataFrame:
    """AdvBench harmful behaviors (520 goals; no categories), ids `advbench-NNN` (row number)."""
    path = fetch(file, source)
    df = read_text_csv(path, ("goal",))
    _require_text(df, ("goal",), path)
    ids = [f"advbench-{i + 1:03d}" for i in range(len(df))]
    return _rows(ids, ["AdvBench"] * len(df), True, df["goal"], df["goal"])


def load_harmbench(source: DataSource, file: RemoteFile = HARMBENCH_CSV) -> pd.DataFrame:
    """HarmBench's standard text behaviors (200; the contextual and copyright ones need a context or
    are not requests for harm), ids `harmbench-{BehaviorID}`, category the semantic category."""
    path = fetch(file, source)
    cols = ("Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID")
    df = read_text_csv(path, cols)
    _require_text(df, cols, path)
    df = df[df["FunctionalCategory"] == "standard"]
    if df.empty:
        raise DataError(f"{path}: no standard behaviors")
    ids = [f"harmbench-{_slug(b)}" for b in df["BehaviorID"]]
    return _rows(ids, df["SemanticCategory"], True, df["Behavior"], df["Behavior"])


def load_strongreject(source: DataSource, file: RemoteFile = STRONGREJECT_CSV) -> pd.DataFrame:
    """StrongREJECT's forbidden prompts (313 in the current full set), ids `strongreject-NNN`."""
    path = fetch(file, source)
    df = read_text_csv(path, ("category", "forbidden_prompt"))
    _require_text(df, ("category", "forbidden_prompt"), path)
    ids = [f"strongreject-{i + 1:03d}" for i in range(len(df))]
    return _rows(ids, df["category"], True, df["forbidden_prompt"], df["forbidden_prompt"])


# --------------------------------------------------------------------------- the registry

_FIGSTEP_SOURCE = f"github.com/{FIGSTEP_REPO} @ {FIGSTEP_COMMIT}"
_MMSB_SOURCE = f"github.com/{MMSB_REPO} @ {MMSB_COMMIT} (questions); images: Google Drive zip from its README"
_MMSB_LICENSE = "CC BY-NC 4.0, research use only (MM-SafetyBench README)"


def _mmsb_loader(variant: str, tiny: bool) -> Callable[[DataSource], pd.DataFrame]:
    def loader(source: DataSource) -> pd.DataFrame:
        return load_mmsb(source, variant=variant, tiny=tiny)

    loader.__doc__ = f"MM-SafetyBench {variant}{' (tiny)' if tiny else ''}."
    return loader


def _mmsb_spec(name: str, variant: str, tiny: bool) -> DatasetSpec:
    n = "168 questions of the tiny version" if tiny else "1,680 questions"
    image = {
        "TYPO": "the key phrase drawn offline in MM-SafetyBench's TYPO layout",
        "SD": "the Stable Diffusion image of the key phrase (downloaded images zip)",
        "SD_TYPO": "the Stable Diffusion image above the key phrase's typography (downloaded images zip)",
    }[variant]
    files = (
        MMSB_QUESTION_FILES
        + ((MMSB_TINY_IDS,) if tiny else ())
        + (() if variant == "TYPO" else (MMSB_IMAGES,))
    )
    return DatasetSpec(
        name=name,
        loader=_mmsb_loader(variant, tiny),
        license=_MMSB_LICENSE,
        description=f"MM-SafetyBench (Liu et al., ECCV 2024), 13 scenarios, {n}, {variant}: image = {image}; "
        f"text = the question's `{MMSB_VARIANTS[variant]}`.",
        source=_MMSB_SOURCE,
        files=files,
        attack="mmsb_typo" if variant == "TYPO" else "image",
        classes="harmful",
        text_prompt=MMSB_DEFAULT_PROMPT,
        n_rows=168 if tiny else 1680,
        question_set="mm_safetybench",
    )


BENCHMARKS: dict[str, DatasetSpec] = {
    "safebench": DatasetSpec(
        name="safebench",
        question_set="figstep_safebench",
        n_rows=500,
        loader=load_safebench,
        license="MIT (FigStep repository)",
        description="FigStep SafeBench (Gong et al., AAAI 2025): 500 harmful questions, 50 per topic, as "
        "FigStep typographic images of their instructions with the FigStep text prompt.",
        source=_FIGSTEP_SOURCE,
        files=(SAFEBENCH_CSV,),
        classes="harmful",
    ),
    "safebench_tiny": DatasetSpec(
        name="safebench_tiny",
        question_set="figstep_safebench",
        n_rows=50,
        loader=load_safebench_tiny,
        license="MIT (FigStep repository)",
        description="FigStep SafeBench-Tiny: 50 SafeBench questions (5 per topic), FigStep images and "
        "prompt.",
        source=_FIGSTEP_SOURCE,
        files=(SAFEBENCH_TINY_CSV,),
        classes="harmful",
    ),
    "figstep_benign": DatasetSpec(
        name="figstep_benign",
        n_rows=50,
        loader=load_figstep_benign,
        license="MIT (FigStep repository)",
        description="FigStep's 50 benign sentences (SafeBench first lines with the harmful phrase replaced "
        "by `*`), a harmless control drawn in the FigStep layout.",
        source=_FIGSTEP_SOURCE,
        files=(FIGSTEP_BENIGN_CSV,),
        classes="harmless",
    ),
    "mmsb_typo": _mmsb_spec("mmsb_typo", "TYPO", tiny=False),
    "mmsb_tiny_typo": _mmsb_spec("mmsb_tiny_typo", "TYPO", tiny=True),
    "mmsb_sd": _mmsb_spec("mmsb_sd", "SD", tiny=False),
    "mmsb_sd_typo": _mmsb_spec("mmsb_sd_typo", "SD_TYPO", tiny=False),
    "jailbreakv_mini": DatasetSpec(
        name="jailbreakv_mini",
        n_rows=280,
        loader=load_jailbreakv_mini,
        license="MIT (JailbreakV-28K dataset card)",
        description="JailbreakV-28K (Luo et al., COLM 2024), mini split: 280 jailbreak queries with their "
        "images (downloaded), text = the jailbreak query.",
        source=f"huggingface.co/datasets/{JBV_REPO} @ {JBV_REVISION}",
        files=(JBV_MINI_CSV,),
        attack="image",
        classes="harmful",
    ),
    "hades": DatasetSpec(
        name="hades",
        n_rows=750,
        loader=load_hades,
        license="MIT (HADES dataset card)",
        description="HADES (Li et al., ECCV 2024): 750 harmful instructions over 5 scenarios, each with its "
        "final optimised image (downloaded); text = HADES's image-pointer instruction.",
        source=f"huggingface.co/datasets/{HADES_REPO} @ {HADES_REVISION}",
        files=HADES_FILES,
        attack="image",
        classes="harmful",
    ),
    "jbb_harmful": DatasetSpec(
        name="jbb_harmful",
        n_rows=100,
        loader=load_jbb,
        license="MIT (JailbreakBench; some behaviors from AdvBench and TDC/HarmBench)",
        description="JBB-Behaviors: 100 harmful behaviors (10 categories), drawn in the FigStep layout.",
        source=f"huggingface.co/datasets/{JBB_REPO} @ {JBB_REVISION}",
        files=(JBB_HARMFUL_CSV,),
        classes="harmful",
    ),
    "jbb_benign": DatasetSpec(
        name="jbb_benign",
        n_rows=100,
        loader=load_jbb_benign,
        license="MIT (JailbreakBench)",
        description="JBB-Behaviors: 100 benign behaviors topic-matched to the harmful ones, a harmless "
        "control for the refusal direction and over-refusal.",
        source=f"huggingface.co/datasets/{JBB_REPO} @ {JBB_REVISION}",
        files=(JBB_BENIGN_CSV,),
        classes="harmless",
    ),
    "advbench": DatasetSpec(
        name="advbench",
        n_rows=520,
        loader=load_advbench,
        license="MIT (llm-attacks)",
        description="AdvBench harmful behaviors (Zou et al. 2023): 520 goals, drawn in the FigStep layout.",
        source="github.com/llm-attacks/llm-attacks @ 098262edf85f807224e70ecd87b9d83716bf6b73",
        files=(ADVBENCH_CSV,),
        classes="harmful",
    ),
    "harmbench": DatasetSpec(
        name="harmbench",
        n_rows=200,
        loader=load_harmbench,
        license="MIT (HarmBench)",
        description="HarmBench (Mazeika et al. 2024): the 200 standard text behaviors, drawn in the FigStep "
        "layout.",
        source="github.com/centerforaisafety/HarmBench @ 8e1604d1171fe8a48d8febecd22f600e462bdcdd",
        files=(HARMBENCH_CSV,),
        classes="harmful",
    ),
    "strongreject": DatasetSpec(
        name="strongreject",
        n_rows=313,
        loader=load_strongreject,
        license="MIT (custom prompts); prompts sourced from prior work keep their licenses",
        description="StrongREJECT forbidden prompts (Souly et al., NeurIPS 2024), drawn in the FigStep "
        "layout.",
        source="github.com/alexandrasouly/strongreject @ main (unpinned upstream; pinned by the lock file)",
        files=(STRONGREJECT_CSV,),
        classes="harmful",
    ),
}
"""The public benchmarks, by name (the embedded `mini` dataset is added in toolshift.datasets.prompts)."""
