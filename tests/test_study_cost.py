"""toolshift.bench.study_cost: a study's generations, new tokens and model loads, counted by hand on a
planted config."""

from __future__ import annotations

import pytest

from toolshift.bench.study_cost import dataset_size, study_cost
from toolshift.common.config import validate_config
from toolshift.errors import ConfigError


def _config(**overrides):
    config = {
        "datasets": {"mini": {}},
        "models": {
            "a": {"family": "qwen2_5_vl", "source": "fixture"},
            "b": {"family": "llava", "source": "fixture"},
        },
        "conditions": ["direct", "tool", "free"],
        "free": {"max_turns": 3},
        "generation": {"max_new_tokens": 10, "shards": 2},
        "splits": {"seed": 0, "fractions": {"train": 0.4, "validation": 0.2, "test": 0.4}},
        "interventions": {"layer": 1, "add": {"alphas": [1, 2]}, "subtract": True, "ablate": False},
        "judges": ["keyword"],
        "headline_judge": "keyword",
    }
    config.update(overrides)
    return validate_config(config)


def test_generations_and_tokens_of_a_planted_study():
    cost = study_cost(_config())
    # 100 prompts x 2 models x (2 single-turn conditions + 3 free turns) = 1000 condition generations;
    # interventions (add a1, add a2, subtract) on validation + test (60 prompts) x 2 models = 360
    assert cost["generations"] == 1000 + 360
    assert cost["condition_new_tokens"] == 100 * 2 * (2 * 10 + 3 * 10)
    assert cost["intervention_new_tokens"] == 60 * 2 * 3 * 10
    assert cost["max_new_tokens"] == cost["condition_new_tokens"] + cost["intervention_new_tokens"]
    assert cost["per_dataset"]["mini"]["intervention_prompts"] == 60
    assert cost["model_dataset_shards"] == 2 * 1 * 2
    assert cost["model_loads"] is None  # no DAG counts given


def test_refusal_ablation_adds_one_run_per_controlled_condition():
    interventions = {"layer": 1, "add": {"alphas": [1, 2]}, "subtract": True, "ablate_refusal": True}
    cost = study_cost(_config(interventions=interventions))
    # + ablate_refusal_direct and ablate_refusal_tool (not free): 5 interventions x 60 prompts x 2 models
    assert cost["per_dataset"]["mini"]["interventions"] == 5
    assert cost["generations"] == 1000 + 60 * 2 * 5


def test_model_loads_come_from_the_dag_counts():
    config = _config(
        judges=["keyword", "llamaguard"],
        judge_models={"llamaguard": {"variant": "llamaguard3", "source": "fixture"}},
    )
    counts = {"infer": 4, "intervene": 4, "transfer": 2, "merge_runs": 2}
    cost = study_cost(config, counts)
    assert cost["model_loads_by_rule"] == {
        "infer": 4, "intervene": 4, "transfer": 2, "judge (model judges)": 1,
    }  # fmt: skip
    assert cost["model_loads"] == 11
    assert cost["loads_per_model_dataset_shard"] == {"infer": 1.0, "intervene": 1.0}


def test_dataset_sizes_follow_the_registry_and_the_class_limit():
    assert dataset_size("mini") == {"harmful": 50, "harmless": 50}
    assert dataset_size("mini", {"limit_per_class": 20}) == {"harmful": 20, "harmless": 20}
    with pytest.raises(ConfigError, match="nope"):
        dataset_size("nope")
