"""Gemma 3: the Hermes tool convention (its documentation leaves the tool format to the prompt)."""

from __future__ import annotations

from toolshift.models.adapters.base import FamilyAdapter


class Gemma3Adapter(FamilyAdapter):
    """Gemma 3: the template folds the system prompt into the first user turn and requires alternating
    user/model turns (episodes alternate: the tool turn is a user turn); images grouped per prompt."""

    family = "gemma3"
    model_types = ("gemma3",)
    nested_images = True
