"""Rules merge_runs and merge_interventions: the shard directories of a (model, dataset) job -> each run's
responses.parquet (+ activations.nc)."""

from toolshift.common.steps import run_step
from toolshift.inference.runner import merge_costs, merge_runs


def main(smk) -> None:
    merge_runs(smk.input.shards, smk.params.runs, smk.output.responses, smk.output.get("activations", []))
    if "costs" in smk.output.keys():  # interventions: their KL costs, shards then transfer jobs
        merge_costs(smk.input.shards, smk.input.transfer_costs, smk.output.costs)


run_step(snakemake, main)
