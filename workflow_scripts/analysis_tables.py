"""Rule analysis_tables: vectors, validation tables, KL costs -> selection, transfer, cost, representation,
relative vectors."""

import pandas as pd

from toolshift.analysis.intervention_cost import intervention_cost_table, read_costs
from toolshift.analysis.selection import selection_table
from toolshift.analysis.vector_tables import relative_vectors_table, representation_table, transfer_table
from toolshift.analysis.vectors import read_vectors
from toolshift.common.steps import run_step
from toolshift.contracts import (
    ASR_TABLE_COLUMNS,
    COST_TABLE_COLUMNS,
    OVER_REFUSAL_COLUMNS,
    read_table,
    write_csv,
)


def main(smk) -> None:
    vectors = {}
    for path in smk.input.vectors:
        ds = read_vectors(path)
        vectors[(ds.attrs["model"], ds.attrs["dataset"])] = ds
    costs = pd.concat([read_costs(p) for p in smk.input.costs], ignore_index=True)
    cost_table = intervention_cost_table(
        costs, n_boot=smk.params.stats["n_boot"], seed=smk.params.stats["seed"]
    )
    write_csv(cost_table, smk.output.cost)
    sel = smk.params.selection
    table = selection_table(
        vectors,
        read_table(smk.input.asr_validation, ASR_TABLE_COLUMNS),
        judge=smk.params.judge,
        over_refusal_validation=read_table(smk.input.over_refusal_validation, OVER_REFUSAL_COLUMNS),
        cost=cost_table,
        max_over_refusal_increase=sel["max_over_refusal_increase"],
        max_kl=sel["max_kl"],
    )
    write_csv(table, smk.output.selection)
    write_csv(transfer_table(read_table(smk.input.asr, ASR_TABLE_COLUMNS), vectors), smk.output.transfer)
    write_csv(representation_table(vectors), smk.output.representation)
    write_csv(relative_vectors_table(vectors, list(smk.params.conditions)), smk.output.relative_vectors)
    assert list(cost_table.columns) == list(COST_TABLE_COLUMNS)


run_step(snakemake, main)
