"""InternVL3 (transformers-native `-hf` checkpoints): the Hermes tool convention."""

from __future__ import annotations

from toolshift.models.adapters.base import FamilyAdapter


class InternVLAdapter(FamilyAdapter):
    """InternVL3 in the transformers-native format (`OpenGVLab/InternVL3-*-hf`, model_type `internvl`)."""

    family = "internvl"
    model_types = ("internvl",)
