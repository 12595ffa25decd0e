"""Rule validate_planted_model: the DAG's own tables and vectors on the planted-mechanism fixtures ->
tables/validation_planted_model.csv (one row per recovery check; toolshift.checks.planted_model)."""

from toolshift.checks.planted_model import planted_recovery_tables
from toolshift.common.steps import log, run_step
from toolshift.contracts import write_csv


def main(smk) -> None:
    table = planted_recovery_tables(
        models=dict(zip(smk.params.models, smk.input.models, strict=True)),
        vectors=list(smk.input.vectors),
        datasets=list(smk.params.datasets),
        judge=smk.params.judge,
        asr_csv=smk.input.asr,
        contrasts_csv=smk.input.contrasts,
        negative_controls=list(smk.params.negative_controls),
    )
    failed = table.loc[~table["passed"], "check"].tolist()
    log.info(
        "planted model: %d/%d checks passed%s",
        len(table) - len(failed),
        len(table),
        f" (failed: {', '.join(failed)})" if failed else "",
    )
    write_csv(table, smk.output[0])


run_step(snakemake, main)
