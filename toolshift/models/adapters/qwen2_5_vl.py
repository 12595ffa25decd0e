"""Qwen2.5-VL: the default Hermes tool rendering, as Qwen's docs prompt it (DeepEyes builds on it)."""

from __future__ import annotations

from toolshift.models.adapters.base import FamilyAdapter


class Qwen25VLAdapter(FamilyAdapter):
    """Qwen2.5-VL: the Hermes tool format (prompted, as Qwen's docs do), ChatML template."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
