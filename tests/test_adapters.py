"""Family adapters: episode rendering (Hermes/DeepEyes tool convention), decoder layers, registry."""

from __future__ import annotations

import json

import pytest
import torch

from toolshift.adapters import ADAPTERS, LlavaAdapter, Qwen25VLAdapter, get_adapter
from toolshift.errors import ConfigError, DataError
from toolshift.fixtures import ZOOM_TOOL, build_fixture, synthetic_episodes
from toolshift.inference import render_prompts
from toolshift.modeling import load_model

BBOX = [0, 0, 210, 320]  # synthetic episode 1's box


@pytest.fixture(scope="session")
def results_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_results")
    synthetic_episodes(root, 4)
    return root


@pytest.fixture(scope="session")
def episodes(results_root):
    return synthetic_episodes(results_root, 4)  # direct, tool, text_trail, image_no_tool


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_models")
    return {f: load_model(build_fixture(f, root / f), f) for f in ADAPTERS}


def test_registry_and_unknown_family():
    assert isinstance(get_adapter("qwen2_5_vl"), Qwen25VLAdapter)
    assert isinstance(get_adapter("llava"), LlavaAdapter)
    with pytest.raises(ConfigError) as err:
        get_adapter("gemma3")
    assert "gemma3" in str(err.value) and "llava, qwen2_5_vl" in str(err.value)
    assert "\n" not in str(err.value)


def test_tool_episode_renders_tool_prompt_call_and_response(episodes, results_root):
    tool_episode = episodes[1]
    assert tool_episode["condition"] == "tool"
    messages, images = get_adapter("qwen2_5_vl").render_messages(tool_episode, results_root)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"][0]["text"]
    assert system.startswith("You are a helpful assistant.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(ZOOM_TOOL) + "\n</tools>" in system
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in system
    assert messages[2]["content"] == [
        {
            "type": "text",
            "text": '<tool_call>\n{"name": "zoom_in", "arguments": {"bbox": '
            + str(BBOX)
            + "}}\n</tool_call>",
        }
    ]
    assert messages[3]["content"] == [
        {"type": "text", "text": "<tool_response>\n"},
        {"type": "image"},
        {"type": "text", "text": "\n</tool_response>"},
    ]
    # images in order of appearance: the attack image, then the zoom crop
    assert [im.size for im in images] == [(760, 760), (BBOX[2] - BBOX[0], BBOX[3] - BBOX[1])]
    assert all(im.mode == "RGB" for im in images)


def test_tools_without_system_message_get_the_default_system_prompt(episodes, results_root):
    episode = dict(episodes[1], messages=episodes[1]["messages"][1:])
    messages, _ = get_adapter("llava").render_messages(episode, results_root)
    assert messages[0]["role"] == "system"
    assert messages[0]["content"][0]["text"].startswith("You are a helpful assistant.\n\n# Tools")


def test_direct_and_text_trail_episodes(episodes, results_root):
    adapter = get_adapter("qwen2_5_vl")
    direct, images = adapter.render_messages(episodes[0], results_root)
    assert "# Tools" not in direct[0]["content"][0]["text"] and len(images) == 1
    trail, images = adapter.render_messages(episodes[2], results_root)
    assert len(images) == 1 and "# Tools" in trail[0]["content"][0]["text"]
    assert [p["type"] for p in trail[-1]["content"]] == ["text", "text", "text"]
    assert trail[-1]["content"][1]["text"].startswith("Zoomed in on")


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_image_count_matches_processor_image_tokens(family, models, episodes, results_root):
    loaded = models[family]
    processor = loaded.processor
    image_token_id = loaded.model.config.image_token_id
    placeholder = {"qwen2_5_vl": "<|image_pad|>", "llava": "<image>"}[family]
    for episode in episodes:
        texts, images = render_prompts(loaded, [episode], results_root)
        assert texts[0].count(placeholder) == len(images)
        enc = processor(text=texts, images=images, return_tensors="pt")
        n_tokens = int((enc["input_ids"] == image_token_id).sum())
        if family == "qwen2_5_vl":  # one token per 2x2 merged group of 14-px patches
            expected = int(enc["image_grid_thw"].prod(dim=1).sum()) // 4
        else:  # (56 / 14)^2 patch tokens per image, CLS dropped
            expected = 16 * len(images)
        assert n_tokens == expected > 0


@pytest.mark.parametrize("family", sorted(ADAPTERS))
def test_decoder_layers(family, models):
    loaded = models[family]
    layers = loaded.adapter.decoder_layers(loaded.model)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == loaded.n_layers == 4
    assert layers is loaded.model.model.language_model.layers


def test_decoder_layers_not_found_is_config_error():
    with pytest.raises(ConfigError, match="decoder layers"):
        get_adapter("llava").decoder_layers(torch.nn.Linear(2, 2))


def test_missing_image_is_data_error(episodes, tmp_path):
    with pytest.raises(DataError, match="syn-000.png not found"):
        get_adapter("llava").render_messages(episodes[0], tmp_path)
