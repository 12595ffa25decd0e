"""Rule prompts: a dataset -> prompts.parquet and its attack images."""

from pathlib import Path

from toolshift.common.steps import run_step
from toolshift.contracts import write_parquet
from toolshift.datasets.prompts import build_dataset_prompts


def main(smk) -> None:
    prompts = build_dataset_prompts(
        smk.wildcards.dataset,
        Path(smk.params.results),
        skipped_csv=smk.output.skipped,
        changes_csv=smk.output.changes,
        **smk.params.options,
    )
    Path(smk.output.images).mkdir(parents=True, exist_ok=True)
    write_parquet(prompts, smk.output.prompts)


run_step(snakemake, main)
