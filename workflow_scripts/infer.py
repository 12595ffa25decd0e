"""Rules infer_shard and intervene_shard: one shard of generations (+ residual capture, or a hook)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.runner import run_shard  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    run_shard(
        model_name=smk.wildcards.model,
        entry=dict(smk.params.entry),
        model_dir=Path(smk.input.model),
        episodes_path=Path(smk.input.episodes),
        prompts_path=Path(smk.input.prompts),
        results_root=Path(smk.params.results),
        generation=dict(smk.params.generation),
        shard=int(smk.wildcards.shard),
        n_shards=smk.params.n_shards,
        responses_out=Path(smk.output.responses),
        activations_out=Path(smk.output.activations) if "activations" in smk.output.keys() else None,
        intervention=smk.wildcards.get("intervention"),
        vectors_path=Path(smk.input.vectors) if "vectors" in smk.input.keys() else None,
        layer=smk.params.get("layer"),
        free=smk.params.get("free"),
    )


run_step(snakemake, main)
