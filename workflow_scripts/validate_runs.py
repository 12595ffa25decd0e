"""Rule validate_runs: every condition run of a model on a dataset, written by any backend, meets the file
contracts (else one line naming the file and the problem)."""

from pathlib import Path

from toolshift.checks.run_contracts import validate_run
from toolshift.common.steps import run_step
from toolshift.files import atomic_path


def main(smk) -> None:
    checked = []
    for condition, responses, episodes in zip(
        smk.params.conditions, smk.input.responses, smk.input.episodes, strict=True
    ):
        run_dir = Path(responses).parent
        validate_run(
            run_dir,
            smk.input.prompts,
            condition=condition,
            model=smk.wildcards.model,
            require_activations=bool(smk.params.require_activations),
            episodes_path=episodes,
        )
        checked.append(f"OK {run_dir}\n")
    with atomic_path(smk.output[0]) as tmp:
        tmp.write_text("".join(checked), encoding="utf-8")


run_step(snakemake, main)
