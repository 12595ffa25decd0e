"""Rule headline_figure: tables/headline.csv -> the headline forest plot (PNG + SVG) and its caption (the
figure the registry, toolshift.report.figures.registry, gives this rule)."""

import json

from toolshift.common.steps import run_step
from toolshift.contracts import HEADLINE_COLUMNS, read_table
from toolshift.files import atomic_path
from toolshift.report.figures.registry import drawing_function, figures_of

(HEADLINE,) = figures_of("headline_figure")


def main(smk) -> None:
    caption = drawing_function(HEADLINE)(read_table(smk.input.headline, HEADLINE_COLUMNS), smk.output.png)
    with atomic_path(smk.output.captions) as tmp:
        tmp.write_text(json.dumps({HEADLINE: caption}, indent=2), encoding="utf-8")


run_step(snakemake, main)
