"""InternVL3 fixture in the transformers-native ("-hf") format: model_type `internvl`.

InternViT tiles of `image_size` (patch 14), pixel-shuffled by 0.5 into (image_size/28)^2 tokens per tile,
a Qwen2 decoder, and dynamic tiling (up to 2 tiles plus a thumbnail). The chat template, written for this
project in the form of the public InternVL3-hf one: ChatML turns, `<IMG_CONTEXT>\\n` where each image
appears (the processor expands it to `<img>` + tokens + `</img>`), no default system prompt, no tool role.
"""

from __future__ import annotations

from toolshift.models.fixture_models.common import (
    VISION_TOWER,
    FixtureParts,
    chatml_qwen2_text_config,
    fast_tokenizer,
)

INTERNVL_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<IMG_CONTEXT>{{ '\\n' }}"
    "{% elif part['type'] == 'video' %}<video>{{ '\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


def build_internvl(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """InternVL3-hf (see the module docstring); `image_size` is the tile side, a multiple of 28."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVisionConfig,
    )
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<video>",
        "<quad>",
        "</quad>",
        "<ref>",
        "</ref>",
        "<box>",
        "</box>",
    ]
    tokenizer = fast_tokenizer(
        vocab_size,
        special,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    patch = 14
    vision_config = InternVLVisionConfig(
        hidden_size=VISION_TOWER["hidden_size"],
        intermediate_size=VISION_TOWER["intermediate_size"],
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_attention_heads=VISION_TOWER["num_heads"],
        image_size=[image_size, image_size],
        patch_size=[patch, patch],
    )
    text_config = chatml_qwen2_text_config(tokenizer, hidden_size, num_layers, num_heads)
    tokens_per_tile = (image_size // patch) ** 2 // 4  # pixel shuffle with downsample ratio 0.5
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    image_processor = GotOcr2ImageProcessor(
        size={"height": image_size, "width": image_size},
        crop_to_patches=True,
        min_patches=1,
        max_patches=2,
        image_mean=mean,
        image_std=std,
    )
    video_processor = InternVLVideoProcessor(
        size={"height": image_size, "width": image_size}, image_mean=mean, image_std=std
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=tokens_per_tile,
        chat_template=INTERNVL_TEMPLATE,
    )
    return FixtureParts(
        model, processor, ("<|im_end|>", "<|endoftext|>"), "<|endoftext|>", "<|endoftext|>", image_size
    )
