"""Rule infer_api: one (API model, dataset, condition) run through an OpenAI-compatible chat endpoint."""

from pathlib import Path

from toolshift.common.steps import run_step
from toolshift.inference.api import run_api_inference


def main(smk) -> None:
    run_api_inference(
        model_name=smk.wildcards.model,
        entry=dict(smk.params.entry),
        episodes_path=Path(smk.input.episodes),
        prompts_path=Path(smk.input.prompts),
        results_root=Path(smk.params.results),
        max_new_tokens=int(smk.params.max_new_tokens),
        responses_out=Path(smk.output.responses),
        cache_dir=Path(smk.params.cache_dir),
        progress=False,
    )


run_step(snakemake, main)
