"""LLaVA-OneVision (llava-hf): the Hermes tool convention, images before text, images per prompt."""

from __future__ import annotations

from toolshift.models.adapters.base import FamilyAdapter


class LlavaOnevisionAdapter(FamilyAdapter):
    """LLaVA-OneVision (llava-hf): its template shows a turn's images before its text, so the returned
    image precedes the `<tool_response>` tags; a prompt's images go to the processor together (a prompt
    with several images uses base image features only, without anyres tiles)."""

    family = "llava_onevision"
    model_types = ("llava_onevision",)
    images_first = True
    nested_images = True
