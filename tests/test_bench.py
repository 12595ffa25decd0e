"""`python -m toolshift.bench --quick`: the JSON has every figure, with sane types and values (no timing
thresholds: targets are judged by `make bench`, not by tests), and the GPU script's configuration is the
real Qwen2.5-VL-7B's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from toolshift.bench.suite import TARGETS, table, verdict
from toolshift.bench.timing import median_ratio, ratio_interval
from toolshift.common.config import load_config

REPO = Path(__file__).resolve().parents[1]

RATIOS = (
    "capture_overhead",
    "intervention_overhead",
    "batch8_per_prompt_over_batch1",
    "activation_write_over_numpy_save",
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "nested" / "bench.json"
    cmd = [sys.executable, "-m", "toolshift.bench", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not [p for p in out.parent.iterdir() if p.name != "bench.json"]  # no temporary file left
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.e2e
def test_quick_bench_writes_every_ratio_as_a_positive_finite_number(quick):
    result, _ = quick
    for key in RATIOS:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
        low, high = result[f"{key}_ci95"]  # the 95 % interval from the paired repetitions
        assert 0 < low <= result[key] <= high, key
    assert result["quick"] is True
    generation = result["generation"]
    assert generation["new_tokens_per_prompt"] == generation["max_new_tokens"]  # fixed work per run
    assert set(generation["median_s"]) == {
        "plain",
        "capture",
        "add_alpha0",
        "plain_1_token",
        "batch_1",
        "batch_8",
    }
    assert generation["ratios"]["capture_overhead"]["pairs"] == generation["repeats"]
    # the fixture's decoding step, its size on disk and parameter count are recorded beside the ratios (the
    # quick run's 4 tokens on a tiny fixture make the step too short to be sure of its sign under load)
    assert math.isfinite(result["decode_step_ms"]) and generation["parameters"] > 0
    assert generation["fixture_bytes"] > 4 * generation["parameters"]  # float32 weights at least


@pytest.mark.e2e
def test_quick_bench_storage_is_about_four_bytes_per_float32_value(quick):
    result, _ = quick
    # float32 payload plus netCDF/HDF5 headers and coordinates: at least 4, and not wildly more
    assert 4.0 <= result["activation_bytes_per_value"] < 16.0
    storage = result["storage"]
    assert storage["numpy_bytes"] > 4 * math.prod(storage["shape"])


@pytest.mark.e2e
def test_quick_bench_counts_the_paper_dag(quick):
    result, _ = quick
    paper = load_config(REPO / "config" / "paper.yaml")
    counts = result["dag_rule_counts"]
    assert result["dag_jobs"] == sum(counts.values())
    pairs = len(paper["models"]) * len(paper["datasets"])
    assert counts["infer"] == pairs * paper["generation"]["shards"]
    assert counts["merge_runs"] == pairs
    assert counts["intervene"] == pairs * paper["generation"]["shards"]  # more: tests/test_paper_config.py
    assert counts["book"] == 1
    assert isinstance(result["dag_build_s"], float) and result["dag_build_s"] > 0


@pytest.mark.e2e
def test_quick_bench_skips_end_to_end_and_prints_every_figure(quick):
    result, stdout = quick
    assert result["end_to_end_s"] is None
    assert set(result["verdicts"]) == set(TARGETS)
    full_only = ("end_to_end_s", "bundle_import_over_full")
    skipped = [k for k in TARGETS if k in full_only or k.startswith("vllm_")]  # full mode only
    assert skipped and all(result["verdicts"][k] == "-" for k in skipped)
    assert all(result["verdicts"][k] in ("pass", "miss", "unclear") for k in TARGETS if k not in skipped)
    assert result["verdicts"]["dag_jobs"] in ("pass", "miss")  # a count: no interval, never unclear
    labels = ("capture overhead", "intervention overhead", "batch 8 / batch 1", "snakemake -n", "skipped",
              "decoding step", "95% interval")  # fmt: skip
    for label in labels:
        assert label in stdout
    assert str(result["dag_jobs"]) in stdout


def test_median_ratio_pairs_repetitions_and_rejects_mismatched_series():
    assert median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 3.0]) == 2.0
    with pytest.raises(ValueError):
        median_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        ratio_interval([], [])


def test_ratio_interval_is_the_t_interval_of_the_paired_log_ratios():
    from scipy import stats

    numerator, denominator = [1.10, 0.99, 1.30, 1.02, 1.21], [1.0, 0.9, 1.2, 1.0, 1.1]
    logs = [math.log(a / b) for a, b in zip(numerator, denominator, strict=True)]
    n, mean = len(logs), sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)  # by hand: mean +- t(0.975, n-1) * sd / sqrt(n)
    summary = ratio_interval(numerator, denominator)
    assert summary["ratio"] == pytest.approx(math.exp(mean))
    assert summary["ci"] == pytest.approx([math.exp(mean - half), math.exp(mean + half)])
    assert summary["pairs"] == 5 and summary["median"] == pytest.approx(1.1)
    # pairing: a common factor per repetition (a slow moment of the machine) cancels out
    assert ratio_interval([2.0, 20.0, 200.0], [1.0, 10.0, 100.0])["ci"] == pytest.approx([2.0, 2.0])
    assert ratio_interval([2.0], [1.0])["ci"] is None  # one pair: no interval


def test_verdict_and_table_mark_pass_miss_and_unmeasured():
    assert verdict("capture_overhead", 1.01) == "pass"
    assert verdict("capture_overhead", 1.2) == "miss"
    assert verdict("dag_build_s", 16.0) == "miss"
    assert verdict("dag_jobs", 10) == "pass" and verdict("dag_jobs", 12308) == "miss"
    assert verdict("batch8_per_prompt_over_batch1", 0.5) == "-"  # a figure without a target
    assert verdict("capture_overhead", None) == "-"
    assert verdict("decode_step_ms", 30.0) == "pass" and verdict("decode_step_ms", 5.0) == "miss"
    # with an interval: pass or miss only when all of it is on one side of the bound
    assert verdict("capture_overhead", 1.01, [1.00, 1.015]) == "pass"
    assert verdict("capture_overhead", 1.01, [0.99, 1.03]) == "unclear"
    assert verdict("capture_overhead", 1.05, [1.03, 1.07]) == "miss"
    text = table({"capture_overhead": 1.2, "capture_overhead_ci95": [1.1, 1.3], "dag_jobs": 7})
    assert "1.200x [1.100, 1.300]" in text and "miss" in text and "skipped" in text


def test_end_to_end_reports_wall_process_tree_cpu_and_the_jobs_cpu_time(tmp_path, monkeypatch):
    """The end-to-end figures: wall time, the CPU time of every process the run waited for, and the summed
    `cpu_time` of the benchmark files the jobs wrote (here: a stand-in for Snakemake that burns CPU in a
    child and writes two benchmark files)."""
    from toolshift.bench import workflow_timing

    def fake_snakemake(args, cwd, timeout):
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
        header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        for name, cpu in (("a", 1.5), ("b", 2.25)):
            path = cwd / "results" / "benchmarks" / "stage" / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(header + f"3.0\t0:00:03\t10\t10\t10\t10\t0\t0\t50\t{cpu}\n")

    monkeypatch.setattr(workflow_timing, "_run_snakemake", fake_snakemake)
    result = workflow_timing.end_to_end_figures(tmp_path, cores=2)
    assert result["end_to_end_jobs_cpu_s"] == pytest.approx(3.75)
    assert result["end_to_end"]["jobs"] == 2 and result["end_to_end"]["jobs_wall_s"] == pytest.approx(6.0)
    assert result["end_to_end_cpu_s"] > 0 and result["end_to_end_s"] > 0  # the child's CPU time counts
    row = next(line for line in table(result).splitlines() if "its jobs, summed benchmark cpu_time" in line)
    assert row.split()[-3:] == ["4", "s", "-"]  # 3.75 s, no target


def test_gpu_bench_uses_the_real_qwen2_5_vl_7b_configuration():
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from toolshift.bench.gpu import model_config

    config = model_config()
    text = config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (3584, 28, 28)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (4, 18944, 152064)
    assert config.vision_config.depth == 32 and config.vision_config.out_hidden_size == 3584
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    assert 8.2e9 < n_params < 8.4e9  # Qwen2.5-VL-7B has 8.29 B parameters


def test_gpu_bench_runs_tiny_on_cpu_and_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    from toolshift.bench.gpu import main

    out = tmp_path / "gpu.json"
    args = ["--out", str(out), "--tiny", "--batch-size", "2", "--new-tokens", "3", "--repeats", "1"]
    assert main([*args, "--device", "cpu", "--image-side", "56", "--text-tokens", "6", "--engines", ""]) == 0
    result = json.loads(out.read_text())
    assert result["new_tokens"] == 3 and result["batch_size"] == 2
    assert set(result["variants"]) == {"plain", "capture", "add_alpha0"}
    assert all(v["prompts_per_s"] > 0 for v in result["variants"].values())
    assert "engines" not in result  # --engines '' below: the hooks figures alone
    if not torch.cuda.is_available():
        assert main(["--out", str(tmp_path / "none.json")]) == 2
        assert not (tmp_path / "none.json").exists()


@pytest.mark.e2e  # the projection counts the DAG with `snakemake -n`
def test_gpu_bench_times_both_engines_and_projects_the_study(tmp_path):
    """--tiny on CPU: the saved random model loads in both engines (vLLM where its environment exists) and
    the projection turns the measured rates into GPU-hours for the config's DAG."""
    from toolshift.bench.gpu import main
    from toolshift.errors import ConfigError
    from toolshift.models.engines.environment import vllm_python

    try:
        vllm_python()
        engines = "hf,vllm"
    except ConfigError:
        engines = "hf"
    out = tmp_path / "gpu.json"
    args = ["--out", str(out), "--tiny", "--device", "cpu", "--batch-size", "2", "--new-tokens", "3",
            "--repeats", "1", "--image-side", "56", "--text-tokens", "6", "--engine-n", "2",
            "--engines", engines, "--config", "config/config.yaml"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    for engine in engines.split(","):
        rate = result["engines"][engine]
        assert isinstance(rate, dict), rate
        assert rate["dtype"] == "bfloat16" and rate["load_s"] > 0
        assert {v: r["new_tokens"] for v, r in rate["variants"].items()} == dict.fromkeys(
            ("plain", "capture", "steer"), 2 * 3
        )
        assert all(r["tokens_per_s"] > 0 for r in rate["variants"].values())
        assert result["projection"][engine]["total_gpu_h"] > 0
    assert result["projection"]["dag_jobs"] > 0 and result["projection"]["model_loads"] > 0


def test_gpu_hours_projection_is_tokens_over_measured_rates():
    from toolshift.bench.gpu import project_gpu_hours

    study = {"condition_new_tokens": 7200, "intervention_new_tokens": 3600, "model_loads": 10}
    rate = {"load_s": 36.0, "variants": {"capture": {"tokens_per_s": 2.0}, "steer": {"tokens_per_s": 1.0}}}
    hours = project_gpu_hours(study, rate)
    assert hours["condition_gpu_h"] == pytest.approx(1.0)
    assert hours["intervention_gpu_h"] == pytest.approx(1.0)
    assert hours["load_gpu_h"] == pytest.approx(0.1)
    assert hours["total_gpu_h"] == pytest.approx(2.1)


def test_gpu_rows_come_only_from_a_cuda_report(tmp_path):
    from toolshift.bench.suite import gpu_figures

    assert gpu_figures(tmp_path / "missing.json")["gpu"].startswith("not measured here")
    report = {
        "model": "Qwen2_5_VLForConditionalGeneration, Qwen2.5-VL-7B-Instruct config, random init",
        "device": "NVIDIA H200",
        "engines": {
            "hf": {
                "load_s": 30.0,
                "variants": {"capture": {"tokens_per_s": 900.0}, "steer": {"tokens_per_s": 880.0}},
            },
            "vllm": "not measured here: no vLLM environment",
        },
        "projection": {"hf": {"total_gpu_h": 120.0}, "vllm": "not measured here: no vLLM environment"},
    }  # fmt: skip
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(report))
    rows = gpu_figures(path)
    assert rows["gpu_hf_tokens_per_s_capture"] == 900.0 and rows["gpu_hf_paper_gpu_h"] == 120.0
    assert "gpu_vllm_load_s" not in rows
    assert "not measured here" in table(rows).split("GPU: vllm load")[1].splitlines()[0]
    path.write_text(json.dumps({**report, "device": "cpu"}))
    assert gpu_figures(path)["gpu"].startswith("not measured here")
