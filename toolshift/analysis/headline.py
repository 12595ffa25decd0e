"""The study's headline, computed in one place: how much ``tool`` lowers ASR, against ``direct`` and
against ``tool_offered``, relative and absolute, per model, as the mean over models and pooled.

For every (model, dataset) the harmful prompts of the chosen split that have both a reference verdict
(``direct``, then ``tool_offered``; intervention ``none``, one judge) and a ``tool`` verdict are paired
by prompt_id, and

    rr(model, dataset) = (ASR_ref - ASR_tool) / ASR_ref,      ar(model, dataset) = ASR_ref - ASR_tool.

Rows (``model``), per reference and per dataset, then over all datasets (dataset ``all``):

- each model (``estimator`` ``per model``);
- MEAN_MODEL, the unweighted mean over models of the models' values: a model's value is its (weighted)
  mean over datasets, so each model counts once. CI: B bootstrap replicates, each resampling the paired
  prompts of every (model, dataset) independently (with replacement, within that model and dataset),
  then averaging exactly as above; the percentile interval of the replicates. It describes *these*
  models (they are fixed), with the prompts as the random part;
- POOLED, the pooled estimate with models and prompts both random: the ratio of the pooled ASRs,
  1 - sum(tool unsafe) / sum(ref unsafe) over every (model, prompt) pair (and sum(ref - tool) / pairs for
  the absolute reduction), with a crossed two-level cluster bootstrap (`pooled_replicates`): each
  replicate draws the models with replacement and, independently, the prompts (per question set) with
  replacement, and takes every drawn (model, prompt) pair, so a prompt that is hard for every model
  moves all models together (Owen 2007's pigeonhole bootstrap for crossed random effects). It
  estimates the reduction in a population of models like these, so its interval is wider than the mean's
  when the models differ.

Why not a mixed model: a binomial GLMM with crossed model and prompt effects (statsmodels'
``BinomialBayesMixedGLM``, the one statsmodels has for binary data, a variational approximation)
estimates an odds ratio on the logit scale, not the relative reduction of ASR the claim states; turning it
into one needs the random-effect distribution, whose model variance is barely identified with seven
models, and cells with ASR near 0 or 1 (common here: a refusing model) make the logit fit unstable. The
bootstrap targets the stated estimand directly, assumes no distribution, and
``tests/test_headline.py`` shows that it recovers a planted effect.

Datasets that share their questions (MM-SafetyBench TYPO and SD_TYPO: one question, two images;
`toolshift.datasets.prompts.question_set`) count once in any mean over datasets: each of the k datasets
of a question set in the run has weight 1/k in a model's value and in the pooled sums, and the pooled
bootstrap draws a question once for all of them. Per-dataset rows are unweighted.

A (model, dataset) whose reference ASR is 0 has no rr: it is left out of the means and listed in
``excluded`` (the pooled ratio keeps it: its pairs add to both sums); a replicate in which an included
cell's resampled reference ASR (for the pooled estimate: the pooled one) is 0 is dropped (``n_boot_used``
counts the rest). Dropped replicates are not a random subset, so a row keeping fewer than 90 % of them is
flagged (``low_boot_share``, `toolshift.analysis.stats.MIN_BOOT_SHARE`) and `headline_sentence` states the
share used; it also says so when the interval has zero width. The per-row Bonett-Price interval of
`tables/asr.csv` stays finite in both cases.

`headline_table` is the only implementation: the tables (`tables/headline.csv`), the figure
(`toolshift.report.figures.headline.plot_headline`) and the book (`headline_sentence`) all read its output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from toolshift.analysis.interventions import NO_INTERVENTION
from toolshift.analysis.stats import low_boot_share, percentile_ci, relative_reduction
from toolshift.contracts import HEADLINE_COLUMNS, require_columns
from toolshift.datasets.prompts import question_set
from toolshift.datasets.splits import ALL, filter_split
from toolshift.errors import ContractError

MEAN_MODEL = "mean over models"
"""The ``model`` value of the unweighted mean-over-models rows."""
POOLED = "pooled"
"""The ``model`` value of the pooled rows (models and prompts random)."""
ESTIMATORS: dict[str, str] = {
    "model": "per model",
    MEAN_MODEL: "unweighted mean of per-model ratios; prompts resampled within each model",
    POOLED: "pooled ratio; crossed (model, prompt) cluster bootstrap",
}
"""The ``estimator`` column: how each kind of row is estimated and its interval drawn."""
REFERENCES: tuple[str, ...] = ("direct", "tool_offered")
"""The references the headline compares ``tool`` with: no tool, and the tool offered but not used."""

Cell = tuple[str, str]
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # reference, treatment, prompt ids (sorted)


def _paired_cells(judged: pd.DataFrame, judge: str, condition: str, reference: str) -> dict[Cell, Pairs]:
    rows = judged[
        judged["harmful"]
        & (judged["judge"] == judge)
        & (judged["intervention"] == NO_INTERVENTION)
        & judged["condition"].isin([condition, reference])
    ]
    cells: dict[Cell, Pairs] = {}
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
            g.index.get_level_values("prompt_id").astype(str).to_numpy(),
        )
    return cells


def dataset_weights(datasets: Sequence[str]) -> dict[str, float]:
    """1 / (the number of `datasets` in its question set) per dataset: shared questions count once."""
    sets = [question_set(d) for d in datasets]
    return {d: 1.0 / sets.count(s) for d, s in zip(datasets, sets, strict=True)}


def _cell_replicates(ref: np.ndarray, treat: np.ndarray, n_boot: int, rng: np.random.Generator):
    """Paired-bootstrap replicates (rr, ar) of one cell; rr NaN where the resampled reference ASR is 0."""
    n = ref.shape[0]
    if n == 0:
        return np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    idx = rng.integers(0, n, size=(n_boot, n))
    r = ref.astype(np.float64)[idx].mean(axis=1)
    t = treat.astype(np.float64)[idx].mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, (r - t) / r, np.nan), r - t


def pooled_estimate(cells: dict[Cell, Pairs], weights: dict[str, float]) -> tuple[float, float]:
    """(relative, absolute) pooled reduction: ratio of the weighted sums over every (model, prompt) pair."""
    ref = sum(weights[d] * float(r.sum()) for (_, d), (r, _, _) in cells.items())
    treat = sum(weights[d] * float(t.sum()) for (_, d), (_, t, _) in cells.items())
    pairs = sum(weights[d] * r.size for (_, d), (r, _, _) in cells.items())
    rel = (ref - treat) / ref if ref > 0 else math.nan
    return rel, (ref - treat) / pairs if pairs else math.nan


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) counts of each of n units in n draws with replacement (a multinomial per replicate)."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def pooled_replicates(
    cells: dict[Cell, Pairs], weights: dict[str, float], n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Crossed (model, prompt) cluster-bootstrap replicates of `pooled_estimate` (module docstring).

    Per replicate: multinomial counts over the models, and independently over the prompt ids of each
    question set; every (model, prompt) pair enters the sums with the product of its two counts.
    """
    models = sorted({m for m, _ in cells})
    model_counts = _resample_counts(rng, len(models), n_boot)
    sums = np.zeros((3, n_boot))  # reference unsafe, treatment unsafe, pairs
    by_set: dict[str, list[Cell]] = {}
    for cell in sorted(cells):
        by_set.setdefault(question_set(cell[1]), []).append(cell)
    for _, set_cells in sorted(by_set.items()):
        prompts = sorted({p for c in set_cells for p in cells[c][2]})
        pos = {p: i for i, p in enumerate(prompts)}
        prompt_counts = _resample_counts(rng, len(prompts), n_boot)
        for model, dataset in set_cells:
            ref, treat, ids = cells[(model, dataset)]
            at = [pos[p] for p in ids]
            counts = prompt_counts if at == list(range(len(prompts))) else prompt_counts[:, at]  # (n_boot, n)
            scale = weights[dataset] * model_counts[:, models.index(model)]
            sums += scale * np.stack([counts @ ref, counts @ treat, counts.sum(axis=1)])
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(sums[0] > 0, (sums[0] - sums[1]) / sums[0], np.nan)
        ab = np.where(sums[2] > 0, (sums[0] - sums[1]) / sums[2], np.nan)
    return rel, ab


def headline_table(
    judged: pd.DataFrame,
    *,
    judge: str,
    splits: pd.DataFrame | None = None,
    split: str = "test",
    condition: str = "tool",
    references: Sequence[str] = REFERENCES,
    n_boot: int = 2000,
    seed: int = 0,
    conf: float = 0.95,
) -> pd.DataFrame:
    """The headline table (HEADLINE_COLUMNS) from a judged table; see the module docstring.

    With a `splits` table only the prompts of `split` count (``split`` column ``all`` without one). A
    reference without paired verdicts gives no rows; ContractError when the first one has none.
    """
    require_columns(
        judged,
        ("model", "dataset", "condition", "intervention", "judge", "prompt_id", "harmful", "unsafe"),
        "judged",
    )
    rows_in = judged if splits is None else filter_split(judged, splits, split)
    split_label = ALL if splits is None else split
    out: list[dict[str, object]] = []
    for i, reference in enumerate(references):
        cells = _paired_cells(rows_in, judge, condition, reference)
        if not cells:
            if i == 0:
                raise ContractError(
                    f"headline: no model/dataset has paired {reference!r} and {condition!r} verdicts of "
                    f"judge {judge!r} on split {split_label!r}"
                )
            continue
        base = {"judge": judge, "split": split_label, "condition": condition, "reference": reference}
        base.update(conf=conf, n_boot=n_boot)
        # the first reference draws from `seed` as the headline always has; the others from their own streams
        rng = np.random.default_rng(seed if i == 0 else [seed, i])
        out += _reference_rows(cells, base, n_boot, conf, rng, np.random.default_rng([seed, i, 1]))
    return pd.DataFrame(out, columns=list(HEADLINE_COLUMNS))


def _reference_rows(
    cells: dict[Cell, Pairs],
    base: dict[str, object],
    n_boot: int,
    conf: float,
    rng: np.random.Generator,
    pooled_rng: np.random.Generator,
) -> list[dict[str, object]]:
    point = {k: (relative_reduction(r, t), float(r.mean() - t.mean())) for k, (r, t, _) in cells.items()}
    boot = {k: _cell_replicates(r, t, n_boot, rng) for k, (r, t, _) in cells.items()}

    def interval(reps: np.ndarray) -> tuple[float, float]:
        return percentile_ci(reps, conf) if np.isfinite(reps).any() else (math.nan, math.nan)

    def row(dataset: str, model: str, keys: list[Cell]) -> dict[str, object]:
        weights = dataset_weights(sorted({d for _, d in keys}))
        used = [k for k in keys if not math.isnan(point[k][0])]
        excluded = sorted(f"{m}/{d}" for m, d in keys if math.isnan(point[(m, d)][0]))
        pooled = used or keys  # the prompts behind the estimate (all of them when nothing is used)
        ref = np.concatenate([cells[k][0] for k in pooled])
        treat = np.concatenate([cells[k][1] for k in pooled])
        models = sorted({m for m, _ in used})
        est, ab, lo, hi, ab_lo, ab_hi, n_used = (math.nan,) * 6 + (0,)
        if used:

            def mean_over_models(values: dict[Cell, np.ndarray] | dict[Cell, float]) -> np.ndarray:
                per_model = []
                for m in models:
                    mine = [k for k in used if k[0] == m]
                    w = np.array([weights[k[1]] for k in mine])
                    total = sum(wi * np.asarray(values[k]) for wi, k in zip(w, mine, strict=True))
                    per_model.append(total / w.sum())
                return np.mean(per_model, axis=0)

            est = float(mean_over_models({k: point[k][0] for k in used}))
            ab = float(mean_over_models({k: point[k][1] for k in used}))
            rel_reps = mean_over_models({k: boot[k][0] for k in used})
            ok = ~np.isnan(rel_reps)
            lo, hi = interval(rel_reps[ok])
            ab_lo, ab_hi = interval(mean_over_models({k: boot[k][1] for k in used})[ok])
            n_used = int(ok.sum())
        return {
            **base,
            "dataset": dataset,
            "model": model,
            "n_models": len(models) if model == MEAN_MODEL else int(bool(used)),
            "n": int(ref.size),
            "reference_asr": float(ref.mean()),
            "asr": float(treat.mean()),
            "rel_reduction": est,
            "rel_reduction_ci_low": lo,
            "rel_reduction_ci_high": hi,
            "n_boot_used": n_used,
            "low_boot_share": low_boot_share(n_used, n_boot),
            "excluded": ";".join(excluded),
            "abs_reduction": ab,
            "abs_reduction_ci_low": ab_lo,
            "abs_reduction_ci_high": ab_hi,
            "estimator": ESTIMATORS[MEAN_MODEL if model == MEAN_MODEL else "model"],
        }

    def pooled_row(dataset: str, keys: list[Cell]) -> dict[str, object]:
        sub = {k: cells[k] for k in keys}
        weights = dataset_weights(sorted({d for _, d in keys}))
        rel, ab = pooled_estimate(sub, weights)
        rel_reps, ab_reps = pooled_replicates(sub, weights, n_boot, pooled_rng)
        ok = ~np.isnan(rel_reps)
        lo, hi = interval(rel_reps[ok])
        ab_lo, ab_hi = interval(ab_reps[ok])
        w = np.concatenate([np.full(cells[k][0].size, weights[k[1]]) for k in keys])
        ref = np.concatenate([cells[k][0] for k in keys])
        treat = np.concatenate([cells[k][1] for k in keys])
        return {
            **base,
            "dataset": dataset,
            "model": POOLED,
            "n_models": len({m for m, _ in keys}),
            "n": int(ref.size),
            "reference_asr": float((w * ref).sum() / w.sum()),
            "asr": float((w * treat).sum() / w.sum()),
            "rel_reduction": rel,
            "rel_reduction_ci_low": lo,
            "rel_reduction_ci_high": hi,
            "n_boot_used": int(ok.sum()),
            "low_boot_share": low_boot_share(int(ok.sum()), n_boot),
            "excluded": "",
            "abs_reduction": ab,
            "abs_reduction_ci_low": ab_lo,
            "abs_reduction_ci_high": ab_hi,
            "estimator": ESTIMATORS[POOLED],
        }

    out = []
    datasets = sorted({d for _, d in cells})
    for dataset in datasets:
        keys = [k for k in cells if k[1] == dataset]
        out += [row(dataset, m, [(m, dataset)]) for m, _ in keys]
        out.append(row(dataset, MEAN_MODEL, keys))
        out.append(pooled_row(dataset, keys))
    if len(datasets) > 1:
        out.append(row(ALL, MEAN_MODEL, list(cells)))
        out.append(pooled_row(ALL, list(cells)))
    return out


def headline_row(
    table: pd.DataFrame, dataset: str | None = None, *, reference: str = "direct", model: str = MEAN_MODEL
) -> pd.Series:
    """The `model` row (default: the mean over models) of `dataset` (default: ``all`` if present, else
    the only dataset) against `reference`."""
    require_columns(table, HEADLINE_COLUMNS, "headline table")
    means = table[(table["model"] == model) & (table["reference"] == reference)]
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
        raise ContractError(f"headline table: no {model} row against {reference!r} for dataset {dataset!r}")
    return sel.iloc[0]


def _pct(x: float) -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _points(x: float) -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} points"


def headline_sentence(table: pd.DataFrame, dataset: str | None = None) -> str:
    """The headline as the book states it: the mean relative reduction against ``direct`` (estimate, CI,
    models, prompts, split, judge), the absolute reduction and the pooled estimate, then the same against
    ``tool_offered`` when the table has it."""
    r = headline_row(table, dataset)
    where = "all datasets" if r["dataset"] == ALL else f"dataset {r['dataset']}"
    conf = f"{100 * float(r['conf']):g} %"
    left_out = r["excluded"] if isinstance(r["excluded"], str) else ""
    excluded = f"; left out (direct ASR 0): {left_out.replace(';', ', ')}" if left_out else ""
    text = (
        f"Across {int(r['n_models'])} model(s) on {where} ({r['split']} prompts, {int(r['n'])} paired "
        f"{r['reference']}/{r['condition']} verdicts on harmful prompts over all models, judge "
        f"{r['judge']}), the mean relative reduction of ASR from {r['reference']} to "
        f"{r['condition']} is {_pct(r['rel_reduction'])} ({conf} bootstrap CI "
        f"{_pct(r['rel_reduction_ci_low'])} to {_pct(r['rel_reduction_ci_high'])}){excluded}."
        + _bootstrap_note(r)
    )
    for reference in dict.fromkeys(table["reference"]):
        try:
            mean = headline_row(table, r["dataset"], reference=reference)
            pooled = headline_row(table, r["dataset"], reference=reference, model=POOLED)
        except ContractError:
            continue
        text += (
            f" Against {reference}: mean absolute reduction {_points(mean['abs_reduction'])} "
            f"(CI {_points(mean['abs_reduction_ci_low'])} to {_points(mean['abs_reduction_ci_high'])})"
            + (
                ""
                if reference == r["reference"]
                else f", mean relative reduction {_pct(mean['rel_reduction'])} (CI "
                f"{_pct(mean['rel_reduction_ci_low'])} to {_pct(mean['rel_reduction_ci_high'])})"
            )
            + f"; pooled over models and prompts {_pct(pooled['rel_reduction'])} relative (CI "
            f"{_pct(pooled['rel_reduction_ci_low'])} to {_pct(pooled['rel_reduction_ci_high'])}, models "
            f"and prompts resampled), {_points(pooled['abs_reduction'])} absolute."
        )
    return text


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


__all__ = [
    "ESTIMATORS",
    "HEADLINE_COLUMNS",
    "MEAN_MODEL",
    "POOLED",
    "REFERENCES",
    "dataset_weights",
    "headline_row",
    "headline_sentence",
    "headline_table",
    "pooled_estimate",
    "pooled_replicates",
]
