"""The tables of rule `analysis_tables` that read the vectors files: transfer and representation.

Columns: `toolshift.contracts.TRANSFER_COLUMNS` (`tables/transfer.csv`) and
`toolshift.contracts.REPRESENTATION_COLUMNS` (`tables/representation.csv`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from toolshift.analysis.interventions import NO_INTERVENTION, parse_intervention_id
from toolshift.analysis.tables import condition_rank
from toolshift.analysis.vectors import evaluation_prompts, refusal_position, tool_vector_cosines
from toolshift.contracts import ASR_TABLE_COLUMNS, REPRESENTATION_COLUMNS, TRANSFER_COLUMNS, require_columns
from toolshift.datasets.splits import ALL
from toolshift.errors import ConfigError, ContractError


def transfer_table(
    asr: pd.DataFrame, vectors: Mapping[tuple[str, str], xr.Dataset] | None = None
) -> pd.DataFrame:
    """The transfer rows of an ASR table, beside the target's ``direct`` ASR and own ``add`` at that alpha.

    `vectors` maps (model, dataset) to its vectors file: the row then gives the layer the transfer ran
    at (the source's selected layer) and the cosine there between the two datasets' tool vectors.
    """
    require_columns(asr, ASR_TABLE_COLUMNS, "asr table")
    rows = []
    for r in asr[asr["category"] == ALL].itertuples(index=False):
        try:
            spec = parse_intervention_id(str(r.intervention))
        except ConfigError:
            continue
        if spec.kind != "transfer":
            continue
        same = asr[
            (asr["model"] == r.model)
            & (asr["dataset"] == r.dataset)
            & (asr["judge"] == r.judge)
            & (asr["split"] == r.split)
            & (asr["category"] == ALL)
        ].set_index(["condition", "intervention"])["asr"]
        layer, cos = math.nan, math.nan
        if vectors is not None and (r.model, spec.source) in vectors and (r.model, r.dataset) in vectors:
            src, dst = vectors[(r.model, spec.source)], vectors[(r.model, r.dataset)]
            layer = int(src.attrs["selected_layer"])
            cos = float(tool_vector_cosines(src, dst).sel(layer=layer).values)
        rows.append(
            {
                "model": r.model,
                "judge": r.judge,
                "split": r.split,
                "source_dataset": spec.source,
                "target_dataset": r.dataset,
                "alpha": spec.alpha,
                "intervention": r.intervention,
                "layer": layer,
                **{c: getattr(r, c) for c in TRANSFER_COLUMNS[8:17]},
                "direct_asr": float(same.get(("direct", NO_INTERVENTION), math.nan)),
                "in_dataset_add_asr": float(same.get(("direct", f"add_a{spec.alpha:g}"), math.nan)),
                "cos_tool_vectors": cos,
            }
        )
    return pd.DataFrame(rows, columns=list(TRANSFER_COLUMNS))


def representation_table(vectors: Mapping[tuple[str, str], xr.Dataset]) -> pd.DataFrame:
    """The representation numbers of every vectors file at its selected layer (REPRESENTATION_COLUMNS)."""
    rows = []
    for (model, dataset), ds in vectors.items():
        if "selected_layer" not in ds.attrs:
            raise ContractError(f"vectors for {model}/{dataset}: missing attribute 'selected_layer'")
        layer = int(ds.attrs["selected_layer"])
        mask, split = evaluation_prompts(ds)
        harmful = np.asarray(ds["harmful"].values, dtype=bool)[mask]
        pos = refusal_position(ds).sel(layer=layer)
        at = ds.sel(layer=layer)
        tool_norm = float(np.linalg.norm(at["tool_vector"].values))
        for c in ds["condition"].values:
            vals = pos.sel(condition=c).values[harmful]
            mean = float(vals.mean()) if vals.size else math.nan
            half = 1.96 * float(vals.std(ddof=1)) / math.sqrt(vals.size) if vals.size > 1 else math.nan
            shift_norm = float(np.linalg.norm(at["shift"].sel(condition=c).values))
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "condition": str(c),
                    "layer": layer,
                    "split": split,
                    "n_harmful": int(harmful.sum()),
                    "cos_shift_tool": float(at["cos_shift_tool"].sel(condition=c)),
                    "cos_shift_refusal": float(at["cos_shift_refusal"].sel(condition=c)),
                    "shift_norm_ratio": shift_norm / tool_norm if tool_norm > 0 else math.nan,
                    "refusal_position": mean,
                    "refusal_position_ci_low": mean - half,
                    "refusal_position_ci_high": mean + half,
                    "probe_accuracy": float(at["probe_accuracy"].sel(condition=c))
                    if "probe_accuracy" in ds
                    else math.nan,
                    "probe_test_accuracy": float(at["probe_test_accuracy"].sel(condition=c))
                    if "probe_test_accuracy" in ds
                    else math.nan,
                }
            )
    table = pd.DataFrame(rows, columns=list(REPRESENTATION_COLUMNS))
    order = sorted(
        range(len(table)),
        key=lambda i: (table["model"][i], table["dataset"][i], condition_rank(table["condition"][i])),
    )
    return table.iloc[order].reset_index(drop=True)


__all__ = ["representation_table", "transfer_table"]
