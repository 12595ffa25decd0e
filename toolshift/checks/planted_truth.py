"""Planted truth: does the analysis library recover what a synthetic study planted?

`planted_truth_table` runs a synthetic study with a known tool vector, refusal direction, layer and ASR
effect (`planted_study`, `planted_verdicts`) through the real analysis library (splits ->
`compute_vectors` -> layer selection -> `asr_table` -> `headline_table`), and compares every planted
quantity with what the library recovers. A null study (no effect, `null_verdicts`) checks that McNemar,
the paired bootstrap CI and the headline CI keep their nominal 5 % false-positive rate: the number of
false positives over N null replicates must not exceed the 99.9 % quantile of Binomial(N, 0.05)
(`fp_bound`). Each table row says what was planted, what came back, the criterion and whether it passed;
a broken pipeline makes a row fail. Columns: `toolshift.contracts.PLANTED_COLUMNS`
(``tables/validation_planted.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import binom

from toolshift.analysis import headline as headline_mod
from toolshift.analysis import selection as selection_mod
from toolshift.analysis import tables as tables_mod
from toolshift.analysis import vectors as vectors_mod
from toolshift.contracts import PLANTED_COLUMNS
from toolshift.datasets import splits as splits_mod
from toolshift.errors import ConfigError

# --------------------------------------------------------------------------- the planted study

N_LAYERS: int = 10
HIDDEN: int = 48
PLANTED_LAYER: int = 4
"""The layer whose tool vector is aligned with the refusal direction (candidates are layers 0..7)."""
DECOY_LAYER: int = 9
"""An even stronger alignment, but in the excluded last 20 % of layers: must never be selected."""
PLANTED_COS: float = 0.9
"""cos(tool vector, refusal direction) at the planted layer."""
N_PER_CLASS: int = 150
"""Harmful and harmless prompts each, over 10 categories (`planted_study`'s default)."""
TABLE_N_PER_CLASS: int = 300
"""Prompts per class in `planted_truth_table`: 120 harmful test prompts per model, so McNemar detects the
planted effect in every model for nearly every seed."""
CATEGORIES: tuple[str, ...] = tuple(f"cat{i}" for i in range(10))
BASE_ASR: float = 0.6
PLANTED_RR: float = 0.3
"""Planted relative ASR reduction: ``tool`` keeps each ``direct`` success with probability 0.7."""
MODELS: tuple[str, ...] = ("m-a", "m-b", "m-c")
NOMINAL: float = 0.05
"""The level of every test and 1 - the confidence of every CI."""
SYNTHETIC_DATASET = "syn"


@dataclass(frozen=True)
class PlantedStudy:
    """One synthetic model on one dataset: prompts, activations of ``direct``/``tool``/``text_trail``
    (condition -> dataset with ``resid`` (prompt_id, layer, hidden)), and the planted tool vector and
    refusal direction (layer, hidden)."""

    prompts: pd.DataFrame
    acts: dict[str, xr.Dataset]
    tool_vector: np.ndarray
    refusal_direction: np.ndarray


def fp_bound(n_seeds: int, nominal: float = NOMINAL) -> int:
    """The most false positives a level-`nominal` test may show in `n_seeds` null runs (99.9 % quantile
    of Binomial(n_seeds, nominal))."""
    return int(binom.ppf(0.999, n_seeds, nominal))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def planted_study(seed: int, n_per_class: int = N_PER_CLASS) -> PlantedStudy:
    """A synthetic study (deterministic by `seed`) with `n_per_class` harmful and harmless prompts, a
    planted refusal direction in every layer and a tool vector that is aligned with it (cos 0.9) only at
    PLANTED_LAYER, perfectly and more strongly at DECOY_LAYER (excluded from selection), and orthogonal to
    it elsewhere. ``text_trail`` adds noise only.
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_per_class
    ids = [f"h{i:03d}" for i in range(n_per_class)] + [f"b{i:03d}" for i in range(n_per_class)]
    harmful = np.array([True] * n_per_class + [False] * n_per_class)
    prompts = pd.DataFrame(
        {
            "prompt_id": ids,
            "dataset": SYNTHETIC_DATASET,
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(n_per_class)] * 2,
            "harmful": harmful,
        }
    )
    r = np.zeros((N_LAYERS, HIDDEN))
    v = np.zeros((N_LAYERS, HIDDEN))
    for layer in range(N_LAYERS):
        u = _unit(rng.standard_normal(HIDDEN))
        w = rng.standard_normal(HIDDEN)
        w = _unit(w - (w @ u) * u)
        r[layer] = 5.0 * u
        if layer == PLANTED_LAYER:
            v[layer] = 3.0 * (PLANTED_COS * u + np.sqrt(1 - PLANTED_COS**2) * w)
        elif layer == DECOY_LAYER:
            v[layer] = 6.0 * u  # perfectly aligned and larger: would win if not excluded
        else:
            v[layer] = 3.0 * w  # orthogonal to the refusal direction
    base = rng.standard_normal((N_LAYERS, HIDDEN)) * 2
    h_direct = base + rng.standard_normal((n, N_LAYERS, HIDDEN)) * 0.4 + harmful[:, None, None] * r
    h = {
        "direct": h_direct,
        "tool": h_direct + v + rng.standard_normal((n, N_LAYERS, HIDDEN)) * 0.3,
        "text_trail": h_direct + rng.standard_normal((n, N_LAYERS, HIDDEN)) * 0.3,
    }
    acts = {
        c: xr.Dataset(
            {"resid": (("prompt_id", "layer", "hidden"), arr.astype(np.float32))},
            coords={"prompt_id": ids, "layer": np.arange(N_LAYERS)},
            attrs={"condition": c, "position": "last_prompt_token"},
        )
        for c, arr in h.items()
    }
    return PlantedStudy(prompts=prompts, acts=acts, tool_vector=v, refusal_direction=r)


def planted_verdicts(
    prompts: pd.DataFrame, model: str, seed: int, rr: float = PLANTED_RR, base_asr: float = BASE_ASR
) -> pd.DataFrame:
    """Judged rows (judge ``keyword``) of ``direct`` / ``tool`` / ``text_trail`` for every prompt: direct
    succeeds with probability `base_asr`, tool keeps each direct success with probability 1 - `rr`,
    text_trail is independent of direct with the same rate (no effect). Deterministic by `seed`."""
    rng = np.random.default_rng(seed)
    n = len(prompts)
    direct = rng.random(n) < base_asr
    tool = direct & (rng.random(n) < 1 - rr)
    trail = rng.random(n) < base_asr
    frames = [
        prompts.assign(model=model, condition=condition, intervention="none", judge="keyword", unsafe=unsafe)
        for condition, unsafe in (("direct", direct), ("tool", tool), ("text_trail", trail))
    ]
    return pd.concat(frames, ignore_index=True)


def null_verdicts(
    seed: int, n_replicates: int, *, n_prompts: int = 60, models: Sequence[str] = ("m",)
) -> pd.DataFrame:
    """Judged rows of ``direct`` and ``tool`` without any effect: replicate i is dataset ``null{i}``; in
    each (replicate, model) both conditions are independent Bernoulli(p) with one p ~ U(0.3, 0.8).
    Deterministic by `seed`."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n_prompts)]
    frames = []
    for rep in range(n_replicates):
        for model in models:
            p = rng.uniform(0.3, 0.8)
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "dataset": f"null{rep:04d}",
                        "condition": np.repeat(["direct", "tool"], n_prompts),
                        "intervention": "none",
                        "judge": "keyword",
                        "prompt_id": ids * 2,
                        "harmful": True,
                        "unsafe": rng.random(2 * n_prompts) < p,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- the planted-truth table


def _stream(seed: int, *key: int) -> int:
    """A seed for one random stream of the table, derived from the table's `seed`."""
    return int(np.random.SeedSequence([int(seed), *key]).generate_state(1)[0])


def check_row(
    check: str,
    description: str,
    planted: Any,
    recovered: float,
    criterion: str,
    passed: bool,
    ci: tuple[float, float] = (math.nan, math.nan),
) -> dict[str, Any]:
    """One row of a planted-truth table (PLANTED_COLUMNS)."""
    return {
        "check": check,
        "description": description,
        "planted": planted,
        "recovered": float(recovered),
        "criterion": criterion,
        "passed": bool(passed),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
    }


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"planted_truth_table: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def planted_truth_table(
    seed: int = 0, *, n_models: int = 3, n_null: int = 300, n_boot: int = 1000
) -> pd.DataFrame:
    """Run the planted study through the analysis library; one row per check (PLANTED_COLUMNS).

    `n_models` synthetic models share one set of prompts and splits; `n_null` null replicates estimate
    the false-positive rates; `n_boot` bootstrap replicates per CI. Deterministic by `seed`. Every row
    passes for a correct pipeline; only the headline CI row can miss by chance, as any 95 % CI does for
    about one seed in 20 (seeds 0..19 all pass; seed 0 is the tests').
    """
    n_models = _check_count("n_models", n_models, 1)
    n_null = _check_count("n_null", n_null, 1)
    n_boot = _check_count("n_boot", n_boot, 100)
    models = [f"m{k}" for k in range(n_models)]
    rows: list[dict[str, Any]] = []

    # splits -> vectors -> layer selection, per model (one set of prompts and splits for all)
    studies = {m: planted_study(_stream(seed, 1, k), TABLE_N_PER_CLASS) for k, m in enumerate(models)}
    splits = splits_mod.make_splits(studies[models[0]].prompts, seed=seed)
    vecs = {
        m: vectors_mod.compute_vectors(
            s.acts, s.prompts, model=m, dataset=SYNTHETIC_DATASET, splits=splits, seed=seed
        )
        for m, s in studies.items()
    }
    cos_tool = min(
        float(np.min(vectors_mod.cosine(vecs[m]["tool_vector"].values, s.tool_vector)))
        for m, s in studies.items()
    )
    cos_ref = min(
        float(np.min(vectors_mod.cosine(vecs[m]["refusal_direction"].values, s.refusal_direction)))
        for m, s in studies.items()
    )
    rows.append(
        check_row(
            "tool_vector",
            "The tool vector estimated on train prompts points along the planted one in every layer and "
            "model.",
            1.0,
            cos_tool,
            "min cosine > 0.99",
            cos_tool > 0.99,
        )
    )
    rows.append(
        check_row(
            "refusal_direction",
            "The refusal direction estimated on train prompts points along the planted one in every layer "
            "and model.",
            1.0,
            cos_ref,
            "min cosine > 0.99",
            cos_ref > 0.99,
        )
    )
    selected = [int(vecs[m].attrs["selected_layer"]) for m in models]
    wrong = [layer for layer in selected if layer != PLANTED_LAYER]
    rows.append(
        check_row(
            "selected_layer",
            f"Layer selection on validation prompts picks the planted layer {PLANTED_LAYER} in every model.",
            PLANTED_LAYER,
            wrong[0] if wrong else PLANTED_LAYER,
            f"== {PLANTED_LAYER} in all {n_models} model(s)",
            not wrong,
        )
    )
    candidates = selection_mod.candidate_layers(N_LAYERS)
    n_decoy = sum(layer == DECOY_LAYER for layer in selected)
    rows.append(
        check_row(
            "decoy_excluded",
            f"A stronger decoy alignment in layer {DECOY_LAYER}, inside the excluded last 20 % of layers, "
            "is never selected.",
            f"layer {DECOY_LAYER} (excluded)",
            n_decoy,
            "0 models select it and it is not a candidate",
            n_decoy == 0 and DECOY_LAYER not in candidates,
        )
    )

    # ASR tables and headline on the test split
    judged = pd.concat(
        [planted_verdicts(studies[m].prompts, m, _stream(seed, 2, k)) for k, m in enumerate(models)],
        ignore_index=True,
    )
    asr = tables_mod.asr_table(judged, n_boot=n_boot, seed=seed, splits=splits, split="test")
    tool_rows = asr[asr["condition"] == "tool"]
    max_p = float(tool_rows["mcnemar_p"].max())
    rows.append(
        check_row(
            "asr_mcnemar",
            f"The planted ASR reduction of tool vs direct ({PLANTED_RR:g}) is significant on the test "
            "prompts of every model (McNemar, ASR table).",
            f"rr {PLANTED_RR:g} (an effect)",
            max_p,
            f"max McNemar p < {NOMINAL:g}",
            len(tool_rows) == n_models and max_p < NOMINAL,
        )
    )
    head = headline_mod.headline_table(
        judged, judge="keyword", splits=splits, split="test", n_boot=n_boot, seed=seed
    )
    mean_row = head[head["model"] == headline_mod.MEAN_MODEL].iloc[0]
    lo, hi = float(mean_row["rel_reduction_ci_low"]), float(mean_row["rel_reduction_ci_high"])
    rows.append(
        check_row(
            "headline_rr",
            "The planted relative ASR reduction lies inside the headline's bootstrap CI (mean over models, "
            "test prompts).",
            PLANTED_RR,
            mean_row["rel_reduction"],
            f"planted inside the {1 - NOMINAL:.0%} CI",
            lo <= PLANTED_RR <= hi,
            (lo, hi),
        )
    )

    # null study: no effect, n_null replicates
    bound = fp_bound(n_null)
    limit = f"<= {bound}/{n_null} = {bound / n_null:.3f} (99.9 % binomial bound)"
    null1 = null_verdicts(_stream(seed, 3), n_null)
    null_asr = tables_mod.asr_table(null1, n_boot=n_boot, seed=seed)
    null_tool = null_asr[null_asr["condition"] == "tool"]
    fp_mc = int((null_tool["mcnemar_p"] < NOMINAL).sum())
    boot_lo, boot_hi = null_tool["rel_reduction_boot_ci_low"], null_tool["rel_reduction_boot_ci_high"]
    fp_boot = int(((boot_lo > 0) | (boot_hi < 0)).sum())
    rows.append(
        check_row(
            "null_mcnemar_fpr",
            f"Without an effect, McNemar rejects at {NOMINAL:g} no more often than chance allows "
            f"({n_null} null replicates, ASR table).",
            f"no effect (level {NOMINAL:g})",
            fp_mc / n_null,
            limit,
            len(null_tool) == n_null and fp_mc <= bound,
        )
    )
    rows.append(
        check_row(
            "null_bootstrap_fpr",
            f"Without an effect, the paired bootstrap CI of the relative reduction excludes 0 no more often "
            f"than chance allows ({n_null} null replicates, ASR table).",
            f"no effect (level {NOMINAL:g})",
            fp_boot / n_null,
            limit,
            len(null_tool) == n_null and fp_boot <= bound,
        )
    )
    null3 = null_verdicts(_stream(seed, 4), n_null, models=models)
    null_head = headline_mod.headline_table(null3, judge="keyword", n_boot=n_boot, seed=seed)
    null_means = null_head[
        (null_head["model"] == headline_mod.MEAN_MODEL) & null_head["dataset"].str.startswith("null")
    ]
    fp_head = int(
        ((null_means["rel_reduction_ci_low"] > 0) | (null_means["rel_reduction_ci_high"] < 0)).sum()
    )
    rows.append(
        check_row(
            "null_headline_fpr",
            f"Without an effect, the headline CI (mean over {n_models} model(s)) excludes 0 no more often "
            f"than chance allows ({n_null} null replicates).",
            f"no effect (level {NOMINAL:g})",
            fp_head / n_null,
            limit,
            len(null_means) == n_null and fp_head <= bound,
        )
    )
    table = pd.DataFrame(rows, columns=list(PLANTED_COLUMNS))
    table["planted"] = table["planted"].astype(object)
    return table
