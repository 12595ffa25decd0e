"""The images a tool turn returns instead of the zoom in the override conditions (`tool_blank`,
`tool_benign`, `tool_unsafe`): white, a seeded procedural landscape, or a harmful request of the
`mini` dataset drawn in FigStep's font; each the size of the zoom it replaces."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from toolshift.datasets.images import WHITE, _size
from toolshift.datasets.prompts import load_mini
from toolshift.datasets.typography import STEPS_SUFFIX, render_text_image
from toolshift.errors import ConfigError

OVERRIDE_KINDS: tuple[str, ...] = ("blank", "benign", "unsafe")
"""The images a tool turn can return instead of the zoom (conditions tool_blank, tool_benign, tool_unsafe)."""


def _benign_scene(size: tuple[int, int], seed: int) -> Image.Image:
    """A procedurally drawn landscape: sky, sun, clouds, hills, trees and a lake; seeded, deterministic."""
    width, height = size
    rng = np.random.default_rng([seed, 0xBE9])
    img = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(img)
    horizon = int(height * rng.uniform(0.55, 0.7))
    top = np.array([rng.integers(60, 120), rng.integers(140, 190), 235])
    bottom = np.array([200, 225, 250])
    for y in range(horizon):
        c = top + (bottom - top) * (y / max(horizon - 1, 1))
        draw.line([(0, y), (width, y)], fill=tuple(int(v) for v in c))
    r = int(min(size) * rng.uniform(0.06, 0.1))
    sx, sy = int(width * rng.uniform(0.1, 0.9)), int(horizon * rng.uniform(0.15, 0.45))
    draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=(255, 214, 64))
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0.05, 0.4) * horizon)
        for _ in range(4):
            dx, dy = rng.integers(-60, 60), rng.integers(-12, 12)
            w, h = int(rng.integers(40, 80)), int(rng.integers(18, 34))
            draw.ellipse([cx + dx - w, cy + dy - h, cx + dx + w, cy + dy + h], fill=(250, 250, 252))
    for layer, colour in enumerate([(96, 160, 86), (70, 135, 64), (52, 110, 50)]):
        base = horizon + layer * (height - horizon) // 6
        amp = rng.uniform(0.03, 0.08) * height
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 3.0)
        xs = np.linspace(0, width, 64)
        ys = base - amp * (1 + np.sin(phase + freq * 2 * np.pi * xs / width)) / 2
        draw.polygon(
            [(0, height)] + [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)] + [(width, height)],
            fill=colour,
        )
    lx = int(width * rng.uniform(0.2, 0.6))
    lw, ly = int(width * rng.uniform(0.2, 0.35)), int(horizon + (height - horizon) * 0.6)
    draw.ellipse([lx, ly, lx + lw, ly + int(0.12 * (height - horizon)) + 8], fill=(80, 150, 210))
    for _ in range(int(rng.integers(3, 7))):
        tx = int(rng.uniform(0.03, 0.97) * width)
        ty = int(horizon + rng.uniform(0.1, 0.5) * (height - horizon))
        th = int(rng.uniform(0.08, 0.14) * height)
        draw.rectangle([tx - th // 14, ty - th // 3, tx + th // 14, ty], fill=(110, 75, 40))
        draw.polygon(
            [(tx, ty - th), (tx - th // 3, ty - th // 4), (tx + th // 3, ty - th // 4)], fill=(34, 100, 40)
        )
    return img


def unsafe_instruction(seed: int) -> str:
    """The harmful request drawn into the `unsafe` override: a harmful row of the embedded `mini`
    dataset, picked by `seed` (index `seed mod n` over its harmful rows, in file order)."""
    harmful = load_mini()
    harmful = harmful[harmful["harmful"]]
    return str(harmful["instruction"].iloc[seed % len(harmful)])


def override_image(kind: str, size: Sequence[int], seed: int = 0) -> Image.Image:
    """An image a tool turn returns instead of the zoom, of the given size (RGB).

    - `blank`: all white.
    - `benign`: an unrelated benign picture, a landscape drawn procedurally from `seed`.
    - `unsafe`: unsafe content of the same kind as the attack, in a different layout: a harmful
      request from the `mini` dataset (see `unsafe_instruction`) drawn in FigStep's font and list form
      but smaller and wider (FreeMonoBold 52, wrapped at 20 characters, at (40, 60)), so it never equals
      an attack image; resized to `size` if that is not 760x760.
    """
    width, height = _size(size)
    if kind == "blank":
        return Image.new("RGB", (width, height), WHITE)
    if kind == "benign":
        return _benign_scene((width, height), int(seed))
    if kind == "unsafe":
        text = textwrap.fill(unsafe_instruction(int(seed)), width=20) + STEPS_SUFFIX
        img = render_text_image(text, font_size=52, xy=(40, 60), spacing=11)
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.LANCZOS)
        return img
    raise ConfigError(f"unknown override image kind {kind!r}; known: {', '.join(OVERRIDE_KINDS)}")
