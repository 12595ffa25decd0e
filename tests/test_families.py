"""Every model family through the whole path on its tiny fixture: build, load through the Auto classes,
render, encode, generate, capture and intervene.

Tolerance for generate-vs-forward capture: as tests/test_inference.py, |diff| <= 1e-4 * max|state|
(the cached prefill and a plain forward differ by float32 rounding only).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolshift.models.adapters import ADAPTERS, NATIVE_FAMILIES
from toolshift.models.fixtures import ALL_FIXTURE_FAMILIES, REFUSAL_TOKENS, synthetic_episodes
from toolshift.models.generation import encode, generate, render_prompts, token_counts
from toolshift.models.hooks import ResidualEdit, ablate_direction, capture_last_token
from toolshift.models.loading import load_model

MAX_NEW = 4
REL_TOL = 1e-4
LAYER = 1
N_IMAGES = {"direct": 1, "tool": 2, "text_trail": 1, "image_no_tool": 2}

# family -> (model class, processor class, what the chat template writes per image)
EXPECTED = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "deepeyes": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "<image>"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", "<|image_pad|>"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", "<image>"),
    "internvl": ("InternVLForConditionalGeneration", "InternVLProcessor", "<IMG_CONTEXT>"),
    "gemma3": ("Gemma3ForConditionalGeneration", "Gemma3Processor", "<start_of_image>"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor", "<image>"),
    "smolvlm": ("SmolVLMForConditionalGeneration", "SmolVLMProcessor", "<image>"),
    "chain_of_focus": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "mini_o3": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "pixel_reasoner": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "thyme": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "deepeyes_v2": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", "<|image_pad|>"),
    "openthinkimg": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "<|image_pad|>"),
}
GENERIC = [f for f in ALL_FIXTURE_FAMILIES if f not in NATIVE_FAMILIES]
"""The families with the episodes' generic tool framing (the others, in their own protocol, are checked byte
for byte in tests/test_native_families.py)."""


def test_every_adapter_family_has_a_fixture():
    assert sorted(ALL_FIXTURE_FAMILIES) == sorted(ADAPTERS) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    return tmp_path_factory.mktemp("families_results")


@pytest.fixture(scope="module")
def episodes(results_root):
    return synthetic_episodes(results_root, 4)  # direct, tool, text_trail, image_no_tool


@pytest.fixture(scope="module", params=ALL_FIXTURE_FAMILIES)
def loaded(request, family_fixture_dir):
    family = request.param
    return load_model(family_fixture_dir(family), family)


def test_loads_through_the_auto_classes(loaded):
    family = loaded.adapter.family
    model_class, processor_class, placeholder = EXPECTED[family]
    assert type(loaded.model).__name__ == model_class
    assert type(loaded.processor).__name__ == processor_class
    assert loaded.model.config.model_type in loaded.adapter.model_types
    assert loaded.model.config.toolshift_fixture["family"] == family
    assert (loaded.n_layers, loaded.hidden_size) == (4, 64)
    tokenizer = loaded.processor.tokenizer
    assert loaded.model.config.get_text_config().vocab_size == len(tokenizer)
    assert tokenizer(placeholder, add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids(placeholder)
    ]
    gen = loaded.model.generation_config
    assert gen.do_sample is False and gen.pad_token_id is not None and gen.eos_token_id is not None


def test_tool_markers_and_refusal_phrases_are_single_tokens_kept_on_decode(loaded):
    tokenizer = loaded.processor.tokenizer
    for phrase in ("<tool_call>", "</tool_call>", *REFUSAL_TOKENS):
        ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, phrase
        assert tokenizer.decode(ids, skip_special_tokens=True) == phrase


def test_decoder_layers(loaded):
    layers = loaded.adapter.decoder_layers(loaded.model)
    inner = loaded.model.model
    expected = inner.text_model.layers if hasattr(inner, "text_model") else inner.language_model.layers
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == loaded.n_layers
    assert layers is expected


def joined(parts: list[dict], image: str, trim: bool = False) -> str:
    """A turn's parts as a template writes them: `image` for each image, texts (trimmed if `trim`)."""
    return "".join(
        image if p["type"] == "image" else (p["text"].strip() if trim else p["text"]) for p in parts
    )


def expected_prompt(family: str, messages: list[dict]) -> str:
    """The tool episode's prompt in the layout of the family's public chat template."""
    system, user, call, tool = (m["content"] for m in messages)
    s, c = system[0]["text"], call[0]["text"]
    if family in ("qwen2_5_vl", "deepeyes", "qwen3_vl"):
        img = "<|vision_start|><|image_pad|><|vision_end|>"
        return (
            f"<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{joined(user, img)}<|im_end|>\n"
            f"<|im_start|>assistant\n{c}<|im_end|>\n<|im_start|>user\n{joined(tool, img)}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    if family == "llava":
        img = "<image>\n"
        return f"<s>{s}\nUSER: {joined(user, img)} ASSISTANT: {c}</s>USER: {joined(tool, img)} ASSISTANT:"
    if family == "llava_onevision":  # images first, each text after a newline, no newline between turns
        return (
            f"<|im_start|>system \n{s}<|im_end|><|im_start|>user <image>\n{user[1]['text']}<|im_end|>"
            f"<|im_start|>assistant \n{c}<|im_end|><|im_start|>user <image>\n{tool[1]['text']}<|im_end|>"
            "<|im_start|>assistant\n"
        )
    if family == "internvl":
        img = "<IMG_CONTEXT>\n"
        return (
            f"<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{joined(user, img)}<|im_end|>\n"
            f"<|im_start|>assistant\n{c}<|im_end|>\n<|im_start|>user\n{joined(tool, img)}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    if family == "gemma3":  # system folded into the first user turn; texts trimmed
        img = "<start_of_image>"
        return (
            f"<bos><start_of_turn>user\n{s}\n\n{joined(user, img, True)}<end_of_turn>\n"
            f"<start_of_turn>model\n{c.strip()}<end_of_turn>\n"
            f"<start_of_turn>user\n{joined(tool, img, True)}<end_of_turn>\n<start_of_turn>model\n"
        )
    head = {"idefics3": "<|begin_of_text|>", "smolvlm": "<|im_start|>"}[family]
    return (
        f"{head}System: {s}<end_of_utterance>\nUser:{joined(user, '<image>')}<end_of_utterance>\n"
        f"Assistant: {c}<end_of_utterance>\nUser: {joined(tool, '<image>')}<end_of_utterance>\nAssistant:"
    )


@pytest.fixture(scope="module", params=GENERIC)
def generic(request, family_fixture_dir):
    """A family with the generic tool framing, loaded."""
    return load_model(family_fixture_dir(request.param), request.param)


def test_chat_template_has_the_public_layout(generic, episodes, results_root):
    loaded = generic
    messages, _ = loaded.adapter.render_messages(episodes[1], results_root)
    text = render_prompts(loaded, [episodes[1]], results_root)[0][0]
    assert text == expected_prompt(loaded.adapter.family, messages)


def test_every_condition_renders_and_encodes(loaded, episodes, results_root):
    """Each image the adapter returns has its placeholder in the prompt, the tool framing is there exactly
    for the tool conditions, and a batch encodes to the same image tokens as its episodes one by one."""
    placeholder = EXPECTED[loaded.adapter.family][2]
    image_token_id = loaded.model.config.image_token_id
    singles = []
    for episode in episodes:
        texts, images = render_prompts(loaded, [episode], results_root)
        assert texts[0].count(placeholder) == len(images) == N_IMAGES[episode["condition"]]
        if loaded.adapter.family not in NATIVE_FAMILIES:  # the others: their own markers, tested there
            assert ("<tool_call>" in texts[0]) == (episode["condition"] in ("tool", "text_trail"))
            assert ("<tool_response>" in texts[0]) == (episode["condition"] in ("tool", "text_trail"))
        enc = encode(loaded, [episode], results_root)
        singles.append(int((enc["input_ids"] == image_token_id).sum()))
    assert min(singles) > 0
    batch = encode(loaded, episodes, results_root)
    assert (batch["input_ids"] == image_token_id).sum(dim=1).tolist() == singles


def test_generate_and_capture(loaded, episodes, results_root):
    """A batch of two episodes with different image counts (direct: 1, tool: 2): rows, shapes, and the
    captured states equal to transformers' own hidden states for the inner layers."""
    batch = episodes[:2]
    df, states = generate(loaded, batch, results_root, batch_size=2, max_new_tokens=MAX_NEW, progress=False)
    assert df["prompt_id"].tolist() == [e["prompt_id"] for e in batch]
    assert df["n_new_tokens"].between(0, MAX_NEW).all() and (df["n_prompt_tokens"] > 0).all()
    assert states.shape == (2, loaded.n_layers, loaded.hidden_size) and states.dtype == np.float32
    inputs = encode(loaded, batch, results_root)
    with capture_last_token(loaded) as store, torch.inference_mode():
        out = loaded.model(**inputs, output_hidden_states=True)
    forward_states = store.array()
    assert len(out.hidden_states) == loaded.n_layers + 1
    for layer in range(loaded.n_layers - 1):
        np.testing.assert_array_equal(forward_states[:, layer], out.hidden_states[layer + 1][:, -1].numpy())
    np.testing.assert_allclose(states, forward_states, rtol=0, atol=REL_TOL * np.abs(states).max())


def test_add_with_alpha_zero_leaves_the_output_identical(loaded, episodes, results_root):
    batch = episodes[:2]
    v = np.random.default_rng(0).standard_normal(loaded.hidden_size).astype(np.float32)
    df, states = generate(loaded, batch, results_root, max_new_tokens=MAX_NEW, progress=False)
    zero = ResidualEdit(kind="add", layer=LAYER, vector=v, alpha=0.0)
    df0, states0 = generate(
        loaded, batch, results_root, max_new_tokens=MAX_NEW, intervention=zero, progress=False
    )
    assert df0.equals(df)
    np.testing.assert_array_equal(states0, states)
    one = ResidualEdit(kind="add", layer=LAYER, vector=v, alpha=1.0)
    _, states1 = generate(loaded, batch, results_root, max_new_tokens=1, intervention=one, progress=False)
    np.testing.assert_allclose(
        states1[:, LAYER] - states[:, LAYER], np.broadcast_to(v, (2, v.size)), atol=1e-5
    )


def test_ablate_direction_removes_the_component(loaded, episodes, results_root):
    """After ablation no decoder layer's output has a component along the direction, at any position."""
    batch = episodes[:2]
    direction = np.random.default_rng(1).standard_normal(loaded.hidden_size).astype(np.float32)
    unit = torch.from_numpy(direction / np.linalg.norm(direction))
    layers = loaded.adapter.decoder_layers(loaded.model)
    inputs = encode(loaded, batch, results_root)
    seen: list[torch.Tensor] = []
    with ablate_direction(loaded, direction), capture_last_token(loaded) as store:
        probes = [
            layer.register_forward_hook(
                lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out)
            )
            for layer in layers
        ]
        try:
            with torch.inference_mode():
                loaded.model(**inputs)
        finally:
            for probe in probes:
                probe.remove()
    assert len(seen) == loaded.n_layers
    for hidden in seen:
        assert float((hidden.float() @ unit).abs().max()) < 1e-4 * float(hidden.abs().max())
    _, plain = generate(loaded, batch, results_root, max_new_tokens=1, progress=False)
    ablated = store.array()
    assert np.abs(ablated @ unit.numpy()).max() < 1e-4 * np.abs(ablated).max()
    assert np.abs(plain @ unit.numpy()).max() > 1e-2 * np.abs(plain).max()  # there was one to remove


@pytest.fixture(scope="module")
def attack_episodes(tmp_path_factory):
    """Real episodes of two mini prompts in `tool_offered`, `direct`, `tool`, the overrides and the controls
    of the tool's structure, with the default zoom and with the zooming policy (text_lines, pixels)."""
    from toolshift.datasets.prompts import build_prompts, load_mini
    from toolshift.episodes.build import build_episodes_by_condition

    conditions = [
        "direct",
        "tool_offered",
        "tool",
        "tool_unsafe",
        "tool_benign",
        "tool_blank",
        "tool_blank_x4",
    ]
    conditions += ["text_trail", "image_no_tool", "image_after", "image_turn", "text_trail_long"]
    out = {}
    for name, options in {
        "default": {},
        "text_lines": {"bbox_policy": "text_lines", "zoom_resize": "pixels"},
    }.items():
        root = tmp_path_factory.mktemp(f"attack_{name}")
        prompts = build_prompts("mini", load_mini(), root, limit_per_class=1)
        out[name] = (root, build_episodes_by_condition(prompts, conditions, root, **options))
    return out


def test_tool_offered_prompt_is_direct_plus_the_tool_parts(generic, attack_episodes):
    """Through the family's chat template: `tool_offered` is `direct` with the tool section (and the tool
    parts of the answer format) added, byte for byte; nothing else differs."""
    root, episodes = attack_episodes["default"]
    adapter = generic.adapter
    for direct, offered in zip(episodes["direct"], episodes["tool_offered"], strict=True):
        direct_text = render_prompts(generic, [direct], root)[0][0]
        offered_text = render_prompts(generic, [offered], root)[0][0]
        section = adapter.tool_prompt(offered["meta"]["tools"])
        assert section in offered_text and section not in direct_text
        stripped = offered_text.replace("\n\n" + section, "", 1)
        if "\n\n" + section not in offered_text:  # a template that folds the system prompt differently
            stripped = offered_text.replace(section, "", 1)
        for part in adapter.tool_format_parts:
            stripped = stripped.replace(part, "")
        assert stripped == direct_text


@pytest.mark.parametrize("policy", ["default", "text_lines"])
def test_tool_and_its_overrides_cost_the_same_visual_tokens(loaded, attack_episodes, policy):
    """The override images have the zoom's size: `tool` and its three overrides encode to the same number
    of visual tokens (and the same prompt length) with the family's own processor."""
    root, episodes = attack_episodes[policy]
    image_token_id = loaded.model.config.image_token_id
    for i in range(len(episodes["tool"])):
        counts = {}
        for condition in ("tool", "tool_unsafe", "tool_benign", "tool_blank"):
            enc = encode(loaded, [episodes[condition][i]], root)
            counts[condition] = (int((enc["input_ids"] == image_token_id).sum()), enc["input_ids"].shape[1])
        assert len(set(counts.values())) == 1, counts
        assert counts["tool"][0] > 0


def texts(parts: list[dict]) -> list[str]:
    return [p["text"] for p in parts if p["type"] == "text"]


def after_by_decoding(tokenizer, ids: list[int], instruction: str) -> int:
    """The reference count of tokens after the attack text: the fewest leading ids whose decoding holds it."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if instruction in tokenizer.decode(ids[:mid], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    return len(ids) - lo


N_IMAGES = {"direct": 1, "tool": 2, "tool_blank_x4": 2, "text_trail": 1, "image_no_tool": 2, "image_after": 2}
N_IMAGES |= {"image_turn": 2, "text_trail_long": 1}


@pytest.mark.parametrize("policy", ["default", "text_lines"])
def test_token_counts_of_every_control(loaded, attack_episodes, policy):
    """The token columns on the family's own processor: they add up, the tokens after the attack text
    equal a decoding reference, and each control holds constant what it is built to hold."""
    root, episodes = attack_episodes[policy]
    tokenizer = loaded.processor.tokenizer
    for i in range(len(episodes["tool"])):
        counts = {}
        for condition in N_IMAGES:
            episode = episodes[condition][i]
            (c,) = token_counts(loaded, [episode], root)
            ids = encode(loaded, [episode], root)["input_ids"][0].tolist()
            assert c["n_prompt_tokens"] == len(ids) == c["n_visual_tokens"] + c["n_text_tokens"], condition
            assert c["n_images"] == N_IMAGES[condition], condition
            instruction = texts(episode["messages"][1]["content"])[-1]
            assert c["n_after_instruction"] == after_by_decoding(tokenizer, ids, instruction), condition
            counts[condition] = c
        text_first = getattr(loaded.adapter, "question_text_first", False)  # OpenThinkIMG: T, then the images
        for condition in ("direct", "text_trail", "text_trail_long", "image_no_tool"):
            expected = counts[condition]["n_visual_tokens"] if text_first else 0
            assert counts[condition]["n_visual_after_instruction"] == expected, condition
        assert counts["text_trail"]["n_visual_tokens"] == counts["direct"]["n_visual_tokens"]
        # image_after is image_no_tool with the zoom moved after T: the same images, the zoom's tokens after
        after, before = counts["image_after"], counts["image_no_tool"]
        assert after["n_visual_tokens"] == before["n_visual_tokens"]
        moved = after["n_after_instruction"] - before["n_after_instruction"]
        assert moved == after["n_visual_after_instruction"] - (before["n_visual_tokens"] if text_first else 0)
        # ... as `tool` and `image_turn` show it after T: the same image, up to the whitespace a template
        # merges with its neighbours (an image "adds" the prompt minus the prompt without it; at most 2)
        zoom = counts["tool"]["n_visual_after_instruction"]
        assert zoom > 0 and abs(counts["image_turn"]["n_visual_after_instruction"] - zoom) <= 2
        assert moved == 0 if loaded.adapter.images_first or text_first else abs(moved - zoom) <= 2
        # text_trail_long: the trail line padded to the tokens of the image it replaces (never shorter)
        tool, trail, long = counts["tool"], counts["text_trail"], counts["text_trail_long"]
        assert long["n_after_instruction"] == max(tool["n_after_instruction"], trail["n_after_instruction"])
        assert long["n_visual_tokens"] == trail["n_visual_tokens"]


def test_image_turn_line_is_neutral_and_as_long_as_the_family_call(loaded, attack_episodes):
    from toolshift.episodes.build import NEUTRAL_TEXT
    from toolshift.models.token_counts import PAD_UNITS, token_counter

    root, episodes = attack_episodes["text_lines"]
    adapter, counter = loaded.adapter, token_counter(loaded.processor, loaded.adapter)
    for turn, tool in zip(episodes["image_turn"], episodes["tool"], strict=True):
        line = adapter.render_messages(turn, root, loaded.processor)[0][2]["content"][0]["text"]
        call = adapter.render_messages(tool, root, loaded.processor)[0][2]["content"][0]["text"]
        if adapter.family not in NATIVE_FAMILIES:  # a native call may name the episode's image (Thyme's path)
            assert call == adapter.call_turn_text(turn["meta"]["pad_to_call"], turn["meta"], "test")
        assert counter.text_tokens(line) == counter.text_tokens(call) > 5
        units = {unit.strip() for unit in PAD_UNITS}
        assert set(line.split()) <= set(NEUTRAL_TEXT.split()) | units  # neutral words (and one-token units)


def test_text_trail_long_pads_the_family_trail_line(generic, attack_episodes):
    """(The families in their own protocol: tests/test_native_families.py.)"""
    from toolshift.datasets.images import image_size
    from toolshift.models.token_counts import token_counter

    loaded = generic
    root, episodes = attack_episodes["text_lines"]
    adapter, counter = loaded.adapter, token_counter(loaded.processor, loaded.adapter)
    for long, trail in zip(episodes["text_trail_long"], episodes["text_trail"], strict=True):
        padded = "".join(texts(adapter.render_messages(long, root, loaded.processor)[0][3]["content"]))
        plain = "".join(texts(adapter.render_messages(trail, root, loaded.processor)[0][3]["content"]))
        line = adapter.text_trail_text(trail["messages"][2]["tool_calls"][0], trail["meta"], "test")
        head, tail = plain.split(line)
        assert padded.startswith(head + line) and padded.endswith(tail)
        content = padded[len(head) : len(padded) - len(tail)]
        target = counter.image_tokens(image_size(root / long["meta"]["pad_to_image"]), 2)
        assert counter.text_tokens(content) == max(target, counter.text_tokens(line))
