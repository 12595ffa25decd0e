"""Rule validate_figstep: our FigStep renderer vs the original SafeBench images (every n-th row), the
files found through the registry (data_mirror, else downloaded into the cache) ->
tables/validation_figstep.csv (one row per compared image)."""

from pathlib import Path

from toolshift.checks.figstep_fidelity import (
    fetch_safebench_reference,
    figstep_fidelity_summary,
    figstep_fidelity_table,
)
from toolshift.common.steps import log, run_step
from toolshift.contracts import write_csv
from toolshift.datasets.downloads import data_source


def main(smk) -> None:
    out = Path(smk.output[0])
    source = data_source(
        Path(smk.params.results), smk.params.data_mirror, smk.params.data_cache, smk.params.data_lock
    )
    every = smk.params.every
    csv, images = fetch_safebench_reference(source, every=every)
    table = figstep_fidelity_table(csv, images, every=every)
    log.info("FigStep fidelity: %s", figstep_fidelity_summary(table))
    write_csv(table, out)


run_step(snakemake, main)
