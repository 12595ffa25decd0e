"""Image helpers: decoding, the bounding-box policy, the zoom-in tool and the override images.

Boxes are integer pixel boxes `[x1, y1, x2, y2]` in the original image with PIL's crop convention:
`x1, y1` inclusive, `x2, y2` exclusive, so `x2 - x1` is the width of the region.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from toolshift.errors import ConfigError, DataError
from toolshift.files import atomic_path

BBOX_POLICIES: tuple[str, ...] = ("content_padded", "text_lines", "full")
"""`content_padded`: the padded box around the non-background pixels (default); `text_lines`: the padded
box around the first `zoom_lines` lines of content (bands of rows holding non-background pixels, see
`text_line_bands`), a region smaller than the image that the zoom really enlarges; `full`: the whole image."""

ZOOM_RESIZES: tuple[str, ...] = ("longer_side", "pixels")
"""How the zoom enlarges its crop: `longer_side` (default) to the original image's longer side; `pixels` to
the original image's pixel count (same aspect ratio), i.e. the region at the resolution budget the model
spends on the whole image (about as many visual tokens on dynamic-resolution models)."""


WHITE: tuple[int, int, int] = (255, 255, 255)


# --------------------------------------------------------------------------- reading and writing


HIGH_BIT_MODES: tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Pillow's modes of 16- and 32-bit integer grayscale (a 16-bit grayscale PNG opens as `I;16`)."""


def as_viewed(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """`img` converted to `mode` as an image viewer shows it, where Pillow's `convert` alone does not:

    - 16-bit grayscale (`I;16*`, and `I` holding values above 255) is scaled to 8 bits (value / 257);
      `convert` clips every value above 255 to white.
    - Transparency (an alpha channel, or a palette or colour key marked transparent) is composited onto
      white; `convert("RGB")` drops the alpha and shows the colour stored under transparent pixels.

    A `mode` with alpha (RGBA, LA) keeps the image's transparency.
    """
    if img.mode in HIGH_BIT_MODES:
        arr = np.asarray(img).astype(np.float64)
        if img.mode != "I" or (arr.size and arr.max() > 255):
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha and mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba)
    return img.convert(mode)


def load_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Open an image and decode it fully (a corrupt or truncated file raises DataError naming it), and
    convert it to `mode` as a viewer shows it (`as_viewed`: 16-bit scaled, transparency on white)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    try:
        with Image.open(p) as img:
            img.load()
            return as_viewed(img, mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{p}: cannot be decoded as an image ({type(exc).__name__}: {exc})") from None


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file, read from its header (nothing is decoded)."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"{p}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{p}: cannot be read as an image ({type(exc).__name__}: {exc})") from None


def png_bytes(img: Image.Image) -> bytes:
    """The PNG encoding of an image (deterministic for a given Pillow version)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(img: Image.Image, path: str | os.PathLike[str]) -> bool:
    """Write `img` as PNG atomically; skip (return False) if the file already holds the same bytes."""
    data = png_bytes(img)
    target = Path(path)
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return False
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return True


# --------------------------------------------------------------------------- boxes


def _size(size: Sequence[int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DataError(f"image size must be (width, height), got {size!r}") from None
    if width < 1 or height < 1:
        raise DataError(f"image size must be positive, got {size!r}")
    return width, height


def clamp_bbox(bbox: Sequence[float], size: Sequence[int]) -> list[int]:
    """Clamp a box to an image of `size` (width, height): order the corners, round to integers,
    keep it inside the image and at least 1 pixel wide and high.

    A box that is not four finite numbers raises DataError with the value.
    """
    width, height = _size(size)
    if isinstance(bbox, (str, bytes)) or not isinstance(bbox, Sequence | np.ndarray):
        raise DataError(f"bbox must be a list of 4 numbers [x1, y1, x2, y2], got {bbox!r}")
    values = list(bbox)
    if len(values) != 4:
        raise DataError(f"bbox must have 4 numbers [x1, y1, x2, y2], got {len(values)}: {bbox!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise DataError(f"bbox must hold finite numbers, got {bbox!r}")
    x1, x2 = sorted((float(values[0]), float(values[2])))
    y1, y2 = sorted((float(values[1]), float(values[3])))

    def side(lo: float, hi: float, limit: int) -> tuple[int, int]:
        a = min(max(int(math.floor(lo)), 0), limit - 1)
        b = min(max(int(math.ceil(hi)), 0), limit)
        if b <= a:
            b = a + 1
        return a, b

    ix1, ix2 = side(x1, x2, width)
    iy1, iy2 = side(y1, y2, height)
    return [ix1, iy1, ix2, iy2]


def content_bbox(img: Image.Image, pad_frac: float = 0.05, bg: tuple[int, int, int] = WHITE) -> list[int]:
    """The `content_padded` box: the bounding box of the pixels that differ from `bg`, padded on each
    side by `pad_frac` of the image's width (left/right) and height (top/bottom), clamped to the image.

    A blank image (no pixel differs from `bg`) gives the full image.
    """
    if not 0 <= pad_frac <= 1:
        raise ConfigError(f"pad_frac must be in [0, 1], got {pad_frac!r}")
    arr = np.asarray(img.convert("RGB"))
    height, width = arr.shape[:2]
    mask = (arr != np.asarray(bg, dtype=arr.dtype)).any(axis=-1)
    if not mask.any():
        return [0, 0, width, height]
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    pad_x = round(pad_frac * width)
    pad_y = round(pad_frac * height)
    box = [xs[0] - pad_x, ys[0] - pad_y, xs[-1] + 1 + pad_x, ys[-1] + 1 + pad_y]
    return clamp_bbox([int(v) for v in box], (width, height))


def text_line_bands(img: Image.Image, bg: tuple[int, int, int] = WHITE) -> list[tuple[int, int]]:
    """The lines of content, top to bottom: maximal bands of rows `[y1, y2)` that hold a pixel differing
    from `bg`, bands closer than 1 % of the image height merged (the dot of an "i" stays in its line)."""
    arr = np.asarray(img.convert("RGB"))
    rows = (arr != np.asarray(bg, dtype=arr.dtype)).any(axis=-1).any(axis=1)
    bands: list[tuple[int, int]] = []
    merge_gap = max(1, round(0.01 * arr.shape[0]))
    for y in np.flatnonzero(rows):
        y = int(y)
        if bands and y - bands[-1][1] <= merge_gap:
            bands[-1] = (bands[-1][0], y + 1)
        else:
            bands.append((y, y + 1))
    return bands


def text_lines_bbox(
    img: Image.Image, lines: int = 2, pad_frac: float = 0.05, bg: tuple[int, int, int] = WHITE
) -> list[int]:
    """The `text_lines` box: the content of the first `lines` line bands (`text_line_bands`), padded by
    `pad_frac` of the image's width and height as `content_bbox` pads; the full image when it is blank."""
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
        raise ConfigError(f"zoom_lines must be a positive integer, got {lines!r}")
    if not 0 <= pad_frac <= 1:
        raise ConfigError(f"pad_frac must be in [0, 1], got {pad_frac!r}")
    bands = text_line_bands(img, bg)
    if not bands:
        return [0, 0, img.width, img.height]
    top, bottom = bands[0][0], bands[min(lines, len(bands)) - 1][1]
    arr = np.asarray(img.convert("RGB"))[top:bottom]
    xs = np.flatnonzero((arr != np.asarray(bg, dtype=arr.dtype)).any(axis=-1).any(axis=0))
    pad_x, pad_y = round(pad_frac * img.width), round(pad_frac * img.height)
    box = [int(xs[0]) - pad_x, top - pad_y, int(xs[-1]) + 1 + pad_x, bottom + pad_y]
    return clamp_bbox(box, img.size)


def policy_bbox(
    img: Image.Image, policy: str = "content_padded", pad_frac: float = 0.05, lines: int = 2
) -> list[int]:
    """The box a bbox policy picks for an image (see BBOX_POLICIES; `lines` is `text_lines`' line count)."""
    if policy == "content_padded":
        return content_bbox(img, pad_frac=pad_frac)
    if policy == "text_lines":
        return text_lines_bbox(img, lines=lines, pad_frac=pad_frac)
    if policy == "full":
        return [0, 0, img.width, img.height]
    raise ConfigError(f"unknown bbox_policy {policy!r}; known: {', '.join(BBOX_POLICIES)}")


def zoom_size(
    image_size: Sequence[int], bbox: Sequence[float], resize: str = "longer_side"
) -> tuple[int, int]:
    """The size (width, height) of the image the zoom returns for `bbox` (clamped) of an image of
    `image_size`, enlarged as `resize` says (ZOOM_RESIZES). Never smaller than the crop."""
    width, height = _size(image_size)
    x1, y1, x2, y2 = clamp_bbox(bbox, (width, height))
    crop_w, crop_h = x2 - x1, y2 - y1
    if resize == "longer_side":
        scale = max(width, height) / max(crop_w, crop_h)
    elif resize == "pixels":
        scale = math.sqrt(width * height / (crop_w * crop_h))
    else:
        raise ConfigError(f"unknown zoom_resize {resize!r}; known: {', '.join(ZOOM_RESIZES)}")
    scale = max(scale, 1.0)
    return (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))


def zoom_scale(image_size: Sequence[int], bbox: Sequence[float], resize: str = "longer_side") -> float:
    """The zoom's magnification: the returned image's width over the crop's width (1.0: no enlargement)."""
    x1, _, x2, _ = clamp_bbox(bbox, _size(image_size))
    return zoom_size(image_size, bbox, resize)[0] / (x2 - x1)


def zoom(
    img: Image.Image,
    bbox: Sequence[float],
    out_size: tuple[int, int] | None = None,
    *,
    resize: bool = True,
    mode: str = "longer_side",
) -> Image.Image:
    """The zoom-in tool: crop `img` to `bbox` (clamped first) and enlarge the crop.

    Default (`out_size=None`, `resize=True`): resize the crop (LANCZOS), keeping its aspect ratio, to
    `zoom_size(img.size, bbox, mode)`: with `mode="longer_side"` its longer side equals the original
    image's longer side, with `mode="pixels"` its pixel count equals the original's. `out_size=(w, h)`
    resizes to exactly that size; `resize=False` returns the bare crop.
    """
    box = clamp_bbox(bbox, img.size)
    crop = img.convert("RGB").crop(tuple(box))
    if not resize:
        return crop
    target = _size(out_size) if out_size is not None else zoom_size(img.size, box, mode)
    if target == crop.size:
        return crop
    return crop.resize(target, Image.Resampling.LANCZOS)
