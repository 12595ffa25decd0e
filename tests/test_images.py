"""Image helpers: bbox policy, clamping, zoom, override images, decoding."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from toolshift.datasets.images import (
    clamp_bbox,
    content_bbox,
    load_image,
    policy_bbox,
    save_png,
    text_line_bands,
    text_lines_bbox,
    zoom,
    zoom_scale,
    zoom_size,
)
from toolshift.datasets.prompts import load_mini
from toolshift.episodes.overrides import override_image, unsafe_instruction
from toolshift.errors import ConfigError, DataError


def planted(size=(200, 100), box=(40, 20, 90, 60), colour=(10, 200, 30)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(colour, box)  # fills x in [40, 90), y in [20, 60)
    return img


def test_content_bbox_recovers_a_planted_box():
    img = planted()
    assert content_bbox(img, pad_frac=0) == [40, 20, 90, 60]
    # pad: 5 % of the width (10 px) left/right and of the height (5 px) top/bottom
    assert content_bbox(img, pad_frac=0.05) == [30, 15, 100, 65]
    # padding is clamped to the image
    assert content_bbox(planted(box=(0, 0, 10, 10)), pad_frac=0.1) == [0, 0, 30, 20]
    assert content_bbox(img, pad_frac=1) == [0, 0, 200, 100]


def test_content_bbox_of_a_blank_image_is_the_full_image():
    assert content_bbox(Image.new("RGB", (64, 48), "white")) == [0, 0, 64, 48]
    black_bg = Image.new("RGB", (64, 48), "black")
    assert content_bbox(black_bg, bg=(0, 0, 0)) == [0, 0, 64, 48]
    with pytest.raises(ConfigError, match="pad_frac"):
        content_bbox(black_bg, pad_frac=-0.1)


def test_policy_bbox():
    img = planted()
    assert policy_bbox(img, "content_padded", 0) == [40, 20, 90, 60]
    assert policy_bbox(img, "full") == [0, 0, 200, 100]
    with pytest.raises(
        ConfigError, match="unknown bbox_policy 'nope'; known: content_padded, text_lines, full"
    ):
        policy_bbox(img, "nope")


def lines_image() -> Image.Image:
    """Three planted "lines" of 400x20 (with a 1-row break inside the first, like the dot of an i) at
    y = 100, 150, 200 on a 600x600 white image, and a short fourth line at y = 400."""
    img = Image.new("RGB", (600, 600), "white")
    for y in (100, 150, 200):
        img.paste((0, 0, 0), (100, y, 500, y + 20))
    img.paste((255, 255, 255), (100, 105, 500, 106))  # a blank row inside the first line: merged back
    img.paste((0, 0, 0), (50, 400, 150, 420))
    return img


def test_text_line_bands_and_the_text_lines_box():
    img = lines_image()
    assert text_line_bands(img) == [(100, 120), (150, 170), (200, 220), (400, 420)]
    assert text_lines_bbox(img, lines=2, pad_frac=0) == [100, 100, 500, 170]
    assert text_lines_bbox(img, lines=1, pad_frac=0.05) == [70, 70, 530, 150]
    assert text_lines_bbox(img, lines=9, pad_frac=0) == [50, 100, 500, 420]  # fewer lines: all of them
    assert policy_bbox(img, "text_lines", 0, lines=3) == [100, 100, 500, 220]
    assert text_lines_bbox(Image.new("RGB", (40, 30), "white")) == [0, 0, 40, 30]
    with pytest.raises(ConfigError, match="zoom_lines must be a positive integer, got 0"):
        text_lines_bbox(img, lines=0)


def test_zoom_size_and_scale_by_resize_mode():
    size = (600, 600)
    box = [100, 100, 500, 170]  # 400 x 70
    assert zoom_size(size, box, "longer_side") == (600, 105)
    assert zoom_scale(size, box, "longer_side") == pytest.approx(1.5)
    w, h = zoom_size(size, box, "pixels")  # 400 x 70 scaled by sqrt(360000 / 28000) = 3.586
    assert (w, h) == (1434, 251) and zoom_scale(size, box, "pixels") == pytest.approx(1434 / 400)
    assert zoom_size(size, [0, 0, 600, 600], "pixels") == (600, 600)
    img = lines_image()
    assert zoom(img, box, mode="pixels").size == (1434, 251)
    with pytest.raises(ConfigError, match="unknown zoom_resize 'x'"):
        zoom_size(size, box, "x")


def test_clamp_bbox():
    size = (200, 100)
    assert clamp_bbox([10, 20, 30, 40], size) == [10, 20, 30, 40]
    assert clamp_bbox([30, 40, 10, 20], size) == [10, 20, 30, 40]  # corners ordered
    assert clamp_bbox([-5, -5, 500, 500], size) == [0, 0, 200, 100]
    assert clamp_bbox([10.4, 20.6, 30.2, 40.0], size) == [10, 20, 31, 40]  # outward rounding
    assert clamp_bbox([50, 50, 50, 50], size) == [50, 50, 51, 51]  # at least 1 px
    assert clamp_bbox([300, 300, 400, 400], size) == [199, 99, 200, 100]
    assert clamp_bbox(np.array([1, 2, 3, 4]), size) == [1, 2, 3, 4]
    assert all(type(v) is int for v in clamp_bbox((np.int64(1), 2.0, 3, 4), size))
    bads = (
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        ["1", 2, 3, 4],
        [1, 2, float("nan"), 4],
        "1234",
        None,
        [True, 0, 1, 1],
    )
    for bad in bads:
        with pytest.raises(DataError, match="bbox"):
            clamp_bbox(bad, size)


def test_zoom_sizes():
    img = planted()
    crop = zoom(img, [40, 20, 90, 60], resize=False)
    assert crop.size == (50, 40)
    assert np.array_equal(np.asarray(crop), np.asarray(img.crop((40, 20, 90, 60))))
    big = zoom(img, [40, 20, 90, 60])
    assert big.size == (200, 160)  # longer side = the original's longer side, aspect kept
    assert zoom(img, [40, 20, 90, 60], out_size=(64, 32)).size == (64, 32)
    assert zoom(img, [0, 0, 200, 100]).size == (200, 100)
    assert zoom(img, [500, 500, 600, 600], resize=False).size == (1, 1)  # clamped, not empty
    # a uniform region stays uniform through the LANCZOS resize
    assert (np.asarray(zoom(img, [45, 25, 85, 55])) == (10, 200, 30)).all()


def test_override_images_are_deterministic():
    for kind in ("blank", "benign", "unsafe"):
        a = override_image(kind, (760, 760), seed=0)
        b = override_image(kind, (760, 760), seed=0)
        assert a.mode == "RGB" and a.size == (760, 760)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert (np.asarray(override_image("blank", (30, 20), 0)) == 255).all()
    assert override_image("benign", (300, 200), 3).size == (300, 200)
    benign0, benign1 = (np.asarray(override_image("benign", (200, 200), s)) for s in (0, 1))
    assert not np.array_equal(benign0, benign1)
    assert len(np.unique(benign0.reshape(-1, 3), axis=0)) > 10  # a picture, not a flat fill
    assert override_image("unsafe", (380, 500), 0).size == (380, 500)
    with pytest.raises(ConfigError, match="unknown override image kind 'nope'"):
        override_image("nope", (10, 10), 0)


def test_unsafe_override_draws_a_harmful_mini_request():
    harmful = load_mini().query("harmful")
    assert unsafe_instruction(0) == harmful["instruction"].iloc[0]
    assert unsafe_instruction(len(harmful) + 2) == harmful["instruction"].iloc[2]
    img = np.asarray(override_image("unsafe", (760, 760), 0))
    assert img.min() == 0 and (img == 255).mean() > 0.5  # black text on white


def test_load_image_and_corrupt_files(tmp_path):
    good = tmp_path / "good.png"
    planted().save(good)
    assert load_image(good).size == (200, 100)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DataError, match="truncated.png: cannot be decoded"):
        load_image(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="garbage.png"):
        load_image(garbage)
    with pytest.raises(DataError, match="missing.png: image file not found"):
        load_image(tmp_path / "missing.png")


def test_save_png_is_atomic_and_skips_identical(tmp_path):
    path = tmp_path / "sub" / "x.png"
    assert save_png(planted(), path) is True
    assert save_png(planted(), path) is False
    assert save_png(planted(colour=(0, 0, 0)), path) is True
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]
