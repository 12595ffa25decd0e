"""Model-family adapters: the little that differs between VLM families on the generic HF path.

Everything else goes through `AutoProcessor`, `AutoModelForImageTextToText` and the processor's own
chat template. An adapter knows (1) where the text decoder's layers are, for the residual-stream hooks,
(2) how to render a model-agnostic episode (see the episodes contract) into the chat messages the
processor's template expects: the tool prompt, the tool call and the tool turn, and (3) how the
rendered prompts and their images are handed to the processor.

The default rendering is the Hermes / Qwen convention, also what Qwen-Agent's `NousFnCallPrompt` writes:
the tool spec goes into the system prompt, an assistant tool call becomes `<tool_call>{json}</tool_call>`
text and a tool turn becomes a *user* turn `<tool_response>` image(s) `</tool_response>`, which works with
chat templates that have no tool role. Families trained on a tool format of their own override it:
DeepEyes (its system prompt, `image_zoom_in_tool` with absolute `bbox_2d`, its user suffix, its
`<tool_response>` user turn) and Qwen3-VL (Qwen-Agent's `image_zoom_in_tool` with relative 0-1000
`bbox_2d`, `label` and `img_idx`). LLaVA, LLaVA-OneVision, InternVL3, Gemma 3, Idefics3 and SmolVLM have no
trained tool-call format (Gemma 3's documentation leaves the format to the prompt), so they share the
Hermes convention: the tool framing is then the same text for all of them.

Six more think-with-images families run in their own tool protocol, whole, as their own evaluation code runs
them (`native.NativeAdapter`): Chain-of-Focus (`<tool_call>` JSON, boxes in pixels of the smart-resized
image), Mini-o3 (`<grounding>` JSON, boxes normalised to 0-1), Pixel-Reasoner (Qwen-Agent's Nous tool calls,
`crop_image_normalized`), Thyme (Python in `<code>`, results inside the same assistant turn), DeepEyesV2
(notebook Python on `image_1`) and OpenThinkIMG (JSON actions, Qwen2-VL weights). Model-written Python is
never executed: `toolshift.episodes.image_code` evaluates a whitelist of image operations.

Episodes name the zoom tool `zoom_in` with `bbox` in absolute pixels of the original image; an adapter
with a native zoom tool maps that call onto it.

Modules: `base` (FamilyAdapter, the Hermes rendering and the shared helpers), `native` (the base of the
families in their own protocol) and `imaging` (their resizes), one per family (`qwen2_5_vl`, `deepeyes`,
`qwen3_vl`, `llava`, `llava_onevision`, `internvl`, `gemma3`, `idefics3` with SmolVLM, `chain_of_focus`,
`mini_o3`, `pixel_reasoner`, `thyme`, `deepeyes_v2`, `openthinkimg`), and the registry here (ADAPTERS,
get_adapter, NATIVE_FAMILIES), which imports them all.
"""

from __future__ import annotations

from toolshift.errors import ConfigError
from toolshift.models.adapters.base import (
    DEFAULT_SYSTEM_PROMPT,
    EPISODE_ZOOM_TOOL,
    GENERIC_LAYER_PATHS,
    IMAGE_CACHE_BYTES,
    ChatMessage,
    FamilyAdapter,
)
from toolshift.models.adapters.chain_of_focus import ChainOfFocusAdapter
from toolshift.models.adapters.deepeyes import (
    DEEPEYES_ANSWER_FORMAT,
    DEEPEYES_CALL_REASONING,
    DEEPEYES_SYSTEM_PROMPT,
    DEEPEYES_TOOL_NAME,
    DEEPEYES_TOOL_PARTS,
    DEEPEYES_USER_PROMPT,
    DeepEyesAdapter,
)
from toolshift.models.adapters.deepeyes_v2 import DeepEyesV2Adapter
from toolshift.models.adapters.gemma3 import Gemma3Adapter
from toolshift.models.adapters.idefics3 import Idefics3Adapter, SmolVLMAdapter
from toolshift.models.adapters.internvl import InternVLAdapter
from toolshift.models.adapters.llava import LlavaAdapter
from toolshift.models.adapters.llava_onevision import LlavaOnevisionAdapter
from toolshift.models.adapters.mini_o3 import MiniO3Adapter
from toolshift.models.adapters.native import NativeAdapter
from toolshift.models.adapters.openthinkimg import OpenThinkIMGAdapter
from toolshift.models.adapters.pixel_reasoner import PixelReasonerAdapter
from toolshift.models.adapters.qwen2_5_vl import Qwen25VLAdapter
from toolshift.models.adapters.qwen3_vl import QWEN3_VL_ZOOM_TOOL, Qwen3VLAdapter, relative_bbox
from toolshift.models.adapters.thyme import ThymeAdapter

__all__ = [
    "ADAPTERS",
    "DEEPEYES_ANSWER_FORMAT",
    "DEEPEYES_CALL_REASONING",
    "DEEPEYES_SYSTEM_PROMPT",
    "DEEPEYES_TOOL_NAME",
    "DEEPEYES_TOOL_PARTS",
    "DEEPEYES_USER_PROMPT",
    "DEFAULT_SYSTEM_PROMPT",
    "EPISODE_ZOOM_TOOL",
    "GENERIC_LAYER_PATHS",
    "IMAGE_CACHE_BYTES",
    "QWEN3_VL_ZOOM_TOOL",
    "NATIVE_FAMILIES",
    "ChainOfFocusAdapter",
    "ChatMessage",
    "DeepEyesAdapter",
    "DeepEyesV2Adapter",
    "FamilyAdapter",
    "Gemma3Adapter",
    "Idefics3Adapter",
    "InternVLAdapter",
    "LlavaAdapter",
    "LlavaOnevisionAdapter",
    "MiniO3Adapter",
    "NativeAdapter",
    "OpenThinkIMGAdapter",
    "PixelReasonerAdapter",
    "Qwen25VLAdapter",
    "Qwen3VLAdapter",
    "SmolVLMAdapter",
    "ThymeAdapter",
    "get_adapter",
    "relative_bbox",
]

ADAPTERS: dict[str, type[FamilyAdapter]] = {
    adapter.family: adapter
    for adapter in (
        Qwen25VLAdapter,
        LlavaAdapter,
        DeepEyesAdapter,
        Qwen3VLAdapter,
        LlavaOnevisionAdapter,
        InternVLAdapter,
        Gemma3Adapter,
        Idefics3Adapter,
        SmolVLMAdapter,
        ChainOfFocusAdapter,
        MiniO3Adapter,
        PixelReasonerAdapter,
        ThymeAdapter,
        DeepEyesV2Adapter,
        OpenThinkIMGAdapter,
    )
}
"""Registry: family name -> adapter class."""

NATIVE_FAMILIES: tuple[str, ...] = tuple(f for f, a in ADAPTERS.items() if issubclass(a, NativeAdapter))
"""The families rendered in their own tool protocol (`native.NativeAdapter`)."""


def get_adapter(family: str) -> FamilyAdapter:
    """The adapter for `family`; an unknown family raises ConfigError listing the known ones."""
    try:
        return ADAPTERS[family]()
    except KeyError:
        raise ConfigError(
            f"model family {family!r} is unknown; known families: {', '.join(sorted(ADAPTERS))}"
        ) from None
