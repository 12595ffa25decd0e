"""Rule figures: tables and vectors -> the seaborn figures (PNG + SVG) and their captions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

import json  # noqa: E402

from toolshift.contracts import atomic_path, read_table  # noqa: E402
from toolshift.headline import HEADLINE_COLUMNS  # noqa: E402
from toolshift.plots import (  # noqa: E402
    plot_asr_by_condition,
    plot_category_heatmap,
    plot_cosine_by_layer,
    plot_dose_response,
    plot_headline,
    plot_pca,
    plot_probes,
    plot_projections,
)
from toolshift.tables import ASR_TABLE_COLUMNS  # noqa: E402
from toolshift.vectors import read_vectors  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    judge = smk.params.judge
    asr = read_table(smk.input.asr, ASR_TABLE_COLUMNS)
    asr = asr[asr["judge"] == judge]
    vectors = {}
    for path in smk.input.vectors:
        ds = read_vectors(path)
        vectors[f"{ds.attrs['model']} / {ds.attrs['dataset']}"] = ds
    out = smk.output
    captions = {
        "asr_by_condition": plot_asr_by_condition(asr, out.asr_by_condition, judge=judge),
        "cosine_by_layer": plot_cosine_by_layer(vectors, out.cosine_by_layer),
        "dose_response": plot_dose_response(asr, out.dose_response),
        "pca": plot_pca(vectors, out.pca),
        "probes": plot_probes(vectors, out.probes),
        "projections": plot_projections(vectors, out.projections),
        "asr_by_category": plot_category_heatmap(
            read_table(smk.input.asr_by_category, ASR_TABLE_COLUMNS), out.asr_by_category, judge
        ),
        "headline": plot_headline(read_table(smk.input.headline, HEADLINE_COLUMNS), out.headline),
    }
    with atomic_path(out.captions) as tmp:
        tmp.write_text(json.dumps(captions, indent=2), encoding="utf-8")


run_step(snakemake, main)
