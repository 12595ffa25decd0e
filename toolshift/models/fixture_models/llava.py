"""LLaVA fixtures: LLaVA-1.5 (llava-hf) and LLaVA-OneVision (llava-hf, Qwen2 decoder, SigLIP, anyres).

Chat templates written for this project in the form of the public ones:
- LLaVA-1.5: `USER: <image>\\n… ASSISTANT:`; this one also renders assistant `tool_calls` and `tool` turns.
- LLaVA-OneVision: ChatML-like `<|im_start|>{role} ` then all of a turn's `<image>`s first, then each
  text part after a newline, `<|im_end|>` with no newline between turns. Like the public template it
  has no tool role and ignores `tool_calls` (the adapter renders both as plain turns).
"""

from __future__ import annotations

from toolshift.models.fixture_models.common import (
    VISION_TOWER,
    FixtureParts,
    chatml_qwen2_text_config,
    fast_tokenizer,
)

LLAVA_TEMPLATE = (
    "{% macro render(parts) %}"
    "{% if parts is string %}{{ parts }}"
    "{% else %}{% for part in parts %}"
    "{% if part['type'] == 'image' or 'image' in part %}<image>{{ '\\n' }}"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ render(message['content']) }}{{ '\\n' }}"
    "{% elif message['role'] == 'user' %}USER: {{ render(message['content']) }} "
    "{% elif message['role'] == 'tool' %}USER: <tool_response>{{ '\\n' }}{{ render(message['content']) }}"
    "{{ '\\n' }}</tool_response> "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {{ render(message['content']) }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{% set fn = call['function'] if 'function' in call else call %}"
    "{% if not loop.first or message['content'] %}{{ '\\n' }}{% endif %}"
    "<tool_call>{{ '\\n' }}{\"name\": {{ fn['name'] | tojson }}, "
    "\"arguments\": {{ fn['arguments'] | tojson }}}"
    "{{ '\\n' }}</tool_call>"
    "{% endfor %}"
    "{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

ONEVISION_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\\n' + message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'video') %}<video>{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + part['text'] }}{% endfor %}"
    "{% endif %}"
    "<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


def build_llava(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """LLaVA-1.5: CLIP ViT (`image_size` input side, patch 14, CLS dropped) and a Llama decoder."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = fast_tokenizer(
        vocab_size,
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        model_max_length=4096,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=["<image>"],
    )
    ids = tokenizer.convert_tokens_to_ids
    patch = 14
    vision_config = CLIPVisionConfig(
        hidden_size=VISION_TOWER["hidden_size"],
        intermediate_size=VISION_TOWER["intermediate_size"],
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_attention_heads=VISION_TOWER["num_heads"],
        image_size=image_size,
        patch_size=patch,
        projection_dim=32,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=4096,
        bos_token_id=ids("<s>"),
        eos_token_id=ids("</s>"),
        pad_token_id=ids("<pad>"),
    )
    n_image_tokens = (image_size // patch) ** 2  # "default" strategy drops the CLS token
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=ids("<image>"),
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return FixtureParts(model, processor, ("</s>",), "<pad>", "<s>", image_size)


def build_llava_onevision(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """LLaVA-OneVision: SigLIP tiles of `image_size` (patch 14, all patch tokens), a Qwen2 decoder and
    anyres tiling (up to 2 tiles plus the base image; a multi-image prompt uses base images only)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tokenizer = fast_tokenizer(
        vocab_size,
        special,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=special[1:],
    )
    ids = tokenizer.convert_tokens_to_ids
    patch = 14
    vision_config = SiglipVisionConfig(
        hidden_size=VISION_TOWER["hidden_size"],
        intermediate_size=VISION_TOWER["intermediate_size"],
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_attention_heads=VISION_TOWER["num_heads"],
        image_size=image_size,
        patch_size=patch,
        vision_use_head=False,
    )
    text_config = chatml_qwen2_text_config(tokenizer, hidden_size, num_layers, num_heads)
    side = image_size
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side]]
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=ids("<image>"),
        video_token_index=ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": side, "width": side}, image_grid_pinpoints=pinpoints, do_pad=True
    )
    video_processor = LlavaOnevisionVideoProcessor(size={"height": side, "width": side})
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_TEMPLATE,
    )
    return FixtureParts(
        model, processor, ("<|im_end|>", "<|endoftext|>"), "<|endoftext|>", "<|endoftext|>", side
    )
