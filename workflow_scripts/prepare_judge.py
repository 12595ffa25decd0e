"""Rule prepare_judge: a judge model directory (a tiny fixture built offline, or a hub download)."""

from pathlib import Path

from toolshift.common.steps import run_step
from toolshift.models.fixture_models.judges import build_judge_fixture
from toolshift.models.prepare import prepare_model


def main(smk) -> None:
    entry = dict(smk.params.entry)
    out = Path(smk.output[0])
    if entry["source"] == "fixture":
        build_judge_fixture(entry["variant"], out, seed=entry["fixture"]["seed"])
    else:
        prepare_model({"source": "hub", "hub_id": entry["hub_id"], "revision": entry["revision"]}, out)


run_step(snakemake, main)
