"""Rule splits: prompts.parquet -> splits/{dataset}.parquet (seeded, stratified train/validation/test)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.contracts import read_prompts  # noqa: E402
from toolshift.splits import make_splits, write_splits  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    cfg = smk.params.splits
    splits = make_splits(read_prompts(smk.input.prompts), seed=cfg["seed"], fractions=cfg["fractions"])
    write_splits(splits, smk.output[0])


run_step(snakemake, main)
