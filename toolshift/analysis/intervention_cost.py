"""The intervention cost table: per-prompt KL costs -> ``tables/intervention_cost.csv`` (rule
`analysis_tables`).

The costs are measured during the intervention jobs (`toolshift.inference.intervention_cost`, which says
what ``kl_prompt``, ``kl_last`` and ``kl_generated`` are) and written to ``costs/{model}/{dataset}.parquet``
(`toolshift.contracts.COST_COLUMNS`); this module reads them and summarises them per intervention and split
(`toolshift.contracts.COST_TABLE_COLUMNS`): the ``validation`` rows bound alpha in selection, the ``test``
rows are reported and never read by a choice.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from toolshift.analysis.tables import intervention_rank
from toolshift.contracts import COST_COLUMNS, COST_TABLE_COLUMNS, read_table, require_columns


def read_costs(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a ``costs/{model}/{dataset}.parquet`` file and check its columns."""
    return read_table(path, COST_COLUMNS)


def intervention_cost_table(
    costs: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, conf: float = 0.95
) -> pd.DataFrame:
    """Mean KL per (model, dataset, intervention) with a percentile bootstrap CI over prompts."""
    require_columns(costs, COST_COLUMNS, "intervention costs")
    rows = []
    keys = ["model", "dataset", "intervention", "condition", "layer", "split"]
    for key, g in costs.groupby(keys, sort=False):
        kl = g["kl_prompt"].to_numpy(dtype=float)
        kl = kl[~np.isnan(kl)]
        lo = hi = math.nan
        if kl.size:
            rng = np.random.default_rng(seed)
            means = kl[rng.integers(0, kl.size, size=(n_boot, kl.size))].mean(axis=1)
            tail = (1 - conf) / 2 * 100
            lo, hi = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": int(kl.size),
                "kl_mean": float(kl.mean()) if kl.size else math.nan,
                "kl_ci_low": lo,
                "kl_ci_high": hi,
                "kl_last_mean": float(np.nanmean(g["kl_last"])) if g["kl_last"].notna().any() else math.nan,
                "kl_generated_mean": float(np.nanmean(g["kl_generated"]))
                if g["kl_generated"].notna().any()
                else math.nan,
            }
        )
    table = pd.DataFrame(rows, columns=list(COST_TABLE_COLUMNS))
    split_rank = {"validation": 0, "test": 1}
    order = sorted(
        range(len(table)),
        key=lambda i: (
            table["model"][i],
            table["dataset"][i],
            intervention_rank(table["intervention"][i]),
            split_rank.get(table["split"][i], 2),
        ),
    )
    return table.iloc[order].reset_index(drop=True)


__all__ = ["intervention_cost_table", "read_costs"]
