"""Rule validate_figstep: our FigStep renderer vs the original SafeBench images (every n-th row), the
files found through the registry (data_mirror, else downloaded into the cache) ->
tables/validation_figstep.csv (one row per compared image)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.contracts import write_csv  # noqa: E402
from toolshift.downloads import data_source  # noqa: E402
from toolshift.validation import (  # noqa: E402
    fetch_safebench_reference,
    figstep_fidelity_summary,
    figstep_fidelity_table,
)
from toolshift.workflow import log, run_step  # noqa: E402


def main(smk) -> None:
    out = Path(smk.output[0])
    results = out.parents[1]  # the output is {results}/tables/validation_figstep.csv
    source = data_source(results, smk.params.data_mirror, smk.params.data_cache, smk.params.data_lock)
    every = smk.params.every
    csv, images = fetch_safebench_reference(source, every=every)
    table = figstep_fidelity_table(csv, images, every=every)
    log.info("FigStep fidelity: %s", figstep_fidelity_summary(table))
    write_csv(table, out)


run_step(snakemake, main)
