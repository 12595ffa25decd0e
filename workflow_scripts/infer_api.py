"""Rule infer_api: one (API model, dataset, condition) run through an OpenAI-compatible chat endpoint."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.api_inference import run_api_inference  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


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
