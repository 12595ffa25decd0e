"""Config validation: the embedded default is valid; every mistake stops with one line naming it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from toolshift import CONDITIONS
from toolshift.common.config import load_config, load_schema, validate_config
from toolshift.episodes.build import EPISODE_CONDITIONS
from toolshift.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def default_config() -> dict:
    with open(REPO / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_embedded_default_is_valid_and_gets_defaults(default_config):
    cfg = validate_config(default_config)
    assert cfg["results"] == "results"
    assert list(cfg["conditions"]) == [*CONDITIONS, "free"]
    assert cfg["models"]["fixture-llava"]["trust_remote_code"] is False
    assert cfg["stats"]["n_boot"] == 2000


def test_defaults_fill_missing_sections():
    cfg = validate_config(
        {
            "datasets": {"mini": {}},
            "models": {"m": {"family": "llava", "source": "fixture"}},
            "conditions": ["direct", "tool"],
        }
    )
    assert cfg["generation"]["max_new_tokens"] == 24
    assert cfg["episodes"]["bbox_policy"] == "content_padded"
    assert cfg["models"]["m"]["fixture"]["seed"] == 0
    assert cfg["judges"] == ["keyword"]


def _error(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_top_level_key(default_config):
    default_config["resluts"] = "x"
    assert "unknown key 'resluts'" in _error(default_config)


def test_unknown_nested_key_names_its_place(default_config):
    default_config["models"]["fixture-llava"]["familly"] = "llava"
    message = _error(default_config)
    assert "'familly'" in message and "models.fixture-llava" in message


def test_wrong_type(default_config):
    default_config["generation"]["batch_size"] = "eight"
    message = _error(default_config)
    assert "generation.batch_size" in message and "integer" in message and "'eight'" in message


def test_unknown_condition(default_config):
    default_config["conditions"] = ["direct", "tool", "tool_sparkly"]
    message = _error(default_config)
    assert "'tool_sparkly'" in message and "direct" in message


def test_a_blank_size_dose_of_any_scale_is_a_condition(default_config):
    default_config["conditions"] = ["direct", "tool", "tool_blank_x2", "tool_blank_x0.5"]
    assert validate_config(default_config)["conditions"][2:] == ["tool_blank_x2", "tool_blank_x0.5"]
    for name in ("tool_blank_x1", "tool_blank_x4.0", "tool_blank_x0", "tool_blank_xbig"):
        default_config["conditions"] = ["direct", "tool", name]
        message = _error(default_config)
        assert f"'{name}'" in message and "conditions" in message, message


def test_an_api_model_cannot_run_text_trail_long(default_config):
    default_config["models"] = {
        "remote": {"backend": "openai", "api": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}}
    }
    default_config["interventions"] = {}
    message = _error(default_config)
    assert "models.remote" in message and "text_trail_long" in message
    default_config["conditions"].remove("text_trail_long")
    validate_config(default_config)


def test_conditions_must_include_direct_and_tool(default_config):
    default_config["conditions"] = ["direct", "text_trail"]
    assert "'tool'" in _error(default_config)


def test_unknown_model_family_lists_known_ones(default_config):
    default_config["models"]["fixture-llava"]["family"] = "gpt-vision"
    message = _error(default_config)
    assert "'gpt-vision'" in message and "qwen2_5_vl" in message and "llava" in message


def test_unknown_dataset_lists_known_ones(default_config):
    default_config["datasets"] = {"safebanch": {}}
    message = _error(default_config)
    assert "'safebanch'" in message and "mini" in message


def test_hub_model_needs_id_and_revision(default_config):
    default_config["models"]["real"] = {
        "family": "qwen2_5_vl",
        "source": "hub",
        "hub_id": "Qwen/Qwen2.5-VL-7B-Instruct",
    }
    assert "revision" in _error(default_config)


def test_bad_model_name(default_config):
    default_config["models"]["bad/name"] = copy.deepcopy(default_config["models"]["fixture-llava"])
    assert "bad/name" in _error(default_config)


def test_layer_auto_or_integer(default_config):
    default_config["interventions"]["layer"] = 3
    assert validate_config(default_config)["interventions"]["layer"] == 3
    default_config["interventions"]["layer"] = "middle"
    assert "interventions.layer" in _error(default_config)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets: {mini: {}}\nmodels: {}\nconditions: [direct, tool]\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_schema_lists_every_condition_and_family():
    from toolshift.models.adapters import ADAPTERS

    schema = load_schema()
    named, dose = schema["$defs"]["condition"]["anyOf"]
    assert named["enum"] == list(EPISODE_CONDITIONS)
    assert "tool_blank_x{scale}" in dose["description"] and dose["pattern"].startswith("^tool_blank_x")
    assert sorted(schema["$defs"]["model"]["properties"]["family"]["enum"]) == sorted(ADAPTERS)


def test_a_dataset_without_harmless_prompts_needs_a_refusal_source_for_ablate_refusal(default_config):
    """Checked before any job: without harmless prompts (downloaded images) a dataset has no refusal
    direction, so ablate_refusal would fail in its intervention jobs after its GPU inference."""
    cfg = copy.deepcopy(default_config)
    cfg["datasets"] = {"safebench": {"harmless": "jbb_benign"}, "hades": {}}
    with pytest.raises(
        ConfigError, match=r"^config: interventions\.ablate_refusal: dataset hades has no harmless"
    ):
        validate_config(cfg)
    cfg["datasets"]["hades"] = {"harmless": "safebench"}  # borrows safebench's direction
    assert validate_config(cfg)["datasets"]["hades"]["harmless"] == "safebench"
    cfg["datasets"]["hades"] = {"harmless": "jbb_benign"}
    with pytest.raises(
        ConfigError, match=r"^config: datasets\.hades\.harmless: 'jbb_benign' is not a dataset of this"
    ):
        validate_config(cfg)
    cfg["datasets"] = {"hades": {"harmless": "jailbreakv_mini"}, "jailbreakv_mini": {}}
    with pytest.raises(ConfigError, match="'jailbreakv_mini' has no harmless prompts either"):
        validate_config(cfg)
    cfg["datasets"] = {"hades": {}}
    cfg["interventions"]["ablate_refusal"] = False  # nothing needs the direction: no source needed
    validate_config(cfg)


def test_the_paper_config_gives_every_dataset_a_refusal_direction():
    from toolshift.datasets.prompts import has_harmless_prompts, refusal_source

    paper = load_config(REPO / "config" / "paper.yaml")
    for name, options in paper["datasets"].items():
        source = refusal_source(name, options)
        assert has_harmless_prompts(name, options) or has_harmless_prompts(source, paper["datasets"][source])
