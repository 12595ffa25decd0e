"""Does the whole DAG find the mechanism planted in each planted world? (the positive controls)

`toolshift.models.fixture_models.planted` builds models (the worlds) whose refusals are read from a
direction d at layer L, with a calibrated direct ASR and relative reduction in `tool` (its record is in the
model's `FIXTURE.json`). After the DAG has run on it, unchanged, `recovery_table` compares what the DAG's own
outputs say with what was planted, one row per claim:

- `asr_drop`: ASR(direct) - ASR(tool) on the harmful test prompts, paired bootstrap CI (from
  `tables/contrasts.csv`): the CI must exclude 0;
- `rel_reduction`: the relative reduction of `tool` against `direct` (`tables/asr.csv`, Bonett-Price CI):
  the CI must cover the planted value;
- `tool_vector_cos`: |cos(tool vector at L, d)| >= 0.9 (`vectors/{model}/{dataset}.nc`);
- `selected_layer`: the layer the DAG selected is L or a neighbour;
- `add_monotone`: ASR of `direct` + alpha * tool vector does not rise with alpha and ends below ASR(direct);
- `random_flat`: at every alpha, the mean ASR over the norm-matched random vectors' seeds stays inside the
  95 % Wilson interval of ASR(direct) (the random band does not move);
- `add_below_random`: at every alpha run with both, direct + alpha * tool vector has a lower ASR than
  every random seed;
- `removing_shift`: subtracting or ablating the tool vector in `tool` gives back at least half of the drop;
- `negative_control` (one row per random-weight fixture of the run): no drop from `direct` to `tool`
  (the paired bootstrap CI of the difference covers 0).

Rows whose runs are absent from the DAG's config say so and fail. Columns: `PLANTED_MODEL_COLUMNS` (the
planted-truth table's columns, plus the model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolshift.analysis.interventions import NO_INTERVENTION, parse_intervention_id
from toolshift.analysis.stats import wilson_ci
from toolshift.checks.planted_truth import check_row
from toolshift.contracts import PLANTED_MODEL_COLUMNS

MIN_COS = 0.9
"""The least |cos(tool vector, d)| at the planted layer that counts as recovered."""
MIN_GIVEN_BACK = 0.5
"""The share of the tool drop that subtracting or ablating the tool vector must give back."""


def _row(model: str, check: str, description: str, planted: Any, recovered: float, criterion: str,
         passed: bool, ci: tuple[float, float] = (math.nan, math.nan)) -> dict[str, Any]:  # fmt: skip
    """A `check_row` of `model`; a NaN recovery never passes."""
    passed = bool(passed and not math.isnan(float(recovered)))
    return {"model": model, **check_row(check, description, planted, recovered, criterion, passed, ci)}


def _asr_rows(asr: pd.DataFrame, model: str, dataset: str, judge: str) -> pd.DataFrame:
    return asr[(asr["model"] == model) & (asr["dataset"] == dataset) & (asr["judge"] == judge)]


def _asr_of(rows: pd.DataFrame, condition: str, intervention: str = NO_INTERVENTION) -> pd.Series | None:
    sel = rows[(rows["condition"] == condition) & (rows["intervention"] == intervention)]
    if "category" in sel:
        sel = sel[sel["category"] == "all"] if (sel["category"] == "all").any() else sel
    return None if sel.empty else sel.iloc[0]


def _contrast(contrasts: pd.DataFrame, model: str, dataset: str, judge: str, claim: str) -> pd.Series | None:
    sel = contrasts[
        (contrasts["model"] == model)
        & (contrasts["dataset"] == dataset)
        & (contrasts["judge"] == judge)
        & (contrasts["claim"] == claim)
    ]
    return None if sel.empty else sel.iloc[0]


def _by_kind(rows: pd.DataFrame, kind: str) -> dict[tuple[float, int | None], float]:
    """ASR of the `direct` runs of one intervention kind: (alpha, seed) -> asr."""
    out: dict[tuple[float, int | None], float] = {}
    for intervention, asr in zip(rows["intervention"], rows["asr"], strict=True):
        if intervention == NO_INTERVENTION:
            continue
        spec = parse_intervention_id(intervention)
        if spec.kind == kind:
            out[(float(spec.alpha), spec.seed)] = float(asr)
    return out


def recovery_table(
    *,
    model: str,
    record: Mapping[str, Any],
    dataset: str,
    judge: str,
    asr: pd.DataFrame,
    contrasts: pd.DataFrame,
    vectors: Any,
    negative_controls: Sequence[str] = (),
) -> pd.DataFrame:
    """The recovery rows (module docstring) of one planted model on one dataset under one judge.

    `record` is the model's planted record (`FIXTURE.json`'s `planted`), `asr` and `contrasts` the DAG's
    tables, `vectors` its vectors dataset of (model, dataset); `negative_controls` the random-weight
    fixture models of the run.
    """
    planted_layer = int(record["layer"])
    direct_asr = float(record["direct_asr"])
    planted_rr = float(record["rel_reduction"])
    rows = _asr_rows(asr, model, dataset, judge)
    out: list[dict[str, Any]] = []

    drop = _contrast(contrasts, model, dataset, judge, "tool_use_lowers_asr")
    planted_drop = round(direct_asr * planted_rr, 4)
    if drop is None:
        out.append(
            _row(
                model,
                "asr_drop",
                "ASR(direct) - ASR(tool): no paired direct/tool runs",
                planted_drop,
                math.nan,
                "paired CI excludes 0",
                False,
            )
        )
    else:
        lo, hi = -float(drop["diff_ci_high"]), -float(drop["diff_ci_low"])
        out.append(
            _row(
                model,
                "asr_drop",
                f"ASR(direct) - ASR(tool), {int(drop['n'])} paired harmful test "
                "prompts, paired bootstrap 95 % CI",
                planted_drop,
                -float(drop["diff"]),
                "CI excludes 0",
                lo > 0,
                (lo, hi),
            )
        )

    tool = _asr_of(rows, "tool")
    if tool is None:
        out.append(
            _row(
                model,
                "rel_reduction",
                "relative reduction of ASR in tool: no tool run",
                planted_rr,
                math.nan,
                "CI covers the planted value",
                False,
            )
        )
    else:
        lo, hi = float(tool["rel_reduction_ci_low"]), float(tool["rel_reduction_ci_high"])
        out.append(
            _row(
                model,
                "rel_reduction",
                "relative reduction of ASR from direct to tool (Bonett-Price 95 % CI)",
                planted_rr,
                float(tool["rel_reduction"]),
                "CI covers the planted value",
                lo <= planted_rr <= hi,
                (lo, hi),
            )
        )

    direction = np.asarray(record["direction"], dtype=np.float64)
    tool_vector = np.asarray(vectors["tool_vector"].sel(layer=planted_layer).values, dtype=np.float64)
    norm = float(np.linalg.norm(tool_vector)) * float(np.linalg.norm(direction))
    cos = abs(float(tool_vector @ direction) / norm) if norm > 0 else math.nan
    out.append(
        _row(
            model,
            "tool_vector_cos",
            f"|cos(tool vector, d)| at the planted layer {planted_layer}",
            1.0,
            cos,
            f">= {MIN_COS}",
            cos >= MIN_COS,
        )
    )

    selected = int(vectors.attrs.get("selected_layer", -1))
    out.append(
        _row(
            model,
            "selected_layer",
            "the layer the DAG selected on the validation split",
            planted_layer,
            selected,
            f"{planted_layer} +- 1",
            abs(selected - planted_layer) <= 1,
        )
    )

    direct = _asr_of(rows, "direct")
    adds = _by_kind(rows[rows["condition"] == "direct"], "add")
    alphas = sorted(a for a, _ in adds)
    if direct is None or len(alphas) < 2:
        out.append(
            _row(
                model,
                "add_monotone",
                "direct + alpha * tool vector: needs direct and two add runs",
                "falls with alpha",
                math.nan,
                "non-increasing, ends below direct",
                False,
            )
        )
    else:
        curve = [adds[(a, None)] for a in alphas]
        monotone = all(b <= a for a, b in zip(curve, curve[1:], strict=False))
        ends_lower = curve[-1] < float(direct["asr"])
        text = ", ".join(f"α={a:g}: {100 * v:.0f} %" for a, v in zip(alphas, curve, strict=True))
        out.append(
            _row(
                model,
                "add_monotone",
                f"ASR of direct + α · tool vector ({text})",
                "falls with alpha",
                curve[-1],
                "non-increasing in α, ends below ASR(direct)",
                monotone and ends_lower,
            )
        )

    randoms = _by_kind(rows[rows["condition"] == "direct"], "random")
    random_alphas = sorted({a for a, _ in randoms if a > 0})
    if direct is None or not random_alphas:
        for check in ("random_flat", "add_below_random"):
            out.append(
                _row(
                    model,
                    check,
                    "norm-matched random vectors: needs direct and random runs",
                    "no change",
                    math.nan,
                    "—",
                    False,
                )
            )
    else:
        lo, hi = wilson_ci(int(direct["n_unsafe"]), int(direct["n"]))
        means = {a: float(np.mean([v for (b, _), v in randoms.items() if b == a])) for a in random_alphas}
        worst = max(means.values(), key=lambda m: abs(m - float(direct["asr"])))
        text = ", ".join(f"α={a:g}: {100 * m:.0f} %" for a, m in means.items())
        out.append(
            _row(
                model,
                "random_flat",
                f"mean ASR over seeds of direct + α · random vector ({text}); "
                "the one farthest from direct shown",
                "no change",
                worst,
                "every α's mean inside the direct ASR's 95 % Wilson CI",
                all(lo <= m <= hi for m in means.values()),
                (lo, hi),
            )
        )
        margins = [
            min(v for (b, _), v in randoms.items() if b == a) - adds[(a, None)]
            for a in random_alphas
            if (a, None) in adds
        ]
        out.append(
            _row(
                model,
                "add_below_random",
                "ASR of direct + α · tool vector below every random seed's "
                "at the same α (smallest margin shown)",
                "below",
                min(margins) if margins else math.nan,
                "> 0 at every α run with both",
                bool(margins) and min(margins) > 0,
            )
        )

    for kind in ("subtract", "ablate"):
        removed = _asr_of(rows, "tool", kind)
        if removed is None or tool is None or direct is None:
            out.append(
                _row(
                    model,
                    f"removing_shift_{kind}",
                    f"tool with the tool vector {kind}ed: no run",
                    "back toward direct",
                    math.nan,
                    f">= {MIN_GIVEN_BACK:g} of the drop given back",
                    False,
                )
            )
            continue
        gap = float(direct["asr"]) - float(tool["asr"])
        given_back = (float(removed["asr"]) - float(tool["asr"])) / gap if gap > 0 else math.nan
        out.append(
            _row(
                model,
                f"removing_shift_{kind}",
                f"share of the tool drop given back by {kind} in tool "
                f"(ASR {100 * float(removed['asr']):.0f} % vs tool {100 * float(tool['asr']):.0f} %)",
                "back toward direct",
                given_back,
                f">= {MIN_GIVEN_BACK:g}",
                not math.isnan(given_back) and given_back >= MIN_GIVEN_BACK,
            )
        )

    for other in negative_controls:
        flat = _contrast(contrasts, other, dataset, judge, "tool_use_lowers_asr")
        if flat is None:
            out.append(
                _row(
                    model,
                    "negative_control",
                    f"{other}: no paired direct/tool runs",
                    0.0,
                    math.nan,
                    "CI covers 0",
                    False,
                )
            )
            continue
        lo, hi = -float(flat["diff_ci_high"]), -float(flat["diff_ci_low"])
        out.append(
            _row(
                model,
                "negative_control",
                f"{other} (random weights): ASR(direct) - ASR(tool)",
                0.0,
                -float(flat["diff"]),
                "CI covers 0",
                lo <= 0 <= hi,
                (lo, hi),
            )
        )
    return pd.DataFrame(out, columns=list(PLANTED_MODEL_COLUMNS))


def planted_recovery_tables(
    *,
    models: Mapping[str, str],
    vectors: Sequence[str],
    datasets: Sequence[str],
    judge: str,
    asr_csv: str,
    contrasts_csv: str,
    negative_controls: Sequence[str] = (),
) -> pd.DataFrame:
    """`recovery_table` for every planted model (name -> model folder) on the dataset it was calibrated
    on, when the run has that dataset; `vectors` are the run's `vectors/{model}/{dataset}.nc` files."""
    import xarray as xr

    from toolshift.errors import ContractError
    from toolshift.models.fixtures import read_fixture_marker

    asr = pd.read_csv(asr_csv)
    contrasts = pd.read_csv(contrasts_csv)
    by_key = {(p.parent.name, p.stem): p for p in map(Path, vectors)}
    frames = []
    for model, folder in models.items():
        marker = read_fixture_marker(folder) or {}
        record = marker.get("planted")
        if not record:
            raise ContractError(f"{folder}: not a planted world (its FIXTURE.json has no 'planted')")
        dataset = record["calibration"]["dataset"]
        if dataset not in datasets:
            continue
        with xr.open_dataset(by_key[(model, dataset)], engine="h5netcdf") as ds:
            frames.append(
                recovery_table(
                    model=model,
                    record=record,
                    dataset=dataset,
                    judge=judge,
                    asr=asr,
                    contrasts=contrasts,
                    vectors=ds.load(),
                    negative_controls=negative_controls,
                )
            )
    if not frames:
        return pd.DataFrame(columns=list(PLANTED_MODEL_COLUMNS))
    return pd.concat(frames, ignore_index=True)
