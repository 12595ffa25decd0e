"""Qwen-VL fixtures: Qwen2.5-VL (also the fixture of DeepEyes, Chain-of-Focus, Mini-o3, Pixel-Reasoner, Thyme
and DeepEyesV2: Qwen2.5-VL weights), Qwen2-VL (OpenThinkIMG) and Qwen3-VL.

Chat templates written for this project in the form of the public ones: ChatML turns, one
`<|vision_start|><|image_pad|><|vision_end|>` per image where it appears, assistant `tool_calls` as
`<tool_call>{json}</tool_call>` text and `tool` turns as a user turn `<tool_response>…</tool_response>`.
Qwen2.5-VL adds a default system prompt when there is none; Qwen3-VL does not. Qwen2-VL-Instruct's public
template has the layout of Qwen2.5-VL-Instruct's (the same ChatML turns, default system prompt and image
markers), so its fixture carries the same template.
"""

from __future__ import annotations

from typing import Any

from toolshift.models.fixture_models.common import VISION_TOWER, FixtureParts, fast_tokenizer

QWEN_SPECIAL: list[str] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_RENDER = (
    "{% macro render(parts) %}"
    "{% if parts is string %}{{ parts }}"
    "{% else %}{% for part in parts %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% macro render_calls(message) %}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{% set fn = call['function'] if 'function' in call else call %}"
    "{% if not loop.first or message['content'] %}{{ '\\n' }}{% endif %}"
    "<tool_call>{{ '\\n' }}{\"name\": {{ fn['name'] | tojson }}, "
    "\"arguments\": {{ fn['arguments'] | tojson }}}"
    "{{ '\\n' }}</tool_call>"
    "{% endfor %}"
    "{% endmacro %}"
)

QWEN25_TEMPLATE = (
    _RENDER + "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'tool' %}"
    "<|im_start|>user{{ '\\n' }}<tool_response>{{ '\\n' }}{{ render(message['content']) }}"
    "{{ '\\n' }}</tool_response><|im_end|>{{ '\\n' }}"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}{{ render(message['content']) }}"
    "{% if message['role'] == 'assistant' %}{{ render_calls(message) }}{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)
"""Qwen2.5-VL-Instruct's form (default system prompt when none is given)."""

QWEN3_TEMPLATE = (
    _RENDER + "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}"
    "{% if loop.first or loop.previtem['role'] != 'tool' %}<|im_start|>user{% endif %}"
    "{{ '\\n' }}<tool_response>{{ '\\n' }}{{ render(message['content']) }}{{ '\\n' }}</tool_response>"
    "{% if loop.last or loop.nextitem['role'] != 'tool' %}<|im_end|>{{ '\\n' }}{% endif %}"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}{{ render(message['content']) }}"
    "{% if message['role'] == 'assistant' %}{{ render_calls(message) }}{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)
"""Qwen3-VL-Instruct's form: no default system prompt; consecutive tool turns share one user turn."""


def _mrope_section(head_dim: int, ratio: tuple[int, int]) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) like the real models do
    (Qwen2.5-VL 16/24/24 of 64: ratio (3, 8); Qwen3-VL 24/20/20 of 64: ratio (5, 16))."""
    half = head_dim // 2
    spatial = ratio[0] * half // ratio[1]
    return [half - 2 * spatial, spatial, spatial]


def _text_config(tokenizer: Any, hidden_size: int, num_layers: int, num_heads: int) -> dict[str, Any]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": max(1, num_heads // 2),
        "max_position_embeddings": 4096,
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }


def _vision_token_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _qwen_text(hidden_size: int, num_layers: int, num_heads: int, vocab_size: int) -> tuple[Any, dict]:
    """The tokenizer and decoder config Qwen2-VL and Qwen2.5-VL share: Qwen2 with 3-d mrope. As in Qwen2.5,
    the tool-call markers are added tokens but not special: decoding keeps them."""
    tokenizer = fast_tokenizer(
        vocab_size,
        QWEN_SPECIAL,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIAL[1:],
    )
    text_config = _text_config(tokenizer, hidden_size, num_layers, num_heads)
    text_config["max_window_layers"] = num_layers
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": _mrope_section(hidden_size // num_heads, (3, 8)),
    }
    return tokenizer, text_config


def build_qwen2_5_vl(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """Qwen2.5-VL: Qwen2 decoder with 3-d mrope, windowed ViT (patch 14, 2x2 merge). `image_size` unused:
    the processor resizes dynamically (a 760x760 image becomes 168x168 pixels = 36 image tokens)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer, text_config = _qwen_text(hidden_size, num_layers, num_heads, vocab_size)
    vision_config = {
        "depth": VISION_TOWER["num_layers"],
        "hidden_size": VISION_TOWER["hidden_size"],
        "intermediate_size": VISION_TOWER["intermediate_size"],
        "num_heads": VISION_TOWER["num_heads"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "out_hidden_size": hidden_size,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=False,
        **_vision_token_ids(tokenizer),
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 36}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN25_TEMPLATE,
    )
    return FixtureParts(model, processor, ("<|im_end|>", "<|endoftext|>"), "<|endoftext|>", "<|endoftext|>")


def build_qwen2_vl(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """Qwen2-VL (OpenThinkIMG's base): Qwen2 decoder with 3-d mrope, ViT with patch 14 and 2x2 merge and full
    attention in every block. `image_size` unused: the processor resizes dynamically."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer, text_config = _qwen_text(hidden_size, num_layers, num_heads, vocab_size)
    vision_config = {
        "depth": VISION_TOWER["num_layers"],
        "embed_dim": VISION_TOWER["hidden_size"],
        "hidden_size": hidden_size,
        "mlp_ratio": VISION_TOWER["intermediate_size"] // VISION_TOWER["hidden_size"],
        "num_heads": VISION_TOWER["num_heads"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=False,
        **_vision_token_ids(tokenizer),
    )
    model = Qwen2VLForConditionalGeneration(config)
    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 36}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN25_TEMPLATE,
    )
    return FixtureParts(model, processor, ("<|im_end|>", "<|endoftext|>"), "<|endoftext|>", "<|endoftext|>")


def build_qwen3_vl(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """Qwen3-VL: Qwen3 decoder (explicit head_dim, interleaved mrope) fed DeepStack visual features after
    its first layers, ViT with patch 16 and 2x2 merge. `image_size` unused: the processor resizes
    dynamically (a 760x760 image becomes 128x128 pixels = 16 image tokens)."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    # Qwen3 tokenizers hold the tool-response and thinking markers as added (non-special) tokens.
    tokenizer = fast_tokenizer(
        vocab_size,
        QWEN_SPECIAL,
        plain=("<tool_response>", "</tool_response>", "<think>", "</think>"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIAL[1:],
    )
    head_dim = hidden_size // num_heads
    text_config = _text_config(tokenizer, hidden_size, num_layers, num_heads)
    text_config["head_dim"] = head_dim
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": _mrope_section(head_dim, (5, 16)),
        "mrope_interleaved": True,
    }
    depth = VISION_TOWER["num_layers"]
    vision_config = {
        "depth": depth,
        "hidden_size": VISION_TOWER["hidden_size"],
        "intermediate_size": VISION_TOWER["intermediate_size"],
        "num_heads": VISION_TOWER["num_heads"],
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden_size,
        "num_position_embeddings": 64,  # an 8x8 grid of learned positions, interpolated per image
        "deepstack_visual_indexes": list(range(min(depth, num_layers))),
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        tie_word_embeddings=False,
        **_vision_token_ids(tokenizer),
    )
    model = Qwen3VLForConditionalGeneration(config)
    size = {"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 16}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_TEMPLATE,
    )
    return FixtureParts(model, processor, ("<|im_end|>", "<|endoftext|>"), "<|endoftext|>", "<|endoftext|>")
