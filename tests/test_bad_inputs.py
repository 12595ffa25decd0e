"""The bad-input matrix (docs/reliability.md, "Bad input"): each case stops with one clear line, a non-zero
exit and no output that Snakemake would take as complete.

Config and data cases run through `snakemake` (a dry run for config errors: validation happens when the
Snakefile loads; the `prompts` rule for data errors); file-contract cases call the library reader that
every rule uses. Each asserts the message names the offending key, file or value.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dag import REPO, SNAKEMAKE, reduced_config, snakemake
from fake_openai_server import FakeOpenAIServer

from toolshift.contracts import RESPONSE_COLUMNS, read_table
from toolshift.datasets.images import clamp_bbox, load_image, zoom
from toolshift.errors import ConfigError, ContractError, DataError, ToolshiftError
from toolshift.inference.api_client import ApiError, ApiSettings, ChatClient
from toolshift.models.activations import read_activations, to_dataset, write_activations
from toolshift.report.build import build_html

# --------------------------------------------------------------------------- helpers


def error_lines(output: str, needle: str) -> list[str]:
    """The lines of Snakemake's output that carry a toolshift message naming `needle`."""
    return [line for line in output.splitlines() if needle in line and ("config:" in line or "error" in line)]


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    for needle in needles:
        assert needle in message, (needle, message)


def config_for(work: Path, **changes) -> dict:
    cfg = reduced_config(work)
    cfg["models"] = {"fixture-llava": cfg["models"]["fixture-llava"]}
    cfg.update(changes)
    if "datasets" in changes:  # a benchmark without harmless prompts has no refusal direction to ablate
        cfg["interventions"]["ablate_refusal"] = False
    return cfg


def dry_run(work: Path, cfg: dict):
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return snakemake(work, "--configfile", "config.yaml", "--cores", "1", "--dry-run", timeout=300)


def build_prompts_only(work: Path, cfg: dict, dataset: str):
    """Run only the `prompts` rule of `dataset`; the parquet file it would write."""
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = Path(cfg["results"]) / "data" / dataset / "prompts.parquet"
    proc = snakemake(work, "--configfile", "config.yaml", "--cores", "1", str(target), timeout=300)
    return proc, target


# --------------------------------------------------------------------------- config (snakemake --dry-run)


def _unknown_key(cfg):
    cfg["generation"]["batchsize"] = 2
    return "batchsize"


def _wrong_type(cfg):
    cfg["generation"]["max_new_tokens"] = "two"
    return "generation.max_new_tokens"


def _unknown_family(cfg):
    cfg["models"]["fixture-llava"]["family"] = "llava_next_huge"
    return "llava_next_huge"


def _unknown_condition(cfg):
    cfg["conditions"] = ["direct", "tool", "tool_sparkly"]
    return "tool_sparkly"


def _layer_beyond_depth(cfg):
    cfg["interventions"]["layer"] = 99
    return "interventions.layer: 99 is out of range for a model with 3 layers"


CONFIG_CASES = {
    "unknown config key": _unknown_key,
    "wrong type": _wrong_type,
    "unknown model family": _unknown_family,
    "unknown condition": _unknown_condition,
    "layer beyond the model's depth": _layer_beyond_depth,
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_errors_stop_the_dry_run(case, tmp_path):
    cfg = config_for(tmp_path)
    needle = CONFIG_CASES[case](cfg)
    proc = dry_run(tmp_path, cfg)
    assert proc.returncode != 0
    lines = error_lines(proc.stdout + proc.stderr, needle)
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("config: ")
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- data (the prompts rule)

SAFEBENCH_TINY = "figstep_safebench/SafeBench-Tiny.csv"
JBB_HARMFUL = "jailbreakbench_behaviors/harmful-behaviors.csv"


@pytest.mark.e2e
def test_missing_dataset_file(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    cfg = config_for(tmp_path, datasets={"safebench_tiny": {}}, data_mirror=str(mirror))
    proc, target = build_prompts_only(tmp_path, cfg, "safebench_tiny")
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, "file not found in data_mirror")
    assert len(lines) == 1 and SAFEBENCH_TINY in lines[0], proc.stderr[-3000:]
    assert not target.exists()


@pytest.mark.e2e
def test_sha256_mismatch(tmp_path):
    """A mirror holding a tampered copy of a pinned registry file (a well-formed CSV with other rows)."""
    mirror = tmp_path / "mirror"
    (mirror / "figstep_safebench").mkdir(parents=True)
    (mirror / SAFEBENCH_TINY).write_text(
        "dataset,category_id,task_id,category_name,question,instruction\nSafeBench,1,1,x,y,z\n"
    )
    cfg = config_for(tmp_path, datasets={"safebench_tiny": {}}, data_mirror=str(mirror))
    proc, target = build_prompts_only(tmp_path, cfg, "safebench_tiny")
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, "sha256 mismatch")
    assert len(lines) == 1 and SAFEBENCH_TINY in lines[0], proc.stderr[-3000:]
    assert not target.exists()


@pytest.mark.e2e
def test_empty_dataset(tmp_path):
    """A registry file with its header and no rows (an unpinned file: its hash goes to a scratch lock)."""
    mirror = tmp_path / "mirror"
    (mirror / "jailbreakbench_behaviors").mkdir(parents=True)
    (mirror / JBB_HARMFUL).write_text("Index,Goal,Target,Behavior,Category,Source\n")
    cfg = config_for(
        tmp_path,
        datasets={"jbb_harmful": {}},
        data_mirror=str(mirror),
        data_lock=str(tmp_path / "lock.yaml"),
    )
    proc, target = build_prompts_only(tmp_path, cfg, "jbb_harmful")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("toolshift error:")]
    assert len(lines) == 1 and "jbb_harmful" in lines[0], proc.stderr[-3000:]
    assert "no rows" in lines[0] or "empty" in lines[0]
    assert not target.exists()


# --------------------------------------------------------------------------- runs (book_dir, lock, build)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_foreign_book_dir(tmp_path):
    """A book_dir toolshift did not create (a user's documentation folder, here with a built index.html of its
    own that would make the DAG say "Nothing to be done") is refused with one line before any job, and
    nothing in it changes; the library refuses it too. New, empty and marked folders and the repository's
    own book/ are accepted."""
    from toolshift.common.guards import BOOK_MARKER, check_book_dir, claim_book_dir
    from toolshift.report.build import make_book

    docs = tmp_path / "docs"
    (docs / "_build" / "html").mkdir(parents=True)
    (docs / "_config.yml").write_text("title: my project's documentation\n")
    (docs / "intro.md").write_text("# My notes\n")
    (docs / "_build" / "html" / "index.html").write_text("<p>my own page</p>\n")
    before = _tree(docs)
    proc = dry_run(tmp_path, config_for(tmp_path, book_dir=str(docs)))
    assert proc.returncode != 0
    lines = error_lines(proc.stdout + proc.stderr, "book_dir")
    assert len(lines) == 1, proc.stderr[-3000:]
    assert str(docs) in lines[0] and "new or empty folder" in lines[0]
    assert _tree(docs) == before and not (tmp_path / "results").exists()

    with pytest.raises(ConfigError) as exc:  # the book rule's call, before it reads or writes anything
        make_book(
            book_dir=docs,
            sources=REPO / "book",
            asr_csv=tmp_path / "asr.csv",
            figures={},
            captions_json=None,
            vectors=[],
            config={},
            index_out=docs / "_build/html/index.html",
        )
    assert_one_line(exc, str(docs), "did not create", BOOK_MARKER)
    assert _tree(docs) == before

    check_book_dir(REPO / "book", REPO / "book")  # the default book_dir: the package's own book sources
    check_book_dir(tmp_path / "new", REPO / "book")
    (tmp_path / "bare" / "_build" / "html").mkdir(parents=True)  # what Snakemake creates for the output
    check_book_dir(tmp_path / "bare", REPO / "book")
    (tmp_path / "empty").mkdir()
    claimed = claim_book_dir(tmp_path / "empty", REPO / "book")
    assert (claimed / BOOK_MARKER).is_file() and not (REPO / "book" / BOOK_MARKER).exists()
    (claimed / "_config.yml").write_text("title: toolshift\n")
    check_book_dir(claimed, REPO / "book")  # marked by an earlier run: still ours once it is filled


def _locked(lock: Path) -> bool:
    """Whether some process holds an flock on `lock` (tried without the library under test; only once no run
    is starting, since the probe holds the lock for an instant)."""
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _start_snakemake(work: Path, *args: str) -> subprocess.Popen:
    cmd = [SNAKEMAKE, *args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
    cmd += ["--cores", "1", "--configfile", "config.yaml"]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def _wait_until_locked(lock: Path, proc: subprocess.Popen, timeout: float = 40) -> None:
    """Wait until `proc` has taken the lock: the lock file names its pid (written once the lock is held)."""
    end = time.monotonic() + timeout
    while not (lock.exists() and lock.read_text().startswith(f"pid {proc.pid} ")):
        assert proc.poll() is None, f"the run ended without locking {lock}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < end, f"no lock on {lock} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.e2e
def test_two_runs_on_one_results_folder(tmp_path):
    """Two working directories, one absolute results root: the second run is refused with one line naming the
    lock and the first run's pid, and the first one completes. The lock goes with its run: it is free once
    that run has ended, and a killed run leaves no stale lock behind."""
    results = tmp_path / "results"
    cfg = config_for(tmp_path, results=str(results))
    works = [tmp_path / "a", tmp_path / "b"]
    for work in works:
        work.mkdir()
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    lock = results / ".toolshift.lock"
    targets = [str(results / "episodes/mini/direct.jsonl"), str(results / "models/fixture-llava")]
    first = _start_snakemake(works[0], *targets)
    try:
        _wait_until_locked(lock, first)
        second = subprocess.run(
            [SNAKEMAKE, *targets, "--snakefile", str(REPO / "Snakefile"), "--directory", str(works[1]),
             "--cores", "1", "--configfile", "config.yaml"],
            cwd=works[1], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        still_running = first.poll() is None
        out, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert still_running, "the first run ended before the second one started: the test proves nothing"
    assert first.returncode == 0, err[-3000:]
    assert second.returncode != 0
    lines = [line for line in second.stderr.splitlines() if "is in use by another toolshift run" in line]
    assert len(lines) == 1, second.stderr[-3000:]
    assert str(lock) in lines[0] and f"pid {first.pid} " in lines[0] and str(works[0]) in lines[0]
    assert not lock.exists()  # released and removed with its run

    killed = _start_snakemake(works[0], str(results / "splits/mini.parquet"))
    _wait_until_locked(lock, killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert lock.exists() and not _locked(lock)  # the file stays behind, the lock does not
    rerun = subprocess.run(
        [SNAKEMAKE, str(results / "models/fixture-llava"), "--force", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(works[1]), "--cores", "1", "--configfile", "config.yaml"],
        cwd=works[1], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not lock.exists()


def test_killed_book_build_leaves_no_partial_book(tmp_path):
    """A build killed after Jupyter Book has written its pages (here: during the link check) leaves the
    previous book as it was, never a new index.html before the checks pass; the next build replaces it."""
    book = tmp_path / "book"
    (book / "_build" / "html").mkdir(parents=True)
    (book / "_config.yml").write_text(
        "title: t\nonly_build_toc_files: true\nexclude_patterns: [_build]\n"
        'execute: {execute_notebooks: "off"}\n'
    )
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: page\n")
    (book / "intro.md").write_text("# Intro\n\nSee [the page](page.md).\n")
    (book / "page.md").write_text("# Page\n\nText.\n")
    (book / "_build" / "html" / "index.html").write_text("previous book\n")
    previous = _tree(book / "_build" / "html")
    checking = tmp_path / "checking"
    script = (
        "import sys, time\nfrom pathlib import Path\nimport toolshift.report.build as report\n"
        "def hang(html_dir):\n    Path(sys.argv[2]).write_text(str(html_dir))\n    time.sleep(300)\n"
        "report.broken_internal_links = hang\nreport.build_html(sys.argv[1])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(book), str(checking)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 120
        while not checking.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < end, "the build never reached its link check"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert _tree(book / "_build" / "html") == previous  # the previous book, untouched
    index = build_html(book)  # the next build cleans up after the killed one and replaces the book
    assert index == (book / "_build" / "html" / "index.html").resolve()
    assert "previous book" not in index.read_text() and (index.parent / "page.html").is_file()
    assert not list((book / "_build").glob(".building-*"))


# --------------------------------------------------------------------------- files (library readers)


def test_corrupt_or_truncated_image(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image\n")
    for bad in (truncated, garbage):
        with pytest.raises(DataError) as exc:
            load_image(bad)
        assert_one_line(exc, str(bad), "cannot be decoded as an image")


def test_out_of_range_bbox():
    """A malformed box is refused naming the value; an out-of-range box is clamped into the image (the
    tool's documented behaviour for model-written boxes), never an empty or out-of-bounds crop."""
    for bad in ([0, 0, 10], [0, 0, float("nan"), 5], "0,0,5,5", [0, 0, True, 5]):
        with pytest.raises(DataError) as exc:
            clamp_bbox(bad, (32, 32))
        assert_one_line(exc, "bbox")
    assert clamp_bbox([-50, -5, 1e9, 40], (32, 24)) == [0, 0, 32, 24]
    assert clamp_bbox([100, 100, 200, 200], (32, 24)) == [31, 23, 32, 24]
    from PIL import Image

    crop = zoom(Image.new("RGB", (32, 24)), [100, 100, 200, 200], resize=False)
    assert crop.size == (1, 1)


def _activations(path: Path) -> Path:
    states = np.random.default_rng(0).normal(size=(4, 2, 8)).astype(np.float32)
    attrs = {
        "model": "m",
        "revision": "fixture",
        "condition": "direct",
        "position": "last_prompt_token",
        "dtype": "float32",
        "toolshift_version": "0",
    }
    write_activations(to_dataset(states, [f"p{i}" for i in range(4)], attrs), path)
    return path


def test_truncated_activations(tmp_path):
    path = _activations(tmp_path / "activations.nc")
    read_activations(path)  # the intact file reads
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ContractError) as exc:
        read_activations(path)
    assert_one_line(exc, str(path), "cannot be read as netCDF")


def test_truncated_activations_stop_the_merge(tmp_path):
    """merge_shards (rule merge_run) refuses a truncated shard and writes neither merged file."""
    from toolshift.inference.runner import merge_shards

    shard = _activations(tmp_path / "000.nc")
    shard.write_bytes(shard.read_bytes()[:100])
    responses = tmp_path / "000.parquet"
    pd.DataFrame({c: ["x"] for c in RESPONSE_COLUMNS}).to_parquet(responses)
    out_r, out_a = tmp_path / "responses.parquet", tmp_path / "activations.nc"
    with pytest.raises(ToolshiftError):
        merge_shards([responses], out_r, [shard], out_a)
    assert not out_r.exists() and not out_a.exists()


def test_contract_file_with_a_missing_column(tmp_path):
    path = tmp_path / "responses.parquet"
    frame = pd.DataFrame({c: [1] for c in RESPONSE_COLUMNS}).drop(columns=["response"])
    frame.to_parquet(path)
    with pytest.raises(ContractError) as exc:
        read_table(path, RESPONSE_COLUMNS)
    assert_one_line(exc, str(path), "missing column(s) response")


def test_missing_api_key(tmp_path):
    """The API backend (and so any API judge built on ChatClient) stops before any request or file."""
    settings = ApiSettings(
        base_url="http://127.0.0.1:9/v1",
        model="judge",
        api_key_env="TOOLSHIFT_TEST_MISSING_KEY",
        cache_dir=tmp_path / "cache",
    )
    client = ChatClient(settings, environ={"OTHER_KEY": "sk-unrelated"})
    with pytest.raises(ConfigError) as exc:
        client.complete([{"role": "user", "content": "hello"}], max_tokens=4)
    assert_one_line(exc, "TOOLSHIFT_TEST_MISSING_KEY", "is not set")
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_missing_api_key_for_the_api_judge(tmp_path):
    """The API judge stops with one line naming the variable, before any request or cache file."""
    from toolshift.judges.keyword import judge_frame

    responses = pd.DataFrame({"prompt_id": ["p1"], "dataset": ["d"], "response": ["Sure."]})
    prompts = pd.DataFrame({"prompt_id": ["p1"], "dataset": ["d"], "question": ["q?"], "instruction": ["q."]})
    api = {"base_url": "http://127.0.0.1:9/v1", "model": "judge", "api_key_env": "TOOLSHIFT_TEST_MISSING_KEY"}
    with pytest.raises(ConfigError) as exc:
        judge_frame(
            responses, judge="api", prompts=prompts, api=api, cache_dir=tmp_path / "cache", environ={}
        )
    assert_one_line(exc, "TOOLSHIFT_TEST_MISSING_KEY", "is not set")
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_api_reply_without_text_is_a_failed_request(tmp_path):
    """`content: null` is retried and never cached: a transient null gives the later text; a server that
    always answers null fails with one line, and nothing lands in the cache for a rerun to reuse."""
    sent = []

    def flaky(body):
        sent.append(1)
        return None if len(sent) == 1 else "I cannot help with that."

    settings = {"model": "m", "api_key_env": None, "backoff_s": 0.01, "max_retries": 2}
    with FakeOpenAIServer(reply=flaky, usage=False) as server:
        client = ChatClient(ApiSettings(base_url=server.base_url, cache_dir=tmp_path / "a", **settings))
        result = client.complete([{"role": "user", "content": "hi"}], max_tokens=4)
    assert result.text == "I cannot help with that." and client.n_sent == 2
    with FakeOpenAIServer(reply=lambda body: None, usage=False) as server:
        client = ChatClient(ApiSettings(base_url=server.base_url, cache_dir=tmp_path / "b", **settings))
        with pytest.raises(ApiError) as exc:
            client.complete([{"role": "user", "content": "hi"}], max_tokens=4)
    assert_one_line(exc, "gave up after 3 attempt(s)", "no text", "content null", "max_new_tokens")
    assert not any((tmp_path / "b").rglob("*.json"))


# --------------------------------------------------------------------------- no silent damage (issue 14)


def _rows(**instructions) -> pd.DataFrame:
    """Loader rows, one per prompt id (keyword, `_` for `-`) -> instruction."""
    ids = [k.replace("_", "-") for k in instructions]
    return pd.DataFrame(
        {"prompt_id": ids, "category": "c", "harmful": True, "question": "q?",
         "instruction": list(instructions.values())}
    )  # fmt: skip


LONG_INSTRUCTION = "Steps to " + "do this thing " * 714  # 10,005 characters


def test_attack_text_too_long_for_the_figstep_image(tmp_path):
    """A 10,000-character instruction stops the prompts build naming the prompt and what fits; with
    `on_unrenderable: skip` it is left out, recorded in skipped.csv, and the book lists it."""
    from toolshift.datasets.prompts import build_prompts
    from toolshift.report.provenance import attach_skipped, datasets_markdown

    rows = _rows(ok_1="Steps to bake bread.", long_1=LONG_INSTRUCTION)
    with pytest.raises(DataError) as exc:
        build_prompts("mini", rows, tmp_path)
    needles = ["prompt long-1", "too long", "at most 7 lines of instruction", "about 105 characters"]
    assert_one_line(exc, *needles, "datasets.mini.on_unrenderable: skip")
    assert not (tmp_path / "data").exists()  # nothing drawn before the stop

    skipped = tmp_path / "data/mini/skipped.csv"
    out = build_prompts("mini", rows, tmp_path, on_unrenderable="skip", skipped_csv=skipped)
    assert list(out["prompt_id"]) == ["ok-1"]
    assert not (tmp_path / "data/mini/images/long-1.png").exists()
    recorded = pd.read_csv(skipped)
    assert list(recorded["prompt_id"]) == ["long-1"] and "too long" in recorded["reason"][0]
    prompts = attach_skipped({"mini": out}, {"mini": tmp_path / "data/mini/prompts.parquet"})
    md = datasets_markdown(prompts, {})
    assert "`long-1`" in md and "left out" in md


def test_attack_text_with_characters_the_font_cannot_draw():
    """Arabic, emoji and control characters are empty boxes in FreeMonoBold: refused naming each code
    point. Hebrew, which the font has, is drawn (right to left with libraqm; refused without it)."""
    from toolshift.datasets.typography import _complex_layout, figstep_problem
    from toolshift.datasets.typography_mmsb import mmsb_typo_problem

    for text, code_point in (("مرحبا", "U+0645"), ("😀", "U+1F600"), ("\x07", "U+0007")):
        problem = figstep_problem(f"Steps to say {text} now.")
        assert problem and "FreeMonoBold has no glyph" in problem and code_point in problem, problem
        problem = mmsb_typo_problem(f"say {text} now")
        assert problem and "LiberationSans-Regular has no glyph" in problem and code_point in problem
    hebrew = figstep_problem("Steps to say שלום now.")
    assert hebrew is None if _complex_layout() else "right-to-left" in hebrew
    assert "1135 px wide" in mmsb_typo_problem("attention-deficit/hyperactivity disorder")


def test_attack_text_problem_stops_the_prompts_rule_naming_the_prompt(tmp_path):
    from toolshift.datasets.prompts import build_prompts

    with pytest.raises(DataError) as exc:
        build_prompts("mini", _rows(ok_1="Steps to bake bread.", emoji_1="Steps to 😀."), tmp_path)
    assert_one_line(exc, "dataset mini, prompt emoji-1", "U+1F600", "on_unrenderable: skip")


def test_sixteen_bit_and_transparent_images_load_as_seen(tmp_path):
    """A 16-bit grayscale PNG keeps its grey levels (not all white); transparent pixels are white, not
    the colour stored under them (RGBA, LA, palette with a transparent index)."""
    from PIL import Image

    levels = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "gray16.png")
    grey = np.asarray(load_image(tmp_path / "gray16.png"), dtype=float)
    assert grey.shape == (64, 64, 3) and abs(grey.mean() - levels.mean() / 257) < 1
    assert grey.min() == 0 and grey.max() == 255
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "clear_la.png")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.save(tmp_path / "clear_p.png", transparency=0)
    for name in ("clear.png", "clear_la.png", "clear_p.png"):
        assert (np.asarray(load_image(tmp_path / name)) == 255).all(), name
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    half.save(tmp_path / "half.png")
    assert np.abs(np.asarray(load_image(tmp_path / "half.png")).astype(int) - 127).max() <= 1


def _fail_in_step(tmp_path, capsys, error: BaseException) -> tuple[str, str, Path]:
    """Run a rule body raising `error` through run_step: (its stderr, its log file's text, log path)."""
    from types import SimpleNamespace

    from toolshift.common.steps import run_step

    log = tmp_path / "rule.log"
    smk = SimpleNamespace(log=[str(log)], rule="figures", wildcards={})

    def deep_inside():
        raise error

    def main(_smk):
        deep_inside()

    with pytest.raises(SystemExit) as info:
        run_step(smk, main)
    assert info.value.code == 1
    return capsys.readouterr().err, log.read_text(), log


def test_unexpected_error_gives_one_line_and_the_full_traceback_in_the_log(tmp_path, capsys):
    err, text, log = _fail_in_step(tmp_path, capsys, KeyError("selected_layer"))
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("toolshift error: rule figures: unexpected KeyError: 'selected_layer'")
    assert "test_bad_inputs.py" in lines[0] and str(log) in lines[0] and "report it" in lines[0]
    assert "Traceback (most recent call last)" in text and "in deep_inside" in text
    assert "KeyError: 'selected_layer'" in text


def test_full_disk_names_the_file_and_the_fix(tmp_path, capsys):
    import errno

    target = str(tmp_path / "results/tables/asr.csv")
    err, text, _ = _fail_in_step(tmp_path, capsys, OSError(errno.ENOSPC, "No space left on device", target))
    (line,) = [line for line in err.splitlines() if line.startswith("toolshift error:")]
    assert f"disk full while writing {target}" in line and "free space" in line and "rerun" in line
    assert "Traceback (most recent call last)" in text and "No space left on device" in text


def test_every_rule_logs_and_runs_through_run_step():
    """What the two tests above check holds for every rule: each has a log: file and its script ends in
    run_step (which writes the traceback there)."""
    import re

    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule |    rule )", smk.read_text())[1:]:
            assert "log:" in block and "script:" in block, (smk.name, block.splitlines()[0])
    for script in sorted((REPO / "workflow_scripts").glob("*.py")):
        assert "run_step(snakemake, main)" in script.read_text(), script.name


@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory) -> Path:
    from toolshift.models.fixtures import build_fixture

    return build_fixture("llava", tmp_path_factory.mktemp("fixture") / "m", hidden_size=32, num_layers=2,
                         num_heads=2)  # fmt: skip


def _broken_copy(fixture_model: Path, tmp_path: Path, damage) -> Path:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(fixture_model, folder)
    damage(folder)
    return folder


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


@pytest.mark.parametrize(
    ("case", "damage", "needles"),
    [
        ("missing config.json", lambda f: (f / "config.json").unlink(), ["config.json: file missing"]),
        ("truncated config.json", lambda f: _truncate(f / "config.json"), ["config.json: not valid JSON"]),
        ("truncated model.safetensors", lambda f: _truncate(f / "model.safetensors"),
         ["model.safetensors: truncated or corrupt safetensors file"]),
    ],
)  # fmt: skip
def test_broken_model_folder_names_the_file_and_the_fix(fixture_model, tmp_path, case, damage, needles):
    from toolshift.models.loading import load_model

    folder = _broken_copy(fixture_model, tmp_path, damage)
    with pytest.raises(ConfigError) as exc:
        load_model(folder, "llava")
    assert_one_line(exc, str(folder), *needles, f"delete {folder} and rerun")


def test_custom_code_refusal_names_the_opt_in(fixture_model, tmp_path):
    import json

    from toolshift.models.loading import load_model

    def custom(folder):
        cfg = json.loads((folder / "config.json").read_text())
        auto_map = {"AutoConfig": "configuration_custom.CustomConfig", "AutoProcessor": "processing_x.P"}
        cfg.update(model_type="custom_vlm", auto_map=auto_map)
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "configuration_custom.py").write_text("raise SystemExit('never run')\n")

    folder = _broken_copy(fixture_model, tmp_path, custom)
    with pytest.raises(ConfigError) as exc:
        load_model(folder, "llava")
    assert_one_line(exc, "contains custom code", "trust_remote_code: true")


@pytest.mark.e2e
def test_config_without_add_interventions_draws_its_figures(tmp_path):
    """No `interventions.add` (here: no intervention at all): the behaviour figures the config gives no
    data for say so, naming the key, instead of failing the figures rule late (~30 s: one small model,
    two conditions, two prompts per class)."""
    import json

    cfg = reduced_config(tmp_path)
    model = "fixture-qwen2_5_vl"
    cfg["models"] = {model: cfg["models"][model]}
    cfg["models"][model]["fixture"].update(num_layers=2, hidden_size=32, num_heads=2)
    cfg.update(datasets={"mini": {"limit_per_class": 2}}, conditions=["direct", "tool"], judges=["keyword"])
    cfg.update(judge_models={}, interventions={"layer": "auto"}, stats={"n_boot": 100, "seed": 0})
    cfg["generation"].update(max_new_tokens=2, batch_size=2, shards=1)
    cfg.pop("data_mirror", None)
    cfg["validation"] = {"figstep_fidelity": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    captions = Path(cfg["results"]) / "figures/mini/captions.json"
    proc = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2", str(captions), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    drawn = json.loads(captions.read_text())
    assert drawn["dose_response"].startswith("Not drawn") and "interventions.add" in drawn["dose_response"]
    assert drawn["interventions"].startswith("Not drawn")
    assert drawn["intervention_cost"].startswith("Not drawn")
    assert not drawn["asr_by_condition"].startswith("Not drawn")


def test_layer_beyond_the_models_depth_stops_before_any_job(tmp_path):
    """A fixture's depth is in the config; a hub model's is read from its folder's config.json once the
    folder exists (both before the first job); the job that loads a model checks it too (runner)."""
    from toolshift.common.config import check_layer_depths, validate_config

    cfg = config_for(tmp_path)
    cfg["interventions"]["layer"] = 12
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    assert_one_line(exc, "models.fixture-llava", "12 is out of range", "interventions.layer to auto")
    cfg["interventions"]["layer"] = -3
    validate_config(cfg)  # 3 layers: -3 is the first
    hub = {"family": "llava", "source": "hub", "hub_id": "org/m", "revision": "0" * 40}
    cfg = validate_config({**config_for(tmp_path), "models": {"hub-m": hub}})
    cfg["interventions"]["layer"] = 4
    check_layer_depths(cfg, tmp_path / "results")  # no model folder yet: the loading job checks
    config_json = tmp_path / "results/models/hub-m/config.json"
    config_json.parent.mkdir(parents=True)
    config_json.write_text('{"model_type": "llava", "text_config": {"num_hidden_layers": 4}}')
    with pytest.raises(ConfigError) as exc:
        check_layer_depths(cfg, tmp_path / "results")
    assert_one_line(exc, "models.hub-m", str(config_json), "4 is out of range for a model with 4 layers")


def test_matrix_is_listed_in_the_readme():
    """Every case of this file is a row of the bad-input matrix (docs/reliability.md, linked from README)."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert "## Bad input" in readme
    for case in (
        "unknown config key",
        "wrong type",
        "unknown model family",
        "unknown condition",
        "missing dataset file",
        "sha256 mismatch",
        "corrupt or truncated image",
        "empty dataset",
        "out-of-range bbox",
        "truncated `activations.nc`",
        "missing column",
        "missing API key",
        "folder toolshift did not create",
        "a second run on one results folder",
        "a book build killed midway",
        "attack text too long for its image",
        "attack text the font cannot draw",
        "16-bit grayscale or transparent image",
        "unexpected error in a rule",
        "missing, truncated or custom-code model files",
        "layer beyond the model's depth",
        "config without `interventions.add`",
        "API reply with no text",
        "a config whose only models are API models",
        "prompt ids of 215-250 characters",
        "ids with `/` or `..`",
        "an 11000 x 11000 attack image",
        "a 1 x 1 image",
        "a 0-byte image, then fixed",
        "a full disk while saving model weights",
        "a results folder whose parent is a file, or a read-only results root",
        "`kill -9` of the Snakemake process",
        "a config file saved as UTF-16 or latin-1, or binary",
    ):
        assert case in readme, case


# ------------------------------------------------------------------ checked before any model (issue 22)
# New names are imported inside the tests, so that this file also runs against code without them.


def _custom_csv(folder: Path, rows: list[dict], name: str = "prompts.csv") -> Path:
    """A custom dataset file (docs/datasets.md) with `rows`: id, prompt, harmful, category, image or text."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _text_rows(n: int, harmful: bool, prefix: str) -> list[dict]:
    kind = "Steps to" if harmful else "Steps to bake"
    return [
        {"id": f"{prefix}-{i}", "prompt": f"Placeholder request {prefix} {i}?", "harmful": harmful,
         "category": "Test", "image": "", "text": f"{kind} item {i}."}
        for i in range(n)
    ]  # fmt: skip


def _save_image(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new(mode, size, "white")
    if min(size) > 20:
        ImageDraw.Draw(img).rectangle((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill="black")
    img.save(path)
    return path


@pytest.mark.e2e
def test_api_only_config_with_a_custom_dataset_runs_to_the_book(tmp_path):
    """The only model is an API model (the fake OpenAI server) and the dataset is a file of one's own (text
    rows drawn as FigStep typography, an image row, an id with `/`): validation and the DAG leave out every
    stage that needs activations, and the book is built, saying on those pages that they are not available
    for API models (~2 min: the book build is most of it)."""
    from fake_openai_server import FakeOpenAIServer as Server

    data = tmp_path / "my_data"
    _save_image(data / "pics" / "photo.png", (320, 240))
    rows = _text_rows(3, True, "h") + _text_rows(3, False, "b")
    rows.append({"id": "my/photo..1", "prompt": "Placeholder request about a photo?", "harmful": True,
                 "category": "Test", "image": "pics/photo.png", "text": ""})  # fmt: skip
    csv = _custom_csv(data, rows)
    cfg = reduced_config(tmp_path)
    cfg.pop("data_mirror", None)
    cfg.update(datasets={"custom": {"path": str(csv)}}, conditions=["direct", "tool"], judges=["keyword"])
    cfg.update(judge_models={}, interventions={}, stats={"n_boot": 100, "seed": 0})
    cfg["validation"] = {"figstep_fidelity": False}
    with Server() as server:
        cfg["models"] = {
            "api-vlm": {"backend": "openai", "api": {"base_url": server.base_url, "model": "fake-vlm",
                                                     "api_key_env": None}}
        }  # fmt: skip
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        dry = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2", "--dry-run", timeout=300)
        assert dry.returncode == 0, dry.stderr[-3000:]
        for rule in ("vectors", "analysis_tables", "representation_figures", "intervene", "infer "):
            assert f"rule {rule}" not in dry.stdout and f"localrule {rule}" not in dry.stdout, rule
        proc = snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2", timeout=900)
        assert proc.returncode == 0, proc.stderr[-6000:]
        assert server.n_requests > 0
    results, book = Path(cfg["results"]), Path(cfg["book_dir"])
    assert (book / "_build/html/index.html").is_file()
    assert not (results / "vectors").exists() and not (results / "tables/selection.csv").exists()
    prompts = pd.read_parquet(results / "data/custom/prompts.parquet")
    assert len(prompts) == 7 and "my_photo..1" in set(prompts["prompt_id"])
    changes = pd.read_csv(results / "data/custom/changes.csv")
    assert list(changes["prompt_id"]) == ["my_photo..1"] and "'my/photo..1'" in changes["detail"][0]
    generated = book / "_generated"
    for fragment in ("vectors.md", "fig_pca.md", "table_selection.md", "table_representation.md"):
        assert "Not available for API models" in (generated / fragment).read_text(), fragment
    assert "my_photo..1" in (generated / "datasets.md").read_text()
    html = (book / "_build/html/representation.html").read_text(encoding="utf-8")
    assert "Not available for API models" in html


def _rows_with_ids(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": ids,
            "category": "c",
            "harmful": True,
            "question": "q?",
            "instruction": "Steps to do x.",
        }
    )


@pytest.mark.parametrize("length", [215, 250])
def test_long_prompt_ids_are_shortened_before_any_file_name(tmp_path, length):
    """Ids of 215-250 characters: the prompts rule (the first rule) rewrites them to the id rule's length,
    lists them, and every file name built from them later (attack image, zoom crop, the free loop's crops,
    the book's copies) stays far below the file system's 255 bytes."""
    from toolshift.datasets.prompts import build_prompts
    from toolshift.episodes.build import build_episodes_by_condition
    from toolshift.inference.free_loop import crop_relpath
    from toolshift.report.examples import example_episodes_markdown

    long_ids = [("x" * (length - 2)) + f"-{i}" for i in range(2)]  # two ids that share a long start
    changes = tmp_path / "changes.csv"
    prompts = build_prompts("mini", _rows_with_ids(long_ids), tmp_path / "r", changes_csv=changes)
    ids = list(prompts["prompt_id"])
    assert len(set(ids)) == 2 and all(len(pid) <= 100 for pid in ids), ids
    listed = pd.read_csv(changes)
    assert list(listed["prompt_id"]) == ids and all(listed["change"] == "id_rewritten")
    assert all(f"'{raw}'" in detail for raw, detail in zip(long_ids, listed["detail"], strict=True))
    episodes = build_episodes_by_condition(prompts, ["direct", "tool"], tmp_path / "r")
    files = {c: tmp_path / f"{c}.jsonl" for c in episodes}
    from toolshift.contracts import write_jsonl

    for condition, records in episodes.items():
        write_jsonl(records, files[condition])
    _, copies = example_episodes_markdown(files, tmp_path / "r", "_generated/examples")
    names = [Path(rel).name for _, rel in copies] + [
        Path(crop_relpath("episodes/mini/images", ids[0], 9, 9)).name
    ]
    names += [p.name for p in (tmp_path / "r").rglob("*")]
    assert max(len(n.encode()) for n in names) <= 160, max(names, key=len)


def test_ids_with_slash_or_dotdot_are_rewritten_listed_and_clashes_name_both_rows(tmp_path):
    """`/` and `..` never reach a path: such ids are rewritten and listed with their source rows; two ids
    that rewrite alike stop the build with one line naming both ids and both source rows."""
    from toolshift.datasets.custom import load_custom
    from toolshift.datasets.prompts import build_prompts

    rows = _text_rows(1, True, "ok")
    rows += [dict(rows[0], id="../../etc/passwd"), dict(rows[0], id="a/b"), dict(rows[0], id="..")]
    csv = _custom_csv(tmp_path / "d", rows)
    changes = tmp_path / "changes.csv"
    prompts = build_prompts("custom", load_custom(csv, "custom"), tmp_path / "r", changes_csv=changes)
    assert list(prompts["prompt_id"][:3]) == ["ok-0", "etc_passwd", "a_b"]
    assert prompts["prompt_id"][3].startswith("id-")
    images = tmp_path / "r/data/custom/images"
    assert sorted(p.name for p in (tmp_path / "r").rglob("*.png")) == sorted(
        f"{i}.png" for i in prompts["prompt_id"]
    )
    assert all(p.parent == images for p in (tmp_path / "r").rglob("*.png"))
    listed = pd.read_csv(changes)
    assert list(listed["source"]) == [f"{csv} row {i}" for i in (2, 3, 4)]
    assert "'../../etc/passwd'" in listed["detail"][0] and "'..'" in listed["detail"][2]

    clash = _custom_csv(
        tmp_path / "e", [dict(rows[0], id="a/b"), dict(rows[0], id="x"), dict(rows[0], id="a_b")]
    )
    with pytest.raises(DataError) as exc:
        load_custom(clash, "custom")
    assert_one_line(exc, "'a/b'", f"{clash} row 1", "'a_b'", f"{clash} row 3", "both become 'a_b'")
    with pytest.raises(DataError) as exc:  # rows of any loader, named by their row numbers
        build_prompts("mini", _rows_with_ids(["p/1", "p_1"]), tmp_path / "f")
    assert_one_line(exc, "'p/1' (row 1)", "'p_1' (row 2)", "both become 'p_1'")


def test_huge_attack_image_is_downscaled_with_its_factor_and_no_pillow_warning(tmp_path):
    """An 11000 x 11000 image (above Pillow's own 89-megapixel warning): no raw DecompressionBombWarning,
    downscaled to images.max_pixels with the factor in changes.csv (or refused naming the prompt and the
    key with on_too_large: stop); the book gets a thumbnail of it, never the full-size copy."""
    import warnings

    from PIL import Image

    from toolshift.datasets.custom import load_custom
    from toolshift.datasets.images import save_thumbnail
    from toolshift.datasets.prompts import build_prompts

    big = tmp_path / "d" / "big.png"
    big.parent.mkdir(parents=True)
    Image.new("1", (11000, 11000), 1).save(big)
    rows = [dict(_text_rows(1, True, "t")[0], id="big-1", image="big.png", text="")]
    rows += _text_rows(1, False, "ok")
    csv = _custom_csv(tmp_path / "d", rows)
    changes = tmp_path / "changes.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (Pillow's DecompressionBombWarning) fails the test
        prompts = build_prompts("custom", load_custom(csv, "custom"), tmp_path / "r", changes_csv=changes)
        with Image.open(tmp_path / "r" / prompts["image"][0]) as saved:
            assert saved.width * saved.height <= 4096 * 4096 and saved.width == saved.height
        listed = pd.read_csv(changes)
        assert list(listed["change"]) == ["image_downscaled"] and "11000x11000" in listed["detail"][0]
        assert "factor 0.372" in listed["detail"][0] and listed["source"][0] == f"{csv} row 1"
        with pytest.raises(DataError) as exc:
            build_prompts(
                "custom", load_custom(csv, "custom"), tmp_path / "s", images={"on_too_large": "stop"}
            )
        assert_one_line(exc, "prompt big-1", f"{csv} row 1", "11000x11000", "images.max_pixels")
        thumb = tmp_path / "thumb.png"
        save_thumbnail(big, thumb, 768)
        with Image.open(thumb) as shown:
            assert shown.size == (768, 768)
    assert not (tmp_path / "s/data/custom/images/big-1.png").exists()


def test_degenerate_image_is_refused_or_skipped_naming_the_row(tmp_path):
    """A 1 x 1 image (the zoom would be a no-op) stops the prompts rule naming the prompt, its row and the
    minimum; with images.on_too_small: skip the prompt is left out and listed in skipped.csv."""
    from toolshift.datasets.custom import load_custom
    from toolshift.datasets.prompts import build_prompts

    _save_image(tmp_path / "d" / "dot.png", (1, 1))
    rows = [dict(_text_rows(1, True, "t")[0], id="dot-1", image="dot.png", text="")] + _text_rows(
        1, True, "ok"
    )
    csv = _custom_csv(tmp_path / "d", rows)
    with pytest.raises(DataError) as exc:
        build_prompts("custom", load_custom(csv, "custom"), tmp_path / "r")
    assert_one_line(
        exc, "prompt dot-1", f"{csv} row 1", "1x1 pixels", "images.min_side", "on_too_small: skip"
    )
    skipped = tmp_path / "skipped.csv"
    prompts = build_prompts(
        "custom",
        load_custom(csv, "custom"),
        tmp_path / "s",
        images={"on_too_small": "skip"},
        skipped_csv=skipped,
    )
    assert list(prompts["prompt_id"]) == ["ok-0"]
    listed = pd.read_csv(skipped)
    assert list(listed["prompt_id"]) == ["dot-1"] and "images.min_side" in listed["reason"][0]


def test_empty_image_then_fixed_leaves_the_lock_right(tmp_path, monkeypatch):
    """A 0-byte image in the mirror fails to decode and its hash is recorded nowhere; once the file is fixed
    the run records the good hash beside the results, never in the committed lock. A later change of that
    file is a mismatch naming the lock and the fix, which `make lock-data REFRESH=...` applies."""
    from toolshift.datasets import downloads
    from toolshift.datasets.sources import RemoteImage, jailbreakv_image

    committed = tmp_path / "committed.lock.yaml"  # stands for config/datasets.lock.yaml
    committed.write_text(downloads.DEFAULT_LOCK.read_text(encoding="utf-8"), encoding="utf-8")
    before = committed.read_bytes()
    monkeypatch.setattr(downloads, "DEFAULT_LOCK", committed)
    mirror, results = tmp_path / "mirror", tmp_path / "results"
    file = jailbreakv_image("figstep/query_99.png")
    image = mirror / file.relpath
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    source = downloads.data_source(results, data_mirror=mirror)
    with pytest.raises(DataError) as exc:
        RemoteImage(file).open(source)
    assert_one_line(exc, str(image), "empty file", "not recorded")
    run_lock = results / "datasets.lock.yaml"
    assert file.relpath not in downloads.read_lock(run_lock) and committed.read_bytes() == before

    _save_image(image, (64, 64))
    RemoteImage(file).open(source)  # the fixed file: decoded, its hash recorded beside the results
    assert downloads.read_lock(run_lock) == {file.relpath: downloads.sha256_of(image)}
    assert committed.read_bytes() == before  # a run never edits the committed lock

    _save_image(image, (80, 64))  # the file changes again: a mismatch that names the lock and the fix
    with pytest.raises(DataError) as exc:
        RemoteImage(file).open(source)
    assert_one_line(
        exc, str(image), "sha256 mismatch", str(run_lock), f"make lock-data REFRESH={file.relpath}"
    )

    lock_cli = [
        sys.executable,
        "-m",
        "toolshift.datasets.lock",
        "--lock",
        str(committed),
        "--results",
        str(results),
    ]
    refresh = [*lock_cli, "--mirror", str(mirror), "--refresh", file.relpath]
    done = subprocess.run(refresh, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert downloads.read_lock(committed)[file.relpath] == downloads.sha256_of(image)
    RemoteImage(file).open(source)  # accepted


def _full_disk_mkstemp(monkeypatch):
    """Make atomic_path's temporary files point at /dev/full: every write then fails with a real ENOSPC."""
    import tempfile

    import toolshift.files as files

    real = tempfile.mkstemp

    def full(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)
        return os.open(os.devnull, os.O_RDONLY), name

    monkeypatch.setattr(files.tempfile, "mkstemp", full)


def _write_each(kind: str, path: Path) -> None:
    from PIL import Image

    from toolshift.contracts import write_csv, write_jsonl, write_parquet
    from toolshift.datasets.images import save_png
    from toolshift.files import write_netcdf

    frame = pd.DataFrame({"a": np.arange(50_000)})
    {
        "parquet": lambda: write_parquet(frame, path),
        "csv": lambda: write_csv(frame, path),
        "json": lambda: write_jsonl([{"a": i} for i in range(50_000)], path),
        "png": lambda: save_png(Image.new("RGB", (300, 300), "red"), path),
        "netcdf": lambda: write_netcdf(read_activations(path.parent / "src.nc"), path),
    }[kind]()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) for a real ENOSPC")
@pytest.mark.parametrize("kind", ["parquet", "csv", "json", "png", "netcdf"])
def test_full_disk_in_any_writer_names_the_file(tmp_path, monkeypatch, kind):
    """A real ENOSPC (writes to /dev/full) in each writer is one line naming the file being written."""
    target = tmp_path / f"out.{kind}"
    if kind == "netcdf":
        _activations(tmp_path / "src.nc")
    _full_disk_mkstemp(monkeypatch)
    with pytest.raises(ToolshiftError) as exc:
        _write_each(kind, target)
    assert_one_line(exc, f"disk full while writing {target}", "free space", "rerun")
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _fixture_save_fails_with_a_full_disk(monkeypatch) -> None:
    """safetensors' own error for ENOSPC, raised where transformers writes a weights file (works anywhere)."""
    import transformers.modeling_utils as modeling_utils
    from safetensors import SafetensorError

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 16)  # a partial file, as a real full disk leaves
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(modeling_utils, "safe_save_file", full_disk)


@pytest.mark.parametrize("how", ["safetensors error", "tmpfs"])
def test_full_disk_while_saving_model_weights(tmp_path, monkeypatch, capsys, how):
    """A full disk while a model's weights are saved (safetensors' SafetensorError wrapping ENOSPC): one
    line naming the weights file, the fix, and no model folder left that a rerun would take as complete.
    `tmpfs` fills a real 200 KiB tmpfs (needs root and mount; skipped, saying so, without them)."""
    from types import SimpleNamespace

    from toolshift.common.steps import run_step
    from toolshift.models.fixtures import build_fixture

    if how == "tmpfs":
        mount = tmp_path / "small"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not root'})")
        out = mount / "models" / "fixture-llava"
    else:
        _fixture_save_fails_with_a_full_disk(monkeypatch)
        out = tmp_path / "models" / "fixture-llava"
    smk = SimpleNamespace(log=[str(tmp_path / "model.log")], rule="model", wildcards={})
    try:
        with pytest.raises(SystemExit):
            run_step(smk, lambda _: build_fixture("llava", out, hidden_size=32, num_layers=2, num_heads=2))
        remaining = list(out.parent.iterdir()) if out.parent.exists() else []
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(mount)], check=True)
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("toolshift error:")]
    assert f"disk full while writing {out / 'model.safetensors'}" in line and "free space" in line, line
    assert "unexpected" not in line and "report it" not in line
    assert remaining == []


@pytest.mark.e2e
def test_results_folder_whose_parent_is_a_file(tmp_path):
    """`results` under a file: the dry run stops with one line naming the file, before any job."""
    (tmp_path / "notes.txt").write_text("a file\n")
    proc = dry_run(tmp_path, config_for(tmp_path, results=str(tmp_path / "notes.txt" / "results")))
    assert proc.returncode != 0
    lines = error_lines(proc.stdout + proc.stderr, "is a file, not a folder")
    assert len(lines) == 1 and str(tmp_path / "notes.txt") in lines[0] and "results" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_output_folders_are_checked_by_the_library(tmp_path):
    """What the Snakefile calls for `results`, `book_dir` and `data_cache`: a new nested folder is fine; a
    file in the path and a broken link are named."""
    from toolshift.common.guards import output_dir_problem

    assert output_dir_problem(tmp_path / "new" / "deeper", "results") is None
    (tmp_path / "f").write_text("x")
    problem = output_dir_problem(tmp_path / "f" / "r", "data_cache")
    assert problem.startswith(f"config: data_cache {tmp_path / 'f' / 'r'}: {tmp_path / 'f'} (a folder above")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert "is a broken symbolic link" in output_dir_problem(tmp_path / "link", "book_dir")


def _read_only_folder(folder: Path) -> str | None:
    """Make `folder` read-only for this process, honestly: permission bits (not root), else a read-only
    tmpfs mounted on it (root); returns how, or None when neither works here."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return "chmod"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    return "read-only tmpfs" if done.returncode == 0 else None


@pytest.mark.e2e
def test_read_only_results_root(tmp_path):
    """A read-only results root (as root, permission bits do not stop writes, so the test mounts a read-only
    tmpfs there): the dry run stops with one line naming the folder, before any job."""
    root = tmp_path / "ro"
    how = _read_only_folder(root)
    if how is None:
        pytest.skip("cannot make a folder read-only for root here (mount -t tmpfs -o ro failed)")
    try:
        proc = dry_run(tmp_path, config_for(tmp_path, results=str(root)))
    finally:
        if how == "chmod":
            root.chmod(0o755)
        else:
            subprocess.run(["umount", str(root)], check=True)
    assert proc.returncode != 0
    lines = error_lines(proc.stdout + proc.stderr, "is read-only")
    assert len(lines) == 1 and str(root) in lines[0] and "results" in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def _job_processes(work: Path) -> list[int]:
    """The live processes running a rule script of the workflow in `work` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"{work}/.snakemake/scripts/" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.e2e
@pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="reads the process table from /proc (Linux)"
)
def test_kill_9_of_snakemake_leaves_no_job_running(tmp_path):
    """`kill -9` of the Snakemake process (not its process group) while a job runs: the job dies with it,
    so a resume never runs a second copy beside an orphan. The job here is `infer_api` waiting on a slow
    fake endpoint (~20 s)."""
    from fake_openai_server import FakeOpenAIServer as Server

    cfg = config_for(tmp_path, datasets={"mini": {"limit_per_class": 2}}, conditions=["direct", "tool"])
    cfg.update(judges=["keyword"], judge_models={}, interventions={})
    cfg.pop("data_mirror", None)
    with Server(delay_s=60) as server:
        cfg["models"] = {
            "api-vlm": {"backend": "openai", "api": {"base_url": server.base_url, "model": "fake-vlm",
                                                     "api_key_env": None, "timeout_s": 120}}
        }  # fmt: skip
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        target = Path(cfg["results"]) / "runs/api-vlm/mini/direct/responses.parquet"
        proc = _start_snakemake(tmp_path, str(target))
        jobs: list[int] = []
        try:
            end = time.monotonic() + 300
            while not (server.n_requests and (jobs := _job_processes(tmp_path))):
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                assert time.monotonic() < end, "no job started within 300 s"
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)  # the Snakemake process only, as `kill -9 PID` does
            proc.wait(timeout=30)
            end = time.monotonic() + 15
            while (left := _job_processes(tmp_path)) and time.monotonic() < end:
                time.sleep(0.2)
        finally:
            for pid in _job_processes(tmp_path):  # the orphans of a run without the fix: end them here
                os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert jobs, "no job was running when Snakemake was killed: the test proves nothing"
    assert left == [], f"job process(es) {left} survived the kill of Snakemake"


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


JOB = """import os, subprocess, sys, time
from toolshift.processes import child_dies_with_parent, die_with_workflow
armed = die_with_workflow()
sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
child = subprocess.Popen(sleeper, preexec_fn=child_dies_with_parent)
print(armed, os.getpid(), child.pid, sep="|", flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
@pytest.mark.parametrize("through_a_shell", [False, True])
def test_a_job_and_its_children_die_with_snakemake(tmp_path, through_a_shell):
    """Both ways a job is armed (toolshift.processes), without running Snakemake: a stand-in process named
    `snakemake` starts the job directly (the parent-death signal) or through a shell that does not exec it,
    as `--use-conda` does (the pidfd watcher); the job starts a child of its own. kill -9 of the stand-in
    ends the job and its child within seconds."""
    (tmp_path / "job.py").write_text(JOB)
    job = [sys.executable, str(tmp_path / "job.py")]
    if through_a_shell:
        job = ["bash", "-c", f"{sys.executable} {tmp_path / 'job.py'}; true"]
    fake = tmp_path / "snakemake"  # a script named like Snakemake's entry point
    out = tmp_path / "job.out"
    start = f"subprocess.Popen({job!r}, stdout=open({str(out)!r}, 'w'))"
    fake.write_text(f"import subprocess, time\n{start}\ntime.sleep(300)\n")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.Popen([sys.executable, str(fake)], env=env, start_new_session=True)
    pids: list[int] = []
    try:
        end = time.monotonic() + 60
        while not (out.exists() and out.read_text().endswith("\n")):
            assert proc.poll() is None and time.monotonic() < end, "the job never started"
            time.sleep(0.05)
        armed, *rest = out.read_text().strip().split("|")
        pids = [int(p) for p in rest]
        assert armed == ("watcher" if through_a_shell else "parent-death signal")
        assert all(_alive(pid) for pid in pids)
        os.kill(proc.pid, signal.SIGKILL)  # Snakemake only, not its process group
        proc.wait(timeout=30)
        end = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids), [pid for pid in pids if _alive(pid)]
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1", "binary"])
def test_config_file_not_in_utf8(tmp_path, encoding):
    """A config saved as UTF-16 (a Windows editor), latin-1, or a binary file: one line naming the file and
    the expected encoding, from the library's reader and from `python -m toolshift.common.config`, which
    checks a config file before a run."""
    from toolshift.common.config import load_config

    text = "# café config\n" + yaml.safe_dump(config_for(tmp_path))
    path = tmp_path / f"config-{encoding}.yaml"
    path.write_bytes(bytes(range(256)) * 8 if encoding == "binary" else text.encode(encoding))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_one_line(exc, str(path), "not UTF-8", "save it as UTF-8")
    assert {"utf-16": "UTF-16", "latin-1": "latin-1", "binary": "binary"}[encoding] in str(exc.value)
    proc = subprocess.run([sys.executable, "-m", "toolshift.common.config", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert str(path) in proc.stderr and "UTF-8" in proc.stderr and "Traceback" not in proc.stderr
