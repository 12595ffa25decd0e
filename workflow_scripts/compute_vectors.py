"""Rule vectors: activations of every condition -> vectors/{model}/{dataset}.nc."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.activations import read_activations  # noqa: E402
from toolshift.contracts import read_prompts  # noqa: E402
from toolshift.vectors import compute_vectors, write_vectors  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    acts = {c: read_activations(p) for c, p in zip(smk.params.conditions, smk.input.activations, strict=True)}
    vectors = compute_vectors(
        acts, read_prompts(smk.input.prompts), model=smk.wildcards.model, dataset=smk.wildcards.dataset
    )
    write_vectors(vectors, smk.output[0])


run_step(snakemake, main)
