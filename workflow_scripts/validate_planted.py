"""Rule validate_planted: a synthetic study with planted truth through the analysis library ->
tables/validation_planted.csv (one row per check)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.contracts import write_csv  # noqa: E402
from toolshift.validation import planted_truth_table  # noqa: E402
from toolshift.workflow import log, run_step  # noqa: E402


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
