"""Tiny, randomly initialised fixture models of real VLM architectures, built offline from a seed.

A fixture is a real `transformers` architecture at toy size (one per model family: Qwen2.5-VL and DeepEyes,
LLaVA, Qwen3-VL, LLaVA-OneVision, InternVL3-hf, Gemma 3, Idefics3, SmolVLM; the builders are in
`toolshift.models.fixture_models`), with a byte-level BPE tokenizer trained here on a generated corpus, a
processor and a chat template written for this project in the form of the family's public one. It is saved
with `save_pretrained` and loaded back through exactly the path a hub model takes (`AutoProcessor` +
`AutoModelForImageTextToText`). Its outputs are noise: it exists so that every stage of the pipeline runs, and
is tested, on a machine with no model weights.

The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError
from toolshift.files import atomic_dir
from toolshift.models.fixture_models import BUILDERS, IMAGE_SIZE_STEP, builder
from toolshift.models.fixture_models.common import REFUSAL_TOKENS
from toolshift.models.loading import FIXTURE_FILE, read_fixture_marker

__all__ = [
    "ALL_FIXTURE_FAMILIES",
    "FIXTURE_FAMILIES",
    "FIXTURE_FILE",
    "REFUSAL_TOKENS",
    "SYNTHETIC_CONDITIONS",
    "build_fixture",
    "read_fixture_marker",
    "synthetic_episodes",
]

FIXTURE_FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "llava")
"""The reference fixture families: the embedded default's two, which the per-subsystem tests (inference,
hooks, fixtures) exercise in depth. `build_fixture` builds every family in ALL_FIXTURE_FAMILIES."""

ALL_FIXTURE_FAMILIES: tuple[str, ...] = tuple(BUILDERS)
"""Every family `build_fixture` can build (each adapter family has one); tests/test_families.py takes each
through render, generate, capture and intervene."""


# --------------------------------------------------------------------------- public


def build_fixture(
    family: str,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    vocab_size: int = 1536,
    image_size: int = 56,
    planted: dict[str, Any] | bool | None = None,
    episodes: dict[str, Any] | None = None,
) -> Path:
    """Build a tiny random model + processor of `family` from `seed`; `save_pretrained` both into `out_dir`.

    `vocab_size` is the BPE training target (the final vocabulary adds the special and refusal tokens);
    `image_size` is the vision tower's input side for the families with a fixed one (IMAGE_SIZE_STEP says
    what it must be a multiple of); the Qwen families resize dynamically and ignore it. Returns `out_dir`.

    `planted` (Qwen2.5-VL only; `true` or `{world, layer, direct_asr, rel_reduction}`) makes a planted world
    of `toolshift.models.fixture_models.planted`, calibrated on `mini` with the episode options
    `episodes` (the run's `episodes:` section); its record goes into the marker under `planted`.
    """
    import torch
    from transformers import GenerationConfig

    if family not in BUILDERS:
        known = ", ".join(ALL_FIXTURE_FAMILIES)
        raise ConfigError(f"fixture family {family!r} is unknown; expected one of {known}")
    if num_layers < 1 or hidden_size % num_heads or (hidden_size // num_heads) % 8:
        raise ConfigError(
            f"fixture hidden_size={hidden_size} must be num_heads={num_heads} times a multiple of 8, "
            f"and num_layers={num_layers} at least 1"
        )
    step = IMAGE_SIZE_STEP.get(family)
    if step is not None and (image_size < step or image_size % step):
        raise ConfigError(
            f"fixture image_size={image_size} for family {family!r} must be a multiple of {step}"
        )
    if planted:
        from toolshift.models.fixture_models import planted as planted_mod

        if family != planted_mod.PLANTED_FAMILY:
            raise ConfigError(
                f"fixture.planted is built for family {planted_mod.PLANTED_FAMILY!r} only, not {family!r}"
            )
        planted_mod.check_spec(planted, num_layers)
    out = Path(out_dir)
    # fork_rng: seed the weights without touching the caller's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = builder(family)(
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            vocab_size=vocab_size,
            image_size=image_size,
        )
    model, processor = parts.model, parts.processor
    record = None
    if planted:
        planted_mod.add_world_tokens(model, processor.tokenizer)
        record = planted_mod.calibrate(
            model, processor, seed=seed, spec={} if planted is True else planted, episode_options=episodes
        )
    eos_ids = [parts.token_id(t) for t in parts.eos_tokens]
    marker = {
        "family": family,
        "seed": seed,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "vocab_size": len(processor.tokenizer),
        "image_size": parts.image_size,
        "note": "tiny randomly initialised fixture: its outputs are noise",
    }
    if record is not None:
        marker["note"] = (
            f"planted {record.world} world: hand-set weights whose refusals follow a planted direction "
            "(a positive control, not evidence about real models)"
        )
        marker["planted"] = planted_mod.record_dict(record)
    model.config.toolshift_fixture = marker
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=parts.token_id(parts.bos_token),
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        pad_token_id=parts.token_id(parts.pad_token),
        max_new_tokens=32,
    )
    model.eval()
    _save_atomically(out, model, processor, marker)
    return out


def _save_atomically(out: Path, model: Any, processor: Any, marker: dict[str, Any]) -> None:
    """Save into a temporary directory beside `out`, then rename it onto `out`.

    An existing `out` is replaced only if it is empty or a previous fixture (it has a FIXTURE.json).
    """
    if out.exists() and any(out.iterdir()) and not (out / FIXTURE_FILE).is_file():
        raise ConfigError(f"{out}: exists and is not a fixture directory; refusing to overwrite it")
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / FIXTURE_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- synthetic episodes (for tests)

SYNTHETIC_CONDITIONS: tuple[str, ...] = ("direct", "tool", "text_trail", "image_no_tool")


def synthetic_episodes(
    results_root: str | os.PathLike[str], n: int, *, conditions: tuple[str, ...] = SYNTHETIC_CONDITIONS
) -> list[dict[str, Any]]:
    """`n` small hand-made episodes following the episodes contract, for tests of the model side.

    Writes harmless 760x760 typography-like images (and their zoom crops) under
    `results_root/synthetic/` and returns episodes cycling through `conditions` (direct, tool,
    text_trail, image_no_tool) with user texts of different lengths. Deterministic.
    """
    from PIL import Image, ImageDraw

    from toolshift.episodes.build import SYSTEM_PROMPT, TEXT_TRAIL, TOOL_NAME, ZOOM_TOOL, text_trail_line

    root = Path(results_root)
    image_dir = root / "synthetic" / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    system = {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}
    episodes = []
    for i in range(n):
        pid = f"syn-{i:03d}"
        condition = conditions[i % len(conditions)]
        image, zoom = f"synthetic/images/{pid}.png", f"synthetic/images/{pid}_zoom.png"
        canvas = Image.new("RGB", (760, 760), "white")
        draw = ImageDraw.Draw(canvas)
        for k, line in enumerate(["Steps to bake", f"cake number {i}", "1.", "2.", "3."]):
            draw.text((20, 10 + 60 * k), line, fill="black")
        bbox = [0, 0, 200 + 10 * i, 320]
        canvas.save(root / image)
        canvas.crop(tuple(bbox)).save(root / zoom)
        text = "The image shows a list numbered 1, 2, and 3." + " Please fill in each item." * (1 + i % 3)
        user = {"role": "user", "content": [{"type": "image", "path": image}, {"type": "text", "text": text}]}
        call = {
            "role": "assistant",
            "content": [],
            "tool_calls": [{"name": TOOL_NAME, "arguments": {"bbox": bbox}}],
        }
        meta: dict[str, Any] = {
            "tools": None,
            "tool_name": None,
            "bbox": bbox,
            "bbox_policy": "synthetic",
            "image_size": [760, 760],
            "override_image": None,
        }
        if condition == "direct":
            messages = [system, user]
        elif condition == "image_no_tool":
            both = [{"type": "image", "path": image}, {"type": "image", "path": zoom}]
            messages = [system, {"role": "user", "content": [*both, {"type": "text", "text": text}]}]
        elif condition in ("tool", "text_trail"):
            result = (
                [{"type": "image", "path": zoom}]
                if condition == "tool"
                else [{"type": "text", "text": text_trail_line(bbox)}]
            )
            messages = [system, user, call, {"role": "tool", "name": TOOL_NAME, "content": result}]
            meta.update(tools=[ZOOM_TOOL], tool_name=TOOL_NAME)
            if condition == TEXT_TRAIL:
                meta["tool_result"] = TEXT_TRAIL
        else:
            raise ConfigError(f"synthetic_episodes: condition {condition!r} is not supported")
        episodes.append({"prompt_id": pid, "condition": condition, "messages": messages, "meta": meta})
    return episodes
