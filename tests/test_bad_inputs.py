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
    ):
        assert case in readme, case
