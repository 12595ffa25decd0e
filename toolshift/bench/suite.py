"""`make bench`: the project's speed and storage figures, measured in one run as ratios or counts.

Every timing figure is a ratio of two timings taken in the same process, interleaved repetition by
repetition (A, B, B, A, ...), reported as the geometric mean of the per-repetition ratios with a 95 % interval
from those pairs (toolshift.bench.timing), so that it holds on a noisy or shared machine and says how
precise it is; absolute seconds are recorded beside them for context only.

Figures (targets where the project sets one):

- capture overhead: generation with residual capture / without (target <= 1.02);
- intervention overhead: generation with an `add` hook at alpha = 0 / without (target <= 1.02);
- batching: per-prompt generation time at batch 8 / batch 1;
- decoding step: the time of one decoding step of the fixture those three are measured on (target >= 20 ms:
  large enough that the overheads are measured against a realistic step);
- activation storage: bytes on disk per prompt x layer x hidden value of `activations.nc`, and its write
  time / a raw `numpy.save` of the same array;
- DAG build: `snakemake -n` wall time for `config/paper.yaml` (target <= 5 s) and its job count (<= 1000);
- what the paper study costs before it runs (toolshift.bench.study_cost): model loads (<= 1 per (model,
  dataset, shard) for the conditions, and one for the interventions), generations, maximum new tokens;
- engines: new tokens/s of the `hf` and `vllm` engines on the same fixture, and how far they agree;
- end to end: wall time of the embedded default (`config/config.yaml`) from scratch (target <= 180 s),
  beside the CPU time of its process tree and the summed CPU time of its jobs' `benchmark:` files, so that
  a slower machine (all three grow) is told from a slower package (CPU time grows); skipped by --quick;
- from its bundle: that run's result bundle imported into a fresh folder and the book rebuilt, its wall time
  over the full run's (target <= 0.25; toolshift.bench.bundle_timing), and the bundle's size.

The generation figures are measured by toolshift.bench.generation, the workflow ones (DAG build, end to
end) by toolshift.bench.workflow_timing. Each measuring step is one entry of STAGES; a new figure is a new
stage, its ROWS line and, where it has one, its TARGETS entry.

Usage: `python -m toolshift.bench [--out results/bench/bench.json] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolshift import REPO_ROOT
from toolshift.bench.bundle_timing import bundle_figures
from toolshift.bench.generation import engine_figures, generation_figures
from toolshift.bench.timing import INTERVAL_LEVEL, INTERVAL_METHOD, interleaved_times, ratio_interval
from toolshift.bench.workflow_timing import dag_figures, end_to_end_figures
from toolshift.errors import ConfigError
from toolshift.files import atomic_path

DEFAULT_OUT = Path("results") / "bench" / "bench.json"

TARGETS: dict[str, tuple[str, float]] = {
    "decode_step_ms": (">=", 20.0),
    "vllm_max_state_diff": ("<=", 1e-5),
    "vllm_responses_equal_share": (">=", 1.0),
    "capture_overhead": ("<=", 1.02),
    "intervention_overhead": ("<=", 1.02),
    "dag_build_s": ("<=", 5.0),
    "dag_jobs": ("<=", 1000),
    "infer_loads_per_model_dataset_shard": ("<=", 1.0),
    "intervene_loads_per_model_dataset_shard": ("<=", 1.0),
    "end_to_end_s": ("<=", 180.0),
    "bundle_import_over_full": ("<=", 0.25),
}
"""The figures with a target: (comparison, bound)."""


# --------------------------------------------------------------------------- settings


def settings(quick: bool) -> dict[str, Any]:
    """The sizes of one benchmark run: full (`make bench`) or quick (tests)."""
    if quick:
        return {
            "fixture": {"hidden_size": 64, "num_layers": 2, "num_heads": 4},
            "n_prompts": 8,
            "max_new_tokens": 4,
            "batch_size": 8,
            "repeats": 3,
            "batch_repeats": 3,
            "storage_shape": (32, 4, 64),
            "storage_repeats": 2,
            "dag_repeats": 1,
            "end_to_end": False,
        }
    return {
        # a decoding step of about 30 ms on one core of the 2-core development machine (45 M parameters)
        "fixture": {"hidden_size": 768, "num_layers": 8, "num_heads": 12},
        "n_prompts": 16,
        "max_new_tokens": 16,
        "batch_size": 8,
        "repeats": 12,
        "batch_repeats": 6,
        "storage_shape": (512, 28, 512),
        "storage_repeats": 5,
        "dag_repeats": 3,
        "end_to_end": True,
    }


# --------------------------------------------------------------------------- storage figures


def storage_figures(work: Path, shape: tuple[int, int, int], repeats: int) -> dict[str, Any]:
    """Bytes per stored value of `activations.nc` and its write time relative to a raw `numpy.save`."""
    from toolshift.models.activations import to_dataset, write_activations

    n_prompts, n_layers, hidden = shape
    states = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ids = [f"p{i:05d}" for i in range(n_prompts)]
    attrs = {"model": "bench", "revision": "bench", "condition": "direct"}
    nc_path, npy_path = work / "activations.nc", work / "activations.npy"

    def write_nc() -> None:
        write_activations(to_dataset(states, ids, attrs), nc_path)

    def write_npy() -> None:
        with open(npy_path, "wb") as fh:
            np.save(fh, states)
            fh.flush()

    write_nc()  # warm-up: imports, h5py/netCDF initialisation
    times = interleaved_times({"netcdf": write_nc, "numpy_save": write_npy}, repeats)
    values = n_prompts * n_layers * hidden
    write = ratio_interval(times["netcdf"], times["numpy_save"])
    return {
        "activation_bytes_per_value": nc_path.stat().st_size / values,
        "activation_write_over_numpy_save": write["ratio"],
        "activation_write_over_numpy_save_ci95": write["ci"],
        "storage": {
            "shape": list(shape),
            "netcdf_bytes": nc_path.stat().st_size,
            "numpy_bytes": npy_path.stat().st_size,
            "repeats": repeats,
            "median_s": {name: float(statistics.median(ts)) for name, ts in times.items()},
            "ratio": write,
        },
    }


# --------------------------------------------------------------------------- report


def verdict(name: str, value: float | None, interval: Sequence[float] | None = None) -> str:
    """`pass` / `miss` against the figure's target, `-` where it has none or was not measured. With a 95 %
    `interval`, `pass` / `miss` only where the whole interval is on that side of the bound, else `unclear`
    (more repetitions, or a quieter machine, would be needed to tell)."""
    if name not in TARGETS or value is None:
        return "-"
    op, bound = TARGETS[name]

    def ok(x: float) -> bool:
        return x <= bound if op == "<=" else x >= bound

    if interval is not None:
        inside = {ok(x) for x in interval}
        if len(inside) > 1:
            return "unclear"
        return "pass" if inside == {True} else "miss"
    return "pass" if ok(value) else "miss"


ROWS: tuple[tuple[str, str, str], ...] = (
    ("capture_overhead", "capture overhead (with / without)", "{:.3f}x"),
    ("intervention_overhead", "intervention overhead (add, alpha 0 / without)", "{:.3f}x"),
    ("batch8_per_prompt_over_batch1", "per-prompt time, batch 8 / batch 1", "{:.3f}x"),
    ("decode_step_ms", "decoding step of that fixture (CPU, 1 thread)", "{:.1f} ms"),
    ("activation_bytes_per_value", "activations.nc bytes per prompt*layer*hidden", "{:.3f} B"),
    ("activation_write_over_numpy_save", "activations.nc write / numpy.save", "{:.2f}x"),
    ("dag_build_s", "snakemake -n, config/paper.yaml", "{:.1f} s"),
    ("dag_jobs", "jobs in the paper DAG", "{:d}"),
    ("study_model_loads", "model loads per paper study", "{:d}"),
    ("infer_loads_per_model_dataset_shard", "infer loads per (model, dataset, shard)", "{:.2f}"),
    ("intervene_loads_per_model_dataset_shard", "intervene loads per (model, dataset, shard)", "{:.2f}"),
    ("study_generations", "generations per paper study", "{:,d}"),
    ("study_max_new_tokens", "max new tokens per paper study", "{:,d}"),
    ("hf_tokens_per_s", "hf engine, new tokens/s (fixture, CPU)", "{:.0f}"),
    ("hf_tokens_per_s_capture", "hf engine with capture, new tokens/s", "{:.0f}"),
    ("hf_tokens_per_s_steer", "hf engine with steering, new tokens/s", "{:.0f}"),
    ("vllm_tokens_per_s", "vllm engine, new tokens/s (same fixture)", "{:.0f}"),
    ("vllm_tokens_per_s_capture", "vllm engine with capture, new tokens/s", "{:.0f}"),
    ("vllm_tokens_per_s_steer", "vllm engine with steering, new tokens/s", "{:.0f}"),
    ("vllm_responses_equal_share", "vllm responses equal to hf, share", "{:.3f}"),
    ("vllm_max_state_diff", "vllm vs hf captured states, max |diff|", "{:.1e}"),
    ("end_to_end_s", "embedded default, end to end (wall)", "{:.0f} s"),
    ("end_to_end_cpu_s", "  its process tree, CPU time (user + sys)", "{:.0f} s"),
    ("end_to_end_jobs_cpu_s", "  its jobs, summed benchmark cpu_time", "{:.0f} s"),
    ("bundle_import_s", "embedded default from its bundle: import + book", "{:.0f} s"),
    ("bundle_import_over_full", "from its bundle / end to end", "{:.2f}x"),
    ("bundle_mb", "embedded default's result bundle", "{:.1f} MB"),
    ("gpu_hf_load_s", "GPU, Qwen2.5-VL-7B bf16: hf load", "{:.0f} s"),
    ("gpu_hf_tokens_per_s_capture", "GPU: hf with capture, new tokens/s", "{:.0f}"),
    ("gpu_hf_tokens_per_s_steer", "GPU: hf with steering, new tokens/s", "{:.0f}"),
    ("gpu_vllm_load_s", "GPU: vllm load", "{:.0f} s"),
    ("gpu_vllm_tokens_per_s_capture", "GPU: vllm with capture, new tokens/s", "{:.0f}"),
    ("gpu_vllm_tokens_per_s_steer", "GPU: vllm with steering, new tokens/s", "{:.0f}"),
    ("gpu_hf_paper_gpu_h", "GPU: paper study projected, hf", "{:.0f} h"),
    ("gpu_vllm_paper_gpu_h", "GPU: paper study projected, vllm", "{:.0f} h"),
)
GPU_REPORT = REPO_ROOT / "results" / "bench" / "bench_gpu.json"
"""Where `python -m toolshift.bench.gpu` writes by default; `make bench` reads the GPU rows from it."""


def gpu_figures(path: Path = GPU_REPORT) -> dict[str, Any]:
    """The GPU rows from a `bench_gpu` report measured on CUDA (not `--tiny`); none without one, so the
    table says "not measured here" instead of a figure."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"gpu": f"not measured here: no bench_gpu report at {path}"}
    if "--tiny" in str(report.get("model", "")) or str(report.get("device") or "cpu") == "cpu":
        return {"gpu": f"not measured here: {path} is a CPU / --tiny check, not a GPU measurement"}
    out: dict[str, Any] = {"gpu": {"report": str(path), "device": report.get("device")}}
    for engine, rate in (report.get("engines") or {}).items():
        if not isinstance(rate, dict):
            continue
        out[f"gpu_{engine}_load_s"] = rate["load_s"]
        for variant in ("capture", "steer"):
            out[f"gpu_{engine}_tokens_per_s_{variant}"] = rate["variants"][variant]["tokens_per_s"]
        projected = (report.get("projection") or {}).get(engine)
        if isinstance(projected, dict):
            out[f"gpu_{engine}_paper_gpu_h"] = projected["total_gpu_h"]
    return out


def _interval(result: dict[str, Any], key: str) -> list[float] | None:
    ci = result.get(f"{key}_ci95")
    return list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def table(result: dict[str, Any]) -> str:
    """A plain-text table of every figure (with its 95 % interval where it has one), target and verdict."""
    lines = [f"{'figure':<48} {'value':>27} {'target':>9} {'':>7}", "-" * 94]
    for key, label, fmt in ROWS:
        value = result.get(key)
        interval = _interval(result, key)
        failed = key.startswith("end_to_end") and "error" in result.get("end_to_end", {})
        if value is None:
            shown = "not measured here" if key.startswith("gpu_") else "failed" if failed else "skipped"
        else:
            shown = fmt.format(value)
            if interval is not None:
                low, high = (fmt.format(x).rstrip("x").strip() for x in interval)
                shown += f" [{low}, {high}]"
        target = f"{TARGETS[key][0]} {TARGETS[key][1]:g}" if key in TARGETS else ""
        lines.append(f"{label:<48} {shown:>27} {target:>9} {verdict(key, value, interval):>7}")
    lines.append(f"[a, b]: {INTERVAL_LEVEL:.0%} interval from the paired repetitions ({INTERVAL_METHOD}).")
    return "\n".join(lines)


def _progress(stage: str) -> None:
    print(f"bench: {stage} ...", file=sys.stderr, flush=True)


def _generation(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return generation_figures(work / "generation", cfg)


def _storage(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return storage_figures(work, cfg["storage_shape"], cfg["storage_repeats"])


def _dag(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return dag_figures(work, cfg["dag_repeats"])


def _engines(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return engine_figures(work)


def _end_to_end(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    try:
        return end_to_end_figures(work)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        # keep the other figures: the JSON records the failure and main() exits 1
        return {"end_to_end_s": None, "end_to_end": {"error": str(exc)}}


def _bundle(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    return bundle_figures(work, cfg["measured"].get("end_to_end_s"))


STAGES: tuple[tuple[str, Callable[[Path, dict[str, Any]], dict[str, Any]], bool], ...] = (
    ("generation: capture, intervention, batching, decoding step", _generation, True),
    ("activation storage", _storage, True),
    ("snakemake -n on config/paper.yaml", _dag, True),
    ("engines: hf and vllm tokens/s, vllm/hf equivalence", _engines, False),
    ("end to end: the embedded default", _end_to_end, False),
    ("from its bundle: import and rebuild the book", _bundle, False),
)
"""Every measuring step in order: (what it measures, function(work folder, settings) -> figures, whether
--quick runs it). A step --quick leaves out leaves its figures unmeasured ("skipped" in the table). The
settings carry the figures measured so far under `measured` (the bundle step reads the full run's time)."""


def run_bench(out: str | os.PathLike[str] = DEFAULT_OUT, *, quick: bool = False) -> dict[str, Any]:
    """Measure every figure, write them to `out` as JSON (atomically) and return them."""
    import torch

    cfg = settings(quick)
    started = time.perf_counter()
    result: dict[str, Any] = {"quick": quick}
    with tempfile.TemporaryDirectory(prefix="toolshift-bench-") as tmp:
        for label, measure, in_quick in STAGES:
            if quick and not in_quick:
                continue
            _progress(label)
            result.update(measure(Path(tmp), {**cfg, "measured": result}))
    if quick:
        result.update({"end_to_end_s": None, "end_to_end": {"skipped": "quick mode"}})
    result.update(gpu_figures())
    result["targets"] = {k: {"op": op, "bound": b} for k, (op, b) in TARGETS.items()}
    result["verdicts"] = {k: verdict(k, result.get(k), _interval(result, k)) for k in TARGETS}
    result["intervals"] = {"level": INTERVAL_LEVEL, "method": INTERVAL_METHOD}
    result["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    result["bench_wall_s"] = time.perf_counter() - started
    with atomic_path(out) as tmp_path:
        tmp_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, write the JSON, print the table."""
    parser = argparse.ArgumentParser(prog="python -m toolshift.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON output path (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="small sizes, no end-to-end run (for tests)")
    args = parser.parse_args(argv)
    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a directory; expected a JSON file path")
    result = run_bench(args.out, quick=args.quick)
    print(table(result))
    print(f"\nwritten: {args.out}")
    if "error" in result.get("end_to_end", {}):
        print(f"bench: end-to-end run failed: {result['end_to_end']['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
