"""LLaVA-1.5 (llava-hf): the Hermes tool convention (no trained tool-call format)."""

from __future__ import annotations

from toolshift.models.adapters.base import FamilyAdapter


class LlavaAdapter(FamilyAdapter):
    """LLaVA-1.5 (llava-hf): the Hermes tool rendering in a "USER: ... ASSISTANT:" template."""

    family = "llava"
    model_types = ("llava",)
