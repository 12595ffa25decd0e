"""Rule episodes: prompts.parquet -> one episodes JSONL per condition (zoom crops and overrides beside)."""

from pathlib import Path

from toolshift.common.steps import run_step
from toolshift.contracts import read_prompts
from toolshift.episodes.build import build_episodes_by_condition, write_episodes


def main(smk) -> None:
    prompts = read_prompts(smk.input.prompts)
    results = Path(smk.params.results)
    Path(smk.output.images).mkdir(parents=True, exist_ok=True)
    episodes = build_episodes_by_condition(prompts, smk.params.conditions, results, **smk.params.options)
    for condition, path in zip(smk.params.conditions, smk.output.episodes, strict=True):
        write_episodes(episodes[condition], path)


run_step(snakemake, main)
