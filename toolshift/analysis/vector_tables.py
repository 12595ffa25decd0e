"""The tables of rule `analysis_tables` that read the vectors files: transfer, representation and the
control-relative vectors.

Columns: `toolshift.contracts.TRANSFER_COLUMNS` (`tables/transfer.csv`),
`toolshift.contracts.REPRESENTATION_COLUMNS` (`tables/representation.csv`) and
`toolshift.contracts.RELATIVE_VECTOR_COLUMNS` (`tables/relative_vectors.csv`). Every number is at the
file's selected layer (``selected_layer``, the one `tables/selection.csv` reports), never the best layer.
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

MECHANISM_REFERENCES: tuple[str, ...] = (
    "direct",
    "text_trail",
    "text_trail_long",
    "tool_offered",
    "image_turn",
    "image_after",
)
"""The references of the control-relative vectors h(tool) - h(reference) that `tables/relative_vectors.csv`
always lists (``direct``: the tool vector itself); a reference whose condition did not run gets a row
saying so."""

RELATIVE_VECTOR_COLUMNS: tuple[str, ...] = (
    "model",
    "dataset",
    "reference",
    "layer",
    "status",
    "n_harmful",
    "norm",
    "norm_ratio",
    "cos_refusal",
    "cos_refusal_ci_low",
    "cos_refusal_ci_high",
    "cos_refusal_p",
    *(f"cos_to_{r}" for r in MECHANISM_REFERENCES),
)
"""`tables/relative_vectors.csv` (the contract lives here, beside the one function that writes it): per
vectors file and reference (MECHANISM_REFERENCES, then every other condition of the file), at the selected
layer: the control-relative vector's norm and its ratio to the tool vector's, its cosine with the refusal
direction (bootstrap CI over the train harmful prompts and the permutation p with the labels tool and
reference shuffled within prompt: the file's ``relative_null``) and with each MECHANISM_REFERENCES'
relative vector; ``status`` is ``ok`` or why the row is empty."""


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


def _selected_layer(ds: xr.Dataset, model: str, dataset: str) -> int:
    """The file's selected layer; its nulls must have been computed there."""
    if "selected_layer" not in ds.attrs:
        raise ContractError(f"vectors for {model}/{dataset}: missing attribute 'selected_layer'")
    layer = int(ds.attrs["selected_layer"])
    if "null_layer" in ds.attrs and int(ds.attrs["null_layer"]) != layer:
        raise ContractError(
            f"vectors for {model}/{dataset}: nulls at layer {int(ds.attrs['null_layer'])}, "
            f"but the selected layer is {layer}"
        )
    return layer


def _null_columns(ds: xr.Dataset, condition: str) -> dict[str, float]:
    """The `shift_null` entries of one condition as representation columns (NaN without the variable)."""
    out: dict[str, float] = {}
    for stat in ("cos_shift_refusal", "refusal_shift", "probe_test_accuracy", "probe_accuracy_change"):
        vals = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_perm": math.nan}
        if "shift_null" in ds:
            row = ds["shift_null"].sel(condition=condition, statistic=stat)
            vals = {str(q): float(v) for q, v in zip(row["quantity"].values, row.values, strict=True)}
        if stat in ("refusal_shift", "probe_accuracy_change"):
            out[stat] = vals["estimate"]
        out[f"{stat}_ci_low"], out[f"{stat}_ci_high"] = vals["ci_low"], vals["ci_high"]
        out[f"{stat}_p"] = vals["p_perm"]
    return out


def representation_table(vectors: Mapping[tuple[str, str], xr.Dataset]) -> pd.DataFrame:
    """The representation numbers of every vectors file at its selected layer (REPRESENTATION_COLUMNS)."""
    rows = []
    for (model, dataset), ds in vectors.items():
        layer = _selected_layer(ds, model, dataset)
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
                    **_null_columns(ds, str(c)),
                }
            )
    table = pd.DataFrame(rows, columns=list(REPRESENTATION_COLUMNS))
    order = sorted(
        range(len(table)),
        key=lambda i: (table["model"][i], table["dataset"][i], condition_rank(table["condition"][i])),
    )
    return table.iloc[order].reset_index(drop=True)


def relative_vectors_table(
    vectors: Mapping[tuple[str, str], xr.Dataset], conditions: list[str] | None = None
) -> pd.DataFrame:
    """The control-relative vectors h(tool) - h(reference) of every vectors file at its selected layer
    (RELATIVE_VECTOR_COLUMNS): one row per MECHANISM_REFERENCES entry (its ``status`` says when the file
    lacks it: the condition did not run) and per other reference in the file. `conditions` (the config's)
    only words the status of a missing reference."""
    rows = []
    for (model, dataset), ds in vectors.items():
        layer = _selected_layer(ds, model, dataset)
        present = [str(r) for r in ds["reference"].values] if "relative_vector" in ds else []
        at = ds.sel(layer=layer)
        tool_norm = float(np.linalg.norm(at["tool_vector"].values))
        for ref in list(MECHANISM_REFERENCES) + [r for r in present if r not in MECHANISM_REFERENCES]:
            row: dict[str, object] = {"model": model, "dataset": dataset, "reference": ref, "layer": layer}
            if ref not in present:
                run = conditions is None or ref in conditions
                row["status"] = f"not run: condition {ref} is " + (
                    "not in this vectors file" if run else "not in this run's conditions"
                )
                rows.append(row)
                continue
            norm = float(at["norm_relative_vector"].sel(reference=ref))
            null = ds["relative_null"].sel(reference=ref) if "relative_null" in ds else None

            def q(name: str, null: xr.DataArray | None = null) -> float:
                return math.nan if null is None else float(null.sel(quantity=name))

            cos = at["cos_relative"].sel(reference=ref)
            row |= {
                "status": "ok",
                "n_harmful": int(ds.attrs.get("n_harmful", 0)),
                "norm": norm,
                "norm_ratio": norm / tool_norm if tool_norm > 0 else math.nan,
                "cos_refusal": float(at["cos_relative_refusal"].sel(reference=ref)),
                "cos_refusal_ci_low": q("ci_low"),
                "cos_refusal_ci_high": q("ci_high"),
                "cos_refusal_p": q("p_perm"),
            }
            for other in MECHANISM_REFERENCES:
                row[f"cos_to_{other}"] = float(cos.sel(reference_b=other)) if other in present else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=list(RELATIVE_VECTOR_COLUMNS))


__all__ = [
    "MECHANISM_REFERENCES",
    "RELATIVE_VECTOR_COLUMNS",
    "relative_vectors_table",
    "representation_table",
    "transfer_table",
]
