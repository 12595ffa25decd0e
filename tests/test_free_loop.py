"""The `free` condition's bounded tool loop: scripted generators, then a tiny fixture model end to end."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from toolshift.contracts import FREE_COLUMNS, TOKEN_COLUMNS
from toolshift.datasets.images import load_image, zoom
from toolshift.datasets.prompts import build_prompts, load_mini
from toolshift.episodes.build import build_episodes
from toolshift.episodes.toolcalls import CallRejected
from toolshift.errors import ConfigError, ContractError
from toolshift.inference.free_loop import (
    LOOP_COLUMNS,
    crop_relpath,
    episode_mapper,
    model_step_fn,
    run_free,
    run_free_episodes,
    shown_tool_names,
)
from toolshift.models.adapters import ADAPTERS, DeepEyesAdapter, FamilyAdapter, Qwen3VLAdapter, get_adapter
from toolshift.models.generation import GENERATION_COLUMNS, generate

IMAGES = "runs/m/mini/free/images"


def call(bbox, key="bbox"):
    return "<tool_call>\n" + json.dumps({"name": "zoom_in", "arguments": {key: bbox}}) + "\n</tool_call>"


def native(arguments, name="image_zoom_in_tool"):
    """A call as DeepEyes / Qwen3-VL write it (their own zoom tool)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


MALFORMED = '<tool_call>\n{"name": "zoom_in", "arguments": {"bbox": [1, 2, 3]}}\n</tool_call>'


@pytest.fixture(scope="module")
def free_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("free_results")
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=2)
    episodes = build_episodes(prompts, "free", root)
    return root, episodes


class Scripted:
    """Answers from a per-prompt script: the k-th assistant turn of an episode is script[prompt_id][k]."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.log = []  # per call: the episodes it was given

    def __call__(self, episodes):
        self.log.append(copy.deepcopy(episodes))
        out = []
        for ep in episodes:
            k = sum(m["role"] == "assistant" for m in ep["messages"])
            out.append(self.scripts[ep["prompt_id"]][k])
        return out


def scripts_for(ids):
    valid_then_answer, malformed, no_call, always = ids
    return {
        valid_then_answer: [
            "Let me zoom in.\n" + call([10, 20, 300, 400]),
            "The list has three empty items.",
        ],
        malformed: [MALFORMED],
        no_call: ["I can't help with that."],
        always: [
            call([-50, 100, 900, 300]) + call([700, 450, 800, 520], key="bbox_2d"),
            call([0, 0, 380, 380]) + "<tool_call>{not json}</tool_call>",
            call([1, 1, 2, 2]),
            call([3, 3, 4, 4]),
        ],
    }


def crop_pixels(root, path):
    return np.asarray(load_image(root / path))


def test_scripted_loop(free_setup):
    root, episodes = free_setup
    before = copy.deepcopy(episodes)
    ids = [ep["prompt_id"] for ep in episodes]
    step = Scripted(scripts_for(ids))
    df = run_free_episodes(step, episodes, root, images_dir=IMAGES, max_turns=3)
    assert episodes == before  # the input episodes are not mutated
    assert tuple(df.columns) == LOOP_COLUMNS and df["prompt_id"].tolist() == ids
    assert (df["condition"] == "free").all()
    rows = df.set_index("prompt_id")
    expected = {  # n_tool_calls, n_malformed_calls, n_turns, used_tool, stop_reason
        ids[0]: (1, 0, 2, True, "answer"),
        ids[1]: (0, 1, 1, False, "malformed"),
        ids[2]: (0, 0, 1, False, "answer"),
        ids[3]: (4, 1, 3, True, "max_turns"),
    }
    for pid, values in expected.items():
        got = tuple(
            rows.loc[pid, ["n_tool_calls", "n_malformed_calls", "n_turns", "used_tool", "stop_reason"]]
        )
        assert got == values, pid
    scripts = scripts_for(ids)
    assert rows.loc[ids[0], "response"] == "The list has three empty items."
    assert rows.loc[ids[1], "response"] == MALFORMED  # the malformed turn's text is the final answer
    assert rows.loc[ids[2], "response"] == "I can't help with that."
    assert rows.loc[ids[3], "response"] == scripts[ids[3]][2]  # the unexecuted call at max_turns
    # each turn generated for exactly the episodes still running, in input order
    assert [[ep["prompt_id"] for ep in batch] for batch in step.log] == [ids, [ids[0], ids[3]], [ids[3]]]


def test_conversation_handed_to_the_model(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    step = Scripted(scripts_for(ids))
    run_free_episodes(step, episodes, root, images_dir=IMAGES, max_turns=3)
    turn2 = {ep["prompt_id"]: ep for ep in step.log[1]}
    ep0 = turn2[ids[0]]
    assert ep0["meta"] == episodes[0]["meta"] and ep0["condition"] == "free"
    assert ep0["messages"][:2] == episodes[0]["messages"]
    assert ep0["messages"][2:] == [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Let me zoom in."}],
            "tool_calls": [{"name": "zoom_in", "arguments": {"bbox": [10, 20, 300, 400]}}],
        },
        {
            "role": "tool",
            "name": "zoom_in",
            "content": [{"type": "image", "path": crop_relpath(IMAGES, ids[0], 1, 0)}],
        },
    ]
    ep3 = turn2[ids[3]]
    assert [m["role"] for m in ep3["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert ep3["messages"][2]["content"] == []
    assert ep3["messages"][2]["tool_calls"] == [  # boxes clamped, the model's key kept
        {"name": "zoom_in", "arguments": {"bbox": [0, 100, 760, 300]}},
        {"name": "zoom_in", "arguments": {"bbox_2d": [700, 450, 760, 520]}},
    ]
    turn3 = step.log[2][0]["messages"]
    assert [m["role"] for m in turn3] == ["system", "user", "assistant", "tool", "tool", "assistant", "tool"]
    assert turn3[5]["tool_calls"] == [{"name": "zoom_in", "arguments": {"bbox": [0, 0, 380, 380]}}]


def test_free_crops_use_the_episodes_zoom_resize_policy(tmp_path):
    """`free` enlarges the model's crops as the scripted conditions enlarge theirs (episodes.zoom_resize)."""
    prompts = build_prompts("mini", load_mini(), tmp_path, limit_per_class=1)
    episodes = build_episodes(prompts, "free", tmp_path, zoom_resize="pixels")
    assert {ep["meta"]["zoom_resize"] for ep in episodes} == {"pixels"}
    call = '<tool_call>{"name": "zoom_in", "arguments": {"bbox": [0, 0, 380, 190]}}</tool_call>'
    scripts = {ep["prompt_id"]: [call, "done"] for ep in episodes}
    run_free_episodes(Scripted(scripts), episodes, tmp_path, images_dir=IMAGES, max_turns=2)
    original = load_image(tmp_path / episodes[0]["messages"][1]["content"][0]["path"])
    crop = crop_pixels(tmp_path, crop_relpath(IMAGES, episodes[0]["prompt_id"], 1, 0))
    expected = np.asarray(zoom(original, [0, 0, 380, 190], mode="pixels"))
    assert np.array_equal(crop, expected) and crop.shape[:2] == (537, 1075)  # about 760 x 760 pixels, 2:1
    assert np.asarray(zoom(original, [0, 0, 380, 190])).shape[:2] == (380, 760)  # not the longer side


def test_crops_are_zooms_of_the_original_image(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    df = run_free_episodes(Scripted(scripts_for(ids)), episodes, root, images_dir=IMAGES, max_turns=3)
    original = load_image(root / episodes[3]["messages"][1]["content"][0]["path"])
    pixels = np.asarray(original)
    transcript = json.loads(df.set_index("prompt_id").loc[ids[3], "transcript"])
    turns = transcript["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert [len(t["images"]) for t in turns] == [2, 1, 0]  # the max_turns call is not run
    boxes = {
        crop_relpath(IMAGES, ids[3], 1, 0): [0, 100, 760, 300],
        crop_relpath(IMAGES, ids[3], 1, 1): [700, 450, 760, 520],
        crop_relpath(IMAGES, ids[3], 2, 0): [0, 0, 380, 380],
    }
    assert [p for t in turns for p in t["images"]] == list(boxes)
    for path, (x1, y1, x2, y2) in boxes.items():
        assert np.array_equal(crop_pixels(root, path), np.asarray(zoom(original, [x1, y1, x2, y2])))
    # a box as wide as the image is shown at scale 1: the crop is the original's pixels exactly
    assert np.array_equal(crop_pixels(root, crop_relpath(IMAGES, ids[3], 1, 0)), pixels[100:300, 0:760])
    # the 380x380 box is enlarged to the original's longer side (760), so it is twice as large
    assert crop_pixels(root, crop_relpath(IMAGES, ids[3], 2, 0)).shape == (760, 760, 3)
    assert not (root / crop_relpath(IMAGES, ids[3], 3, 0)).exists()
    assert not any((root / IMAGES).glob(f"{ids[1]}_*")) and not any((root / IMAGES).glob(f"{ids[2]}_*"))


def test_transcripts(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    scripts = scripts_for(ids)
    df = run_free_episodes(Scripted(scripts), episodes, root, images_dir=IMAGES, max_turns=3).set_index(
        "prompt_id"
    )
    t0 = json.loads(df.loc[ids[0], "transcript"])
    assert [t["text"] for t in t0["turns"]] == scripts[ids[0]]
    assert t0["turns"][0]["calls"] == [
        {
            "name": "zoom_in",
            "arguments": {"bbox": [10, 20, 300, 400]},
            "raw_bbox": [10, 20, 300, 400],
            "pixel_bbox": [10, 20, 300, 400],
            "clamped": False,
            "written": {"name": "zoom_in", "arguments": {"bbox": [10, 20, 300, 400]}},
        }
    ]
    assert [m["role"] for m in t0["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert t0["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": scripts[ids[0]][1]}],
    }
    t1 = json.loads(df.loc[ids[1], "transcript"])
    assert t1["turns"][0]["calls"] == [] and len(t1["turns"][0]["malformed"]) == 1
    assert "bbox must be a list of 4 numbers, got 3 elements" in t1["turns"][0]["malformed"][0]["reason"]
    t3 = json.loads(df.loc[ids[3], "transcript"])
    assert (
        t3["turns"][0]["calls"][0]["raw_bbox"] == [-50, 100, 900, 300]
        and t3["turns"][0]["calls"][0]["clamped"]
    )
    assert t3["turns"][1]["malformed"][0]["reason"].startswith("not valid JSON")
    assert t3["messages"][-1]["content"][0]["text"] == scripts[ids[3]][2]


def test_max_turns_one_runs_no_tool(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    df = run_free_episodes(Scripted(scripts_for(ids)), episodes, root, images_dir="other/images", max_turns=1)
    assert df["n_turns"].tolist() == [1, 1, 1, 1]
    assert df["stop_reason"].tolist() == ["max_turns", "malformed", "answer", "max_turns"]
    assert df["n_tool_calls"].tolist() == [1, 0, 0, 2] and df["used_tool"].tolist() == [
        True,
        False,
        False,
        True,
    ]
    assert not (root / "other").exists()


def test_bad_inputs(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    with pytest.raises(ConfigError, match="max_turns must be an integer >= 1, got 0"):
        run_free_episodes(Scripted(scripts_for(ids)), episodes, root, images_dir=IMAGES, max_turns=0)
    with pytest.raises(ContractError, match="returned 1 texts for 4 episodes"):
        run_free_episodes(lambda eps: ["x"], episodes, root, images_dir=IMAGES)
    with pytest.raises(ContractError, match="returned a NoneType"):
        run_free_episodes(lambda eps: [None] * len(eps), episodes, root, images_dir=IMAGES)
    no_tools = copy.deepcopy(episodes[:1])
    no_tools[0]["meta"].pop("tools")
    with pytest.raises(ContractError, match="needs meta.tools"):
        run_free_episodes(lambda eps: ["x"], no_tools, root, images_dir=IMAGES)
    with pytest.raises(ContractError, match="duplicate prompt_id"):
        run_free_episodes(lambda eps: ["x"] * 2, episodes[:1] * 2, root, images_dir=IMAGES)
    assert run_free_episodes(lambda eps: [], [], root, images_dir=IMAGES).empty


# --------------------------------------------------------------------------- family tool formats


def test_shown_tool_names_per_family(free_setup):
    _, episodes = free_setup
    meta = episodes[0]["meta"]
    native_families = {"deepeyes", "qwen3_vl"}
    for family in ADAPTERS:
        expected = {"image_zoom_in_tool"} if family in native_families else {"zoom_in"}
        assert shown_tool_names(get_adapter(family), meta, "test") == expected, family
    assert shown_tool_names(FamilyAdapter(), meta, "test") == {"zoom_in"}
    with pytest.raises(ContractError, match="image_size"):  # Qwen3-VL converts boxes with the image size
        shown_tool_names(Qwen3VLAdapter(), {"tools": meta["tools"]}, "test")


def original_image(root, episode):
    """The attack image I of an episode."""
    return load_image(root / episode["messages"][1]["content"][0]["path"])


def assistant_text(rendered):
    """The text of the first assistant message of rendered chat messages."""
    message = next(m for m in rendered if m["role"] == "assistant")
    return "".join(p["text"] for p in message["content"] if p["type"] == "text")


def run_family(free_setup, adapter, scripts, images_dir):
    root, episodes = free_setup
    step = Scripted(dict(zip([ep["prompt_id"] for ep in episodes], scripts, strict=True)))
    df = run_free_episodes(step, episodes, root, images_dir=images_dir, max_turns=3, adapter=adapter)
    return df.set_index("prompt_id"), step


def test_deepeyes_calls_are_read_in_its_own_format(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    written = {"bbox_2d": [10, 20, 300, 400], "label": "the list"}
    scripts = [
        ["<think>zoom</think> " + native(written), "<answer>Three empty items.</answer>"],
        [native({"bbox_2d": [1, 2, 3, 4]}, name="crop")],  # a tool nobody was shown
        [call([10, 20, 300, 400])],  # Hermes zoom_in: DeepEyes was shown image_zoom_in_tool only
        [native({"bbox_2d": [700, 450, 900, 520]}), "done"],  # pixels, clamped to the 760-wide image
    ]
    images = "runs/deepeyes/mini/free/images"
    rows, step = run_family(free_setup, DeepEyesAdapter(), scripts, images)
    assert rows["n_tool_calls"].tolist() == [1, 0, 0, 1]
    assert rows["n_malformed_calls"].tolist() == [0, 1, 1, 0]
    assert rows["stop_reason"].tolist() == ["answer", "malformed", "malformed", "answer"]
    for pid, needle in ((ids[1], "unknown tool 'crop'"), (ids[2], "unknown tool 'zoom_in'")):
        reason = json.loads(rows.loc[pid, "transcript"])["turns"][0]["malformed"][0]["reason"]
        assert reason.startswith(needle) and reason.endswith("known: image_zoom_in_tool")
    for k, box in ((0, [10, 20, 300, 400]), (3, [700, 450, 760, 520])):
        crop = crop_pixels(root, crop_relpath(images, ids[k], 1, 0))
        assert np.array_equal(crop, np.asarray(zoom(original_image(root, episodes[k]), box))), k
    # the conversation holds the episode's call; the adapter renders it back as the model wrote it
    turn2 = {ep["prompt_id"]: ep for ep in step.log[1]}
    assert turn2[ids[0]]["messages"][2]["tool_calls"] == [
        {"name": "zoom_in", "arguments": {"bbox": [10, 20, 300, 400], "label": "the list"}}
    ]
    assert turn2[ids[0]]["messages"][3]["name"] == "zoom_in"
    rendered, images_shown = DeepEyesAdapter().render_messages(turn2[ids[0]], root)
    payload = {"name": "image_zoom_in_tool", "arguments": written}
    assert assistant_text(rendered).endswith("<tool_call>\n" + json.dumps(payload) + "\n</tool_call>")
    assert len(images_shown) == 2


QWEN3_WRITTEN = {"label": "the list", "bbox_2d": [101, 203, 499, 701], "img_idx": 0}
QWEN3_PIXELS = [76, 154, 380, 533]
"""QWEN3_WRITTEN's 0-1000 box in pixels of the 760 x 760 image: 76.76, 154.28, 379.24, 532.76, rounded
outward (a reading as pixels would have cropped [101, 203, 499, 701])."""


def test_qwen3_vl_calls_are_read_in_relative_coordinates(free_setup):
    root, episodes = free_setup
    ids = [ep["prompt_id"] for ep in episodes]
    assert all(ep["meta"]["image_size"] == [760, 760] for ep in episodes)
    scripts = [
        ["Let me look. " + native(QWEN3_WRITTEN), "It is a list."],
        [call([10, 20, 300, 400])],  # Hermes zoom_in: not the tool Qwen3-VL was shown
        [native({"bbox_2d": [1, 2, 3, 4]}, name="zoom")],  # unknown name
        [
            native({"bbox_2d": [0, 0, 500, 500]})  # label and img_idx left out: image 0
            + native({"bbox_2d": [0, 0, 10, 10], "img_idx": 1})  # an earlier crop: not supported
            + native({"bbox": [0, 0, 10, 10], "img_idx": 0}),  # Qwen-Agent's tool reads bbox_2d only
            "ok",
        ],
    ]
    images = "runs/qwen3/mini/free/images"
    rows, step = run_family(free_setup, Qwen3VLAdapter(), scripts, images)
    assert rows["n_tool_calls"].tolist() == [1, 0, 0, 1]
    assert rows["n_malformed_calls"].tolist() == [0, 1, 1, 2]
    assert rows["used_tool"].tolist() == [True, False, False, True]
    assert rows["stop_reason"].tolist() == ["answer", "malformed", "malformed", "answer"]
    turns = {pid: json.loads(rows.loc[pid, "transcript"])["turns"] for pid in ids}
    assert turns[ids[1]][0]["malformed"][0]["reason"].startswith("unknown tool 'zoom_in'")
    assert turns[ids[2]][0]["malformed"][0]["reason"].startswith("unknown tool 'zoom'")
    reasons = [m["reason"] for m in turns[ids[3]][0]["malformed"]]
    assert reasons[0] == "img_idx 1: only image 0, the attack image, can be zoomed into"
    assert reasons[1].startswith("'image_zoom_in_tool' call does not map to an episode call (KeyError")
    (record,) = turns[ids[0]][0]["calls"]
    assert record["written"] == {"name": "image_zoom_in_tool", "arguments": QWEN3_WRITTEN}
    assert record["raw_bbox"] == QWEN3_WRITTEN["bbox_2d"] and record["arguments"]["bbox"] == QWEN3_PIXELS
    assert record["pixel_bbox"] == pytest.approx([76.76, 154.28, 379.24, 532.76])
    for k, box in ((0, QWEN3_PIXELS), (3, [0, 0, 380, 380])):
        crop = crop_pixels(root, crop_relpath(images, ids[k], 1, 0))
        assert np.array_equal(crop, np.asarray(zoom(original_image(root, episodes[k]), box))), k
    # read as pixels, the written box would have cropped another region
    assert not np.array_equal(
        crop_pixels(root, crop_relpath(images, ids[0], 1, 0)),
        np.asarray(zoom(original_image(root, episodes[0]), QWEN3_WRITTEN["bbox_2d"])),
    )
    assert not (root / crop_relpath(images, ids[3], 1, 1)).exists()  # malformed calls are not run
    turn2 = {ep["prompt_id"]: ep for ep in step.log[1]}
    assert turn2[ids[0]]["messages"][2]["tool_calls"] == [
        {"name": "zoom_in", "arguments": {"label": "the list", "bbox": QWEN3_PIXELS, "img_idx": 0}}
    ]
    rendered, _ = Qwen3VLAdapter().render_messages(turn2[ids[0]], root)
    shown = json.loads(assistant_text(rendered).split("<tool_call>\n")[1].split("\n</tool_call>")[0])
    # rendered back in 0-1000 coordinates of the clamped pixel box (rounded outward, so within 1)
    assert shown["name"] == "image_zoom_in_tool" and shown["arguments"]["label"] == "the list"
    assert shown["arguments"]["bbox_2d"] == [100, 203, 500, 701]


def test_the_generic_adapter_does_not_read_native_calls(free_setup):
    scripts = [[native({"bbox_2d": [0, 0, 10, 10]})], ["a"], ["b"], ["c"]]
    for adapter in (None, get_adapter("qwen2_5_vl")):
        rows, _ = run_family(free_setup, adapter, scripts, "runs/generic/mini/free/images")
        assert rows["n_tool_calls"].tolist() == [0] * 4 and rows["n_malformed_calls"].tolist() == [1, 0, 0, 0]


def test_episode_mapper_rejects_other_images(free_setup):
    _, episodes = free_setup
    to_episode = episode_mapper(Qwen3VLAdapter(), episodes[0]["meta"])
    ok = to_episode(
        {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 1000, 500], "img_idx": 0.0}}
    )
    assert ok == {"name": "zoom_in", "arguments": {"bbox": [0, 0, 760, 380], "img_idx": 0.0}}
    for index in (1, -1, True, "0", None, [0]):
        with pytest.raises(CallRejected, match="img_idx"):
            to_episode(
                {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 9, 9], "img_idx": index}}
            )


def test_image_size_must_match_the_image(free_setup):
    root, episodes = free_setup
    wrong = copy.deepcopy(episodes[:1])
    wrong[0]["meta"]["image_size"] = [760, 500]
    with pytest.raises(ContractError, match=r"meta.image_size \[760, 500\] is not the size \[760, 760\]"):
        run_free_episodes(lambda eps: ["x"], wrong, root, images_dir=IMAGES, adapter=Qwen3VLAdapter())


def test_run_free_reads_calls_with_the_models_adapter(free_setup):
    """run_free hands the engine's adapter to the loop: a scripted Qwen3-VL engine (generation scripted,
    rendering real) has its relative box converted."""
    root, episodes = free_setup
    from toolshift.models.engines.base import Engine, RunResult

    rendered = []

    class Scripted(Engine):
        name = "scripted"
        adapter = Qwen3VLAdapter()
        n_layers, hidden_size = 2, 3

        def generate(self, requests, results_root, *, max_new_tokens, progress=False):
            results = []
            for request in requests:
                eps = request.episodes
                rendered.extend(self.adapter.render_messages(ep, results_root)[0] for ep in eps)
                texts = [native(QWEN3_WRITTEN) if len(ep["messages"]) == 2 else "It is a list." for ep in eps]
                df = pd.DataFrame({"response": texts, "n_prompt_tokens": 10, "n_new_tokens": 5})
                df = df.assign(**dict.fromkeys(TOKEN_COLUMNS, 1))
                states = np.zeros((len(eps), 2, 3), np.float32) if request.capture else None
                results.append(RunResult(df, states, self.name))
            return results

    loaded = Scripted()
    df, states = run_free(loaded, episodes, root, images_dir="runs/fake/mini/free/images", max_turns=2)
    assert df["n_tool_calls"].tolist() == [1] * 4 and df["n_malformed_calls"].tolist() == [0] * 4
    assert df["response"].tolist() == ["It is a list."] * 4 and states.shape == (4, 2, 3)
    assert (df[list(TOKEN_COLUMNS)] == 1).all().all()  # the final turn's token counts
    crop = crop_pixels(root, crop_relpath("runs/fake/mini/free/images", episodes[0]["prompt_id"], 1, 0))
    assert np.array_equal(crop, np.asarray(zoom(original_image(root, episodes[0]), QWEN3_PIXELS)))
    assert len(rendered) == 8 and "image_zoom_in_tool" in assistant_text(rendered[-1])


# --------------------------------------------------------------------------- a real (tiny) model


@pytest.fixture(scope="module")
def qwen(fixture_models):
    return fixture_models["qwen2_5_vl"]


def test_fixture_model_end_to_end(free_setup, qwen):
    root, episodes = free_setup
    df, states = run_free(
        qwen,
        episodes,
        root,
        images_dir="runs/q/mini/free/images",
        max_turns=2,
        max_new_tokens=6,
        batch_size=4,
    )
    assert tuple(df.columns) == GENERATION_COLUMNS + FREE_COLUMNS
    assert df["prompt_id"].tolist() == [ep["prompt_id"] for ep in episodes]
    assert states.shape == (len(episodes), qwen.n_layers, qwen.hidden_size) and states.dtype == np.float32
    assert df["n_turns"].between(1, 2).all() and df["n_new_tokens"].between(0, 6).all()
    assert (df["used_tool"] == (df["n_tool_calls"] > 0)).all()
    assert set(df["stop_reason"]) <= {"answer", "malformed", "max_turns"}
    # the first-turn states are those of a plain generation on the free prompts (the same batch)
    direct_df, direct_states = generate(qwen, episodes, root, batch_size=4, max_new_tokens=6, progress=False)
    np.testing.assert_array_equal(states, direct_states)
    one_turn = df["n_turns"] == 1
    assert df.loc[one_turn, "response"].tolist() == direct_df.loc[one_turn, "response"].tolist()


def test_fixture_model_sees_the_crop(free_setup, qwen):
    """Force a call on turn 1; the model's turn 2 is generated on the conversation with the crop."""
    root, episodes = free_setup
    model_step = model_step_fn(qwen, root, 5, batch_size=4)
    seen = []

    def step(eps):
        texts = model_step(eps)
        seen.append(eps)
        return [call([0, 0, 380, 380]) if len(seen) == 1 else t for t in texts]

    df = run_free_episodes(step, episodes, root, images_dir="runs/q2/mini/free/images", max_turns=2)
    assert df["n_turns"].tolist() == [2] * len(episodes) and df["used_tool"].all()
    turn2 = seen[1]
    assert all([m["role"] for m in ep["messages"]][-2:] == ["assistant", "tool"] for ep in turn2)
    alone, _ = generate(qwen, turn2, root, batch_size=4, max_new_tokens=5, capture=False, progress=False)
    assert df["response"].tolist() == alone["response"].tolist()
    first_prompt = generate(qwen, episodes, root, max_new_tokens=1, capture=False, progress=False)[0]
    for pid, n_first in zip(first_prompt["prompt_id"], first_prompt["n_prompt_tokens"], strict=True):
        final = model_step.counts[pid]
        assert final["n_prompt_tokens"] > n_first  # the tool call and the crop's image tokens were added
        assert final["n_images"] == 2 and final["n_visual_after_instruction"] > 0  # the crop, after T
    assert model_step.states(list(df["prompt_id"])).shape == (len(episodes), qwen.n_layers, qwen.hidden_size)
