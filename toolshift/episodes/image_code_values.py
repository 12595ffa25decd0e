"""The values and bounds of `toolshift.episodes.image_code`: the stand-ins for images (`Img`: a PIL image;
`Arr`: an image as OpenCV and numpy hold it), imported modules, functions, the sandbox (what the code may
read, write and see), the limits, the per-run context, and the checks every operation makes on its
arguments. The operations themselves are in `toolshift.episodes.image_code_lib`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


class CodeRefused(Exception):
    """The code is refused (not in the whitelist, or over a bound): a one-line reason."""


class CodeFailed(Exception):
    """A whitelisted operation failed on its arguments (as the original sandbox would raise): a reason."""


PIL_RESAMPLE: dict[str, int] = {
    "NEAREST": 0,
    "LANCZOS": 1,
    "ANTIALIAS": 1,
    "BILINEAR": 2,
    "BICUBIC": 3,
    "BOX": 4,
    "HAMMING": 5,
}
CV2_CONSTANTS: dict[str, int] = {
    "INTER_NEAREST": 0,
    "INTER_LINEAR": 1,
    "INTER_CUBIC": 2,
    "INTER_AREA": 3,
    "INTER_LANCZOS4": 4,
    "COLOR_BGR2RGB": 4,
    "COLOR_RGB2BGR": 4,
    "COLOR_BGR2GRAY": 6,
    "COLOR_RGB2GRAY": 7,
    "ROTATE_90_CLOCKWISE": 0,
    "ROTATE_180": 1,
    "ROTATE_90_COUNTERCLOCKWISE": 2,
    "IMREAD_COLOR": 1,
}
FIXED_UUID_HEX = "00000000000040008000000000000000"


@dataclass
class Img:
    pil: Image.Image
    frame: tuple[int, int] | None = None


@dataclass
class Arr:
    a: np.ndarray
    frame: tuple[int, int] | None = None


@dataclass
class Module:
    name: str
    attrs: dict[str, Any]


@dataclass
class Func:
    name: str
    fn: Callable[..., Any]


@dataclass
class Enhancer:
    kind: str
    img: Img


@dataclass(frozen=True)
class FixedUUID:
    hex: str = FIXED_UUID_HEX

    def __str__(self) -> str:
        h = self.hex
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Limits:
    """The bounds every run keeps to (exceeding one refuses the code)."""

    max_steps: int = 50_000
    max_loop_iterations: int = 1_000
    max_nodes: int = 5_000
    max_code_chars: int = 20_000
    max_pixels: int = 40_000_000
    max_side: int = 16_384
    max_sequence: int = 100_000
    max_int_bits: int = 64
    max_output_chars: int = 20_000
    max_images: int = 8


@dataclass
class Sandbox:
    """What the code may see and do: `readable` paths (-> image) that `Image.open`/`cv2.imread` read,
    `variables` bound before the code runs (e.g. DeepEyesV2's `image_1`), `output_dir` under which
    `save`/`imwrite` may write (None: no writing), and `jupyter`: a bare last expression that is an image is
    shown, as a notebook cell shows it, and `display(img)` shows an image."""

    readable: dict[str, Image.Image]
    variables: dict[str, Image.Image] = field(default_factory=dict)
    output_dir: str | None = None
    jupyter: bool = False
    limits: Limits = field(default_factory=Limits)


@dataclass
class Context:
    sandbox: Sandbox
    stdout: list[str] = field(default_factory=list)
    saved: dict[str, Image.Image] = field(default_factory=dict)
    shown: list[Image.Image] = field(default_factory=list)
    crops: list[list[int]] = field(default_factory=list)
    figure: dict[str, Any] = field(default_factory=dict)
    out_chars: int = 0

    def write(self, text: str) -> None:
        self.out_chars += len(text)
        if self.out_chars > self.sandbox.limits.max_output_chars:
            raise CodeRefused(f"prints more than {self.sandbox.limits.max_output_chars} characters")
        self.stdout.append(text)


# --------------------------------------------------------------------------- checks


def int_of(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CodeFailed(f"{what} must be a number, got {type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodeFailed(f"{what} must be finite")
    return int(value)


def number_of(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CodeFailed(f"{what} must be a number, got {type_name(value)}")
    if not math.isfinite(float(value)):
        raise CodeFailed(f"{what} must be finite")
    return float(value)


def size_ok(ctx: Context, width: int, height: int) -> None:
    lim = ctx.sandbox.limits
    if width < 1 or height < 1:
        raise CodeFailed(f"image size {width}x{height} is empty")
    if width > lim.max_side or height > lim.max_side or width * height > lim.max_pixels:
        raise CodeRefused(f"an image of {width}x{height} pixels is over the sandbox's size bound")


def as_img(value: Any, what: str) -> Img:
    if isinstance(value, Arr):
        return Img(array_image(value.a), value.frame)
    if not isinstance(value, Img):
        raise CodeFailed(f"{what} must be an image, got {type_name(value)}")
    return value


def as_arr(value: Any, what: str) -> Arr:
    if isinstance(value, Img):
        return Arr(np.asarray(value.pil), value.frame)
    if not isinstance(value, Arr):
        raise CodeFailed(f"{what} must be an image array, got {type_name(value)}")
    return value


def array_image(a: np.ndarray) -> Image.Image:
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise CodeFailed(f"an array of shape {a.shape} is not an image")
    return Image.fromarray(np.ascontiguousarray(a))


def type_name(value: Any) -> str:
    if isinstance(value, Img):
        return "PIL image"
    if isinstance(value, Arr):
        return "image array"
    return type(value).__name__


def path_of(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CodeFailed(f"{what} must be a path string, got {type_name(value)}")
    return value


def read_image(ctx: Context, path: Any) -> Image.Image:
    path = path_of(path, "the image path")
    if path not in ctx.sandbox.readable:
        raise CodeRefused(f"file access: {path[:80]!r} is not the given image (only it can be read)")
    return ctx.sandbox.readable[path].copy()


def write_target(ctx: Context, path: Any) -> str:
    path = path_of(path, "the output path")
    out = ctx.sandbox.output_dir
    if out is None:
        raise CodeRefused("file access: this sandbox does not write files")
    if not path.startswith(out) or ".." in path or len(path) > 300:
        raise CodeRefused(f"file access: {path[:80]!r} is outside the sandbox's output directory {out!r}")
    if len(ctx.saved) >= ctx.sandbox.limits.max_images:
        raise CodeRefused(f"writes more than {ctx.sandbox.limits.max_images} images")
    return path


def record_crop(ctx: Context, frame: tuple[int, int] | None, box: tuple[int, int, int, int]) -> Any:
    if frame is None:
        return None
    x0, y0 = frame
    ctx.crops.append([box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0])
    return (box[0] + x0, box[1] + y0)


def render(value: Any) -> str:
    """`str()` of a value as Python prints it (images and arrays as their reprs, bounded)."""
    if isinstance(value, Img):
        return f"<PIL.Image.Image image mode={value.pil.mode} size={value.pil.width}x{value.pil.height}>"
    if isinstance(value, Arr):
        return np.array2string(value.a, threshold=100)
    if isinstance(value, Module):
        return f"<module '{value.name}'>"
    if isinstance(value, Func):
        return f"<built-in function {value.name}>"
    if isinstance(value, Enhancer):
        return f"<PIL.ImageEnhance.{value.kind} object>"
    if isinstance(value, tuple | list):
        inner = ", ".join(represent(v) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    return str(value)


def represent(value: Any) -> str:
    """`repr()` of a value (strings quoted, the rest as `render`)."""
    return repr(value) if isinstance(value, str) else render(value)
