"""Idefics3 and SmolVLM (an Idefics3 architecture; SmolVLM v1 checkpoints are model_type `idefics3`):
the Hermes tool convention, decoder layers at `model.text_model.layers`."""

from __future__ import annotations

from toolshift.models.adapters.base import FamilyAdapter


class Idefics3Adapter(FamilyAdapter):
    """Idefics3: decoder layers at `model.text_model.layers`; images grouped per prompt."""

    family = "idefics3"
    model_types = ("idefics3",)
    layers_path = "model.text_model.layers"
    nested_images = True


class SmolVLMAdapter(Idefics3Adapter):
    """SmolVLM: model_type `smolvlm` (SmolVLM2) or `idefics3` (SmolVLM v1 checkpoints)."""

    family = "smolvlm"
    model_types = ("smolvlm", "idefics3")
