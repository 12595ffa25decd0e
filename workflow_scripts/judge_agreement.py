"""Rule judge_agreement: judged tables (+ human labels) -> pairwise and human agreement, ASR by judge."""

from pathlib import Path

import pandas as pd

from toolshift.common.steps import run_step
from toolshift.contracts import HUMAN_AGREEMENT_COLUMNS, JUDGED_COLUMNS, read_table, write_csv
from toolshift.judges.agreement import (
    asr_by_judge,
    human_agreement,
    judge_labelled,
    pairwise_agreement,
    read_labelled_csv,
    verdict_matrix,
)


def main(smk) -> None:
    matrix = verdict_matrix(read_table(p, JUDGED_COLUMNS) for p in smk.input.judged)
    write_csv(pairwise_agreement(matrix), smk.output.pairwise)
    write_csv(asr_by_judge(matrix), smk.output.asr_by_judge)
    labels = smk.params.labels
    if not smk.input.labels:
        write_csv(pd.DataFrame(columns=list(HUMAN_AGREEMENT_COLUMNS)), smk.output.human)
        return
    labelled = read_labelled_csv(
        smk.input.labels[0],
        human_columns=labels["human_columns"],
        majority_column=labels["majority_column"],
        judge_columns=labels["judge_columns"],
    )
    model_dirs = {Path(p).name: p for p in smk.input.judge_models}
    for judge in smk.params.judges:
        options = dict(smk.params.options[judge])
        options.pop("results_root", None)
        if judge in model_dirs:
            options["model_dir"] = model_dirs[judge]
        labelled = judge_labelled(
            labelled,
            judge,
            column=f"toolshift_{judge}",
            response_column=labels["response_column"],
            request_column=labels["request_column"],
            **options,
        )
    write_csv(human_agreement(labelled, majority_column=labels["majority_column"]), smk.output.human)


run_step(snakemake, main)
