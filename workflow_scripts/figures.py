"""Rule figures: tables and vectors -> the seaborn figures (PNG + SVG) and their captions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

import json  # noqa: E402

from toolshift.contracts import ASR_COLUMNS, atomic_path, read_table  # noqa: E402
from toolshift.plots import plot_asr_by_condition, plot_cosine_by_layer, plot_dose_response  # noqa: E402
from toolshift.vectors import read_vectors  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    asr = read_table(smk.input.asr, ASR_COLUMNS)
    asr = asr[asr["judge"] == smk.params.judge]
    vectors = {}
    for path in smk.input.vectors:
        ds = read_vectors(path)
        vectors[f"{ds.attrs['model']} / {ds.attrs['dataset']}"] = ds
    captions = {
        "asr_by_condition": plot_asr_by_condition(asr, smk.output.asr_by_condition, judge=smk.params.judge),
        "cosine_by_layer": plot_cosine_by_layer(vectors, smk.output.cosine_by_layer),
        "dose_response": plot_dose_response(asr, smk.output.dose_response),
    }
    with atomic_path(smk.output.captions) as tmp:
        tmp.write_text(json.dumps(captions, indent=2), encoding="utf-8")


run_step(snakemake, main)
