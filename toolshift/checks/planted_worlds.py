"""Can the DAG tell the planted worlds apart? The world x claim table (``tables/validation_worlds.csv``).

Each planted world (`toolshift.models.fixture_models.planted`: `tool`, `trace`, `dilution`) records in its
`FIXTURE.json` the verdicts each claim may get (`truth`); the random-weight fixtures are the null world,
where no claim may come out supported or contradicted (`NULL_TRUTH`, or inconclusive). `world_claim_table`
reads the DAG's own claim verdicts (`tables/claims.csv`, `toolshift.analysis.claims`) under one judge on
the dataset the worlds were calibrated on, and checks every cell: a verdict outside the allowed ones, or a
claim the run did not test, fails its row. One wrong cell means a stage of the pipeline (a condition, a
contrast, an equivalence test, a vector, an intervention) no longer separates the explanations it was built
to separate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.analysis.claims import CLAIM_GROUPS, DOSE, INCONCLUSIVE, NOT_TESTED
from toolshift.contracts import CLAIMS_COLUMNS, WORLD_CLAIM_COLUMNS, require_columns
from toolshift.errors import ContractError, ToolshiftError
from toolshift.models.fixture_models.planted import NULL_TRUTH

NULL_WORLD = "null"
"""The world column of the random-weight fixtures."""
NULL_ALLOWED: dict[str, tuple[str, ...]] = {c: (*v, INCONCLUSIVE) for c, v in NULL_TRUTH.items()}
"""What the null world's claims may get: not shown, or inconclusive (the positive control cannot move a
random model's ASR)."""


def _truth(model: str, record: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    truth = record.get("truth")
    if not isinstance(truth, Mapping):
        raise ContractError(f"{model}: FIXTURE.json's 'planted' has no 'truth' (built before the worlds)")
    known = {g.id for g in (*CLAIM_GROUPS, DOSE)}
    unknown = sorted(set(truth) - known)
    if unknown:
        raise ContractError(f"{model}: FIXTURE.json's truth names unknown claim(s) {', '.join(unknown)}")
    return {claim: tuple(truth[claim]) for claim in truth}


def world_claim_table(
    claims: pd.DataFrame,
    *,
    worlds: Mapping[str, Mapping[str, Any]],
    null_models: Sequence[str] = (),
    judge: str,
    split: str = "test",
) -> pd.DataFrame:
    """Every planted world's claim verdicts against its truth, and the null world's (WORLD_CLAIM_COLUMNS).

    `worlds` maps each planted model to its record (`FIXTURE.json`'s ``planted``), `null_models` are the
    random-weight fixtures, checked on the datasets the worlds were calibrated on; `claims` is the DAG's
    claims table. Rows: the worlds in WORLDS order (tool, trace, dilution), then the null models, each
    claim in CLAIM_GROUPS order, then DOSE.
    """
    require_columns(claims, CLAIMS_COLUMNS, "claims table")
    sel = claims[(claims["judge"] == judge) & (claims["split"] == split)]
    verdicts = {(r.model, r.dataset, r.claim): (r.verdict, r.components) for r in sel.itertuples(index=False)}
    checked: list[tuple[str, str, str, dict[str, tuple[str, ...]]]] = []
    from toolshift.models.fixture_models.planted_weights import WORLDS

    def order(item: tuple[str, Mapping[str, Any]]) -> int:
        world = str(item[1].get("world", "trace"))
        return WORLDS.index(world) if world in WORLDS else len(WORLDS)

    for model, record in sorted(worlds.items(), key=order):  # stable: a world's models in the given order
        dataset = str(record["calibration"]["dataset"])
        checked.append((model, str(record.get("world", "trace")), dataset, _truth(model, record)))
    datasets = list(dict.fromkeys(dataset for _, _, dataset, _ in checked))
    checked += [(model, NULL_WORLD, dataset, NULL_ALLOWED) for model in null_models for dataset in datasets]
    rows = []
    for model, world, dataset, truth in checked:
        for group in (*CLAIM_GROUPS, DOSE):
            if group.id not in truth:
                continue
            verdict, components = verdicts.get((model, dataset, group.id), (NOT_TESTED, ""))
            rows.append(
                {
                    "model": model,
                    "world": world,
                    "dataset": dataset,
                    "judge": judge,
                    "claim": group.id,
                    "expected": " or ".join(truth[group.id]),
                    "verdict": verdict,
                    "passed": verdict in truth[group.id],
                    "components": components,
                }
            )
    return pd.DataFrame(rows, columns=list(WORLD_CLAIM_COLUMNS))


def world_claim_tables(
    *,
    models: Mapping[str, str],
    null_models: Sequence[str],
    datasets: Sequence[str],
    judge: str,
    claims_csv: str,
) -> pd.DataFrame:
    """`world_claim_table` for the planted models of a run (name -> model folder) whose calibration dataset
    the run has."""
    from toolshift.models.fixtures import read_fixture_marker

    worlds = {}
    for model, folder in models.items():
        record = (read_fixture_marker(folder) or {}).get("planted")
        if not record:
            raise ContractError(f"{Path(folder)}: not a planted world (its FIXTURE.json has no 'planted')")
        if record["calibration"]["dataset"] in datasets:
            worlds[model] = record
    if not worlds:
        return pd.DataFrame(columns=list(WORLD_CLAIM_COLUMNS))
    claims = pd.read_csv(claims_csv, keep_default_na=False)
    return world_claim_table(claims, worlds=worlds, null_models=null_models, judge=judge)


def check_world_cells(table: pd.DataFrame) -> None:
    """Raise a one-line ToolshiftError naming every wrong cell of a world x claim table (none: return)."""
    wrong = table[~table["passed"].astype(bool)]
    if wrong.empty:
        return
    cells = "; ".join(
        f"{r.model} ({r.world}) {r.claim}: {r.verdict}, expected {r.expected}" for r in wrong.itertuples()
    )
    raise ToolshiftError(
        f"planted worlds: {len(wrong)} of {len(table)} world x claim cells wrong ({cells}): a stage of the "
        "pipeline no longer tells the planted explanations apart (validation.worlds_must_pass: false writes "
        "the table with them marked)"
    )
