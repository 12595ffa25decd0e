"""Idefics3 and SmolVLM fixtures: a SigLIP-style tower (`image_size`, patch 14) pixel-shuffled by 2 into
(image_size/28)^2 tokens per tile, a Llama decoder, and image splitting into up to 2x2 tiles plus the
global image. SmolVLM (model_type `smolvlm`, SmolVLM2) is the same design with its own classes; SmolVLM
v1 checkpoints are model_type `idefics3`.

Chat templates written for this project in the form of the public ones: a fixed prefix
(`<|begin_of_text|>` for Idefics3, `<|im_start|>` for SmolVLM), then `{Role}:` turns (a space after the
colon unless the turn starts with an image), `<image>` where each image appears and
`<end_of_utterance>\\n` after each turn; generation starts with `Assistant:`. There is no tool role.
"""

from __future__ import annotations

from typing import Any

from toolshift.models.fixture_models.common import VISION_TOWER, FixtureParts, fast_tokenizer

_TURNS = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>"
    "{% endif %}{% endfor %}"
    "<end_of_utterance>{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

IDEFICS3_TEMPLATE = "<|begin_of_text|>" + _TURNS
SMOLVLM_TEMPLATE = "<|im_start|>" + _TURNS

_IMAGE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]
SCALE_FACTOR = 2
"""Pixel-shuffle factor (Idefics3 uses 2; the smallest SmolVLMs use 4)."""


def _build(
    smolvlm: bool, *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    import transformers as tf

    if smolvlm:
        # SmolVLM tokenizers: GPT-2-style BPE with ChatML markers; bos <|im_start|>, pad <|im_end|>
        head = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        named = {"bos_token": "<|im_start|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}
        eos = ("<end_of_utterance>", "<|im_end|>")
        classes = ("SmolVLMConfig", "SmolVLMForConditionalGeneration", "SmolVLMProcessor")
        vision_class, image_class, template = "SmolVLMVisionConfig", "SmolVLMImageProcessor", SMOLVLM_TEMPLATE
    else:
        # Idefics3-8B-Llama3: the Llama 3 tokenizer's markers
        head = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"]
        named = {"bos_token": "<|begin_of_text|>", "pad_token": "<|reserved_special_token_0|>"}
        eos = ("<end_of_utterance>", "<|end_of_text|>")
        classes = ("Idefics3Config", "Idefics3ForConditionalGeneration", "Idefics3Processor")
        vision_class, image_class, template = (
            "Idefics3VisionConfig",
            "Idefics3ImageProcessor",
            IDEFICS3_TEMPLATE,
        )
    tokenizer = fast_tokenizer(
        vocab_size,
        head + _IMAGE_TOKENS,
        model_max_length=16384,
        eos_token="<end_of_utterance>",
        extra_special_tokens=_IMAGE_TOKENS[:4],
        **named,
    )
    ids = tokenizer.convert_tokens_to_ids
    patch = 14
    vision_config = getattr(tf, vision_class)(
        hidden_size=VISION_TOWER["hidden_size"],
        intermediate_size=VISION_TOWER["intermediate_size"],
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_attention_heads=VISION_TOWER["num_heads"],
        image_size=image_size,
        patch_size=patch,
    )
    text_config = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=ids(named["bos_token"]),
        eos_token_id=ids("<end_of_utterance>"),
        pad_token_id=ids(named["pad_token"]),
    )
    config_class, model_class, processor_class = (getattr(tf, name) for name in classes)
    config = config_class(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=ids("<image>"),
        scale_factor=SCALE_FACTOR,
        tie_word_embeddings=False,
    )
    model = model_class(config)
    image_processor = getattr(tf, image_class)(
        size={"longest_edge": 2 * image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=True,
    )
    extra: dict[str, Any] = {}
    if smolvlm:
        extra["video_processor"] = tf.SmolVLMVideoProcessor()
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch) ** 2 // SCALE_FACTOR**2,
        chat_template=template,
        **extra,
    )
    return FixtureParts(model, processor, eos, named["pad_token"], named["bos_token"], image_size)


def build_idefics3(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """Idefics3 (see the module docstring); `image_size` is the tile side, a multiple of 28."""
    return _build(
        False,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        vocab_size=vocab_size,
        image_size=image_size,
    )


def build_smolvlm(
    *, hidden_size: int, num_layers: int, num_heads: int, vocab_size: int, image_size: int
) -> FixtureParts:
    """SmolVLM (see the module docstring); needs the `num2words` package, as SmolVLMProcessor does."""
    return _build(
        True,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        vocab_size=vocab_size,
        image_size=image_size,
    )
