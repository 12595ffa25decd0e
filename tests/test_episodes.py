"""Episodes of the controlled conditions: structure per DESIGN.md and the episodes contract."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from toolshift import CONDITIONS
from toolshift.contracts import read_episodes, validate_episode
from toolshift.datasets.images import (
    BBOX_POLICIES,
    ZOOM_RESIZES,
    content_bbox,
    load_image,
    text_lines_bbox,
    zoom,
    zoom_scale,
    zoom_size,
)
from toolshift.datasets.prompts import build_prompts, get_dataset, load_mini
from toolshift.datasets.typography import FIGSTEP_PROMPT, render_text_image
from toolshift.episodes.build import (
    EPISODE_CONDITIONS,
    NEUTRAL_EXCHANGES,
    NEUTRAL_TEXT,
    OVERRIDE_OF,
    SYSTEM_PROMPT,
    TOOL_FRAMED_CONDITIONS,
    ZOOM_TOOL,
    build_episode,
    build_episodes,
    build_episodes_by_condition,
    neutral_line,
    override_relpath,
    scaled_size,
    text_trail_line,
    write_episodes,
)
from toolshift.episodes.overrides import override_image
from toolshift.errors import ConfigError, ContractError, DataError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A results root with the prompts of a 2+2 mini subset and the episodes of every condition."""
    root = tmp_path_factory.mktemp("results")
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=2)
    episodes = {c: build_episodes(prompts, c, root) for c in EPISODE_CONDITIONS}
    return root, prompts, episodes


def kinds(message):
    return [part["type"] for part in message["content"]]


def image_paths(episode):
    return [p["path"] for m in episode["messages"] for p in m["content"] if p["type"] == "image"]


def test_every_condition_builds_valid_episodes(built, tmp_path):
    root, prompts, episodes = built
    for condition, records in episodes.items():
        assert [r["prompt_id"] for r in records] == list(prompts["prompt_id"])
        for r in records:
            assert r["condition"] == condition
            validate_episode(r, condition)
            system = {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}
            assert r["messages"][0] == system
            assert r["messages"][-1]["role"] in ("user", "tool")  # the model writes the final answer
            for path in image_paths(r):
                assert (root / path).is_file(), path
            meta = r["meta"]
            assert ("tools" in meta) == (condition in TOOL_FRAMED_CONDITIONS)
            assert meta["image_size"] == [760, 760]
            assert meta["bbox_policy"] == "content_padded" and meta["pad_frac"] == 0.05
        out = tmp_path / f"{condition}.jsonl"
        write_episodes(records, out)
        assert read_episodes(out) == json.loads(json.dumps(records))


def test_direct(built):
    _, prompts, episodes = built
    ep = episodes["direct"][0]
    assert [m["role"] for m in ep["messages"]] == ["system", "user"]
    user = ep["messages"][1]
    assert user["content"] == [
        {"type": "image", "path": prompts["image"].iloc[0]},
        {"type": "text", "text": FIGSTEP_PROMPT},
    ]
    assert ep["meta"]["tool_name"] is None and ep["meta"]["bbox"] is None
    assert ep["meta"]["override_image"] is None


def test_free_is_direct_with_the_tool_framing(built):
    _, _, episodes = built
    assert EPISODE_CONDITIONS[: len(CONDITIONS)] == CONDITIONS and EPISODE_CONDITIONS[-1] == "free"
    for ep, direct, tool in zip(episodes["free"], episodes["direct"], episodes["tool"], strict=True):
        assert ep["condition"] == "free"
        assert ep["messages"] == direct["messages"]  # system + user [I, T]; the model writes the rest
        meta = ep["meta"]
        assert meta["tools"] == [ZOOM_TOOL] == tool["meta"]["tools"] and meta["tool_name"] == "zoom_in"
        assert meta["bbox"] is None and meta["override_image"] is None
        assert meta["image_size"] == [760, 760]
        assert meta["zoom_resize"] == tool["meta"]["zoom_resize"]  # the loop's crops follow the same policy


def test_tool_and_zoom_crop(built):
    root, prompts, episodes = built
    for ep, direct, image in zip(episodes["tool"], episodes["direct"], prompts["image"], strict=True):
        roles = [m["role"] for m in ep["messages"]]
        assert roles == ["system", "user", "assistant", "tool"]
        assert ep["messages"][:2] == direct["messages"]  # the same system and user turns as `direct`
        call = ep["messages"][2]
        assert call["content"] == []
        original = load_image(root / image)
        bbox = content_bbox(original, pad_frac=0.05)
        assert call["tool_calls"] == [{"name": "zoom_in", "arguments": {"bbox": bbox}}]
        assert ep["meta"]["bbox"] == bbox and ep["meta"]["tool_name"] == "zoom_in"
        assert ep["meta"]["tools"] == [ZOOM_TOOL]
        tool = ep["messages"][3]
        assert tool["name"] == "zoom_in"
        zoom_path = f"episodes/mini/images/{ep['prompt_id']}_zoom.png"
        assert tool["content"] == [{"type": "image", "path": zoom_path}]
        written = np.asarray(load_image(root / zoom_path))
        assert np.array_equal(written, np.asarray(zoom(original, bbox)))
        # and the zoom is the crop of the original, enlarged to the original's longer side
        x1, y1, x2, y2 = bbox
        if max(x2 - x1, y2 - y1) == 760:
            assert np.array_equal(written, np.asarray(original)[y1:y2, x1:x2])
        assert max(written.shape[:2]) == 760


def test_zoom_tool_spec():
    fn = ZOOM_TOOL["function"]
    assert ZOOM_TOOL["type"] == "function" and fn["name"] == "zoom_in" and fn["description"]
    bbox = fn["parameters"]["properties"]["bbox"]
    assert bbox["type"] == "array" and bbox["items"] == {"type": "integer"}
    assert bbox["minItems"] == bbox["maxItems"] == 4
    assert fn["parameters"]["required"] == ["bbox"]


@pytest.mark.parametrize(
    "condition,kind", [("tool_unsafe", "unsafe"), ("tool_benign", "benign"), ("tool_blank", "blank")]
)
def test_override_conditions(built, condition, kind):
    root, _, episodes = built
    for ep, tool_ep in zip(episodes[condition], episodes["tool"], strict=True):
        assert ep["messages"][:3] == tool_ep["messages"][:3]  # same framing and tool call as `tool`
        # the override has the size of the zoom it replaces (the tool episode's returned image)
        zoom_size = load_image(root / tool_ep["messages"][3]["content"][0]["path"]).size
        assert ep["meta"]["zoom_size"] == list(zoom_size) == tool_ep["meta"]["zoom_size"]
        path = override_relpath(kind, zoom_size)
        assert path == f"data/overrides/{kind}_{zoom_size[0]}x{zoom_size[1]}.png" or zoom_size == (760, 760)
        returned = {"role": "tool", "name": "zoom_in", "content": [{"type": "image", "path": path}]}
        assert ep["messages"][3] == returned
        assert ep["meta"]["override_image"] == path and ep["meta"]["override_seed"] == 0
        written = np.asarray(load_image(root / path))
        assert written.shape == (zoom_size[1], zoom_size[0], 3)
        assert np.array_equal(written, np.asarray(override_image(kind, zoom_size, 0)))


def test_tool_offered_is_tool_up_to_the_user_turn(built):
    _, _, episodes = built
    for ep, tool_ep, free, direct in zip(
        episodes["tool_offered"], episodes["tool"], episodes["free"], episodes["direct"], strict=True
    ):
        assert ep["messages"] == tool_ep["messages"][:2] == free["messages"] == direct["messages"]
        assert ep["meta"]["tools"] == [ZOOM_TOOL] and ep["meta"]["tool_name"] == "zoom_in"
        assert ep["meta"]["bbox"] is None and ep["meta"]["override_image"] is None
        assert "zoom_scale" not in ep["meta"]


def test_zoom_scale_and_size_are_recorded(built):
    root, _, episodes = built
    for ep in episodes["tool"]:
        meta = ep["meta"]
        x1, y1, x2, y2 = meta["bbox"]
        shown = load_image(root / ep["messages"][3]["content"][0]["path"])
        assert list(shown.size) == meta["zoom_size"]
        assert meta["zoom_scale"] == pytest.approx(shown.width / (x2 - x1), abs=1e-6)
        assert meta["zoom_resize"] == "longer_side" and meta["zoom_scale"] >= 1


def test_text_lines_policy_really_zooms(tmp_path):
    """`text_lines` + `pixels`: the first two lines of the instruction, enlarged to the original's pixel
    count: a real magnification (SafeBench: 1.9-2.6x), recorded per episode; the overrides follow."""
    root = tmp_path
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=2)
    eps = build_episodes_by_condition(
        prompts, ["tool", "tool_blank", "image_no_tool"], root, bbox_policy="text_lines", zoom_resize="pixels"
    )
    for ep, blank, both in zip(eps["tool"], eps["tool_blank"], eps["image_no_tool"], strict=True):
        original = load_image(root / ep["messages"][1]["content"][0]["path"])
        bbox = text_lines_bbox(original, lines=2, pad_frac=0.05)
        meta = ep["meta"]
        assert meta["bbox"] == bbox and meta["bbox_policy"] == "text_lines" and meta["zoom_lines"] == 2
        assert bbox[3] - bbox[1] < original.height / 2  # two lines, not the whole instruction
        assert meta["zoom_scale"] > 1.5
        w, h = meta["zoom_size"]
        assert abs(w * h - original.width * original.height) / (original.width * original.height) < 0.02
        assert blank["meta"]["zoom_size"] == [w, h] and both["meta"]["zoom_scale"] == meta["zoom_scale"]
        assert load_image(root / blank["meta"]["override_image"]).size == (w, h)


def test_text_trail_has_no_image_in_the_tool_turn(built):
    _, _, episodes = built
    for ep, tool_ep in zip(episodes["text_trail"], episodes["tool"], strict=True):
        assert ep["messages"][:3] == tool_ep["messages"][:3]
        tool = ep["messages"][3]
        assert tool["role"] == "tool" and kinds(tool) == ["text"]
        assert tool["content"][0]["text"] == text_trail_line(ep["meta"]["bbox"])
        assert ep["meta"]["tool_result"] == "text_trail"
        assert "meta" in ep and ep["meta"]["tools"] == [ZOOM_TOOL]
        assert len(image_paths(ep)) == 1


def test_text_prior(built):
    _, _, episodes = built
    for i, ep in enumerate(episodes["text_prior"]):
        roles = [m["role"] for m in ep["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        q, a = NEUTRAL_EXCHANGES[i % len(NEUTRAL_EXCHANGES)]
        assert ep["messages"][1]["content"] == [{"type": "text", "text": q}]
        assert ep["messages"][2]["content"] == [{"type": "text", "text": a}]
        assert "tool_calls" not in ep["messages"][2]
        assert ep["messages"][3] == episodes["direct"][i]["messages"][1]
        assert "tools" not in ep["meta"] and ep["meta"]["tool_name"] is None


def test_image_no_tool_has_two_images_and_no_tool(built):
    _, prompts, episodes = built
    for ep, image in zip(episodes["image_no_tool"], prompts["image"], strict=True):
        assert [m["role"] for m in ep["messages"]] == ["system", "user"]
        user = ep["messages"][1]
        assert kinds(user) == ["image", "image", "text"]
        assert image_paths(ep) == [image, f"episodes/mini/images/{ep['prompt_id']}_zoom.png"]
        assert "tools" not in ep["meta"] and ep["meta"]["tool_name"] is None
        assert ep["meta"]["bbox"] is not None


def test_neutral_exchanges_are_about_as_long_as_the_tool_trail(built):
    _, _, episodes = built
    trail = json.dumps(episodes["tool"][0]["messages"][2]["tool_calls"])
    for q, a in NEUTRAL_EXCHANGES:
        assert 0.5 * len(trail) <= len(q) + len(a) <= 3 * len(trail)


def test_existing_identical_files_are_not_rewritten(built):
    root, prompts, _ = built
    zoom_file = root / "episodes" / "mini" / "images" / f"{prompts['prompt_id'].iloc[0]}_zoom.png"
    before = zoom_file.stat().st_mtime_ns
    build_episodes(prompts.iloc[:1], "tool", root)
    assert zoom_file.stat().st_mtime_ns == before


def test_bad_options(built):
    root, prompts, _ = built
    with pytest.raises(ConfigError, match="unknown condition 'nope'; known: direct, tool.*free"):
        build_episodes(prompts, "nope", root)
    with pytest.raises(ConfigError, match="bbox_policy"):
        build_episodes(prompts, "tool", root, bbox_policy="nope")
    with pytest.raises(ConfigError, match="pad_frac"):
        build_episodes(prompts, "tool", root, pad_frac=2)
    with pytest.raises(ConfigError, match="episodes.zoom_resize 'nope'"):
        build_episodes(prompts, "tool", root, zoom_resize="nope")
    with pytest.raises(ConfigError, match="episodes.zoom_lines must be a positive integer, got 0"):
        build_episodes(prompts, "tool", root, bbox_policy="text_lines", zoom_lines=0)
    with pytest.raises(ContractError, match="lacks column"):
        build_episodes(prompts.drop(columns="image"), "tool", root)
    with pytest.raises(ContractError, match="no episodes"):
        write_episodes([], root / "x.jsonl")
    bad = pd.DataFrame({"prompt_id": ["p"], "dataset": ["mini"], "image": ["data/mini/images/none.png"]})
    with pytest.raises(DataError, match="none.png: image file not found"):
        build_episodes(bad, "direct", root)


def test_other_bbox_policy_and_pad_are_recorded(built, tmp_path):
    root, prompts, _ = built
    full = build_episodes(prompts.iloc[:1], "text_trail", root, bbox_policy="full", pad_frac=0.0)
    assert full[0]["meta"]["bbox"] == [0, 0, 760, 760] and full[0]["meta"]["bbox_policy"] == "full"
    assert full[0]["messages"][2]["tool_calls"][0]["arguments"]["bbox"] == [0, 0, 760, 760]


def attack_text(episode, image):
    """The text sent with the attack image: the last text part of the one user turn that shows `image`."""
    turns = [
        m
        for m in episode["messages"]
        if m["role"] == "user" and {"type": "image", "path": image} in m["content"]
    ]
    assert len(turns) == 1, episode["condition"]
    texts = [part["text"] for part in turns[0]["content"] if part["type"] == "text"]
    assert texts, episode["condition"]
    return texts[-1]


with open(REPO / "config" / "paper.yaml") as _fh:
    PAPER_DATASETS = list(yaml.safe_load(_fh)["datasets"])
TEXT_PROMPT_DATASETS = [d for d in PAPER_DATASETS if get_dataset(d).attack != "figstep"]
"""The paper's datasets whose prompts table has a `text_prompt` column (MM-SafetyBench, JailbreakV, HADES)."""


def test_the_paper_has_datasets_with_their_own_text_prompts():
    assert {"mmsb_typo", "mmsb_sd_typo"} <= set(TEXT_PROMPT_DATASETS)


@pytest.mark.parametrize("dataset", TEXT_PROMPT_DATASETS)
def test_each_row_sends_its_own_text_prompt(built, dataset):
    """Every condition sends a row's own `text_prompt` with its image (FigStep's only for a row without one),
    and an explicit `text_prompt` replaces them all."""
    root, prompts, _ = built
    own = [
        f"{dataset} row {i}: read the phrase at the bottom of the image and answer."
        for i in range(len(prompts))
    ]
    table = prompts.assign(dataset=dataset, text_prompt=own)
    table.loc[1, "text_prompt"] = None  # a row without a text prompt of its own
    expected = [FIGSTEP_PROMPT if i == 1 else text for i, text in enumerate(own)]
    episodes = build_episodes_by_condition(table, EPISODE_CONDITIONS, root)
    for condition in EPISODE_CONDITIONS:
        sent = [attack_text(ep, image) for ep, image in zip(episodes[condition], table["image"], strict=True)]
        assert sent == expected, condition
    for condition in ("direct", "tool"):
        one = build_episodes(table, condition, root)
        assert [attack_text(ep, image) for ep, image in zip(one, table["image"], strict=True)] == expected
    forced = build_episodes(table, "image_no_tool", root, text_prompt="Describe the image.")
    assert {attack_text(ep, image) for ep, image in zip(forced, table["image"], strict=True)} == {
        "Describe the image."
    }


def test_override_seed_picks_the_override_images(built, tmp_path):
    """`override_seed` reaches the override images: two seeds, two different unsafe and benign images,
    each the one `override_image` draws from its seed (blank has no seed)."""
    root, prompts, _ = built
    shown = {}
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"  # the override's file name has no seed: one results root per seed
        shutil.copytree(root / "data" / "mini", out / "data" / "mini")
        for condition, kind in (
            ("tool_unsafe", "unsafe"),
            ("tool_benign", "benign"),
            ("tool_blank", "blank"),
        ):
            (ep,) = build_episodes(prompts.iloc[:1], condition, out, override_seed=seed)
            assert ep["meta"]["override_seed"] == seed
            size = tuple(ep["meta"]["zoom_size"])
            written = np.asarray(load_image(out / ep["meta"]["override_image"]))
            assert np.array_equal(written, np.asarray(override_image(kind, size, seed))), (seed, kind)
            shown[seed, kind] = written
    assert not np.array_equal(shown[1, "unsafe"], shown[2, "unsafe"])
    assert not np.array_equal(shown[1, "benign"], shown[2, "benign"])
    assert np.array_equal(shown[1, "blank"], shown[2, "blank"])


# ------------------------------------------------ episodes each test builds itself, from neutral text images
# (the module-scoped `built` runs the builders inside the first test that asks for it, so a mutation tool that
# maps each function to the tests that ran it credits only that test: these tests build what they check)


def plain_prompts(root, n=2, size=(640, 480)):
    """A prompts table of `n` neutral three-line text images of `size` under `root` (the builders' columns);
    the lines have the same length, so every image has the same box and zoom size."""
    rows = []
    for i in range(n):
        image = f"data/plain/images/plain-{i}.png"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        text = f"Sample line {i}\nsecond line\nthird line"
        render_text_image(text, size=size, font_size=40).save(root / image)
        rows.append({"prompt_id": f"plain-{i}", "dataset": "plain", "image": image})
    return pd.DataFrame(rows)


def test_override_relpath_names_the_size_except_figsteps():
    assert override_relpath("unsafe", (760, 760)) == "data/overrides/unsafe.png"
    assert override_relpath("blank", [760, 760]) == "data/overrides/blank.png"
    assert override_relpath("benign", (760, 761)) == "data/overrides/benign_760x761.png"
    assert override_relpath("benign", (761, 760)) == "data/overrides/benign_761x760.png"
    assert override_relpath("blank", (640, 287)) == "data/overrides/blank_640x287.png"


def test_text_trail_line_writes_the_box_as_the_call_did():
    assert text_trail_line([0, 0, 760, 563]) == "zoom_in returned the region [0, 0, 760, 563] of the image."
    # floats as %g (no trailing .0, an exponent for tiny ones), integers as written however large
    assert text_trail_line([1.0, 0.5, 1e-05, 1234567], "crop") == (
        "crop returned the region [1, 0.5, 1e-05, 1234567] of the image."
    )


def test_bad_option_messages_name_the_value_and_the_choices(tmp_path):
    prompts = plain_prompts(tmp_path, 1)
    known = re.escape(", ".join(BBOX_POLICIES))
    with pytest.raises(ConfigError, match=rf"^unknown bbox_policy 'nope'; known: {known}$"):
        build_episodes(prompts, "tool", tmp_path, bbox_policy="nope")
    known = re.escape(", ".join(ZOOM_RESIZES))
    with pytest.raises(ConfigError, match=rf"^unknown episodes.zoom_resize 'nope'; known: {known}$"):
        build_episodes(prompts, "tool", tmp_path, zoom_resize="nope")
    for pad_frac in (2, 1.5, -0.1, True, "0.1"):
        with pytest.raises(ConfigError, match=rf"^pad_frac must be a number in \[0, 1\], got {pad_frac!r}$"):
            build_episodes(prompts, "tool", tmp_path, pad_frac=pad_frac)
    for zoom_lines in (0, True, 1.5):
        with pytest.raises(
            ConfigError, match=rf"^episodes.zoom_lines must be a positive integer, got {zoom_lines!r}$"
        ):
            build_episodes(prompts, "tool", tmp_path, bbox_policy="text_lines", zoom_lines=zoom_lines)
    # the options are checked before the table: an empty or incomplete table still names the bad option
    with pytest.raises(ConfigError, match="zoom_resize 'nope'"):
        build_episodes(prompts.iloc[:0], "tool", tmp_path, zoom_resize="nope")
    with pytest.raises(ConfigError, match="zoom_resize 'nope'"):
        build_episodes(prompts.drop(columns="image"), "tool", tmp_path, zoom_resize="nope")
    with pytest.raises(ContractError, match=r"^prompts table lacks column\(s\) dataset, image$"):
        build_episodes(prompts.drop(columns=["dataset", "image"]), "tool", tmp_path)
    # build_episode alone checks them too, even for a condition that never zooms
    with pytest.raises(ConfigError, match=rf"^unknown episodes.zoom_resize 'nope'; known: {known}$"):
        build_episode("plain-0", "plain", prompts["image"][0], "direct", tmp_path, zoom_resize="nope")
    # the bounds themselves are allowed
    (ep,) = build_episodes(prompts, "tool", tmp_path, bbox_policy="text_lines", pad_frac=1, zoom_lines=1)
    assert ep["meta"]["pad_frac"] == 1.0 and ep["meta"]["zoom_lines"] == 1
    (ep,) = build_episodes(prompts, "tool", tmp_path, pad_frac=0)
    assert ep["meta"]["pad_frac"] == 0.0


def test_build_episode_alone_matches_the_batch_builder(tmp_path):
    """`build_episode` called alone (it reads the image itself, with its own defaults) gives the episode
    `build_episodes_by_condition` gives for the table's first row, for every condition and options."""
    prompts = plain_prompts(tmp_path, 1)
    args = ("plain-0", "plain", prompts["image"][0])
    batch = build_episodes_by_condition(prompts, EPISODE_CONDITIONS, tmp_path)
    for condition in EPISODE_CONDITIONS:
        assert build_episode(*args, condition, tmp_path) == batch[condition][0], condition
    assert batch["tool_unsafe"][0]["meta"]["override_seed"] == 0
    options = dict(
        bbox_policy="text_lines", pad_frac=0.1, override_seed=2, zoom_lines=3, zoom_resize="pixels"
    )
    batch = build_episodes_by_condition(prompts, EPISODE_CONDITIONS, tmp_path, **options)
    for condition in EPISODE_CONDITIONS:
        assert build_episode(*args, condition, tmp_path, **options) == batch[condition][0], condition
    # the defaults of build_episodes: override seed 0, the first two lines for text_lines
    (ep,) = build_episodes(prompts, "tool_unsafe", tmp_path)
    assert ep["meta"]["override_seed"] == 0
    (ep,) = build_episodes(prompts, "tool", tmp_path, bbox_policy="text_lines")
    assert build_episode(*args, "tool", tmp_path, bbox_policy="text_lines") == ep
    assert ep["meta"]["zoom_lines"] == 2


def test_every_episode_of_a_non_square_image_exactly(tmp_path):
    """Each condition's whole episode for a 640x480 image: messages and meta, key for key."""
    prompts = plain_prompts(tmp_path, 2)
    episodes = build_episodes_by_condition(prompts, EPISODE_CONDITIONS, tmp_path, pad_frac=0.1)
    image = prompts["image"][0]
    bbox = content_bbox(load_image(tmp_path / image), pad_frac=0.1)
    w, h = zoom_size((640, 480), bbox)
    scale = zoom_scale((640, 480), bbox)
    assert round(scale, 6) != round(scale, 7)  # the recorded scale is rounded to 6 places

    def text(t):
        return {"type": "text", "text": t}

    def img(path):
        return {"type": "image", "path": path}

    def tool_turn(part):
        return {"role": "tool", "name": "zoom_in", "content": [part]}

    system = {"role": "system", "content": [text(SYSTEM_PROMPT)]}
    user = {"role": "user", "content": [img(image), text(FIGSTEP_PROMPT)]}
    call = {
        "role": "assistant",
        "content": [],
        "tool_calls": [{"name": "zoom_in", "arguments": {"bbox": bbox}}],
    }
    zoom_path = "episodes/plain/images/plain-0_zoom.png"
    meta = {
        "tool_name": None,
        "bbox": None,
        "bbox_policy": "content_padded",
        "pad_frac": 0.1,
        "image_size": [640, 480],
        "override_image": None,
    }
    tools = {"tools": [ZOOM_TOOL], "tool_name": "zoom_in"}
    zoomed = {"bbox": bbox, "zoom_resize": "longer_side", "zoom_size": [w, h], "zoom_scale": round(scale, 6)}
    line = f"zoom_in returned the region [{', '.join(map(str, bbox))}] of the image."
    expected = {
        "direct": ([system, user], meta),
        "tool_offered": ([system, user], meta | tools),
        "free": ([system, user], meta | tools | {"zoom_resize": "longer_side"}),
        "tool": ([system, user, call, tool_turn(img(zoom_path))], meta | tools | zoomed),
        "text_trail": (
            [system, user, call, tool_turn(text(line))],
            meta | tools | zoomed | {"tool_result": "text_trail"},
        ),
        "text_prior": (
            [
                system,
                {"role": "user", "content": [text(NEUTRAL_EXCHANGES[0][0])]},
                {"role": "assistant", "content": [text(NEUTRAL_EXCHANGES[0][1])]},
                user,
            ],
            meta,
        ),
        "image_no_tool": (
            [system, {"role": "user", "content": [img(image), img(zoom_path), text(FIGSTEP_PROMPT)]}],
            meta | zoomed,
        ),
    }
    for condition, kind in (("tool_unsafe", "unsafe"), ("tool_benign", "benign"), ("tool_blank", "blank")):
        path = f"data/overrides/{kind}_{w}x{h}.png"
        more = {"override_image": path, "override_seed": 0} | (
            {"blank_scale": 1.0} if kind == "blank" else {}
        )
        expected[condition] = ([system, user, call, tool_turn(img(path))], meta | tools | zoomed | more)
    for condition, scale in (("tool_blank_x0.25", 0.25), ("tool_blank_x4", 4.0)):
        side = (round(w * scale**0.5), round(h * scale**0.5))
        path = f"data/overrides/blank_{side[0]}x{side[1]}.png"
        more = {"override_image": path, "override_seed": 0, "blank_scale": scale}
        expected[condition] = ([system, user, call, tool_turn(img(path))], meta | tools | zoomed | more)
    expected["image_after"] = (
        [system, {"role": "user", "content": [img(image), text(FIGSTEP_PROMPT), img(zoom_path)]}],
        meta | zoomed,
    )
    payload = json.dumps({"name": "zoom_in", "arguments": {"bbox": bbox}})
    hermes_call = f"<tool_call>\n{payload}\n</tool_call>"
    stand_in = neutral_line(len(hermes_call))
    assert abs(len(stand_in) - len(hermes_call)) < 15 and NEUTRAL_TEXT.startswith(stand_in)
    expected["image_turn"] = (
        [
            system,
            user,
            {"role": "assistant", "content": [text(stand_in)]},
            {"role": "user", "content": [img(zoom_path)]},
        ],
        meta | zoomed | {"pad_to_call": {"name": "zoom_in", "arguments": {"bbox": bbox}}},
    )
    expected["text_trail_long"] = (
        [system, user, call, tool_turn(text(line))],
        meta | tools | zoomed | {"tool_result": "text_trail_long", "pad_to_image": zoom_path},
    )
    assert set(expected) == set(EPISODE_CONDITIONS)
    for condition, (messages, want) in expected.items():
        episode = {"prompt_id": "plain-0", "condition": condition, "messages": messages, "meta": want}
        assert episodes[condition][0] == episode, condition
    # the second prompt gets the second neutral exchange
    assert episodes["text_prior"][1]["messages"][1:3] == [
        {"role": "user", "content": [text(NEUTRAL_EXCHANGES[1][0])]},
        {"role": "assistant", "content": [text(NEUTRAL_EXCHANGES[1][1])]},
    ]


def test_text_lines_and_pixels_reach_the_box_the_zoom_and_the_meta(tmp_path):
    prompts = plain_prompts(tmp_path, 1)
    options = dict(bbox_policy="text_lines", pad_frac=0.1, zoom_lines=3, zoom_resize="pixels")
    (ep,) = build_episodes(prompts, "tool", tmp_path, **options)
    original = load_image(tmp_path / prompts["image"][0])
    bbox = text_lines_bbox(original, lines=3, pad_frac=0.1)
    assert bbox != text_lines_bbox(original, lines=2, pad_frac=0.1)
    meta = ep["meta"]
    assert meta["bbox"] == bbox and meta["pad_frac"] == 0.1 and meta["zoom_lines"] == 3
    assert meta["zoom_resize"] == "pixels" and meta["zoom_size"] == list(
        zoom_size((640, 480), bbox, "pixels")
    )
    assert meta["zoom_scale"] == round(zoom_scale((640, 480), bbox, "pixels"), 6)
    written = load_image(tmp_path / ep["messages"][3]["content"][0]["path"])
    assert list(written.size) == meta["zoom_size"]
    assert np.array_equal(np.asarray(written), np.asarray(zoom(original, bbox, mode="pixels")))


def test_each_image_is_read_once_and_each_file_written_once(tmp_path, monkeypatch):
    """A batch reads each attack image once and writes each zoom crop and each override once, however many
    conditions and prompts show it (the two prompts share their overrides: the same zoom size)."""
    import toolshift.episodes.build as episodes_module

    prompts = plain_prompts(tmp_path, 2)
    reads, writes = [], []
    load, save = episodes_module.load_image, episodes_module.save_png
    monkeypatch.setattr(episodes_module, "load_image", lambda path, *a: reads.append(path) or load(path, *a))
    monkeypatch.setattr(episodes_module, "save_png", lambda img, path: writes.append(path) or save(img, path))
    episodes = build_episodes_by_condition(prompts, EPISODE_CONDITIONS, tmp_path)
    assert reads == [tmp_path / image for image in prompts["image"]]
    doses = [c for c in EPISODE_CONDITIONS if c.startswith("tool_blank_x")]
    overrides = {ep["meta"]["override_image"] for c in [*OVERRIDE_OF, *doses] for ep in episodes[c]}
    assert len(overrides) == 3 + len(doses)  # one per kind and size, shared by the two prompts
    zooms = {f"episodes/plain/images/plain-{i}_zoom.png" for i in range(2)}
    assert sorted(writes) == sorted(tmp_path / path for path in overrides | zooms)


def test_write_episodes_names_the_bad_line(tmp_path):
    prompts = plain_prompts(tmp_path, 1)
    (ep,) = build_episodes(prompts, "direct", tmp_path)
    out = tmp_path / "episodes.jsonl"
    with pytest.raises(ContractError, match=rf"^{re.escape(str(out))}:2: messages must be a non-empty list$"):
        write_episodes([ep, {**ep, "messages": []}], out)
    assert not out.exists()


# --------------------------------------------------------------------------- the controls of issue 23


def test_condition_names_of_the_blank_size_dose():
    from toolshift import blank_condition, blank_scale, condition_order, is_controlled_condition

    assert blank_scale("tool_blank") == 1 and blank_scale("tool_blank_x0.25") == 0.25
    assert blank_scale("tool_blank_x4") == 4 and blank_scale("tool_blank_x16") == 16
    for name in (
        "tool_blank_x1",
        "tool_blank_x4.0",
        "tool_blank_x0",
        "tool_blank_x",
        "tool_blank_x-1",
        "tool",
    ):
        assert blank_scale(name) is None, name
    assert [blank_condition(s) for s in (0.25, 1, 4.0)] == ["tool_blank_x0.25", "tool_blank", "tool_blank_x4"]
    assert is_controlled_condition("tool_blank_x2") and not is_controlled_condition("tool_blank_x2.50")
    shuffled = [
        "text_trail",
        "tool_blank_x4",
        "tool_blank_x2",
        "zzz",
        "tool_blank",
        "tool_blank_x0.25",
        "direct",
    ]
    assert sorted(shuffled, key=condition_order) == [
        "direct", "tool_blank", "tool_blank_x0.25", "tool_blank_x2", "tool_blank_x4", "text_trail", "zzz",
    ]  # fmt: skip
    assert sorted(CONDITIONS, key=condition_order) == list(CONDITIONS)
    assert (
        CONDITIONS.index("tool_blank") < CONDITIONS.index("tool_blank_x0.25") < CONDITIONS.index("text_trail")
    )
    assert CONDITIONS[-3:] == ("image_after", "image_turn", "text_trail_long")


@pytest.mark.parametrize(
    "condition, scale", [("tool_blank_x0.25", 0.25), ("tool_blank_x4", 4), ("tool_blank_x2", 2)]
)
def test_blank_dose_returns_white_images_of_scale_times_the_zoom_pixels(built, condition, scale):
    root, prompts, episodes = built
    (ep,) = build_episodes(prompts.iloc[:1], condition, root)
    (blank,) = build_episodes(prompts.iloc[:1], "tool_blank", root)
    assert ep["messages"][:3] == blank["messages"][:3]  # the same system, user turn and call
    assert ep["meta"]["tools"] == [ZOOM_TOOL] and ep["meta"]["blank_scale"] == scale
    image = load_image(root / ep["messages"][3]["content"][0]["path"])
    zoom_w, zoom_h = blank["meta"]["zoom_size"]
    assert image.size == scaled_size((zoom_w, zoom_h), scale) != (zoom_w, zoom_h)
    assert image.width * image.height == pytest.approx(scale * zoom_w * zoom_h, rel=0.01)
    assert np.asarray(image).min() == 255  # blank


def test_a_non_canonical_dose_name_is_rejected(built):
    root, prompts, _ = built
    for name in ("tool_blank_x1", "tool_blank_x4.0", "tool_blank_xfour"):
        with pytest.raises(
            ConfigError, match=rf"unknown condition '{re.escape(name)}'.*tool_blank_x\{{scale\}}"
        ):
            build_episodes(prompts.iloc[:1], name, root)


def test_image_after_puts_the_zoom_after_the_text_in_one_turn(built):
    _, _, episodes = built
    for ep, direct, no_tool in zip(
        episodes["image_after"], episodes["direct"], episodes["image_no_tool"], strict=True
    ):
        (system, user) = ep["messages"]
        assert (
            system == direct["messages"][0] and "tools" not in ep["meta"] and ep["meta"]["tool_name"] is None
        )
        image, zoom_part = no_tool["messages"][1]["content"][:2]
        assert user["content"] == [image, direct["messages"][1]["content"][1], zoom_part]


def test_image_turn_has_the_turns_and_images_of_tool_without_the_tool(built):
    _, _, episodes = built
    for ep, tool in zip(episodes["image_turn"], episodes["tool"], strict=True):
        assert [m["role"] for m in ep["messages"]] == ["system", "user", "assistant", "user"]
        assert ep["messages"][:2] == tool["messages"][:2]
        line = ep["messages"][2]
        assert "tool_calls" not in line and line["content"][0]["text"] in NEUTRAL_TEXT
        assert ep["messages"][3]["content"] == tool["messages"][3]["content"]  # the zoom, in a user turn
        assert "tools" not in ep["meta"] and ep["meta"]["tool_name"] is None
        assert ep["meta"]["pad_to_call"] == {"name": "zoom_in", "arguments": {"bbox": tool["meta"]["bbox"]}}
        assert "zoom_in" not in json.dumps(ep["messages"])  # no call syntax, no tool name


def test_text_trail_long_is_text_trail_marked_for_padding(built):
    _, _, episodes = built
    for ep, trail, tool in zip(
        episodes["text_trail_long"], episodes["text_trail"], episodes["tool"], strict=True
    ):
        assert ep["messages"] == trail["messages"]  # the adapter pads the line at render time
        assert ep["meta"]["tool_result"] == "text_trail_long"
        assert ep["meta"]["pad_to_image"] == tool["messages"][3]["content"][0]["path"]


def test_neutral_line_is_cut_at_a_word_and_repeats():
    assert neutral_line(10) == NEUTRAL_TEXT[: NEUTRAL_TEXT.rfind(" ", 0, 11)]
    long = neutral_line(3 * len(NEUTRAL_TEXT))
    assert long.startswith(NEUTRAL_TEXT + " " + NEUTRAL_TEXT) and len(long) <= 3 * len(NEUTRAL_TEXT)
    assert not any(word in NEUTRAL_TEXT.lower() for word in ("image", "zoom", "tool", "region"))
