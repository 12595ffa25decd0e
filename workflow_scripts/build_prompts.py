"""Rule prompts: a dataset -> prompts.parquet and its attack images."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.contracts import write_parquet  # noqa: E402
from toolshift.datasets import build_dataset_prompts  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    prompts = build_dataset_prompts(
        smk.wildcards.dataset, Path(smk.params.results), skipped_csv=smk.output.skipped, **smk.params.options
    )
    Path(smk.output.images).mkdir(parents=True, exist_ok=True)
    write_parquet(prompts, smk.output.prompts)


run_step(snakemake, main)
