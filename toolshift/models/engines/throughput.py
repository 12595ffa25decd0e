"""Tokens per second of an engine on a model: load it once, generate a fixed number of new tokens.

    python -m toolshift.models.engines.throughput --engine hf|vllm --model DIR --family F
        [--n N] [--max-new-tokens T] [--variants plain,capture,steer] [--batch-size B] [--dtype D]

Loads the engine once (timed: `load_s`), runs a short warm-up (one episode, two tokens, not timed), then
generates for N synthetic episodes (toolshift.models.fixtures.synthetic_episodes) once per variant, with eos
and pad suppressed so that every episode gets exactly T new tokens (HF: min_new_tokens; vLLM: min_tokens).
Variants (VARIANTS): `plain`; `capture` records the last-prompt-token states at every layer; `steer` adds a
random vector (norm 1) at the middle layer at every position. Prints one JSON object: engine, family, model,
dtype, n, max_new_tokens, load_s, warmup_s and per variant gen_s, new_tokens, tokens_per_s. `--engine vllm`
runs in the vLLM environment: from another interpreter it re-runs itself with
toolshift.models.engines.environment.vllm_python(); `measure_in_subprocess` does the same from library code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from toolshift.errors import ToolshiftError
from toolshift.models.engines.base import ENGINES, Engine, RunRequest
from toolshift.models.engines.loader import open_engine
from toolshift.models.hooks import ResidualEdit

VARIANTS: tuple[str, ...] = ("plain", "capture", "steer")
"""What a throughput run can time: plain generation, with residual capture, with an `add` steering hook."""


def _fix_new_tokens(engine: Engine, n_tokens: int) -> None:
    """Make every episode generate exactly `n_tokens` new tokens (eos and pad suppressed until then)."""
    if engine.name == "vllm":
        engine.min_new_tokens = n_tokens  # type: ignore[attr-defined]
    else:
        engine.loaded.model.generation_config.min_new_tokens = n_tokens  # type: ignore[attr-defined]


def _request(engine: Engine, variant: str, episodes: list[dict[str, Any]]) -> RunRequest:
    if variant == "steer":
        vector = np.random.default_rng(0).standard_normal(engine.hidden_size).astype(np.float32)
        vector /= np.linalg.norm(vector)
        steer = ResidualEdit(kind="add", layer=engine.n_layers // 2, vector=vector, alpha=1.0)
        return RunRequest(variant, episodes, intervention=steer)
    return RunRequest(variant, episodes, capture=variant == "capture")


def measure(
    engine_name: str,
    model_dir: str,
    family: str,
    *,
    n: int = 32,
    max_new_tokens: int = 32,
    variants: Sequence[str] = VARIANTS,
    batch_size: int = 8,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Load the engine once and time one generate call per variant over `n` synthetic episodes."""
    from toolshift.models.fixtures import synthetic_episodes

    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ToolshiftError(f"throughput variants {unknown} are unknown; expected some of {list(VARIANTS)}")
    entry = {"family": family, "dtype": dtype}
    start = time.perf_counter()
    engine = open_engine(engine_name, model_dir, entry, {"batch_size": batch_size})
    load_s = time.perf_counter() - start
    figures: dict[str, dict[str, Any]] = {}
    try:
        _fix_new_tokens(engine, max_new_tokens)
        with tempfile.TemporaryDirectory(prefix="toolshift-throughput-") as root:
            episodes = synthetic_episodes(root, n)
            start = time.perf_counter()
            engine.generate([RunRequest("warmup", episodes[:1])], root, max_new_tokens=2)
            warmup_s = time.perf_counter() - start
            for variant in variants:
                start = time.perf_counter()
                (result,) = engine.generate(
                    [_request(engine, variant, episodes)], root, max_new_tokens=max_new_tokens
                )
                gen_s = time.perf_counter() - start
                figures[variant] = {
                    "gen_s": round(gen_s, 3),
                    "new_tokens": n * max_new_tokens,
                    "tokens_per_s": round(n * max_new_tokens / gen_s, 2) if gen_s > 0 else None,
                    "engine": result.engine,
                }
    finally:
        engine.close()
    return {
        "engine": engine_name,
        "family": family,
        "model": str(model_dir),
        "dtype": dtype,
        "n": n,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
        "variants": figures,
    }


def measure_in_subprocess(
    engine_name: str,
    model_dir: str | os.PathLike[str],
    family: str,
    *,
    n: int = 32,
    max_new_tokens: int = 32,
    variants: Sequence[str] = VARIANTS,
    batch_size: int = 8,
    dtype: str = "float32",
    timeout_s: float = 3600,
) -> dict[str, Any]:
    """`measure` in a fresh process (the vLLM one for `vllm`): each engine gets the whole accelerator."""
    cmd = [
        sys.executable, "-m", "toolshift.models.engines.throughput", "--engine", engine_name,
        "--model", str(model_dir), "--family", family, "--n", str(n),
        "--max-new-tokens", str(max_new_tokens), "--variants", ",".join(variants),
        "--batch-size", str(batch_size), "--dtype", dtype,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ToolshiftError(f"throughput of engine {engine_name} on {model_dir} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.models.engines.throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--model", required=True, help="a model directory (a fixture or a hub snapshot)")
    parser.add_argument("--family", required=True)
    parser.add_argument("--n", type=int, default=32, help="episodes (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per episode (default 32)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {','.join(VARIANTS)}"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="the hf engine's batch size (default 8)")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if args.n < 1 or args.max_new_tokens < 1:
        parser.error("--n and --max-new-tokens must be >= 1")
    if not variants or set(variants) - set(VARIANTS):
        parser.error(
            f"--variants {args.variants!r}: expected a comma-separated list of {', '.join(VARIANTS)}"
        )
    if args.engine == "vllm":
        from toolshift.models.engines.environment import vllm_importable, vllm_python

        if not vllm_importable():
            python = vllm_python()
            os.execv(
                python,
                [
                    python,
                    "-m",
                    "toolshift.models.engines.throughput",
                    *(sys.argv[1:] if argv is None else argv),
                ],
            )
    record = measure(
        args.engine,
        args.model,
        args.family,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        variants=variants,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
