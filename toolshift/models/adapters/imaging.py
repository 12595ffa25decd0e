"""Episode images as the adapters load them (`load_episode_image`, cached), and image resizing as the
think-with-images families' own code does it (Qwen's `smart_resize` and the
resizes built on it), shared by the family adapters.

`smart_resize` is `qwen_vl_utils.vision_process.smart_resize` (github.com/QwenLM/Qwen2.5-VL,
qwen-vl-utils/src/qwen_vl_utils/vision_process.py): sides rounded to multiples of `factor` (Python's
`round`, ties to even), scaled down under `max_pixels` and up over `min_pixels`, aspect ratio kept.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from toolshift.errors import DataError

QWEN_FACTOR = 28
"""The side multiple of Qwen2-VL / Qwen2.5-VL images (patch 14, 2x2 merge)."""
QWEN_MIN_PIXELS = 4 * 28 * 28
"""qwen_vl_utils' default MIN_PIXELS."""
QWEN_MAX_PIXELS = 16384 * 28 * 28
"""qwen_vl_utils' default MAX_PIXELS."""
MAX_RATIO = 200
"""qwen_vl_utils refuses images whose longer side is more than 200 times the shorter."""


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width) as qwen_vl_utils' smart_resize gives them (ValueError beyond MAX_RATIO)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {height}x{width}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resized(
    image: Image.Image,
    *,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
    resample: int | None = None,
) -> Image.Image:
    """`image` resized to its smart_resize size (`resample` None: Pillow's default, bicubic, as
    qwen_vl_utils' `fetch_image` calls `image.resize(size)`); unchanged when it already has that size."""
    height, width = smart_resize(image.height, image.width, min_pixels=min_pixels, max_pixels=max_pixels)
    if (width, height) == image.size:
        return image
    if resample is None:
        return image.resize((width, height))
    return image.resize((width, height), resample)


def scaled_like(image: Image.Image, reference: tuple[int, int], zoom_size: list[int] | None) -> Image.Image:
    """An override image resized for a family whose own crop has size `reference`: by the family's crop
    size times the override's size over the episode's zoom size (`meta.zoom_size`), so that an override of
    the zoom's size gets the family crop's size and one of another size keeps its ratio to it."""
    if not zoom_size:
        target = reference
    else:
        target = (
            max(1, round(reference[0] * image.width / zoom_size[0])),
            max(1, round(reference[1] * image.height / zoom_size[1])),
        )
    return image if target == image.size else image.resize(target, Image.Resampling.LANCZOS)


IMAGE_CACHE_BYTES = 256 * 2**20
"""Decoded images kept in memory for later renders (a job renders the same attack image in every run)."""
_image_cache: dict[tuple[str, int, int], Any] = {}
_image_cache_bytes = 0


def load_episode_image(root: Path, relpath: str, where: str) -> Any:
    """Open an image (path relative to the results root) as an RGB PIL image (a copy of a decoded image
    kept by path, size and mtime while IMAGE_CACHE_BYTES lasts)."""
    global _image_cache_bytes
    path = root / relpath
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _image_cache:
            return _image_cache[key].copy()
        with Image.open(path) as im:
            image = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{where}: image {path} not found") from None
    except OSError as exc:
        raise DataError(f"{where}: image {path} cannot be read ({exc})") from None
    size = image.width * image.height * 3
    if _image_cache_bytes + size <= IMAGE_CACHE_BYTES:
        _image_cache[key] = image.copy()
        _image_cache_bytes += size
    return image
