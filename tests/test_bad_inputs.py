"""The bad-input matrix (README, "Bad input"): each case stops with one clear line, a non-zero exit and no
output that Snakemake would take as complete.

Config and data cases run through `snakemake` (a dry run for config errors: validation happens when the
Snakefile loads; the `prompts` rule for data errors); file-contract cases call the library reader that
every rule uses. Each asserts the message names the offending key, file or value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import reduced_config, snakemake

from toolshift.activations import read_activations, to_dataset, write_activations
from toolshift.api_client import ApiSettings, ChatClient
from toolshift.contracts import RESPONSE_COLUMNS, read_table
from toolshift.errors import ConfigError, ContractError, DataError, ToolshiftError
from toolshift.images import clamp_bbox, load_image, zoom

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


CONFIG_CASES = {
    "unknown config key": _unknown_key,
    "wrong type": _wrong_type,
    "unknown model family": _unknown_family,
    "unknown condition": _unknown_condition,
}


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


def test_missing_dataset_file(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    cfg = config_for(tmp_path, datasets={"safebench_tiny": {}}, data_mirror=str(mirror))
    proc, target = build_prompts_only(tmp_path, cfg, "safebench_tiny")
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, "file not found in data_mirror")
    assert len(lines) == 1 and SAFEBENCH_TINY in lines[0], proc.stderr[-3000:]
    assert not target.exists()


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
    from toolshift.runner import merge_shards

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
    from toolshift.judges import judge_frame

    responses = pd.DataFrame({"prompt_id": ["p1"], "dataset": ["d"], "response": ["Sure."]})
    prompts = pd.DataFrame({"prompt_id": ["p1"], "dataset": ["d"], "question": ["q?"], "instruction": ["q."]})
    api = {"base_url": "http://127.0.0.1:9/v1", "model": "judge", "api_key_env": "TOOLSHIFT_TEST_MISSING_KEY"}
    with pytest.raises(ConfigError) as exc:
        judge_frame(
            responses, judge="api", prompts=prompts, api=api, cache_dir=tmp_path / "cache", environ={}
        )
    assert_one_line(exc, "TOOLSHIFT_TEST_MISSING_KEY", "is not set")
    assert not any((tmp_path / "cache").rglob("*.json"))


def test_matrix_is_listed_in_the_readme():
    """Every case of this file is a row of the README's bad-input matrix (the lead adds it)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "### Bad input" in readme
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
    ):
        assert case in readme, case
