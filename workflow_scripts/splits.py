"""Rule splits: prompts.parquet -> splits/{dataset}.parquet (seeded, stratified train/validation/test)."""

from toolshift.common.steps import run_step
from toolshift.contracts import read_prompts
from toolshift.datasets.splits import make_splits, write_splits


def main(smk) -> None:
    cfg = smk.params.splits
    splits = make_splits(read_prompts(smk.input.prompts), seed=cfg["seed"], fractions=cfg["fractions"])
    write_splits(splits, smk.output[0])


run_step(snakemake, main)
