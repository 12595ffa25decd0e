"""Tiny random fixtures of the judge-model architectures, built offline from a seed.

- ``llamaguard3``: a Llama causal LM with Llama 3 header tokens (``<|begin_of_text|>``,
  ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``), the architecture of Llama Guard 3 8B.
- ``harmbench``: a Llama causal LM with Llama 2 tokens (``<s>`` added in front of every encoded text,
  ``</s>``, ``<unk>``), the architecture of HarmBench-Llama-2-13b-cls.
- ``llamaguard3_vision``: an mllama (Llama 3.2 Vision) model with one cross-attention layer, one 56x56 tile
  per image, the architecture of Llama Guard 3 11B-Vision.
- ``llamaguard4``: a llama4 model (dense text layers, no experts in use; a 56x56 image pixel-shuffled to
  4 patch tokens), the architecture of Llama Guard 4 12B.

Every fixture saves a tokenizer (or processor) trained here on the generated corpus of
``toolshift.models.fixture_models.common``, with ``safe``/``unsafe``/``Yes``/``No`` added as whole tokens so
the random model's greedy output is sometimes a verdict. The same seed gives byte-identical files; the outputs
are noise. A ``FIXTURE.json`` marker records the build, as for the VLM fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError
from toolshift.models.fixture_models.common import VISION_TOWER, fast_tokenizer

JUDGE_FIXTURE_VARIANTS: tuple[str, ...] = ("llamaguard3", "harmbench", "llamaguard3_vision", "llamaguard4")
"""The judge variants `build_judge_fixture` can build."""

VERDICT_TOKENS: tuple[str, ...] = ("safe", "unsafe", "Yes", "No", "S1", "S2")

_LLAMA3_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<|image|>",
    "<|python_tag|>",
]


def _llama3_tokenizer(vocab_size: int) -> Any:
    return fast_tokenizer(
        vocab_size,
        _LLAMA3_SPECIAL,
        plain=VERDICT_TOKENS,
        model_max_length=131072,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )


def _llama2_tokenizer(vocab_size: int) -> Any:
    from tokenizers.processors import TemplateProcessing

    tokenizer = fast_tokenizer(
        vocab_size,
        ["<unk>", "<s>", "</s>"],
        plain=VERDICT_TOKENS,
        model_max_length=4096,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    bos = tokenizer.convert_tokens_to_ids("<s>")
    # like the Llama 2 tokenizer: <s> in front of every text encoded with special tokens
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tokenizer


def _llama_causal(tokenizer: Any, hidden_size: int, num_layers: int, num_heads: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=8192,
        bos_token_id=ids(tokenizer.bos_token),
        eos_token_id=ids(tokenizer.eos_token),
        pad_token_id=ids(tokenizer.pad_token) if tokenizer.pad_token else None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _mllama(tokenizer: Any, hidden_size: int, num_layers: int, num_heads: int, image_size: int) -> Any:
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    ids = tokenizer.convert_tokens_to_ids
    vision = MllamaVisionConfig(
        hidden_size=VISION_TOWER["hidden_size"],
        intermediate_size=VISION_TOWER["intermediate_size"],
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_global_layers=1,
        attention_heads=VISION_TOWER["num_heads"],
        intermediate_layers_indices=[0],
        vision_output_dim=2 * VISION_TOWER["hidden_size"],  # last layer + one intermediate layer
        image_size=image_size,
        patch_size=14,
        max_num_tiles=1,
        supported_aspect_ratios=[[1, 1]],
    )
    text = MllamaTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        cross_attention_layers=[num_layers - 1],
        max_position_embeddings=8192,
        bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot_id|>"),
        pad_token_id=ids("<|finetune_right_pad_id|>"),
    )
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids("<|image|>"))
    model = MllamaForConditionalGeneration(config)
    image_processor = MllamaImageProcessor(
        size={"height": image_size, "width": image_size}, max_image_tiles=1, do_convert_rgb=True
    )
    return model, MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer)


_LLAMA4_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eot|>",
    "<|finetune_right_pad|>",
    "<|image|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|patch|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
]


def _llama4(vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, image_size: int) -> Any:
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4Processor,
        Llama4TextConfig,
        Llama4VisionConfig,
    )
    from transformers.models.llama4.image_processing_llama4_fast import Llama4ImageProcessor

    tokenizer = fast_tokenizer(
        vocab_size,
        _LLAMA4_SPECIAL,
        plain=VERDICT_TOKENS,
        model_max_length=131072,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
        pad_token="<|finetune_right_pad|>",
    )
    ids = tokenizer.convert_tokens_to_ids
    width = VISION_TOWER["hidden_size"]
    vision = Llama4VisionConfig(
        hidden_size=width,
        num_hidden_layers=VISION_TOWER["num_layers"],
        num_attention_heads=VISION_TOWER["num_heads"],
        intermediate_size=4 * width,  # = width / pixel_shuffle_ratio**2, which the projector MLP takes
        image_size=image_size,
        patch_size=14,
        pixel_shuffle_ratio=0.5,
        projector_input_dim=hidden_size,
        projector_output_dim=hidden_size,
        vision_output_dim=hidden_size,
    )
    text = Llama4TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        intermediate_size_mlp=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        head_dim=hidden_size // num_heads,
        num_local_experts=1,
        moe_layers=[],
        max_position_embeddings=8192,
        attention_chunk_size=8192,
        bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot|>"),
        pad_token_id=ids("<|finetune_right_pad|>"),
    )
    config = Llama4Config(
        vision_config=vision,
        text_config=text,
        boi_token_index=ids("<|image_start|>"),
        eoi_token_index=ids("<|image_end|>"),
        image_token_index=ids("<|patch|>"),
    )
    model = Llama4ForConditionalGeneration(config)
    image_processor = Llama4ImageProcessor(
        size={"height": image_size, "width": image_size}, max_patches=1, resize_to_max_canvas=False
    )
    processor = Llama4Processor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14, pixel_shuffle_ratio=0.5
    )
    return model, processor


def build_judge_fixture(
    variant: str,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 4096,
    image_size: int = 56,
) -> Path:
    """Build a tiny random judge model of `variant` (JUDGE_FIXTURE_VARIANTS) into `out_dir`; returns it.

    The vocabulary is large enough for the judges' prompt templates (in the tokenizer's training corpus) to
    take about as many tokens as under the real Llama tokenizers.
    """
    import torch
    from transformers import GenerationConfig

    from toolshift.models.fixtures import _save_atomically

    if variant not in JUDGE_FIXTURE_VARIANTS:
        raise ConfigError(
            f"judge fixture variant {variant!r} is unknown; "
            f"expected one of {', '.join(JUDGE_FIXTURE_VARIANTS)}"
        )
    if hidden_size % num_heads or (hidden_size // num_heads) % 8 or num_layers < 1:
        raise ConfigError(
            f"judge fixture hidden_size={hidden_size} must be num_heads={num_heads} times a multiple of 8, "
            f"and num_layers={num_layers} at least 1"
        )
    if image_size % 14:
        raise ConfigError(f"judge fixture image_size={image_size} must be a multiple of 14")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if variant == "harmbench":
            processor = _llama2_tokenizer(vocab_size)
            model = _llama_causal(processor, hidden_size, num_layers, num_heads)
        elif variant == "llamaguard3":
            processor = _llama3_tokenizer(vocab_size)
            model = _llama_causal(processor, hidden_size, num_layers, num_heads)
        elif variant == "llamaguard4":
            model, processor = _llama4(vocab_size, hidden_size, num_layers, num_heads, image_size)
        else:
            model, processor = _mllama(
                _llama3_tokenizer(vocab_size), hidden_size, num_layers, num_heads, image_size
            )
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = tokenizer.convert_tokens_to_ids
    marker = {
        "family": f"judge:{variant}",
        "seed": seed,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "vocab_size": len(tokenizer),
        "image_size": image_size if variant in ("llamaguard3_vision", "llamaguard4") else None,
        "note": "tiny randomly initialised judge fixture: its verdicts are noise",
    }
    model.config.toolshift_fixture = marker
    pad = tokenizer.pad_token or tokenizer.eos_token
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=ids(tokenizer.bos_token),
        eos_token_id=ids(tokenizer.eos_token),
        pad_token_id=ids(pad),
        max_new_tokens=10,
    )
    model.eval()
    out = Path(out_dir)
    _save_atomically(out, model, processor, marker)
    return out
