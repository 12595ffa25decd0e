"""Rule judge: every responses table of a model on a dataset -> one judged table (one judge)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

import pandas as pd  # noqa: E402

from toolshift.contracts import read_prompts, read_responses, write_parquet  # noqa: E402
from toolshift.judges import judge_frame  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    responses = pd.concat([read_responses(p) for p in smk.input.runs], ignore_index=True)
    options = dict(smk.params.options)
    if "judge_model" in smk.input.keys():
        options["model_dir"] = smk.input.judge_model
    judged = judge_frame(
        responses, judge=smk.wildcards.judge, prompts=read_prompts(smk.input.prompts), **options
    )
    write_parquet(judged, smk.output[0])


run_step(snakemake, main)
