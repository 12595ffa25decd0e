"""Generation figures of `make bench` (toolshift.bench.suite): capture and intervention overheads and
batching on a random Qwen2.5-VL fixture built offline, each a paired ratio with its 95 % interval
(toolshift.bench.timing), the fixture's decoding step time, and the `hf` / `vllm` engines' throughput.

The overheads are measured on a fixture large enough that one decoding step (a forward of the batch for one
new token) takes tens of milliseconds on one CPU thread, so that what capture and hooks add is compared with
a realistic step rather than with the fixed cost of a tiny model; the step time is measured and recorded
beside them (with the fixture's parameter count and size on disk).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolshift.bench.timing import interleaved_times, ratio_interval
from toolshift.errors import ConfigError


def _load_fixture_model(work: Path, fixture: dict[str, int]) -> Any:
    from toolshift.models.fixtures import build_fixture
    from toolshift.models.loading import load_model

    path = build_fixture("qwen2_5_vl", work / "model", seed=0, **fixture)
    return load_model(path, "qwen2_5_vl", dtype="float32", device="cpu")


def generation_figures(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Capture overhead, intervention overhead (add, alpha 0), batching and the decoding step time, on a
    random Qwen2.5-VL fixture of `cfg["fixture"]`'s size, on one CPU thread."""
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
    episodes = synthetic_episodes(work, cfg["n_prompts"], conditions=("direct",))
    zero_add = ResidualEdit(
        kind="add",
        layer=loaded.n_layers // 2,
        vector=np.random.default_rng(0).standard_normal(loaded.hidden_size).astype(np.float32),
        alpha=0.0,
    )

    def run(capture: bool, intervention: Any = None, batch_size: int = cfg["batch_size"], new: int = max_new):
        def go() -> Any:
            # every timed run generates exactly `new` tokens per prompt (generate copies this config)
            loaded.model.generation_config.min_new_tokens = new
            return generate(
                loaded,
                episodes,
                work,
                batch_size=batch_size,
                max_new_tokens=new,
                capture=capture,
                intervention=intervention,
                progress=False,
            )

        return go

    # warm-up (allocator, kernels, image preprocessing caches); also checks the fixed token count
    warm, _ = run(False)()
    n_new = warm["n_new_tokens"].tolist()
    generation_times = interleaved_times(
        {
            "plain": run(False),
            "capture": run(True),
            "add_alpha0": run(False, zero_add),
            "plain_1_token": run(False, new=1),
        },
        cfg["repeats"],
        clock=time.process_time,  # compute-bound, one thread: this process's CPU time
    )
    batch_times = interleaved_times(
        {"batch_1": run(False, batch_size=1), "batch_8": run(False, batch_size=8)},
        cfg["batch_repeats"],
        clock=time.process_time,
    )
    n = len(episodes)
    n_batches = -(-n // cfg["batch_size"])
    # one decoding step = one forward of a batch for one more token: the runs differ by max_new - 1 of them
    steps = n_batches * (max_new - 1)
    plain, one_token = generation_times["plain"], generation_times["plain_1_token"]
    # the fastest run of each: what interference on a shared machine only ever adds to
    step_s = (min(plain) - min(one_token)) / steps
    ratios = {
        name: ratio_interval(numerator, denominator)
        for name, (numerator, denominator) in {
            "capture_overhead": (generation_times["capture"], generation_times["plain"]),
            "intervention_overhead": (generation_times["add_alpha0"], generation_times["plain"]),
            "batch8_per_prompt_over_batch1": (batch_times["batch_8"], batch_times["batch_1"]),
        }.items()
    }
    figures: dict[str, Any] = {}
    for name, summary in ratios.items():
        figures[name] = summary["ratio"]
        figures[f"{name}_ci95"] = summary["ci"]
    model_dir = work / "model"
    return {
        **figures,
        "decode_step_ms": 1000.0 * step_s if max_new > 1 else None,
        "generation": {
            "model": "qwen2_5_vl fixture (random weights, built offline)",
            **{k: int(v) for k, v in cfg["fixture"].items()},
            "parameters": int(sum(p.numel() for p in loaded.model.parameters())),
            "fixture_bytes": int(sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())),
            "n_prompts": n,
            "max_new_tokens": max_new,
            "new_tokens_per_prompt": int(statistics.median(n_new)) if n_new else 0,
            "batch_size": cfg["batch_size"],
            "repeats": cfg["repeats"],
            "batch_repeats": cfg["batch_repeats"],
            "torch_threads": torch.get_num_threads(),
            "clock": "process CPU time (time.process_time), one torch thread",
            "decode_step": "median of (plain - plain_1_token) / (batches x (max_new_tokens - 1))",
            "median_s": {
                name: float(statistics.median(ts)) for name, ts in {**generation_times, **batch_times}.items()
            },
            "ratios": ratios,
        },
    }


# --------------------------------------------------------------------------- engine figures

ENGINE_FIXTURE: dict[str, int] = {"hidden_size": 64, "num_layers": 4, "num_heads": 2}
"""The fixture both engines are timed on (head size 32: vLLM's CPU attention serves no smaller one)."""


def engine_figures(work: Path, n: int = 32, max_new_tokens: int = 32) -> dict[str, Any]:
    """New tokens/s of the `hf` and `vllm` engines on the same Qwen2.5-VL fixture (plain, with capture, with
    steering; toolshift.models.engines.throughput, one process and one load per engine) and their agreement on
    the fixtures (toolshift.models.engines.equivalence). Without a vLLM environment the vLLM figures say why
    they are missing."""
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
