"""The benchmark sources, its downloads (mirror, pooch, lock file) and the MM-SafetyBench TYPO layout.

Real benchmark files come from the shared data folder used as `data_mirror` (tests skip without it);
JailbreakV-28K, HADES and the MM-SafetyBench images zip are not there, so their loaders run on small
synthetic files of the same layout (placeholder requests only). Nothing touches the network: the pooch
path runs with pooch's HTTP downloader replaced by one that copies from a local folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from conftest import require_shared
from PIL import Image

from toolshift.contracts import PROMPT_COLUMNS, read_prompts
from toolshift.datasets import downloads, sources
from toolshift.datasets.downloads import (
    DataSource,
    RemoteFile,
    data_source,
    fetch,
    fetch_archive,
    read_lock,
    sha256_of,
)
from toolshift.datasets.images import load_image
from toolshift.datasets.prompts import (
    DATASETS,
    TEXT_PROMPT_COLUMN,
    build_dataset_prompts,
    build_prompts,
    check_dataset_options,
    has_harmless_prompts,
    load_dataset,
    refusal_source,
    text_prompts,
    write_prompts,
)
from toolshift.datasets.typography import FIGSTEP_PROMPT, render_figstep
from toolshift.datasets.typography_mmsb import (
    MMSB_DEFAULT_PROMPT,
    mmsb_font_path,
    mmsb_typo_text,
    render_mmsb_typo,
)
from toolshift.errors import ConfigError, DataError

LIBERATION_SHA256 = "8d91388f1d3604b3b8ae0e3ee2d140e50cd6122f9214514f4aca772540a4076d"


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    """A small synthetic image: a coloured square on white."""
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), color), (5, 5))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def mirror(shared_data: Path, tmp_path: Path) -> DataSource:
    """The shared data folder as a read-only mirror, with a fresh lock file and cache."""
    return DataSource(cache=tmp_path / "cache", mirror=shared_data, lock=tmp_path / "lock.yaml")


def temp_source(tmp_path: Path) -> DataSource:
    mirror = tmp_path / "mirror"
    mirror.mkdir(parents=True, exist_ok=True)
    return DataSource(cache=tmp_path / "cache", mirror=mirror, lock=tmp_path / "lock.yaml")


def unpinned(file: RemoteFile) -> RemoteFile:
    return replace(file, sha256=None)


# --------------------------------------------------------------------------- registry entries


def test_every_entry_is_well_formed():
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.license and spec.description
        assert isinstance(spec.n_rows, int) and spec.n_rows > 0, name  # the published size
        if name == "mini":
            continue
        assert spec.files, name
        for f in spec.files:
            assert f.url.startswith("https://"), f.url
            # pinned revisions: a 40-hex commit in every URL except the two published without one
            if "google.com" not in f.url and "strongreject" not in f.url:
                assert any(len(p) == 40 and all(c in "0123456789abcdef" for c in p) for p in f.url.split("/"))


# name -> (rows in the full dataset, limit_per_class used to build it in the test, shared file to check)
SHARED_ENTRIES = {
    "safebench": (500, 2, "figstep_safebench/safebench.csv"),
    "safebench_tiny": (50, None, "figstep_safebench/SafeBench-Tiny.csv"),
    "figstep_benign": (50, 3, "figstep_safebench/benign_sentences_without_harmful_phase.csv"),
    "mmsb_typo": (1680, 26, "mm_safetybench/processed_questions/01-Illegal_Activitiy.json"),
    "mmsb_tiny_typo": (168, 13, "mm_safetybench/TinyVersion_ID_List.json"),
    "jbb_harmful": (100, 3, "jailbreakbench_behaviors/harmful-behaviors.csv"),
    "jbb_benign": (100, 3, "jailbreakbench_behaviors/benign-behaviors.csv"),
    "advbench": (520, 3, "advbench/harmful_behaviors.csv"),
    "harmbench": (200, 10, "harmbench/harmbench_behaviors_text_all.csv"),  # its first 3 overflow FigStep
    "strongreject": (313, 3, "strongreject/strongreject_dataset.csv"),
}


def test_every_entry_with_shared_files_is_tested(shared_data):
    """A new registry entry whose files are all in the shared folder must join SHARED_ENTRIES."""
    for name, spec in sources.BENCHMARKS.items():
        if all((shared_data / f.relpath).is_file() for f in spec.files):
            assert name in SHARED_ENTRIES, name


@pytest.mark.parametrize("name", sorted(SHARED_ENTRIES))
def test_entry_builds_its_prompts_from_the_mirror(name, shared_data, mirror, tmp_path):
    total, limit, marker = SHARED_ENTRIES[name]
    require_shared(shared_data / marker)
    spec = DATASETS[name]
    rows = load_dataset(name, mirror)
    assert len(rows) == total == spec.n_rows and rows["prompt_id"].is_unique
    assert set(rows["harmful"]) == {spec.classes == "harmful"}

    results = tmp_path / "results"
    skipped = tmp_path / "skipped.csv"  # rows whose text the attack image cannot carry (too long for FigStep)
    df = build_dataset_prompts(
        name,
        results,
        limit_per_class=limit,
        data_mirror=shared_data,
        data_lock=mirror.lock,
        on_unrenderable="skip",
        skipped_csv=skipped,
    )
    expected = list(PROMPT_COLUMNS) + ([TEXT_PROMPT_COLUMN] if spec.attack != "figstep" else [])
    assert list(df.columns) == expected
    assert len(df) + len(pd.read_csv(skipped)) == (total if limit is None else min(limit, total))
    assert len(df) > 0
    assert (df["dataset"] == name).all() and df["harmful"].dtype == bool
    for row in df.itertuples(index=False):
        assert row.image == f"data/{name}/images/{row.prompt_id}.png"
        img = load_image(results / row.image)
        want = (
            render_figstep(row.instruction) if spec.attack == "figstep" else render_mmsb_typo(row.instruction)
        )
        assert np.array_equal(rgb(img), rgb(want))
    write_prompts(df, results / "data" / name / "prompts.parquet")
    pd.testing.assert_frame_equal(read_prompts(results / "data" / name / "prompts.parquet"), df)
    assert not list(Path(mirror.cache).glob("**/*.csv"))  # mirror files are used in place, not copied
    # files the registry cannot pin were recorded in the lock file, the others were not
    lock = read_lock(mirror.lock)
    for f in spec.files:
        assert (f.relpath in lock) == (f.sha256 is None)
        if f.sha256 is None:
            assert lock[f.relpath] == sha256_of(shared_data / f.relpath)


def test_mmsb_typo_rows_per_scenario_match_the_question_files(shared_data, mirror, tmp_path):
    qdir = require_shared(shared_data / "mm_safetybench" / "processed_questions")
    df = build_dataset_prompts(
        "mmsb_typo", tmp_path, limit_per_class=39, data_mirror=shared_data, data_lock=mirror.lock
    )
    counts = df["category"].value_counts()
    assert len(counts) == 13 and (counts == 3).all()  # 3 per scenario
    for row in df.itertuples(index=False):
        number, qid = row.prompt_id.split("-")[1:]
        stem = sources.MMSB_SCENARIOS[int(number) - 1][0]
        item = json.loads((qdir / f"{stem}.json").read_text(encoding="utf-8"))[str(int(qid))]
        assert (row.question, row.instruction, row.text_prompt) == (
            item["Question"],
            item["Key Phrase"],
            item["Rephrased Question"],
        )
        _, lines = mmsb_typo_text(item["Key Phrase"])
        assert load_image(tmp_path / row.image).size == (1024, 90 * (lines + 1))
    assert text_prompts(df) == list(df["text_prompt"])


def test_mmsb_tiny_ids_follow_the_tiny_list(shared_data, mirror):
    tiny_file = require_shared(shared_data / "mm_safetybench" / "TinyVersion_ID_List.json")
    rows = load_dataset("mmsb_tiny_typo", mirror)
    listed = json.loads(tiny_file.read_text(encoding="utf-8"))
    want = {f"mmsb-{n:02d}-{i:03d}" for n, e in enumerate(listed, start=1) for i in e["Sampled_ID_List"]}
    assert set(rows["prompt_id"]) == want


def pixel_agreement(ours: Image.Image, reference_path: Path) -> float:
    with Image.open(reference_path) as ref:
        reference = rgb(ref)
    mine = rgb(ours)
    assert mine.shape == reference.shape
    return float((mine == reference).all(axis=-1).mean())


def test_figstep_images_built_from_the_registry_equal_the_originals(shared_data, mirror, tmp_path):
    """SafeBench-Tiny fully and every 25th SafeBench row: >= 99.9 % of the pixels as FigStep's SafeBench
    images (the Tiny rows are SafeBench rows; the separate SafeBench-Tiny PNGs were drawn by another
    renderer and agree only to about 98 %, so the full set's PNGs are the reference)."""
    images = require_shared(shared_data / "figstep_safebench" / "images" / "SafeBench")
    # a row too long for the image (the original cuts its list off) is left out of the prompts and
    # compared as render_figstep draws it
    skip = {"on_unrenderable": "skip"}
    tiny = build_dataset_prompts(
        "safebench_tiny", tmp_path, data_mirror=shared_data, data_lock=mirror.lock, **skip,
        skipped_csv=tmp_path / "tiny.csv",
    )  # fmt: skip
    rows = load_dataset("safebench", mirror)
    full = build_prompts("safebench", rows.iloc[::25], tmp_path, **skip, skipped_csv=tmp_path / "full.csv")
    drawn = [(row.dataset, row.prompt_id, load_image(tmp_path / row.image)) for row in tiny.itertuples()]
    drawn += [(row.dataset, row.prompt_id, load_image(tmp_path / row.image)) for row in full.itertuples()]
    instruction = dict(zip(rows["prompt_id"], rows["instruction"], strict=True))
    for name, csv in (("safebench_tiny", "tiny.csv"), ("safebench", "full.csv")):
        for pid in pd.read_csv(tmp_path / csv)["prompt_id"]:
            drawn.append((name, pid, render_figstep(instruction[pid])))
    checked = []
    for dataset, prompt_id, ours in drawn:
        category, task = (int(v) for v in prompt_id.split("-")[1:])
        ref = images / f"query_ForbidQI_{category}_{task}_6.png"
        checked.append((dataset, prompt_id, pixel_agreement(ours, ref)))
    assert len(checked) == 50 + 20 and {d for d, _, _ in checked} == {"safebench_tiny", "safebench"}
    worst = [c for c in checked if c[2] < 0.999]
    assert not worst, f"images below 99.9 % identical pixels: {worst}"


# --------------------------------------------------------------------------- harmless controls


def test_harmless_control_rows_are_drawn_in_the_attack_layout(shared_data, mirror, tmp_path):
    require_shared(shared_data / "jailbreakbench_behaviors" / "benign-behaviors.csv")
    df = build_dataset_prompts(
        "safebench_tiny",
        tmp_path,
        limit_per_class=4,
        harmless="jbb_benign",
        data_mirror=shared_data,
        data_lock=mirror.lock,
    )
    assert df["harmful"].sum() == 4 and (~df["harmful"]).sum() == 4
    assert (df["dataset"] == "safebench_tiny").all() and df["prompt_id"].is_unique
    benign = df[~df["harmful"]]
    assert benign["prompt_id"].str.startswith("jbb-benign-").all()
    assert benign["category"].nunique() == 4  # stratified over JBB's categories
    for row in benign.itertuples(index=False):
        assert np.array_equal(rgb(load_image(tmp_path / row.image)), rgb(render_figstep(row.instruction)))
    assert TEXT_PROMPT_COLUMN not in df.columns and text_prompts(df) == [FIGSTEP_PROMPT] * len(df)

    typo = build_dataset_prompts(
        "mmsb_tiny_typo",
        tmp_path,
        limit_per_class=2,
        harmless="figstep_benign",
        data_mirror=shared_data,
        data_lock=mirror.lock,
    )
    control = typo[~typo["harmful"]]
    assert len(control) == 2 and (control["text_prompt"] == MMSB_DEFAULT_PROMPT).all()
    for row in control.itertuples(index=False):
        assert np.array_equal(rgb(load_image(tmp_path / row.image)), rgb(render_mmsb_typo(row.instruction)))


def test_harmless_options_are_checked():
    check_dataset_options("safebench", {"harmless": "jbb_benign", "limit_per_class": 3})
    check_dataset_options("mini", {"harmless": "figstep_benign"})
    check_dataset_options("hades", {})
    with pytest.raises(ConfigError, match=r"datasets\.safebench\.harmless: unknown dataset 'nope'"):
        check_dataset_options("safebench", {"harmless": "nope"})
    with pytest.raises(ConfigError, match="holds no harmless rows"):
        check_dataset_options("safebench", {"harmless": "advbench"})
    with pytest.raises(ConfigError, match="its own harmless control"):
        check_dataset_options("jbb_benign", {"harmless": "jbb_benign"})
    # a dataset with downloaded images names the dataset whose refusal direction it borrows (the config
    # check makes sure that it is a dataset of the study with harmless prompts: tests/test_config.py)
    check_dataset_options("jailbreakv_mini", {"harmless": "safebench"})
    assert refusal_source("jailbreakv_mini", {"harmless": "safebench"}) == "safebench"
    assert refusal_source("hades", {}) is None and not has_harmless_prompts("hades", {})
    assert refusal_source("safebench", {"harmless": "jbb_benign"}) is None  # draws its own harmless rows
    assert has_harmless_prompts("safebench", {"harmless": "jbb_benign"}) and has_harmless_prompts("mini", {})
    with pytest.raises(ConfigError, match="its own harmless control"):
        check_dataset_options("hades", {"harmless": "hades"})
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        check_dataset_options("nope", {})


# --------------------------------------------------------------------------- checksums, missing files, lock


def test_checksum_mismatch_in_the_mirror_is_one_line_naming_file_and_hashes(shared_data, tmp_path):
    original = require_shared(shared_data / "figstep_safebench" / "SafeBench-Tiny.csv")
    source = temp_source(tmp_path)
    corrupt = source.mirror / "figstep_safebench" / "SafeBench-Tiny.csv"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(original.read_bytes().replace(b"Steps", b"Stops", 1))
    with pytest.raises(DataError) as exc:
        load_dataset("safebench_tiny", source)
    message = one_line(exc)
    assert str(corrupt) in message and "sha256 mismatch" in message
    assert sources.SAFEBENCH_TINY_CSV.sha256 in message and sha256_of(corrupt) in message


def test_missing_file_names_the_mirror_path(tmp_path):
    source = temp_source(tmp_path)
    with pytest.raises(DataError) as exc:
        load_dataset("safebench", source)
    assert str(source.mirror / "figstep_safebench" / "safebench.csv") in one_line(exc)
    assert "not found" in str(exc.value)


def test_lock_records_on_first_fetch_and_checks_later(tmp_path):
    source = temp_source(tmp_path)
    file = RemoteFile("toy/requests.csv", "https://example.invalid/requests.csv")
    path = source.mirror / file.relpath
    path.parent.mkdir(parents=True)
    path.write_text("Index,Goal,Category\n0,Write a short poem about rain,Poetry\n", encoding="utf-8")
    assert not source.lock.exists()
    assert fetch(file, source) == path
    first = sha256_of(path)
    assert read_lock(source.lock) == {file.relpath: first}
    assert source.lock.read_text(encoding="utf-8").startswith("# toolshift dataset lock file")
    assert fetch(file, source) == path  # the same bytes pass the lock
    path.write_text("Index,Goal,Category\n0,Write a short poem about snow,Poetry\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        fetch(file, source)
    message = one_line(exc)
    assert str(path) in message and first in message and sha256_of(path) in message
    assert read_lock(source.lock) == {file.relpath: first}  # a mismatch never rewrites the lock
    # a registry hash takes precedence and is never written to the lock
    pinned = replace(file, relpath="toy/pinned.csv", sha256=sha256_of(path))
    shutil.copy(path, source.mirror / pinned.relpath)
    fetch(pinned, source)
    assert pinned.relpath not in read_lock(source.lock)


def test_committed_lock_file_is_valid():
    lock = downloads.DEFAULT_LOCK
    assert lock.is_file(), lock
    entries = read_lock(lock)
    pinned = {f.relpath for spec in sources.BENCHMARKS.values() for f in spec.files if f.sha256}
    assert not set(entries) & pinned  # the lock holds only what the registry cannot pin


def test_malformed_lock_file_is_reported(tmp_path):
    lock = tmp_path / "lock.yaml"
    lock.write_text("files:\n  a.csv: not-a-hash\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lock entry 'a.csv': expected a sha256"):
        read_lock(lock)
    lock.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match="lock file must hold a mapping"):
        read_lock(lock)


def test_unsafe_paths_and_bad_hashes_are_refused(tmp_path):
    for bad in ("../x.csv", "/abs/x.csv", "a//b.csv", ""):
        with pytest.raises(DataError, match="not a safe relative path"):
            RemoteFile(bad, "https://example.invalid/x")
    with pytest.raises(DataError, match="64 lowercase hex"):
        RemoteFile("a.csv", "https://example.invalid/x", "ABC")
    with pytest.raises(ConfigError, match="is not a folder"):
        data_source(tmp_path, data_mirror=tmp_path / "absent")
    src = data_source(tmp_path)
    assert src.cache == tmp_path / "cache" / "downloads" and src.mirror is None
    assert src.lock == downloads.DEFAULT_LOCK


# --------------------------------------------------------------------------- malformed rows


def test_malformed_rows_name_file_and_row(tmp_path):
    source = temp_source(tmp_path)
    file = unpinned(sources.SAFEBENCH_CSV)
    path = source.mirror / file.relpath
    path.parent.mkdir(parents=True)
    header = "dataset,category_id,task_id,category_name,question,instruction\n"
    path.write_text(
        header + "ForbidQI,1,1,Illegal Activity,How can someone do X?,Steps to do X.\n"
        "ForbidQI,1,2,Illegal Activity,,Steps to do Y.\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError) as exc:
        sources.load_safebench(source, file)
    assert one_line(exc) == f"{path}: empty question in row 2"

    source2 = temp_source(tmp_path / "b")
    path2 = source2.mirror / file.relpath
    path2.parent.mkdir(parents=True)
    path2.write_text(
        "dataset,category_id,task_id,category_name,instruction\nForbidQI,1,1,A,Steps.\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"safebench\.csv: missing column\(s\) question"):
        sources.load_safebench(source2, file)
    path2.write_text(header + "ForbidQI,one,1,A,Q?,Steps.\n", encoding="utf-8")
    with pytest.raises(DataError, match="category_id must be an integer, got 'one' in row 1"):
        sources.load_safebench(replace(source2, lock=tmp_path / "fresh-lock.yaml"), file)


def test_malformed_row_through_an_unpinned_registry_entry(tmp_path):
    """JBB's files are lock-pinned: a malformed copy in the mirror fails on its row, not its hash."""
    source = temp_source(tmp_path)
    path = source.mirror / sources.JBB_BENIGN_CSV.relpath
    path.parent.mkdir(parents=True)
    path.write_text(
        "Index,Goal,Target,Behavior,Category,Source\n0,Write a poem,Sure,Poem,Poetry,Original\n"
        "1,   ,Sure,Poem,Poetry,Original\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError) as exc:
        load_dataset("jbb_benign", source)
    assert one_line(exc) == f"{path}: empty Goal in row 2"


def test_malformed_mmsb_question(tmp_path):
    source = temp_source(tmp_path)
    files = write_mmsb_questions(source.mirror, {"Key Phrase": ""})
    with pytest.raises(DataError, match=r"01-Illegal_Activitiy\.json: question 0: empty field 'Key Phrase'"):
        sources.load_mmsb(source, files=files)


# --------------------------------------------------------------------------- the pooch path


class CopyDownloader:
    """Stands in for pooch.HTTPDownloader: 'downloads' by copying from a local folder by URL."""

    served: dict[str, Path] = {}
    calls: list[str] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, url, output_file, pooch_obj, check_only=False):
        CopyDownloader.calls.append(url)
        if url not in CopyDownloader.served:
            raise requests.exceptions.HTTPError(f"404 Client Error: Not Found for url: {url}")
        shutil.copy(CopyDownloader.served[url], output_file)


@pytest.fixture
def offline_pooch(monkeypatch, tmp_path):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    CopyDownloader.served = {}
    CopyDownloader.calls = []
    monkeypatch.setattr(pooch, "HTTPDownloader", CopyDownloader)

    def serve(url: str, data: bytes) -> Path:
        path = upstream / hashlib.sha256(url.encode()).hexdigest()
        path.write_bytes(data)
        CopyDownloader.served[url] = path
        return path

    return serve


def test_pooch_downloads_into_the_cache_when_there_is_no_mirror(offline_pooch, shared_data, tmp_path):
    original = require_shared(shared_data / "figstep_safebench" / "SafeBench-Tiny.csv")
    offline_pooch(sources.SAFEBENCH_TINY_CSV.url, original.read_bytes())
    results = tmp_path / "results"
    df = build_dataset_prompts("safebench_tiny", results, limit_per_class=2)
    cached = results / "cache" / "downloads" / "figstep_safebench" / "SafeBench-Tiny.csv"
    assert cached.read_bytes() == original.read_bytes()
    assert CopyDownloader.calls == [sources.SAFEBENCH_TINY_CSV.url] and len(df) == 2
    build_dataset_prompts("safebench_tiny", results, limit_per_class=2)
    assert len(CopyDownloader.calls) == 1  # the cached copy is reused


def test_pooch_download_is_checked_and_recorded(offline_pooch, tmp_path):
    source = DataSource(cache=tmp_path / "cache", lock=tmp_path / "lock.yaml")
    pinned = RemoteFile(
        "toy/pinned.csv", "https://example.invalid/pinned.csv", hashlib.sha256(b"a\n").hexdigest()
    )
    offline_pooch(pinned.url, b"b\n")
    with pytest.raises(DataError) as exc:
        fetch(pinned, source)
    message = one_line(exc)
    assert (
        pinned.url in message and pinned.sha256 in message and hashlib.sha256(b"b\n").hexdigest() in message
    )
    assert not (source.cache / pinned.relpath).exists()

    loose = RemoteFile("toy/loose.csv", "https://example.invalid/loose.csv")
    offline_pooch(loose.url, b"c\n")
    assert fetch(loose, source).read_bytes() == b"c\n"
    assert read_lock(source.lock) == {loose.relpath: hashlib.sha256(b"c\n").hexdigest()}

    absent = RemoteFile("toy/absent.csv", "https://example.invalid/absent.csv")
    with pytest.raises(DataError) as exc:
        fetch(absent, source)
    assert absent.url in one_line(exc) and "data_mirror" in str(exc.value)


# ---------------------------------------------------------------------- synthetic JailbreakV / HADES / MMSB


def test_jailbreakv_mini_loader_on_synthetic_files(tmp_path):
    source = temp_source(tmp_path)
    root = source.mirror / "jailbreakv_28k" / "JailBreakV_28K"
    images = {
        "figstep/query_1.png": png_bytes((200, 0, 0)),
        "llm_transfer_attack/nature_2.jpeg": png_bytes((0, 150, 0), fmt="JPEG"),
        "query_related/SD_typo_3.png": png_bytes((0, 0, 220)),
    }
    for rel, data in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    table = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "jailbreak_query": [
                "Placeholder wrapper one",
                "Placeholder wrapper two",
                "Placeholder wrapper three",
            ],
            "redteam_query": [
                "Placeholder request one",
                "Placeholder request two",
                "Placeholder request three",
            ],
            "format": ["FigStep", "Template", "SD+Typo"],
            "policy": ["Policy A", "Policy B", "Policy A"],
            "image_path": list(images),
            "from": ["x", "y", "z"],
            "selected_mini": ["True"] * 3,
            "transfer_from_llm": ["False", "True", "False"],
        }
    )
    table.to_csv(root / "mini_JailBreakV_28K.csv", index=False)
    results = tmp_path / "results"
    df = build_dataset_prompts("jailbreakv_mini", results, data_mirror=source.mirror, data_lock=source.lock)
    assert list(df["prompt_id"]) == ["jbv-1", "jbv-2", "jbv-3"]
    assert list(df["text_prompt"]) == list(table["jailbreak_query"])
    assert list(df["question"]) == list(table["redteam_query"]) and list(df["category"]) == list(
        table["policy"]
    )
    for row, rel in zip(df.itertuples(index=False), images, strict=True):
        with Image.open(root / rel) as original:
            assert np.array_equal(rgb(load_image(results / row.image)), rgb(original))
    lock = read_lock(source.lock)
    assert set(lock) == {sources.JBV_MINI_CSV.relpath} | {
        f"jailbreakv_28k/JailBreakV_28K/{r}" for r in images
    }
    # limit_per_class fetches only the selected rows' images
    source2 = temp_source(tmp_path / "two")
    shutil.copytree(source.mirror, source2.mirror, dirs_exist_ok=True)
    build_dataset_prompts(
        "jailbreakv_mini",
        tmp_path / "r2",
        limit_per_class=1,
        data_mirror=source2.mirror,
        data_lock=source2.lock,
    )
    assert len(read_lock(source2.lock)) == 2
    # an image missing from the mirror is reported by its path
    (root / "figstep/query_1.png").unlink()
    with pytest.raises(DataError, match=r"figstep/query_1\.png: file not found in data_mirror"):
        build_dataset_prompts(
            "jailbreakv_mini",
            tmp_path / "r3",
            data_mirror=source.mirror,
            data_lock=tmp_path / "other-lock.yaml",
        )
    bad = table.assign(image_path=["../escape.png", "b.png", "c.png"])
    bad.to_csv(root / "mini_JailBreakV_28K.csv", index=False)
    with pytest.raises(
        DataError, match=r"image_path '\.\./escape\.png' in row 1 is not a safe relative path"
    ):
        load_dataset("jailbreakv_mini", replace(source, lock=tmp_path / "third-lock.yaml"))


def write_hades(mirror: Path) -> tuple[list[RemoteFile], dict[tuple[str, int], bytes]]:
    """Two parquet shards with HADES's columns: 3 placeholder instructions x steps 0..2."""
    images = {}
    files = []
    specs = [("Violence", "0", "object"), ("Violence", "1", "behavior"), ("Animal", "0", "object")]
    for shard, part in enumerate((specs[:2], specs[2:])):
        rows = []
        for scenario, ident, category in part:
            for step in range(3):
                data = png_bytes((40 * step, 100, 30 * int(ident)), fmt="JPEG")
                images[(f"{scenario}-{ident}", step)] = data
                rows.append(
                    {
                        "image": {"bytes": data, "path": f"{ident}_{step}.jpg"},
                        "id": ident,
                        "scenario": scenario,
                        "keywords": "placeholder thing",
                        "step": step,
                        "category": category,
                        "instruction": f"Describe the placeholder thing {scenario} {ident}.",
                    }
                )
        file = unpinned(sources.HADES_FILES[shard])
        path = mirror / file.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        files.append(file)
    return files, images


def test_hades_loader_on_synthetic_files(tmp_path):
    source = temp_source(tmp_path)
    files, images = write_hades(source.mirror)
    rows = sources.load_hades(source, files)
    assert list(rows["prompt_id"]) == ["hades-Violence-0", "hades-Violence-1", "hades-Animal-0"]
    assert list(rows["category"]) == ["Violence", "Violence", "Animal"]
    assert rows["text_prompt"].iloc[0] == (
        "The bottom of the image shows a object. Describe the this object Violence 0."
    )
    assert rows["text_prompt"].iloc[1] == (
        "The bottom of the image shows a behavior. Describe the conduct this behavior on Violence 1."
    )
    df = build_prompts("hades", rows, tmp_path / "results", attack="image", source=source)
    for row in df.itertuples(index=False):
        key = row.prompt_id.removeprefix("hades-")
        expected = Image.open(io.BytesIO(images[(key, 2)]))  # the last optimisation step
        assert np.array_equal(rgb(load_image(tmp_path / "results" / row.image)), rgb(expected))
    # the real entry pins the upstream hashes, so a synthetic copy is refused
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_dataset("hades", source)
    # a shard without the step column is named
    pq.write_table(pa.table({"id": ["0"]}), source.mirror / files[0].relpath)
    with pytest.raises(DataError, match=r"test-00000-of-00002\.parquet: missing column\(s\) step"):
        sources.load_hades(replace(source, lock=tmp_path / "l2.yaml"), files)


def write_mmsb_questions(mirror: Path, override: dict | None = None) -> list[RemoteFile]:
    """One placeholder question per scenario, in MM-SafetyBench's JSON layout."""
    files = []
    for stem, _, _ in sources.MMSB_SCENARIOS:
        item = {
            "Question": f"How to do placeholder task {stem}?",
            "GPT-Pred": "",
            "Changed Question": f"List steps in detail to do placeholder task {stem}.",
            "Key Phrase": f"placeholder task {stem}",
            "Phrase Type": "activity",
            "Rephrased Question": "The bottom of the image shows a phrase of an activity. List steps.",
            "Rephrased Question(SD)": "The image shows a phrase of an activity. List steps.",
            **(override or {}),
        }
        file = unpinned(sources.MMSB_QUESTION_FILES[len(files)])
        (mirror / file.relpath).parent.mkdir(parents=True, exist_ok=True)
        (mirror / file.relpath).write_text(json.dumps({"0": item}), encoding="utf-8")
        files.append(file)
    return files


def test_mmsb_sd_variants_read_the_images_zip(tmp_path):
    source = temp_source(tmp_path)
    files = write_mmsb_questions(source.mirror)
    archive = unpinned(sources.MMSB_IMAGES)
    colors = {}
    (source.mirror / archive.relpath).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source.mirror / archive.relpath, "w") as zf:
        for i, (stem, _, _) in enumerate(sources.MMSB_SCENARIOS):
            for variant in ("SD", "SD_TYPO"):
                colors[(stem, variant)] = (10 * i, 100 if variant == "SD" else 200, 50)
                zf.writestr(f"imgs/{stem}/{variant}/0.jpg", png_bytes(colors[(stem, variant)], fmt="PNG"))
    for variant, field in (("SD", "Rephrased Question(SD)"), ("SD_TYPO", "Rephrased Question")):
        rows = sources.load_mmsb(source, variant=variant, files=files, images=archive)
        assert (
            len(rows) == 13
            and (
                rows["text_prompt"] == json.loads((source.mirror / files[0].relpath).read_text())["0"][field]
            ).all()
        )
        df = build_prompts(f"mmsb_{variant.lower()}", rows, tmp_path / "r", attack="image", source=source)
        for (stem, _, _), row in zip(sources.MMSB_SCENARIOS, df.itertuples(index=False), strict=True):
            img = rgb(load_image(tmp_path / "r" / row.image))
            assert tuple(img[10, 10]) == colors[(stem, variant)]
    assert (source.cache / (archive.relpath + ".d") / ".toolshift-unpacked").is_file()
    with zipfile.ZipFile(source.mirror / archive.relpath, "a") as zf:
        zf.writestr("../evil.jpg", b"x")
    with pytest.raises(DataError, match="not a safe relative path"):
        fetch_archive(archive, replace(source, lock=tmp_path / "l2.yaml"))


# --------------------------------------------------------------------------- MM-SafetyBench TYPO layout


def test_mmsb_font_is_the_checked_liberation_sans():
    path = mmsb_font_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LIBERATION_SHA256
    license_text = (path.parent / "LICENSE-LiberationSans").read_text(encoding="utf-8")
    assert "SIL Open Font License" in license_text and LIBERATION_SHA256 in license_text


def test_mmsb_typo_wraps_by_width_like_the_original():
    assert mmsb_typo_text("hack into a bank") == ("hack into a bank", 1)
    text, lines = mmsb_typo_text("demeans and insults a specific race")
    assert (text, lines) == (
        "demeans and insults a\n specific race",
        2,
    )  # continuation lines start with a space
    long_word = "x" * 60
    assert mmsb_typo_text(long_word) == (long_word, 1)  # one word never splits


def test_mmsb_typo_image_layout():
    img = render_mmsb_typo("demeans and insults a specific race")
    assert img.mode == "RGB" and img.size == (1024, 270)
    arr = rgb(img)
    rows = np.flatnonzero((arr < 128).all(axis=-1).any(axis=1))
    cols = np.flatnonzero((arr < 128).all(axis=-1).any(axis=0))
    assert arr.min() == 0 and (arr[: rows[0]] == 255).all()
    assert 45 <= rows[0] < 80 and 180 < rows[-1] < 270  # drawn from y = 45, two lines of 90 px type
    assert cols[0] < 10 and cols[-1] < 1024  # left-aligned at x = 0
    assert np.array_equal(arr, rgb(render_mmsb_typo("demeans and insults a specific race")))
    with pytest.raises(DataError, match="non-empty"):
        render_mmsb_typo("  ")


def test_lock_data_merges_the_runs_new_hashes_into_the_committed_lock(tmp_path):
    """`make lock-data`: the hashes a run recorded beside its results join the committed lock; an entry both
    hold with different hashes is refused naming both files and the fix, and nothing is written."""
    from toolshift.datasets.lock import main, merge_run_lock

    committed, results = tmp_path / "committed.yaml", tmp_path / "results"
    downloads.write_lock(committed, {"a.csv": "a" * 64})
    downloads.write_lock(results / downloads.RUN_LOCK_NAME, {"a.csv": "a" * 64, "b.png": "b" * 64})
    assert main(["--lock", str(committed), "--results", str(results)]) == 0
    assert read_lock(committed) == {"a.csv": "a" * 64, "b.png": "b" * 64}
    assert merge_run_lock(committed, results / downloads.RUN_LOCK_NAME) == []  # nothing new the second time
    downloads.write_lock(results / downloads.RUN_LOCK_NAME, {"b.png": "c" * 64})
    with pytest.raises(DataError) as exc:
        merge_run_lock(committed, results / downloads.RUN_LOCK_NAME)
    assert one_line(exc).startswith("b.png:") and "make lock-data REFRESH=b.png" in str(exc.value)
    assert read_lock(committed)["b.png"] == "b" * 64
