"""Rules merge_run and merge_intervention: shards -> responses.parquet (+ activations.nc)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.runner import merge_shards  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    merge_shards(
        [Path(p) for p in smk.input.responses],
        Path(smk.output.responses),
        [Path(p) for p in smk.input.get("activations", [])],
        Path(smk.output.activations) if "activations" in smk.output.keys() else None,
    )


run_step(snakemake, main)
