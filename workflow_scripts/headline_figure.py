"""Rule headline_figure: tables/headline.csv -> the headline forest plot (PNG + SVG) and its caption."""

import json

from toolshift.analysis.headline import HEADLINE_COLUMNS
from toolshift.common.steps import run_step
from toolshift.contracts import atomic_path, read_table
from toolshift.report.figures import plot_headline


def main(smk) -> None:
    caption = plot_headline(read_table(smk.input.headline, HEADLINE_COLUMNS), smk.output.png)
    with atomic_path(smk.output.captions) as tmp:
        tmp.write_text(json.dumps({"headline": caption}, indent=2), encoding="utf-8")


run_step(snakemake, main)
