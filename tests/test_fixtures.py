"""Fixture models: the reference families build offline, load through the generic HF path, deterministically.

Every other family's fixture is taken through the whole path in test_families.py."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from toolshift.errors import ConfigError
from toolshift.models.fixtures import (
    ALL_FIXTURE_FAMILIES,
    FIXTURE_FAMILIES,
    REFUSAL_TOKENS,
    build_fixture,
    read_fixture_marker,
    synthetic_episodes,
)

FAMILY_CLASSES = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "<image>"),
}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def loaded(fixture_model_dirs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = {}
    for family, path in fixture_model_dirs.items():
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True)
        out[family] = (model, processor)
    return out


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_builds_and_loads_through_auto_classes(family, fixture_model_dirs, loaded):
    model, processor = loaded[family]
    model_class, processor_class, image_token = FAMILY_CLASSES[family]
    assert type(model).__name__ == model_class
    assert type(processor).__name__ == processor_class
    assert (fixture_model_dirs[family] / "model.safetensors").is_file()
    assert model.config.toolshift_fixture["family"] == family
    assert model.config.toolshift_fixture["seed"] == 0
    assert read_fixture_marker(fixture_model_dirs[family])["family"] == family
    text = model.config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (64, 4, 4)
    tokenizer = processor.tokenizer
    assert text.vocab_size == len(tokenizer)
    assert 1000 <= len(tokenizer) <= 2000
    # the image placeholder is one special token, and it is the model's image token
    ids = tokenizer(image_token, add_special_tokens=False)["input_ids"]
    assert ids == [model.config.image_token_id]
    assert image_token in tokenizer.all_special_tokens
    # generation: greedy, eos and pad set
    gen = model.generation_config
    assert gen.do_sample is False and gen.pad_token_id is not None and gen.eos_token_id is not None


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_tool_markers_and_refusal_phrases_are_single_tokens_kept_on_decode(family, loaded):
    tokenizer = loaded[family][1].tokenizer
    for phrase in ("<tool_call>", "</tool_call>", *REFUSAL_TOKENS):
        ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, phrase
        assert tokenizer.decode(ids, skip_special_tokens=True) == phrase
    text = "Sure, here is a list of steps to bake a cake."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    a = build_fixture("qwen2_5_vl", tmp_path / "a", seed=3)
    b = build_fixture("qwen2_5_vl", tmp_path / "b", seed=3)
    c = build_fixture("qwen2_5_vl", tmp_path / "c", seed=4)
    files = sorted(p.name for p in a.iterdir())
    assert "model.safetensors" in files and files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert sha256(a / name) == sha256(b / name), name
    assert sha256(a / "model.safetensors") != sha256(c / "model.safetensors")


def test_llava_build_is_deterministic_and_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_fixture("llava", tmp_path / "a", seed=1)
    assert torch.equal(torch.rand(3), expected)
    b = build_fixture("llava", tmp_path / "b", seed=1)
    assert sha256(a / "model.safetensors") == sha256(b / "model.safetensors")


def test_rebuild_replaces_a_fixture_but_never_a_foreign_directory(tmp_path):
    out = build_fixture("llava", tmp_path / "m", seed=0)
    build_fixture("llava", out, seed=2)
    assert json.loads((out / "FIXTURE.json").read_text())["seed"] == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a fixture"):
        build_fixture("llava", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_unknown_family_and_bad_size_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=", ".join(ALL_FIXTURE_FAMILIES)):
        build_fixture("gpt2", tmp_path / "x")
    with pytest.raises(ConfigError, match="hidden_size"):
        build_fixture("llava", tmp_path / "y", hidden_size=60, num_heads=4)
    with pytest.raises(ConfigError, match="image_size=42 for family 'gemma3' must be a multiple of 28"):
        build_fixture("gemma3", tmp_path / "z", image_size=42)
    assert not (tmp_path / "z").exists()


def test_reference_families_are_buildable_and_come_first():
    assert FIXTURE_FAMILIES == ("qwen2_5_vl", "llava") == ALL_FIXTURE_FAMILIES[:2]


def test_another_family_is_deterministic_and_records_its_image_size(tmp_path):
    a = build_fixture("gemma3", tmp_path / "a", seed=5, image_size=28)
    b = build_fixture("gemma3", tmp_path / "b", seed=5, image_size=28)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert sha256(a / name) == sha256(b / name), name
    assert read_fixture_marker(a)["image_size"] == 28
    assert read_fixture_marker(build_fixture("qwen3_vl", tmp_path / "q"))["image_size"] is None


TOOL_CONVERSATION = [
    {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What does it say?"}]},
    {
        "role": "assistant",
        "content": [],
        "tool_calls": [{"name": "zoom_in", "arguments": {"bbox": [1, 2, 30, 40]}}],
    },
    {"role": "tool", "content": [{"type": "image"}]},
]


def test_qwen_template_renders_chatml_images_tool_calls_and_tool_turns(loaded):
    processor = loaded["qwen2_5_vl"][1]
    text = processor.apply_chat_template(TOOL_CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What does it say?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "zoom_in", "arguments": {"bbox": [1, 2, 30, 40]}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    # no system message: the default system prompt is added, as in Qwen's own template
    plain = processor.apply_chat_template(TOOL_CONVERSATION[1:2], tokenize=False, add_generation_prompt=False)
    assert plain.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")


def test_llava_template_renders_user_assistant_images_and_tool_turns(loaded):
    processor = loaded["llava"][1]
    text = processor.apply_chat_template(TOOL_CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<s>You are a helpful assistant.\n"
        "USER: <image>\nWhat does it say? "
        'ASSISTANT: <tool_call>\n{"name": "zoom_in", "arguments": {"bbox": [1, 2, 30, 40]}}\n</tool_call></s>'
        "USER: <tool_response>\n<image>\n\n</tool_response> ASSISTANT:"
    )


def test_synthetic_episodes_follow_the_contract(tmp_path):
    from toolshift.contracts import validate_episode

    episodes = synthetic_episodes(tmp_path, 5)
    assert [e["condition"] for e in episodes] == ["direct", "tool", "text_trail", "image_no_tool", "direct"]
    for i, episode in enumerate(episodes):
        validate_episode(episode, f"synthetic:{i}")
        for msg in episode["messages"]:
            for part in msg["content"]:
                if part["type"] == "image":
                    assert (tmp_path / part["path"]).is_file()
    assert episodes[1]["meta"]["tools"] and not episodes[0]["meta"]["tools"]
