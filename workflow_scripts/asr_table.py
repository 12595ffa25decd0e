"""Rule asr_table: judged tables -> tables/asr.csv and tables/over_refusal.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

import pandas as pd  # noqa: E402

from toolshift.contracts import JUDGED_COLUMNS, read_table, write_csv  # noqa: E402
from toolshift.tables import asr_table, over_refusal_table  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    judged = pd.concat([read_table(p, JUDGED_COLUMNS) for p in smk.input], ignore_index=True)
    write_csv(
        asr_table(judged, n_boot=smk.params.stats["n_boot"], seed=smk.params.stats["seed"]), smk.output.asr
    )
    write_csv(over_refusal_table(judged), smk.output.over_refusal)


run_step(snakemake, main)
