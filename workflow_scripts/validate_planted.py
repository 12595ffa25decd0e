"""Rule validate_planted: a synthetic study with planted truth through the analysis library ->
tables/validation_planted.csv (one row per check)."""

from toolshift.checks.planted_truth import planted_truth_table
from toolshift.common.steps import log, run_step
from toolshift.contracts import write_csv


def main(smk) -> None:
    table = planted_truth_table(seed=smk.params.seed)
    failed = table.loc[~table["passed"], "check"].tolist()
    log.info(
        "planted truth: %d/%d checks passed%s",
        len(table) - len(failed),
        len(table),
        f" (failed: {', '.join(failed)})" if failed else "",
    )
    write_csv(table, smk.output[0])


run_step(snakemake, main)
