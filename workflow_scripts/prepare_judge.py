"""Rule prepare_judge: a judge model directory (a tiny fixture built offline, or a hub download)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.fixture_models.judges import build_judge_fixture  # noqa: E402
from toolshift.modeling import prepare_model  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    entry = dict(smk.params.entry)
    out = Path(smk.output[0])
    if entry["source"] == "fixture":
        build_judge_fixture(entry["variant"], out, seed=entry["fixture"]["seed"])
    else:
        prepare_model({"source": "hub", "hub_id": entry["hub_id"], "revision": entry["revision"]}, out)


run_step(snakemake, main)
