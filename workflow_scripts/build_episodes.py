"""Rule episodes: prompts.parquet -> one episodes JSONL per condition (zoom crops and overrides beside)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.contracts import read_prompts  # noqa: E402
from toolshift.episodes import build_episodes_by_condition, write_episodes  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    prompts = read_prompts(smk.input.prompts)
    results = Path(smk.params.results)
    Path(smk.output.images).mkdir(parents=True, exist_ok=True)
    episodes = build_episodes_by_condition(prompts, smk.params.conditions, results, **smk.params.options)
    for condition, path in zip(smk.params.conditions, smk.output.episodes, strict=True):
        write_episodes(episodes[condition], path)


run_step(snakemake, main)
