"""The study's headline number, computed in one place: the mean relative ASR reduction of ``tool`` vs
``direct`` across models, with its bootstrap CI.

For every (model, dataset) the harmful prompts of the chosen split that have both a ``direct`` and a
``tool`` verdict (intervention ``none``, one judge) are paired by prompt_id, and

    rr(model, dataset) = (ASR_direct - ASR_tool) / ASR_direct.

A model's value is the mean of its rr over the datasets; the headline of a dataset is the mean over
models of rr(model, dataset), and the overall headline (dataset ``all``, when there are several) the
mean over models of the models' values, so each model counts once. Confidence intervals: B bootstrap
replicates, each resampling the paired prompts of every (model, dataset) independently (with
replacement, within that model and dataset), then averaging exactly as above; the percentile interval
of the replicates. A (model, dataset) whose direct ASR is 0 has no rr: it is left out of the means and
listed in ``excluded``; a replicate in which an included cell's resampled direct ASR is 0 is dropped
(``n_boot_used`` counts the rest). Dropped replicates are not a random subset (they are the resamples
with the fewest unsafe direct answers), so a row keeping fewer than 90 % of them is flagged
(``low_boot_share``, `toolshift.analysis.stats.MIN_BOOT_SHARE`) and `headline_sentence` states the share used;
it also says so when the interval has zero width (e.g. a tool ASR of 0 in every resample), which is
the bootstrap failing to show uncertainty, not certainty. The per-row Bonett-Price interval of
`tables/asr.csv` stays finite in both cases.

`headline_table` is the only implementation: the tables (`tables/headline.csv`), the figure
(`toolshift.report.figures.headline.plot_headline`) and the book (`headline_sentence`) all read its output.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from toolshift.analysis.interventions import NO_INTERVENTION
from toolshift.analysis.stats import (
    bootstrap_relative_reductions,
    low_boot_share,
    percentile_ci,
    relative_reduction,
)
from toolshift.contracts import HEADLINE_COLUMNS, require_columns
from toolshift.datasets.splits import ALL, filter_split
from toolshift.errors import ContractError

MEAN_MODEL = "mean over models"
"""The ``model`` value of a headline row (the other rows are single models)."""


def _paired_cells(
    judged: pd.DataFrame, judge: str, condition: str, reference: str
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    rows = judged[
        judged["harmful"]
        & (judged["judge"] == judge)
        & (judged["intervention"] == NO_INTERVENTION)
        & judged["condition"].isin([condition, reference])
    ]
    cells: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    keys = ["model", "dataset", "condition", "prompt_id"]
    dup = rows.duplicated(keys)
    if dup.any():
        r = rows[dup].iloc[0]
        raise ContractError(
            f"judged table: duplicate prompt_id {r['prompt_id']!r} for {r['model']}/{r['dataset']}/"
            f"{r['condition']}/{judge}"
        )
    if rows.empty:
        return cells
    wide = rows.pivot(index=["model", "dataset", "prompt_id"], columns="condition", values="unsafe")
    if reference not in wide or condition not in wide:
        return cells
    wide = wide[[reference, condition]].dropna().sort_index()  # paired prompts, ordered by prompt_id
    for (model, dataset), g in wide.groupby(level=["model", "dataset"], sort=True):
        cells[(str(model), str(dataset))] = (
            g[reference].to_numpy(dtype=bool),
            g[condition].to_numpy(dtype=bool),
        )
    return cells


def headline_table(
    judged: pd.DataFrame,
    *,
    judge: str,
    splits: pd.DataFrame | None = None,
    split: str = "test",
    condition: str = "tool",
    reference: str = "direct",
    n_boot: int = 2000,
    seed: int = 0,
    conf: float = 0.95,
) -> pd.DataFrame:
    """The headline table (HEADLINE_COLUMNS) from a judged table; see the module docstring.

    With a `splits` table only the prompts of `split` count (``split`` column ``all`` without one).
    Raises ContractError when no (model, dataset) has paired `reference` and `condition` verdicts.
    """
    require_columns(
        judged,
        ("model", "dataset", "condition", "intervention", "judge", "prompt_id", "harmful", "unsafe"),
        "judged",
    )
    rows_in = judged if splits is None else filter_split(judged, splits, split)
    split_label = ALL if splits is None else split
    cells = _paired_cells(rows_in, judge, condition, reference)
    if not cells:
        raise ContractError(
            f"headline: no model/dataset has paired {reference!r} and {condition!r} verdicts of judge "
            f"{judge!r} on split {split_label!r}"
        )
    rng = np.random.default_rng(seed)
    point = {k: relative_reduction(b, t) for k, (b, t) in cells.items()}
    boot = {k: bootstrap_relative_reductions(b, t, n_boot, rng) for k, (b, t) in cells.items()}
    base = {
        "judge": judge,
        "split": split_label,
        "condition": condition,
        "reference": reference,
        "conf": conf,
        "n_boot": n_boot,
    }

    def row(dataset: str, model: str, keys: list[tuple[str, str]], by_model: bool) -> dict[str, object]:
        used = [k for k in keys if not math.isnan(point[k])]
        excluded = sorted(f"{m}/{d}" for m, d in keys if math.isnan(point[(m, d)]))
        pooled = used or keys  # the prompts behind the estimate (all of them when nothing is used)
        ref = np.concatenate([cells[k][0] for k in pooled])
        treat = np.concatenate([cells[k][1] for k in pooled])
        models = sorted({m for m, _ in used})
        if used:
            # mean over datasets within a model, then over models
            est = float(np.mean([np.mean([point[k] for k in used if k[0] == m]) for m in models]))
            reps = np.stack([boot[k] for k in used])  # (cells, n_boot)
            ok = ~np.isnan(reps).any(axis=0)
            per_model = np.stack(
                [reps[[i for i, k in enumerate(used) if k[0] == m]].mean(axis=0) for m in models]
            )
            lo, hi = percentile_ci(per_model.mean(axis=0)[ok], conf)
            n_used = int(ok.sum())
        else:
            est, lo, hi, n_used = math.nan, math.nan, math.nan, 0
        return {
            **base,
            "dataset": dataset,
            "model": model,
            "n_models": len(models) if by_model else int(bool(used)),
            "n": int(ref.size),
            "reference_asr": float(ref.mean()),
            "asr": float(treat.mean()),
            "rel_reduction": est,
            "rel_reduction_ci_low": lo,
            "rel_reduction_ci_high": hi,
            "n_boot_used": n_used,
            "low_boot_share": low_boot_share(n_used, n_boot),
            "excluded": ";".join(excluded),
        }

    out = []
    datasets = sorted({d for _, d in cells})
    for dataset in datasets:
        keys = [k for k in cells if k[1] == dataset]
        out += [row(dataset, m, [(m, dataset)], by_model=False) for m, _ in keys]
        out.append(row(dataset, MEAN_MODEL, keys, by_model=True))
    if len(datasets) > 1:
        out.append(row(ALL, MEAN_MODEL, list(cells), by_model=True))
    return pd.DataFrame(out, columns=list(HEADLINE_COLUMNS))


def headline_row(table: pd.DataFrame, dataset: str | None = None) -> pd.Series:
    """The mean-over-models row of `dataset` (default: ``all`` if present, else the only dataset)."""
    require_columns(table, HEADLINE_COLUMNS, "headline table")
    means = table[table["model"] == MEAN_MODEL]
    if dataset is None:
        names = list(dict.fromkeys(means["dataset"]))
        if ALL in names:
            dataset = ALL
        elif len(names) == 1:
            dataset = names[0]
        else:
            raise ContractError(f"headline table: several datasets ({', '.join(names)}) and no 'all' row")
    sel = means[means["dataset"] == dataset]
    if len(sel) != 1:
        raise ContractError(f"headline table: no mean-over-models row for dataset {dataset!r}")
    return sel.iloc[0]


def _pct(x: float) -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def headline_sentence(table: pd.DataFrame, dataset: str | None = None) -> str:
    """One sentence stating the headline (estimate, CI, models, prompts, split, judge) for the book."""
    r = headline_row(table, dataset)
    where = "all datasets" if r["dataset"] == ALL else f"dataset {r['dataset']}"
    conf = f"{100 * float(r['conf']):g} %"
    left_out = r["excluded"] if isinstance(r["excluded"], str) else ""
    excluded = f"; left out (direct ASR 0): {left_out.replace(';', ', ')}" if left_out else ""
    return (
        f"Across {int(r['n_models'])} model(s) on {where} ({r['split']} prompts, {int(r['n'])} paired "
        f"{r['reference']}/{r['condition']} verdicts on harmful prompts over all models, judge "
        f"{r['judge']}), the mean relative reduction of ASR from {r['reference']} to "
        f"{r['condition']} is {_pct(r['rel_reduction'])} ({conf} bootstrap CI "
        f"{_pct(r['rel_reduction_ci_low'])} to {_pct(r['rel_reduction_ci_high'])}){excluded}."
        + _bootstrap_note(r)
    )


def _bootstrap_note(r: pd.Series) -> str:
    """What the reader must know about the headline's bootstrap: replicates dropped, a zero-width CI."""
    n_boot, used = int(r["n_boot"]), int(r["n_boot_used"])
    lo, hi = float(r["rel_reduction_ci_low"]), float(r["rel_reduction_ci_high"])
    notes = []
    if used < n_boot:
        flag = " (below 90 %: the interval describes only resamples with unsafe direct answers)"
        notes.append(
            f"{n_boot - used} of {n_boot} bootstrap replicates ({100 * (n_boot - used) / n_boot:.1f} %) "
            "had a resampled direct ASR of 0 and were dropped"
            + (flag if low_boot_share(used, n_boot) else "")
        )
    if used and lo == hi:
        notes.append(
            "the interval has zero width because every usable resample gives the same value: the "
            "bootstrap shows no uncertainty here, which is not certainty (see the Bonett-Price intervals "
            "of the ASR table)"
        )
    return "".join(f" {n[0].upper()}{n[1:]}." for n in notes)


__all__ = ["HEADLINE_COLUMNS", "MEAN_MODEL", "headline_row", "headline_sentence", "headline_table"]
