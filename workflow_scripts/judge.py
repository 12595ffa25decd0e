"""Rule judge: every responses table of every model on a dataset -> one judged table per model (one judge,
loaded once)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

import pandas as pd  # noqa: E402

from toolshift.contracts import read_prompts, read_responses, write_parquet  # noqa: E402
from toolshift.errors import ContractError  # noqa: E402
from toolshift.judges import judge_frame  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


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
