"""Rules merge_runs and merge_interventions: the shard directories of a (model, dataset) job -> each run's
responses.parquet (+ activations.nc)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.runner import merge_costs, merge_runs  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    merge_runs(smk.input.shards, smk.params.runs, smk.output.responses, smk.output.get("activations", []))
    if "costs" in smk.output.keys():  # interventions: their KL costs, shards then transfer jobs
        merge_costs(smk.input.shards, smk.input.transfer_costs, smk.output.costs)


run_step(snakemake, main)
