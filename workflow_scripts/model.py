"""Rule model: build a fixture model offline, or download a hub model at its pinned revision."""

from pathlib import Path

from toolshift.common.steps import run_step
from toolshift.models.prepare import prepare_model


def main(smk) -> None:
    prepare_model(dict(smk.params.entry), Path(smk.output[0]), episodes=dict(smk.params.episodes))


run_step(snakemake, main)
