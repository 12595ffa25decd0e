"""Rule claims_table: tables/contrasts.csv -> tables/claims.csv (one verdict per claim, model, dataset,
judge and split; toolshift.analysis.claims)."""

from toolshift.analysis.claims import claims_table
from toolshift.common.steps import run_step
from toolshift.contracts import CONTRASTS_COLUMNS, read_table, write_csv


def main(smk) -> None:
    contrasts = read_table(smk.input.contrasts, CONTRASTS_COLUMNS)
    write_csv(claims_table(contrasts), smk.output[0])


run_step(snakemake, main)
