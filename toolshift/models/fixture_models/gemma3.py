"""Gemma 3 fixture: SigLIP (`image_size`, patch 14) average-pooled to 4 soft tokens per image, and a Gemma 3
decoder (sliding-window layers with a full-attention last layer, bidirectional attention over images).

The chat template, written for this project in the form of the public Gemma 3 one: `<bos>`, then
`<start_of_turn>user|model\\n … <end_of_turn>\\n` turns that must alternate user/model; a system message
has no turn of its own but prefixes the first user turn followed by a blank line; every text part is
trimmed; an image is `<start_of_image>` (the processor expands it to a blank line, the soft tokens and
`<end_of_image>`). There is no tool role.
"""

from __future__ import annotations

from toolshift.models.fixture_models.common import VISION_TOWER, FixtureParts, fast_tokenizer

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% if messages[0]['content'] is string %}{% set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{% else %}{% set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' %}{% endif %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model{{ '\\n' }}{% endif %}"
)

TOKENS_PER_IMAGE = 4
"""Soft tokens per image (`mm_tokens_per_image`; the real model has 256)."""


def build_gemma3(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """Gemma 3 (see the module docstring); `image_size` is the SigLIP input side, a multiple of 28."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    special = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ]
    tokenizer = fast_tokenizer(
        vocab_size,
        special,
        model_max_length=131072,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden_size // num_heads
    vision_config = SiglipVisionConfig(
        hidden_size=VISION_TOWER["hidden_size"],
        intermediate_size=VISION_TOWER["intermediate_size"],
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_attention_heads=VISION_TOWER["num_heads"],
        image_size=image_size,
        patch_size=14,
        vision_use_head=False,
    )
    # the real models interleave 5 sliding-window layers and 1 global one; the last layer here is global
    layer_types = ["sliding_attention"] * (num_layers - 1) + ["full_attention"]
    text_config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=512,
        layer_types=layer_types,
        max_position_embeddings=8192,
        bos_token_id=ids("<bos>"),
        eos_token_id=ids("<eos>"),
        pad_token_id=ids("<pad>"),
    )
    config = Gemma3Config(
        vision_config=vision_config,
        text_config=text_config,
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        tie_word_embeddings=True,
    )
    model = Gemma3ForConditionalGeneration(config)
    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=TOKENS_PER_IMAGE,
        chat_template=GEMMA3_TEMPLATE,
    )
    return FixtureParts(model, processor, ("<end_of_turn>", "<eos>"), "<pad>", "<bos>", image_size)
