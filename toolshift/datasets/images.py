"""Image helpers: decoding, the bounding-box policy, the zoom-in tool and the override images.

Boxes are integer pixel boxes `[x1, y1, x2, y2]` in the original image with PIL's crop convention:
`x1, y1` inclusive, `x2, y2` exclusive, so `x2 - x1` is the width of the region.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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


@contextmanager
def _quiet_bomb_check() -> Iterator[None]:
    """Pillow's decompression-bomb warning silenced: the pixel limit is toolshift's (`images.max_pixels`,
    applied by `fit_image` with the prompt named), and a raw warning would name neither file nor fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def decode_image(source: str | os.PathLike[str] | IO[bytes], where: str, mode: str = "RGB") -> Image.Image:
    """Decode an image file or stream fully and convert it to `mode` as a viewer shows it (`as_viewed`); a
    corrupt, truncated or oversized one raises DataError naming `where` (one line, no Pillow warning)."""
    try:
        with _quiet_bomb_check(), Image.open(source) as img:
            img.load()
            return as_viewed(img, mode)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{where}: image too large to decode ({exc}); Pillow refuses images above "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels: shrink it below images.max_pixels"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: cannot be decoded as an image ({type(exc).__name__}: {exc})") from None


def load_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Open an image and decode it fully (a corrupt or truncated file raises DataError naming it), and
    convert it to `mode` as a viewer shows it (`as_viewed`: 16-bit scaled, transparency on white)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: cannot be decoded as an image (an empty file, 0 bytes)")
    return decode_image(p, str(p), mode)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file, read from its header (nothing is decoded)."""
    p = Path(path)
    try:
        with _quiet_bomb_check(), Image.open(p) as img:
            return img.size
    except FileNotFoundError:
        raise DataError(f"{p}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{p}: cannot be read as an image ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------- size limits

DEFAULT_MAX_PIXELS = 4096 * 4096
"""`images.max_pixels`: attack images above this many pixels are downscaled (or refused)."""

DEFAULT_MIN_SIDE = 28
"""`images.min_side`: attack images with a side below this many pixels are refused (or skipped): a zoom
into a few pixels magnifies nothing (28 px is one Qwen2.5-VL visual token: 14-px patches merged 2 x 2)."""

SIZE_ACTIONS: dict[str, tuple[str, ...]] = {
    "on_too_large": ("downscale", "stop"),
    "on_too_small": ("stop", "skip"),
}
"""What `images.on_too_large` and `images.on_too_small` may say."""


@dataclass(frozen=True)
class ImageLimits:
    """The config's `images:` block: the pixel limit of an attack image and the smallest side it may have."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    on_too_large: str = "downscale"
    min_side: int = DEFAULT_MIN_SIDE
    on_too_small: str = "stop"

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> ImageLimits:
        """From the `images:` config block (missing keys take the defaults); ConfigError on a bad value."""
        limits = cls(**{k: v for k, v in (options or {}).items() if k in cls.__dataclass_fields__})
        for key, allowed in SIZE_ACTIONS.items():
            if getattr(limits, key) not in allowed:
                raise ConfigError(
                    f"images.{key}: {getattr(limits, key)!r} is not one of {', '.join(allowed)}"
                )
        return limits


@dataclass(frozen=True)
class FittedImage:
    """`fit_image`'s answer: the image to use (None: leave the prompt out, `problem` says why) and, when
    it was downscaled, the factor (new side / old side) and a line saying so."""

    image: Image.Image | None
    scale: float = 1.0
    note: str | None = None
    problem: str | None = None


def fit_image(img: Image.Image, limits: ImageLimits, where: str) -> FittedImage:
    """Check an attack image against `limits`: a side below `min_side` stops (DataError naming `where`) or
    is left out (`on_too_small: skip`); more than `max_pixels` pixels stops (`on_too_large: stop`) or is
    downscaled (same aspect ratio, Lanczos) to at most `max_pixels`, with the factor recorded."""
    width, height = img.size
    if min(width, height) < limits.min_side:
        problem = (
            f"image is {width}x{height} pixels, a side below images.min_side ({limits.min_side} px): the "
            "zoom would magnify nothing"
        )
        if limits.on_too_small == "skip":
            return FittedImage(None, problem=problem)
        raise DataError(
            f"{where}: {problem}; use a larger image, or set images.on_too_small: skip to leave such prompts "
            "out (they are listed in skipped.csv and the book)"
        )
    if limits.max_pixels is None or width * height <= limits.max_pixels:
        return FittedImage(img)
    if limits.on_too_large == "stop":
        raise DataError(
            f"{where}: image is {width}x{height} = {width * height} pixels, above images.max_pixels "
            f"({limits.max_pixels}); shrink it, or set images.on_too_large: downscale"
        )
    factor = math.sqrt(limits.max_pixels / (width * height))
    size = (max(1, math.floor(width * factor)), max(1, math.floor(height * factor)))
    scale = size[0] / width
    note = (
        f"downscaled from {width}x{height} to {size[0]}x{size[1]} pixels (factor {scale:.4g}): above "
        f"images.max_pixels ({limits.max_pixels})"
    )
    return FittedImage(img.resize(size, Image.Resampling.LANCZOS), scale=scale, note=note)


def save_thumbnail(src: str | os.PathLike[str], dest: str | os.PathLike[str], max_side: int) -> None:
    """Write `src` to `dest`: a byte copy when its longer side is at most `max_side`, else a PNG thumbnail
    of that longer side (same aspect ratio): the book shows thumbnails, never full-size copies."""
    width, height = image_size(src)
    if max(width, height) <= max_side:
        shutil.copyfile(src, dest)
        return
    img = load_image(src)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    with atomic_path(dest) as tmp:
        img.save(tmp, format="PNG")


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
