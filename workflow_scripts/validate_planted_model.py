"""Rule validate_planted_model: the DAG's own tables and vectors on the planted worlds ->
tables/validation_planted_model.csv (one row per recovery check; toolshift.checks.planted_model) and
tables/validation_worlds.csv (each world's claim verdicts against its truth;
toolshift.checks.planted_worlds)."""

from toolshift.checks.planted_model import planted_recovery_tables
from toolshift.checks.planted_worlds import check_world_cells, world_claim_tables
from toolshift.common.steps import log, run_step
from toolshift.contracts import write_csv


def main(smk) -> None:
    models = dict(zip(smk.params.models, smk.input.models, strict=True))
    table = planted_recovery_tables(
        models=models,
        vectors=list(smk.input.vectors),
        datasets=list(smk.params.datasets),
        judge=smk.params.judge,
        asr_csv=smk.input.asr,
        contrasts_csv=smk.input.contrasts,
        negative_controls=list(smk.params.negative_controls),
    )
    worlds = world_claim_tables(
        models=models,
        null_models=list(smk.params.negative_controls),
        datasets=list(smk.params.datasets),
        judge=smk.params.judge,
        claims_csv=smk.input.claims,
    )
    failed = {
        "recovery checks": (table["model"] + "/" + table["check"])[~table["passed"].astype(bool)],
        "world x claim cells": (worlds["model"] + "/" + worlds["claim"])[~worlds["passed"].astype(bool)],
    }
    for (what, names), frame in zip(failed.items(), (table, worlds), strict=True):
        log.info(
            "planted worlds: %d/%d %s passed%s",
            len(frame) - len(names),
            len(frame),
            what,
            f" (failed: {', '.join(names)})" if len(names) else "",
        )
    if smk.params.worlds_must_pass:
        check_world_cells(worlds)
    write_csv(table, smk.output.recovery)
    write_csv(worlds, smk.output.worlds)


run_step(snakemake, main)
