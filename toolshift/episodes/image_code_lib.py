"""The stand-in library of `toolshift.episodes.image_code`: the few image operations model-written code may
call, each implemented here on checked arguments (never by looking up the name on a real module).

Values the interpreter handles besides plain numbers, strings, tuples and lists:

- `Img`: a PIL image (PIL's `Image.open`, `crop`, `resize`, `rotate`, `convert`, `copy`, `save`,
  `ImageEnhance.Contrast/Brightness/Sharpness/Color(...).enhance`); `frame` is its offset in the given
  image while it is an untransformed region of it (so a crop's box can be reported in the given image's
  pixels).
- `Arr`: an image as a numpy array, as OpenCV and numpy hold it (`cv2.imread` gives BGR, `arr[y1:y2,
  x1:x2]` crops, `cv2.resize`, `cv2.cvtColor`, `cv2.rotate`, `cv2.convertScaleAbs`, `cv2.imwrite`,
  `np.array(img)`, `Image.fromarray(arr)`). OpenCV's own kernels are not used: `cv2.resize` resamples with
  Pillow's filter of the same kind (cubic, linear, nearest, area as box, Lanczos), so its pixels differ
  slightly from OpenCV's.
- `Module` (an imported name), `Func` (a callable of this library), `Enhancer`, `FixedUUID` (`uuid4()` is
  deterministic here: the same hex every time, so reruns write the same paths).
- `matplotlib.pyplot`: `figure`, `imshow`, `axis`, `title`, `tight_layout`, `close`, `show`; `show()` renders
  the figure with matplotlib's Agg canvas as Jupyter's inline backend saves it (`bbox_inches="tight"`).

File access is the sandbox's: `Image.open`/`cv2.imread` read only the given image's path, `save`/`imwrite`
write (into memory) only under the sandbox's output directory, and nothing touches the disk.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from toolshift.episodes.image_code_values import (
    CV2_CONSTANTS,
    PIL_RESAMPLE,
    Arr,
    CodeFailed,
    CodeRefused,
    Context,
    Enhancer,
    FixedUUID,
    Func,
    Img,
    Module,
    array_image,
    as_arr,
    as_img,
    int_of,
    number_of,
    path_of,
    read_image,
    record_crop,
    render,
    size_ok,
    write_target,
)

_CV2_TO_PIL = {0: Image.Resampling.NEAREST, 1: Image.Resampling.BILINEAR, 2: Image.Resampling.BICUBIC}
_CV2_TO_PIL |= {3: Image.Resampling.BOX, 4: Image.Resampling.LANCZOS}

# --------------------------------------------------------------------------- PIL


def image_open(ctx: Context, path: Any, *rest: Any, **kw: Any) -> Img:
    return Img(read_image(ctx, path), (0, 0))


def image_fromarray(ctx: Context, array: Any, mode: Any = None) -> Img:
    return as_img(as_arr(array, "fromarray's argument"), "fromarray's argument")


def img_crop(ctx: Context, img: Img, box: Any = None) -> Img:
    if box is None:
        return Img(img.pil.copy(), img.frame)
    if not isinstance(box, tuple | list) or len(box) != 4:
        raise CodeFailed("crop's box must be 4 numbers (left, upper, right, lower)")
    x1, y1, x2, y2 = (round(number_of(v, "a crop coordinate")) for v in box)
    if x2 < x1 or y2 < y1:
        raise CodeFailed(f"crop box {[x1, y1, x2, y2]}: right/lower is less than left/upper")
    size_ok(ctx, max(1, x2 - x1), max(1, y2 - y1))
    inside = 0 <= x1 and 0 <= y1 and x2 <= img.pil.width and y2 <= img.pil.height
    frame = record_crop(ctx, img.frame if inside else None, (x1, y1, x2, y2))
    return Img(img.pil.crop(tuple(number_of(v, "a crop coordinate") for v in box)), frame)


def _resample(value: Any) -> int | None:
    if value is None:
        return None
    number = int_of(value, "resample")
    if number not in PIL_RESAMPLE.values():
        raise CodeFailed(f"unknown resample filter {number}")
    return number


def img_resize(ctx: Context, img: Img, size: Any, resample: Any = None, *rest: Any, **kw: Any) -> Img:
    if not isinstance(size, tuple | list) or len(size) != 2:
        raise CodeFailed("resize's size must be (width, height)")
    width, height = (int_of(v, "a size") for v in size)
    size_ok(ctx, width, height)
    method = _resample(resample if resample is not None else kw.get("resample"))
    pil = img.pil.resize((width, height)) if method is None else img.pil.resize((width, height), method)
    return Img(pil)


def img_rotate(ctx: Context, img: Img, angle: Any, resample: Any = 0, expand: Any = False, **kw: Any) -> Img:
    degrees = number_of(angle, "the angle")
    grow = bool(kw.get("expand", expand))
    if grow:
        side = math.ceil(math.hypot(img.pil.width, img.pil.height))
        size_ok(ctx, side, side)
    fill = kw.get("fillcolor")
    if fill is not None and not isinstance(fill, int | tuple | str):
        raise CodeFailed("fillcolor must be a colour")
    method = _resample(kw.get("resample", resample)) or 0
    return Img(img.pil.rotate(degrees, resample=method, expand=grow, fillcolor=fill))


def img_convert(ctx: Context, img: Img, mode: Any = "RGB", *rest: Any, **kw: Any) -> Img:
    if mode not in ("RGB", "L", "RGBA"):
        raise CodeFailed(f"convert to mode {mode!r} is not supported here (RGB, L, RGBA)")
    return Img(img.pil.convert(mode), img.frame if mode == img.pil.mode else None)


def img_copy(ctx: Context, img: Img) -> Img:
    return Img(img.pil.copy(), img.frame)


def img_save(ctx: Context, img: Img, path: Any, *rest: Any, **kw: Any) -> None:
    target = write_target(ctx, path)
    ctx.saved[target] = _encoded(img.pil, target, 75)


def _encoded(pil: Image.Image, path: str, quality: int) -> Image.Image:
    """The image as read back from `path`: a `.jpg`/`.jpeg` goes through JPEG at `quality` (Pillow's
    default 75 for `save`, OpenCV's 95 for `imwrite`), any other extension is lossless."""
    if not path.lower().endswith((".jpg", ".jpeg")):
        return pil.copy()
    buffer = io.BytesIO()
    pil.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def enhancer(kind: str) -> Callable[..., Enhancer]:
    def make(ctx: Context, img: Any) -> Enhancer:
        return Enhancer(kind, as_img(img, f"ImageEnhance.{kind}'s image"))

    return make


def enhance(ctx: Context, enh: Enhancer, factor: Any) -> Img:
    amount = number_of(factor, "the enhancement factor")
    if not -100 <= amount <= 100:
        raise CodeRefused(f"enhancement factor {amount} is over the bound of 100")
    cls = {"Contrast": ImageEnhance.Contrast, "Brightness": ImageEnhance.Brightness}
    cls |= {"Sharpness": ImageEnhance.Sharpness, "Color": ImageEnhance.Color}
    return Img(cls[enh.kind](enh.img.pil).enhance(amount))


# --------------------------------------------------------------------------- OpenCV and numpy


def cv2_imread(ctx: Context, path: Any, flags: Any = 1) -> Arr:
    rgb = np.asarray(read_image(ctx, path).convert("RGB"))
    return Arr(np.ascontiguousarray(rgb[:, :, ::-1]), (0, 0))


def cv2_imwrite(ctx: Context, path: Any, array: Any, *rest: Any) -> bool:
    a = as_arr(array, "imwrite's image").a
    if a.ndim == 3 and a.shape[2] >= 3:
        a = a[:, :, 2::-1]
    target = write_target(ctx, path)
    ctx.saved[target] = _encoded(array_image(a), target, 95)
    return True


def cv2_resize(ctx: Context, src: Any, dsize: Any = None, *rest: Any, **kw: Any) -> Arr:
    arr = as_arr(src, "resize's image")
    height, width = arr.a.shape[:2]
    fx = number_of(kw.get("fx", rest[0] if rest else 0) or 0, "fx")
    fy = number_of(kw.get("fy", rest[1] if len(rest) > 1 else 0) or 0, "fy")
    if dsize is not None and not (isinstance(dsize, tuple | list) and len(dsize) == 2):
        raise CodeFailed("dsize must be (width, height) or None")
    if dsize is None or tuple(dsize) == (0, 0):
        new = (round(width * fx), round(height * fy))
    else:
        new = (int_of(dsize[0], "dsize"), int_of(dsize[1], "dsize"))
    size_ok(ctx, *new)
    method = _CV2_TO_PIL.get(
        int_of(kw.get("interpolation", rest[2] if len(rest) > 2 else 1), "interpolation")
    )
    if method is None:
        raise CodeFailed("unknown interpolation flag")
    return Arr(np.asarray(array_image(arr.a).resize(new, method)))


def cv2_cvtcolor(ctx: Context, src: Any, code: Any, *rest: Any) -> Arr:
    a = as_arr(src, "cvtColor's image").a
    flag = int_of(code, "the colour conversion code")
    if flag == 4 and a.ndim == 3:
        return Arr(np.ascontiguousarray(a[:, :, 2::-1]))
    if flag in (6, 7) and a.ndim == 3:
        rgb = a[:, :, 2::-1] if flag == 6 else a[:, :, :3]
        return Arr(np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L")))
    raise CodeFailed(f"colour conversion {flag} is not supported here")


def cv2_rotate(ctx: Context, src: Any, code: Any) -> Arr:
    a = as_arr(src, "rotate's image").a
    turns = {0: -1, 1: 2, 2: 1}.get(int_of(code, "the rotate code"))
    if turns is None:
        raise CodeFailed("unknown rotate code")
    return Arr(np.ascontiguousarray(np.rot90(a, turns)))


def cv2_scale_abs(ctx: Context, src: Any, alpha: Any = 1.0, beta: Any = 0.0, **kw: Any) -> Arr:
    a = as_arr(src, "convertScaleAbs's image").a
    scaled = np.abs(
        a.astype(np.float64) * number_of(kw.get("alpha", alpha), "alpha")
        + number_of(kw.get("beta", beta), "beta")
    )
    return Arr(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def arr_slice(ctx: Context, arr: Arr, key: Any) -> Arr:
    """`arr[y1:y2, x1:x2]` (and a trailing `:` or channel slice): a crop of the array."""
    keys = key if isinstance(key, tuple) else (key,)
    if not 1 <= len(keys) <= 3 or not all(isinstance(k, slice) for k in keys):
        raise CodeFailed("an image array is indexed with slices only, e.g. image[y1:y2, x1:x2]")
    cleaned = []
    for k in keys:
        parts = [None if v is None else int_of(v, "a slice bound") for v in (k.start, k.stop, k.step)]
        if parts[2] not in (None, 1):
            raise CodeFailed("slice steps are not supported on image arrays")
        cleaned.append(slice(parts[0], parts[1]))
    out = arr.a[tuple(cleaned)]
    if out.size == 0:
        raise CodeFailed(f"the slice {key!r} of an image of shape {arr.a.shape} is empty")
    height, width = arr.a.shape[:2]
    ys = cleaned[0].indices(height)
    xs = cleaned[1].indices(width) if len(cleaned) > 1 else (0, width, 1)
    frame = record_crop(ctx, arr.frame, (xs[0], ys[0], xs[1], ys[1])) if len(cleaned) > 1 else None
    return Arr(np.ascontiguousarray(out), frame)


def np_array(ctx: Context, value: Any, *rest: Any, **kw: Any) -> Any:
    if isinstance(value, Img | Arr):
        arr = as_arr(value, "np.array's argument")
        return Arr(arr.a.copy(), arr.frame)
    raise CodeFailed("np.array is supported on images only")


# --------------------------------------------------------------------------- os, uuid, matplotlib


def path_join(ctx: Context, *parts: Any) -> str:
    if not parts or not all(isinstance(p, str) for p in parts):
        raise CodeFailed("os.path.join takes path strings")
    out = ""
    for part in parts:
        out = part if part.startswith("/") or not out else (out if out.endswith("/") else out + "/") + part
    return out


def path_basename(ctx: Context, path: Any) -> str:
    return path_of(path, "the path").rsplit("/", 1)[-1]


def path_dirname(ctx: Context, path: Any) -> str:
    text = path_of(path, "the path")
    return text.rsplit("/", 1)[0] if "/" in text else ""


def path_splitext(ctx: Context, path: Any) -> tuple[str, str]:
    text = path_of(path, "the path")
    base = text.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return text, ""
    cut = len(text) - len(base) + dot
    return text[:cut], text[cut:]


def path_exists(ctx: Context, path: Any) -> bool:
    text = path_of(path, "the path")
    return text in ctx.sandbox.readable or text in ctx.saved


def makedirs(ctx: Context, path: Any, *rest: Any, **kw: Any) -> None:
    write_target(ctx, path if path_of(path, "the path").endswith("/") else path + "/")


def uuid4(ctx: Context) -> FixedUUID:
    return FixedUUID()


def plt_figure(ctx: Context, *args: Any, **kw: Any) -> None:
    size = kw.get("figsize")
    ctx.figure = {}
    if size is not None:
        if not isinstance(size, tuple | list) or len(size) != 2:
            raise CodeFailed("figsize must be (width, height)")
        w, h = (number_of(v, "figsize") for v in size)
        if not (0 < w <= 50 and 0 < h <= 50):
            raise CodeRefused(f"figsize {size!r} is over the bound of 50 inches")
        ctx.figure["figsize"] = (w, h)


def plt_imshow(ctx: Context, image: Any, *args: Any, **kw: Any) -> None:
    pil = as_img(image, "imshow's image").pil
    cmap = kw.get("cmap")
    if cmap is not None and cmap not in ("gray", "grey", "Greys", "viridis"):
        raise CodeFailed(f"cmap {cmap!r} is not supported here")
    ctx.figure["image"] = (pil.copy(), cmap)


def plt_axis(ctx: Context, value: Any = "on", *args: Any) -> None:
    ctx.figure["axis_off"] = value in ("off", False)


def plt_title(ctx: Context, text: Any, *args: Any, **kw: Any) -> None:
    ctx.figure["title"] = str(text)[:200]


def plt_noop(ctx: Context, *args: Any, **kw: Any) -> None:
    return None


def plt_show(ctx: Context, *args: Any, **kw: Any) -> None:
    """Render the current figure as Jupyter's inline backend does (Agg, `bbox_inches="tight"`)."""
    from matplotlib.figure import Figure

    state, ctx.figure = ctx.figure, {}
    if "image" not in state:
        return
    if len(ctx.shown) >= ctx.sandbox.limits.max_images:
        raise CodeRefused(f"shows more than {ctx.sandbox.limits.max_images} images")
    fig = Figure(figsize=state.get("figsize"))
    ax = fig.add_subplot()
    pil, cmap = state["image"]
    ax.imshow(np.asarray(pil), cmap=cmap)
    if state.get("axis_off"):
        ax.axis("off")
    if "title" in state:
        ax.set_title(state["title"].replace("$", r"\$"))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    buffer.seek(0)
    with Image.open(buffer) as rendered:
        ctx.shown.append(rendered.convert("RGB"))


def display(ctx: Context, *values: Any) -> None:
    if not ctx.sandbox.jupyter:
        raise CodeRefused("'display' is not available in this sandbox")
    for value in values:
        show_value(ctx, value)


def show_value(ctx: Context, value: Any) -> None:
    """A notebook shows an image value (a cell's last expression, or `display(img)`) as the image."""
    if isinstance(value, Img | Arr):
        if len(ctx.shown) >= ctx.sandbox.limits.max_images:
            raise CodeRefused(f"shows more than {ctx.sandbox.limits.max_images} images")
        ctx.shown.append(as_img(value, "the shown image").pil.convert("RGB"))
    elif value is not None:
        ctx.write(render(value) + "\n")


# --------------------------------------------------------------------------- the tables


def modules() -> dict[str, Module]:
    """The importable modules, by their dotted names (`import cv2`, `from PIL import Image`, ...)."""
    resampling = Module("PIL.Image.Resampling", dict(PIL_RESAMPLE))
    image = Module(
        "PIL.Image",
        {"open": Func("open", image_open), "fromarray": Func("fromarray", image_fromarray)}
        | dict(PIL_RESAMPLE)
        | {"Resampling": resampling},
    )
    enhance_mod = Module(
        "PIL.ImageEnhance",
        {k: Func(k, enhancer(k)) for k in ("Contrast", "Brightness", "Sharpness", "Color")},
    )
    cv2 = Module(
        "cv2",
        {
            "imread": Func("imread", cv2_imread),
            "imwrite": Func("imwrite", cv2_imwrite),
            "resize": Func("resize", cv2_resize),
            "cvtColor": Func("cvtColor", cv2_cvtcolor),
            "rotate": Func("rotate", cv2_rotate),
            "convertScaleAbs": Func("convertScaleAbs", cv2_scale_abs),
        }
        | dict(CV2_CONSTANTS),
    )
    numpy = Module("numpy", {"array": Func("array", np_array), "asarray": Func("asarray", np_array)})
    path = Module(
        "os.path",
        {
            "join": Func("join", path_join),
            "basename": Func("basename", path_basename),
            "dirname": Func("dirname", path_dirname),
            "splitext": Func("splitext", path_splitext),
            "exists": Func("exists", path_exists),
        },
    )
    os_mod = Module("os", {"path": path, "makedirs": Func("makedirs", makedirs)})
    uuid = Module("uuid", {"uuid4": Func("uuid4", uuid4)})
    pyplot = Module(
        "matplotlib.pyplot",
        {
            "figure": Func("figure", plt_figure),
            "imshow": Func("imshow", plt_imshow),
            "axis": Func("axis", plt_axis),
            "title": Func("title", plt_title),
            "tight_layout": Func("tight_layout", plt_noop),
            "close": Func("close", plt_noop),
            "show": Func("show", plt_show),
        },
    )
    math_mod = Module(
        "math",
        {name: Func(name, _math(name)) for name in ("floor", "ceil", "sqrt")} | {"pi": math.pi},
    )
    pil = Module("PIL", {"Image": image, "ImageEnhance": enhance_mod})
    return {
        "PIL": pil,
        "PIL.Image": image,
        "PIL.ImageEnhance": enhance_mod,
        "cv2": cv2,
        "numpy": numpy,
        "os": os_mod,
        "os.path": path,
        "uuid": uuid,
        "matplotlib": Module("matplotlib", {"pyplot": pyplot}),
        "matplotlib.pyplot": pyplot,
        "math": math_mod,
    }


def _math(name: str) -> Callable[..., Any]:
    def call(ctx: Context, x: Any) -> Any:
        value = number_of(x, f"math.{name}'s argument")
        if name == "sqrt" and value < 0:
            raise CodeFailed("math domain error")
        return getattr(math, name)(value)

    return call


IMG_METHODS: dict[str, Callable[..., Any]] = {
    "crop": img_crop,
    "resize": img_resize,
    "rotate": img_rotate,
    "convert": img_convert,
    "copy": img_copy,
    "save": img_save,
}
ARR_METHODS: dict[str, Callable[..., Any]] = {"copy": lambda ctx, arr: Arr(arr.a.copy(), arr.frame)}
