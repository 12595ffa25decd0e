"""Rule judge: every responses table of every model on a dataset -> one judged table per model (one judge,
loaded once)."""

import pandas as pd

from toolshift.common.steps import run_step
from toolshift.contracts import read_prompts, read_responses, write_parquet
from toolshift.errors import ContractError
from toolshift.judges.keyword import judge_frame


def main(smk) -> None:
    responses = pd.concat([read_responses(p) for p in smk.params.runs], ignore_index=True)
    options = dict(smk.params.options)
    if "judge_model" in smk.input.keys():
        options["model_dir"] = smk.input.judge_model
    judged = judge_frame(
        responses, judge=smk.wildcards.judge, prompts=read_prompts(smk.input.prompts), **options
    )
    for model, out in zip(smk.params.models, smk.output, strict=True):
        rows = judged[judged["model"] == model].reset_index(drop=True)
        if rows.empty:
            raise ContractError(f"judge {smk.wildcards.judge}: no responses of model {model!r}")
        write_parquet(rows, out)


run_step(snakemake, main)
