"""`make bench`: the project's speed and storage figures, measured in one run as ratios or counts.

Every timing figure is a ratio of two timings taken in the same process, interleaved repetition by
repetition (A, B, B, A, ...) and summarised by the median of the per-repetition ratios, so that it holds on
a noisy or shared machine; absolute seconds are recorded beside them for context only.

Figures (targets where the project sets one):

- capture overhead: generation with residual capture / without (target <= 1.02);
- intervention overhead: generation with an `add` hook at alpha = 0 / without (target <= 1.02);
- batching: per-prompt generation time at batch 8 / batch 1;
- activation storage: bytes on disk per prompt x layer x hidden value of `activations.nc`, and its write
  time / a raw `numpy.save` of the same array;
- DAG build: `snakemake -n` wall time for `config/paper.yaml` (target <= 5 s) and its job count (<= 1000);
- what the paper study costs before it runs (toolshift.bench.study_cost): model loads (<= 1 per (model,
  dataset, shard) for the conditions, and one for the interventions), generations, maximum new tokens;
- engines: new tokens/s of the `hf` and `vllm` engines on the same fixture, and how far they agree;
- end to end: wall time of the embedded default (`config/config.yaml`) from scratch (target <= 180 s;
  skipped by --quick);
- from its bundle: that run's result bundle imported into a fresh folder and the book rebuilt, its wall time
  over the full run's (target <= 0.25; toolshift.bench.bundle_timing), and the bundle's size.

The two workflow figures (DAG build, end to end) are measured by toolshift.bench.workflow_timing.

The model is a tiny random Qwen2.5-VL fixture (toolshift.models.fixtures), on the CPU, with a fixed number of
new tokens per prompt (eos suppressed) so that every timed run does the same work.
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
from toolshift.bench.workflow_timing import dag_figures, end_to_end_figures
from toolshift.errors import ConfigError
from toolshift.files import atomic_path

DEFAULT_OUT = Path("results") / "bench" / "bench.json"

TARGETS: dict[str, tuple[str, float]] = {
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
            "storage_shape": (32, 4, 64),
            "storage_repeats": 2,
            "dag_repeats": 1,
            "end_to_end": False,
        }
    return {
        "fixture": {"hidden_size": 256, "num_layers": 4, "num_heads": 4},
        "n_prompts": 16,
        "max_new_tokens": 16,
        "batch_size": 8,
        "repeats": 9,
        "storage_shape": (512, 28, 512),
        "storage_repeats": 5,
        "dag_repeats": 3,
        "end_to_end": True,
    }


# --------------------------------------------------------------------------- timing helpers


def _seconds(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def interleaved_times(
    variants: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Run every variant `repeats` times, interleaved, alternating the order each repetition (ABBA...).
    `clock`: wall time by default; `time.process_time` counts this process's CPU only, so that other
    processes on a shared machine do not enter a compute-bound ratio."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            times[name].append(_seconds(variants[name], clock))
    return times


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median of the per-repetition ratios numerator[i] / denominator[i]."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("median_ratio needs two equally long, non-empty series")
    return float(statistics.median(a / b for a, b in zip(numerator, denominator, strict=True)))


# --------------------------------------------------------------------------- generation figures


def _load_fixture_model(work: Path, fixture: dict[str, int]) -> Any:
    from toolshift.models.fixtures import build_fixture
    from toolshift.models.loading import load_model

    path = build_fixture("qwen2_5_vl", work / "model", seed=0, **fixture)
    return load_model(path, "qwen2_5_vl", dtype="float32", device="cpu")


def generation_figures(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Capture overhead, intervention overhead (add, alpha 0) and batching, on a tiny Qwen2.5-VL fixture."""
    import torch

    # one intra-op thread: on a shared machine, spinning thread pools make timings far noisier
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _generation_figures(work, cfg)
    finally:
        torch.set_num_threads(threads)


def _generation_figures(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from toolshift.models.fixtures import synthetic_episodes
    from toolshift.models.generation import generate
    from toolshift.models.hooks import ResidualEdit

    loaded = _load_fixture_model(work, cfg["fixture"])
    max_new = cfg["max_new_tokens"]
    # every timed run generates exactly max_new tokens per prompt (generate copies this config)
    loaded.model.generation_config.min_new_tokens = max_new
    episodes = synthetic_episodes(work, cfg["n_prompts"], conditions=("direct",))
    zero_add = ResidualEdit(
        kind="add",
        layer=loaded.n_layers // 2,
        vector=np.random.default_rng(0).standard_normal(loaded.hidden_size).astype(np.float32),
        alpha=0.0,
    )

    def run(capture: bool, intervention: Any = None, batch_size: int = cfg["batch_size"]) -> Any:
        return lambda: generate(
            loaded,
            episodes,
            work,
            batch_size=batch_size,
            max_new_tokens=max_new,
            capture=capture,
            intervention=intervention,
            progress=False,
        )

    # warm-up (allocator, kernels, image preprocessing caches); also checks the fixed token count
    warm, _ = run(False)()
    n_new = warm["n_new_tokens"].tolist()
    generation_times = interleaved_times(
        {
            "plain": run(False),
            "capture": run(True),
            "add_alpha0": run(False, zero_add),
        },
        cfg["repeats"],
        clock=time.process_time,  # compute-bound, one thread: this process's CPU time
    )
    batch_times = interleaved_times(
        {"batch_1": run(False, batch_size=1), "batch_8": run(False, batch_size=8)},
        cfg["repeats"],
        clock=time.process_time,
    )
    n = len(episodes)
    return {
        "capture_overhead": median_ratio(generation_times["capture"], generation_times["plain"]),
        "intervention_overhead": median_ratio(generation_times["add_alpha0"], generation_times["plain"]),
        "batch8_per_prompt_over_batch1": median_ratio(batch_times["batch_8"], batch_times["batch_1"]),
        "generation": {
            "model": "qwen2_5_vl fixture (random weights)",
            **{k: int(v) for k, v in cfg["fixture"].items()},
            "n_prompts": n,
            "max_new_tokens": max_new,
            "new_tokens_per_prompt": int(statistics.median(n_new)) if n_new else 0,
            "batch_size": cfg["batch_size"],
            "repeats": cfg["repeats"],
            "torch_threads": torch.get_num_threads(),
            "median_s": {
                name: float(statistics.median(ts)) for name, ts in {**generation_times, **batch_times}.items()
            },
        },
    }


# --------------------------------------------------------------------------- engine figures

ENGINE_FIXTURE: dict[str, int] = {"hidden_size": 64, "num_layers": 4, "num_heads": 2}
"""The fixture both engines are timed on (head size 32: vLLM's CPU attention serves no smaller one)."""


def engine_figures(work: Path, n: int = 32, max_new_tokens: int = 32) -> dict[str, Any]:
    """New tokens/s of the `hf` and `vllm` engines on the same Qwen2.5-VL fixture (plain, with capture, with
    steering; toolshift.models.engines.throughput, one process and one load per engine) and their agreement on
    the fixtures (toolshift.models.engines.equivalence). Without a vLLM environment the vLLM figures say why
    they are
    missing."""
    from toolshift.models.engines.environment import vllm_python
    from toolshift.models.engines.throughput import measure_in_subprocess
    from toolshift.models.fixtures import build_fixture

    model = build_fixture("qwen2_5_vl", work / "engine_model", seed=0, **ENGINE_FIXTURE)
    out: dict[str, Any] = {
        "engines": {
            "fixture": {"family": "qwen2_5_vl", **ENGINE_FIXTURE},
            "n": n,
            "max_new_tokens": max_new_tokens,
        }
    }
    try:
        vllm_python()
        engines = ("hf", "vllm")
    except ConfigError as exc:
        engines = ("hf",)
        out["engines"]["vllm"] = f"not measured: {exc}"
    for engine in engines:
        record = measure_in_subprocess(
            engine, model, "qwen2_5_vl", n=n, max_new_tokens=max_new_tokens, timeout_s=1800
        )
        out["engines"][engine] = record
        for variant, key in (("plain", ""), ("capture", "_capture"), ("steer", "_steer")):
            out[f"{engine}_tokens_per_s{key}"] = record["variants"][variant]["tokens_per_s"]
        out[f"{engine}_load_s"] = record["load_s"]
    if "vllm" in engines:
        from toolshift.models.engines.equivalence import FAMILIES, compare
        from toolshift.models.engines.equivalence import figures as agreement

        per_family = {f: agreement(*compare(f, work / f"equivalence-{f}")) for f in FAMILIES}
        out["equivalence"] = per_family
        out["vllm_responses_equal_hf"] = sum(v["responses_equal"] for v in per_family.values())
        out["vllm_responses_compared"] = sum(v["responses"] for v in per_family.values())
        out["vllm_max_state_diff"] = max(v["max_abs_state_diff"] for v in per_family.values())
        out["vllm_responses_equal_share"] = out["vllm_responses_equal_hf"] / out["vllm_responses_compared"]
    return out


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
    return {
        "activation_bytes_per_value": nc_path.stat().st_size / values,
        "activation_write_over_numpy_save": median_ratio(times["netcdf"], times["numpy_save"]),
        "storage": {
            "shape": list(shape),
            "netcdf_bytes": nc_path.stat().st_size,
            "numpy_bytes": npy_path.stat().st_size,
            "repeats": repeats,
            "median_s": {name: float(statistics.median(ts)) for name, ts in times.items()},
        },
    }


# --------------------------------------------------------------------------- report


def verdict(name: str, value: float | None) -> str:
    """`pass` / `miss` against the figure's target, `-` where it has none or was not measured."""
    if name not in TARGETS or value is None:
        return "-"
    op, bound = TARGETS[name]
    ok = value <= bound if op == "<=" else value >= bound
    return "pass" if ok else "miss"


ROWS: tuple[tuple[str, str, str], ...] = (
    ("capture_overhead", "capture overhead (with / without)", "{:.3f}x"),
    ("intervention_overhead", "intervention overhead (add, alpha 0 / without)", "{:.3f}x"),
    ("batch8_per_prompt_over_batch1", "per-prompt time, batch 8 / batch 1", "{:.3f}x"),
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
    ("end_to_end_s", "embedded default, end to end", "{:.0f} s"),
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


def table(result: dict[str, Any]) -> str:
    """A plain-text table of every figure, its target and pass/miss."""
    lines = [f"{'figure':<48} {'value':>17} {'target':>9} {'':>4}", "-" * 81]
    for key, label, fmt in ROWS:
        value = result.get(key)
        failed = key == "end_to_end_s" and "error" in result.get("end_to_end", {})
        if value is None:
            shown = "not measured here" if key.startswith("gpu_") else "failed" if failed else "skipped"
        else:
            shown = fmt.format(value)
        target = f"{TARGETS[key][0]} {TARGETS[key][1]:g}" if key in TARGETS else ""
        lines.append(f"{label:<48} {shown:>17} {target:>9} {verdict(key, value):>4}")
    return "\n".join(lines)


def _progress(stage: str) -> None:
    print(f"bench: {stage} ...", file=sys.stderr, flush=True)


def run_bench(out: str | os.PathLike[str] = DEFAULT_OUT, *, quick: bool = False) -> dict[str, Any]:
    """Measure every figure, write them to `out` as JSON (atomically) and return them."""
    import torch

    cfg = settings(quick)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toolshift-bench-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"quick": quick}
        _progress("generation: capture, intervention, batching")
        result.update(generation_figures(work / "generation", cfg))
        _progress("activation storage")
        result.update(storage_figures(work, cfg["storage_shape"], cfg["storage_repeats"]))
        _progress("snakemake -n on config/paper.yaml")
        result.update(dag_figures(work, cfg["dag_repeats"]))
        if cfg["end_to_end"]:
            _progress("engines: hf and vllm tokens/s, vllm/hf equivalence")
            result.update(engine_figures(work))
            _progress("end to end: the embedded default")
            try:
                result.update(end_to_end_figures(work))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                # keep the other figures: the JSON records the failure and main() exits 1
                result.update({"end_to_end_s": None, "end_to_end": {"error": str(exc)}})
            result.update(bundle_figures(work, result["end_to_end_s"]))
        else:
            result.update({"end_to_end_s": None, "end_to_end": {"skipped": "quick mode"}})
    result.update(gpu_figures())
    result["targets"] = {k: {"op": op, "bound": b} for k, (op, b) in TARGETS.items()}
    result["verdicts"] = {k: verdict(k, result.get(k)) for k in TARGETS}
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
