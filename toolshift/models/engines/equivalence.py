"""The vllm engine against the HF reference on a fixture model, in float32: the figures issue 11 asks for.

One case per family: a fixture (hidden 64, 2 heads: vLLM's CPU attention needs head_dim 32 or more), synthetic
episodes, and four runs: `none` (captured), `add0` (add with alpha 0), `add` (alpha * v at layer ADD_LAYER,
captured) and `ablate` (directional ablation of v, captured). HF runs in this process (the reference the DAG
uses); vLLM runs all four in one `generate` call in the vLLM environment, through `python -m
toolshift.models.engines.vllm_check` (toolshift.models.engines.environment.vllm_python finds it), with chunked
prefill (VLLM_ARGS).

    python -m toolshift.models.engines.equivalence [--family F ...] [--out FILE]

prints (and writes) {"families": {family: figures}} with, per run, equal responses out of n and the
largest |state difference|. tests/test_vllm_engine.py asserts on the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolshift.contracts import TOKEN_COLUMNS
from toolshift.models.engines.vllm import VLLM_FAMILIES
from toolshift.models.engines.vllm_check import requests_from_spec

FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "llava")
"""The fixture families compared by default (the embedded default's two; any of VLLM_FAMILIES can be)."""

FIXTURE: dict[str, int] = {"seed": 0, "hidden_size": 64, "num_layers": 3, "num_heads": 2}
N_EPISODES = 6
MAX_NEW_TOKENS = 8
ADD_LAYER = 1
ADD_ALPHA = 4.0
RUNS: tuple[str, ...] = ("none", "add0", "add", "ablate")
VLLM_ARGS: dict[str, int] = {"max_num_batched_tokens": 256}
"""A token budget per step below the longest prompts (about 500 tokens): their prefill is split into chunks
and shares steps with other requests, the case the capture must get right."""
TABLE_KEYS: tuple[str, ...] = (
    "prompt_id",
    "condition",
    "response",
    "n_prompt_tokens",
    "n_new_tokens",
    *TOKEN_COLUMNS,
)
"""The columns of a run's table that must be equal on both engines (the token counts included: both engines
count them with toolshift.models.token_counts on their own prompt ids)."""


@dataclass
class Side:
    """One engine's results for a case: per run, the table rows and the captured states (or None)."""

    tables: dict[str, list[dict[str, Any]]]
    states: dict[str, np.ndarray | None]
    load_s: float
    gen_s: float
    info: dict[str, Any] = field(default_factory=dict)


def make_spec(family: str, workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build the fixture and the episodes of a case under `workdir`; its vllm_check spec."""
    from toolshift.models.fixtures import build_fixture, synthetic_episodes

    work = Path(workdir)
    model = build_fixture(family, work / "model", **FIXTURE)
    root = work / "root"
    episodes = synthetic_episodes(root, N_EPISODES)
    vector = np.random.default_rng(0).standard_normal(FIXTURE["hidden_size"]).astype(np.float32).tolist()
    runs: dict[str, dict[str, Any]] = {
        "none": {"capture": True, "intervention": None},
        "add0": {"capture": False, "intervention": {"kind": "add", "layer": ADD_LAYER, "alpha": 0.0}},
        "add": {"capture": True, "intervention": {"kind": "add", "layer": ADD_LAYER, "alpha": ADD_ALPHA}},
        "ablate": {"capture": True, "intervention": {"kind": "ablate", "layer": None, "alpha": 1.0}},
    }
    requests = []
    for name in RUNS:
        run = dict(runs[name])
        if run["intervention"] is not None:
            run["intervention"] = dict(run["intervention"], vector=vector)
        requests.append({"name": name, "episodes": episodes, **run})
    return {
        "engine": "vllm",
        "model_dir": str(model),
        "entry": {"family": family, "dtype": "float32"},
        "generation": {"batch_size": 8, "vllm": VLLM_ARGS},
        "results_root": str(root),
        "max_new_tokens": MAX_NEW_TOKENS,
        "requests": requests,
    }


def run_hf(spec: dict[str, Any]) -> Side:
    """The HF engine, in this process, on the spec's runs (one generate call)."""
    from toolshift.models.engines.hf import HFEngine

    requests = requests_from_spec(spec)
    start = time.perf_counter()
    engine = HFEngine.open(spec["model_dir"], spec["entry"], spec["generation"], device="cpu")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    results = engine.generate(requests, spec["results_root"], max_new_tokens=spec["max_new_tokens"])
    gen_s = time.perf_counter() - start
    engine.close()
    return Side(
        tables={
            r.name: res.table.to_dict(orient="records") for r, res in zip(requests, results, strict=True)
        },
        states={r.name: res.states for r, res in zip(requests, results, strict=True)},
        load_s=load_s,
        gen_s=gen_s,
        info={"engine": engine.name, "revision": engine.revision},
    )


def start_vllm(spec: dict[str, Any], workdir: str | os.PathLike[str], python: str | None = None) -> Any:
    """Start the vllm engine on the spec's runs in the vLLM environment (a subprocess of `python`)."""
    from toolshift.models.engines.environment import vllm_python

    python = python or vllm_python()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    spec_file, log = work / "spec.json", work / "vllm_check.log"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    command = [python, "-m", "toolshift.models.engines.vllm_check", str(spec_file), str(work / "out")]
    with log.open("w", encoding="utf-8") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def finish_vllm(process: Any, workdir: str | os.PathLike[str]) -> Side:
    """Wait for `start_vllm`'s process; its results."""
    work = Path(workdir)
    log, out = work / "vllm_check.log", work / "out"
    if process.wait() != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise RuntimeError(
            f"vllm_check failed (exit {process.returncode}, log {log}): {' | '.join(lines[-3:])}"
        )
    record = json.loads((out / "result.json").read_text(encoding="utf-8"))
    arrays = np.load(out / "states.npz")
    names = [r["name"] for r in record["results"]]
    return Side(
        tables={r["name"]: r["table"] for r in record["results"]},
        states={name: (arrays[f"r{i}"] if f"r{i}" in arrays.files else None) for i, name in enumerate(names)},
        load_s=float(record["load_s"]),
        gen_s=float(record["gen_s"]),
        info={k: record[k] for k in ("engine", "revision", "n_layers", "hidden_size")}
        | {"engines": [r["engine"] for r in record["results"]]},
    )


def _rows(table: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in TABLE_KEYS) for row in table]


def figures(hf: Side, vllm: Side) -> dict[str, Any]:
    """Per run: responses equal (n_equal of n), the largest |state difference|, and how many responses the
    intervention changed under HF (a check that the intervention did something); and over all runs."""
    out: dict[str, Any] = {"vllm_load_s": vllm.load_s}
    none = _rows(hf.tables["none"])
    for name in RUNS:
        a, b = _rows(hf.tables[name]), _rows(vllm.tables[name])
        sa, sb = hf.states[name], vllm.states[name]
        out[name] = {
            "n": len(a),
            "n_equal": sum(x == y for x, y in zip(a, b, strict=True)),
            "max_abs_state_diff": None if sa is None or sb is None else float(np.abs(sa - sb).max()),
            "hf_changed_vs_none": sum(x[2] != y[2] for x, y in zip(none, a, strict=True)),
        }
    runs = [out[name] for name in RUNS]
    diffs = [r["max_abs_state_diff"] for r in runs if r["max_abs_state_diff"] is not None]
    out["responses_equal"] = sum(r["n_equal"] for r in runs)
    out["responses"] = sum(r["n"] for r in runs)
    out["max_abs_state_diff"] = max(diffs) if diffs else None
    return out


def compare(family: str, workdir: str | os.PathLike[str], python: str | None = None) -> tuple[Side, Side]:
    """Build the case of `family` under `workdir`, run both engines (HF here while vLLM starts in its
    subprocess: the two overlap, so their timings are not throughput figures); (hf, vllm)."""
    spec = make_spec(family, Path(workdir) / "case")
    process = start_vllm(spec, Path(workdir) / "vllm", python)
    try:
        hf = run_hf(spec)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return hf, finish_vllm(process, Path(workdir) / "vllm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.models.engines.equivalence", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--family", action="append", choices=VLLM_FAMILIES, help=f"repeatable; default: {', '.join(FAMILIES)}"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"families": {}}
    with tempfile.TemporaryDirectory(prefix="toolshift-equivalence-") as tmp:
        for family in args.family or FAMILIES:
            hf, vllm = compare(family, Path(tmp) / family)
            report["families"][family] = figures(hf, vllm)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
