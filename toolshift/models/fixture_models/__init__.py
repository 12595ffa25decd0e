"""Tiny random models of real VLM architectures, one module per architecture family.

Each builder takes the toy sizes and returns a `FixtureParts` (model, processor, generation tokens);
`toolshift.models.fixtures.build_fixture` seeds it, records it and saves it. Builders import their
transformers classes lazily, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from toolshift.models.fixture_models.common import FixtureParts

BUILDERS: dict[str, tuple[str, str]] = {
    "qwen2_5_vl": ("qwen", "build_qwen2_5_vl"),
    "llava": ("llava", "build_llava"),
    "deepeyes": ("qwen", "build_qwen2_5_vl"),  # DeepEyes is Qwen2.5-VL weights with its own tool prompt
    "qwen3_vl": ("qwen", "build_qwen3_vl"),
    "llava_onevision": ("llava", "build_llava_onevision"),
    "internvl": ("internvl", "build_internvl"),
    "gemma3": ("gemma3", "build_gemma3"),
    "idefics3": ("idefics3", "build_idefics3"),
    "smolvlm": ("idefics3", "build_smolvlm"),
    # the think-with-images families in their own protocol: Qwen2.5-VL weights, OpenThinkIMG Qwen2-VL
    "chain_of_focus": ("qwen", "build_qwen2_5_vl"),
    "mini_o3": ("qwen", "build_qwen2_5_vl"),
    "pixel_reasoner": ("qwen", "build_qwen2_5_vl"),
    "thyme": ("qwen", "build_qwen2_5_vl"),
    "deepeyes_v2": ("qwen", "build_qwen2_5_vl"),
    "openthinkimg": ("qwen", "build_qwen2_vl"),
}
"""Family -> (module in this package, builder function)."""

IMAGE_SIZE_STEP: dict[str, int] = {
    "llava": 14,
    "llava_onevision": 14,
    "internvl": 28,
    "gemma3": 28,
    "idefics3": 28,
    "smolvlm": 28,
}
"""Families whose vision tower has a fixed input side `image_size`, and what it must be a multiple of
(the patch size, times 2 where patches are pooled or pixel-shuffled 2x2). The Qwen families resize
dynamically and ignore `image_size`."""


def builder(family: str) -> Callable[..., FixtureParts]:
    """The builder function of `family` (a key of BUILDERS)."""
    module, name = BUILDERS[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
