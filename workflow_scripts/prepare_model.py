"""Rule model: build a fixture model offline, or download a hub model at its pinned revision."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.modeling import prepare_model  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    prepare_model(dict(smk.params.entry), Path(smk.output[0]), episodes=dict(smk.params.episodes))


run_step(snakemake, main)
