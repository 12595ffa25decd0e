"""Rule headline_figure: tables/headline.csv -> the headline forest plot (PNG + SVG) and its caption."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

import json  # noqa: E402

from toolshift.contracts import atomic_path, read_table  # noqa: E402
from toolshift.headline import HEADLINE_COLUMNS  # noqa: E402
from toolshift.plots import plot_headline  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    caption = plot_headline(read_table(smk.input.headline, HEADLINE_COLUMNS), smk.output.png)
    with atomic_path(smk.output.captions) as tmp:
        tmp.write_text(json.dumps({"headline": caption}, indent=2), encoding="utf-8")


run_step(snakemake, main)
