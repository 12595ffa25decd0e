"""What a study costs before it runs: generations, new tokens and model loads, from a config and its DAG.

Sizes come from the dataset registry (`DatasetSpec.n_rows`, the published sizes; `limit_per_class`
caps each class), the runs from the config (conditions, interventions per dataset, models by backend)
and the model loads from the DAG's job counts (`snakemake -n`): one per inference job (`infer`,
`intervene`, `transfer`; the KL cost of the interventions shares their load) and one per model-judge
job. `make bench` reports these figures and `python -m toolshift.bench.gpu` turns them into GPU-hours
with measured rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolshift.analysis.interventions import expand_interventions
from toolshift.episodes.build import FREE_CONDITION
from toolshift.errors import ConfigError
from toolshift.judges.keyword import MODEL_JUDGES

INFERENCE_RULES: tuple[str, ...] = ("infer", "intervene", "transfer")
"""The rules whose jobs load a VLM to generate."""
LOADING_RULES: tuple[str, ...] = INFERENCE_RULES
"""Every rule whose jobs load a VLM (the KL cost of the interventions shares their load)."""


def dataset_size(name: str, options: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Harmful and harmless prompts of a configured dataset (its harmless control included), from the
    registry's published sizes; `limit_per_class` caps each class."""
    from toolshift.datasets.prompts import get_dataset

    options = dict(options or {})

    def classes(dataset: str) -> dict[str, int]:
        spec = get_dataset(dataset)
        if spec.n_rows is None:
            raise ConfigError(f"dataset {dataset!r}: the registry records no size (DatasetSpec.n_rows)")
        if spec.classes == "harmful":
            return {"harmful": spec.n_rows, "harmless": 0}
        if spec.classes == "harmless":
            return {"harmful": 0, "harmless": spec.n_rows}
        return {"harmful": spec.n_rows // 2, "harmless": spec.n_rows - spec.n_rows // 2}

    size = classes(name)
    if options.get("harmless"):
        size["harmless"] += classes(options["harmless"])["harmless"]
    limit = options.get("limit_per_class")
    if limit is not None:
        size = {k: min(int(limit), v) for k, v in size.items()}
    return size


def study_cost(config: Mapping[str, Any], rule_counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Generations, maximum new tokens and model loads of a validated config (module docstring).

    `rule_counts` (jobs per rule of the config's DAG) adds the model loads; without it they are None.
    A `free` generation counts once per turn it may take (`free.max_turns`).
    """
    models = config["models"]
    hf_models = [m for m, e in models.items() if e.get("backend", "hf") == "hf"]
    conditions = list(config["conditions"])
    generation, free = config["generation"], config.get("free") or {}
    max_new = int(generation["max_new_tokens"])
    free_turns = int(free.get("max_turns", 4))
    free_new = int(free.get("max_new_tokens") or max_new)
    fractions = (config.get("splits") or {}).get("fractions") or {}
    intervened = config["interventions"].get("splits") or ["validation", "test"]
    share = sum(float(fractions.get(s, 0)) for s in intervened) if fractions else 1.0
    per_dataset = {}
    for dataset, options in config["datasets"].items():
        size = dataset_size(dataset, options)
        prompts = size["harmful"] + size["harmless"]
        steered = round(prompts * share)  # intervention runs generate on these splits' prompts only
        n_interventions = len(expand_interventions(config["interventions"], dataset, conditions))
        single = [c for c in conditions if c != FREE_CONDITION]
        has_free = FREE_CONDITION in conditions
        turns = len(single) + free_turns * has_free
        generations = prompts * len(models) * turns + steered * len(hf_models) * n_interventions
        condition_tokens = prompts * len(models) * (len(single) * max_new + has_free * free_turns * free_new)
        intervention_tokens = steered * len(hf_models) * n_interventions * max_new
        new_tokens = condition_tokens + intervention_tokens
        per_dataset[dataset] = {
            "prompts": prompts,
            "intervention_prompts": steered,
            "interventions": n_interventions,
            "generations": generations,
            "max_new_tokens": new_tokens,
            "condition_new_tokens": condition_tokens,
            "intervention_new_tokens": intervention_tokens,
        }
    shards = int(generation["shards"])
    triples = len(hf_models) * len(config["datasets"]) * shards
    result: dict[str, Any] = {
        "models": len(models),
        "datasets": len(config["datasets"]),
        "shards": shards,
        "model_dataset_shards": triples,
        "generations": sum(d["generations"] for d in per_dataset.values()),
        "max_new_tokens": sum(d["max_new_tokens"] for d in per_dataset.values()),
        "condition_new_tokens": sum(d["condition_new_tokens"] for d in per_dataset.values()),
        "intervention_new_tokens": sum(d["intervention_new_tokens"] for d in per_dataset.values()),
        "per_dataset": per_dataset,
        "model_loads": None,
        "loads_per_model_dataset_shard": None,
    }
    if rule_counts is not None:
        judge_loads = len(config["datasets"]) * len([j for j in config["judges"] if j in MODEL_JUDGES])
        loads = {rule: int(rule_counts.get(rule, 0)) for rule in LOADING_RULES}
        loads["judge (model judges)"] = judge_loads
        result["model_loads"] = sum(loads.values())
        result["model_loads_by_rule"] = loads
        # every condition of a (model, dataset, shard) shares one load, every intervention another
        result["loads_per_model_dataset_shard"] = {
            rule: (loads[rule] / triples if triples else None) for rule in ("infer", "intervene")
        }
    return result
