"""Rule vectors: activations of every condition + the split -> vectors/{model}/{dataset}.nc."""

from toolshift.analysis.vectors import compute_vectors, read_vectors, write_vectors
from toolshift.common.steps import run_step
from toolshift.contracts import read_prompts
from toolshift.datasets.splits import read_splits
from toolshift.models.activations import read_activations


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
        n_boot=smk.params.n_boot,
        refusal_from=read_vectors(smk.input.refusal_source) if "refusal_source" in smk.input.keys() else None,
    )
    write_vectors(vectors, smk.output[0])


run_step(snakemake, main)
