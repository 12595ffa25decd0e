"""Run engine requests from a JSON spec and write what they return: how the main environment's tests drive
the vLLM environment (tests/test_vllm_engine.py).

    python -m toolshift.models.engines.vllm_check SPEC.json OUT_DIR

SPEC: {"engine": "vllm" | "hf", "model_dir", "entry" (a model entry), "generation" (the config section),
"results_root", "max_new_tokens", "requests": [{"name", "episodes", "capture",
"intervention": null | {"kind", "layer", "alpha", "vector": [floats]}}]}.
OUT_DIR gets result.json ({"engine", "load_s", "gen_s", "n_layers", "hidden_size", "revision",
"results": [{"name", "engine", "table": [rows]}]}) and states.npz (array `r<i>` for each capturing request).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolshift.errors import ConfigError
from toolshift.models.engines.base import RunRequest
from toolshift.models.engines.loader import open_engine
from toolshift.models.hooks import ResidualEdit


def requests_from_spec(spec: dict[str, Any]) -> list[RunRequest]:
    """The RunRequests a spec describes."""
    requests = []
    for item in spec["requests"]:
        raw = item.get("intervention")
        intervention = None
        if raw is not None:
            intervention = ResidualEdit(
                kind=raw["kind"],
                layer=raw.get("layer"),
                vector=np.asarray(raw["vector"], dtype=np.float32),
                alpha=float(raw.get("alpha", 1.0)),
            )
        requests.append(
            RunRequest(
                name=item["name"],
                episodes=item["episodes"],
                capture=bool(item.get("capture")),
                intervention=intervention,
            )
        )
    return requests


def run(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Open the engine, generate every request in one call, write result.json and states.npz."""
    requests = requests_from_spec(spec)
    start = time.perf_counter()
    engine = open_engine(
        spec.get("engine", "vllm"), spec["model_dir"], spec["entry"], spec.get("generation", {})
    )
    load_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        results = engine.generate(requests, spec["results_root"], max_new_tokens=int(spec["max_new_tokens"]))
        gen_s = time.perf_counter() - start
    finally:
        engine.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    states = {f"r{i}": res.states for i, res in enumerate(results) if res.states is not None}
    np.savez(out_dir / "states.npz", **states)
    record = {
        "engine": engine.name,
        "load_s": round(load_s, 3),
        "gen_s": round(gen_s, 3),
        "n_layers": engine.n_layers,
        "hidden_size": engine.hidden_size,
        "revision": engine.revision,
        "results": [
            {"name": req.name, "engine": res.engine, "table": res.table.to_dict(orient="records")}
            for req, res in zip(requests, results, strict=True)
        ],
    }
    (out_dir / "result.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.models.engines.vllm_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("spec", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{args.spec}: cannot be read as a JSON spec ({exc})") from None
    record = run(spec, args.out_dir)
    print(json.dumps({k: v for k, v in record.items() if k != "results"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
