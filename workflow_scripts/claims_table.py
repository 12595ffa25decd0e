"""Rule claims_table: tables/contrasts.csv and tables/tokens_model.csv -> tables/claims.csv (one verdict per
claim, model, dataset, judge and split; toolshift.analysis.claims)."""

from toolshift.analysis.claims import claims_table
from toolshift.common.steps import run_step
from toolshift.contracts import CONTRASTS_COLUMNS, TOKENS_MODEL_COLUMNS, read_table, write_csv


def main(smk) -> None:
    contrasts = read_table(smk.input.contrasts, CONTRASTS_COLUMNS)
    tokens_model = read_table(smk.input.tokens_model, TOKENS_MODEL_COLUMNS)
    write_csv(claims_table(contrasts, tokens_model), smk.output[0])


run_step(snakemake, main)
