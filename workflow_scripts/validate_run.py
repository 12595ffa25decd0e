"""Rule validate_run: a run directory written by any backend meets the file contracts (else one line)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: toolshift without installing it

from toolshift.contracts import atomic_path  # noqa: E402
from toolshift.validate import validate_run  # noqa: E402
from toolshift.workflow import run_step  # noqa: E402


def main(smk) -> None:
    run_dir = Path(smk.input.responses).parent
    validate_run(
        run_dir,
        smk.input.prompts,
        condition=smk.wildcards.condition,
        model=smk.wildcards.model,
        require_activations=bool(smk.params.require_activations),
        episodes_path=smk.input.episodes,
    )
    with atomic_path(smk.output[0]) as tmp:
        tmp.write_text(f"OK {run_dir}\n", encoding="utf-8")


run_step(snakemake, main)
