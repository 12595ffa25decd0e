"""Episodes of the nine controlled conditions: structure per DESIGN.md and the episodes contract."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from toolshift import CONDITIONS
from toolshift.contracts import read_episodes, validate_episode
from toolshift.datasets.images import content_bbox, load_image, text_lines_bbox, zoom
from toolshift.datasets.prompts import build_prompts, get_dataset, load_mini
from toolshift.datasets.typography import FIGSTEP_PROMPT
from toolshift.episodes.build import (
    EPISODE_CONDITIONS,
    NEUTRAL_EXCHANGES,
    SYSTEM_PROMPT,
    TOOL_FRAMED_CONDITIONS,
    ZOOM_TOOL,
    build_episodes,
    build_episodes_by_condition,
    override_relpath,
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
    """The text sent with the attack image: the last part of the one user turn that shows `image`."""
    turns = [
        m
        for m in episode["messages"]
        if m["role"] == "user" and {"type": "image", "path": image} in m["content"]
    ]
    assert len(turns) == 1, episode["condition"]
    assert turns[0]["content"][-1]["type"] == "text"
    return turns[0]["content"][-1]["text"]


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
