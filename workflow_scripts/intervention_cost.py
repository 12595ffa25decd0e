"""Rule intervention_cost: KL cost of every intervention of one model on one dataset (harmless prompts)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.intervention_cost import run_intervention_costs  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    run_intervention_costs(
        model_name=smk.wildcards.model,
        entry=dict(smk.params.entry),
        model_dir=Path(smk.input.model),
        dataset=smk.wildcards.dataset,
        episodes_paths={"direct": Path(smk.input.direct), "tool": Path(smk.input.tool)},
        prompts_path=Path(smk.input.prompts),
        splits_path=Path(smk.input.splits),
        vectors_paths=dict(zip(smk.params.vector_datasets, map(Path, smk.input.vectors), strict=True)),
        results_root=Path(smk.params.results),
        interventions=list(smk.params.interventions),
        layer=smk.params.layer,
        generation=dict(smk.params.generation),
        out=Path(smk.output[0]),
        prompt_positions=smk.params.cost["prompt_positions"],
        n_generated=smk.params.cost["n_generated"],
    )


run_step(snakemake, main)
