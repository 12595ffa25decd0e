"""Rule vectors: activations of every condition + the split -> vectors/{model}/{dataset}.nc."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.activations import read_activations  # noqa: E402
from toolshift.contracts import read_prompts  # noqa: E402
from toolshift.splits import read_splits  # noqa: E402
from toolshift.vectors import compute_vectors, write_vectors  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    acts = {c: read_activations(p) for c, p in zip(smk.params.conditions, smk.input.activations, strict=True)}
    vectors = compute_vectors(
        acts,
        read_prompts(smk.input.prompts),
        model=smk.wildcards.model,
        dataset=smk.wildcards.dataset,
        splits=read_splits(smk.input.splits),
        exclude_last_frac=smk.params.exclude_last_frac,
        probe_folds=smk.params.probes["folds"],
        probe_l2=smk.params.probes["l2"],
        seed=smk.params.seed,
    )
    write_vectors(vectors, smk.output[0])


run_step(snakemake, main)
