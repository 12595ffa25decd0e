"""Family adapters: episode rendering (Hermes, DeepEyes, Qwen3-VL tool formats), decoder layers, registry,
and how prompts and images go to the processor. The model side of every family is in test_families.py.

The DeepEyes and Qwen-Agent prompt texts are checked against SHA-256 digests of the originals: the
DeepEyes digests are of PROMPT.SYSTEM_PROMPT_V2 / PROMPT.USER_PROMPT_V2 as they stand in
Visual-Agent/DeepEyes@6c5e79671dbff958a6f9d44848ba2ca87854f0b0 verl/workers/agent/envs/mm_process_engine/
prompt.py; the Qwen3-VL one is of Qwen-Agent@31a4d36d123688581a9e9744427272b33ce940e0 NousFnCallPrompt's
FN_CALL_TEMPLATE filled with ImageZoomInToolQwen3VL's function (json.dumps, ensure_ascii=False).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from toolshift.episodes.build import ZOOM_TOOL
from toolshift.errors import ConfigError, ContractError, DataError
from toolshift.models.adapters import (
    ADAPTERS,
    DEEPEYES_ANSWER_FORMAT,
    DEEPEYES_CALL_REASONING,
    DEEPEYES_SYSTEM_PROMPT,
    DEEPEYES_USER_PROMPT,
    EPISODE_ZOOM_TOOL,
    NATIVE_FAMILIES,
    DeepEyesAdapter,
    Gemma3Adapter,
    LlavaAdapter,
    Qwen3VLAdapter,
    Qwen25VLAdapter,
    get_adapter,
    relative_bbox,
)
from toolshift.models.fixtures import synthetic_episodes

BBOX = [0, 0, 210, 320]  # synthetic episode 1's box
DEEPEYES_SYSTEM_SHA256 = "1fc5b8b5ebdc9b24d6a9281071222872c8542dd65a4a4be1e70d9760c3a7f99f"
DEEPEYES_USER_SHA256 = "e46e076069f511f848e9e6e213ee98b0576b268ac8eab38649e0b75608305e42"
QWEN_AGENT_ZOOM_SECTION_SHA256 = "dbf9dd769ad5867b50f220a687191ecc03b60b074051ddfa1aeb43bbfe836c26"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_results")
    synthetic_episodes(root, 4)
    return root


@pytest.fixture(scope="module")
def episodes(results_root):
    return synthetic_episodes(results_root, 4)  # direct, tool, text_trail, image_no_tool


def texts(content):
    return [p["text"] for p in content if p["type"] == "text"]


# --------------------------------------------------------------------------- registry


def test_registry_and_unknown_family():
    assert sorted(ADAPTERS) == sorted(
        [
            "qwen2_5_vl",
            "deepeyes",
            "qwen3_vl",
            "llava",
            "llava_onevision",
            "internvl",
            "gemma3",
            "idefics3",
            "smolvlm",
            "chain_of_focus",
            "mini_o3",
            "pixel_reasoner",
            "thyme",
            "deepeyes_v2",
            "openthinkimg",
        ]
    )
    assert all(cls.family == name for name, cls in ADAPTERS.items())
    assert isinstance(get_adapter("qwen2_5_vl"), Qwen25VLAdapter)
    assert isinstance(get_adapter("llava"), LlavaAdapter)
    assert isinstance(get_adapter("deepeyes"), DeepEyesAdapter)
    assert get_adapter("deepeyes").model_types == ("qwen2_5_vl",)  # DeepEyes is Qwen2.5-VL weights
    with pytest.raises(ConfigError) as err:
        get_adapter("gpt-vision")
    assert "gpt-vision" in str(err.value) and ", ".join(sorted(ADAPTERS)) in str(err.value)
    assert "\n" not in str(err.value)


def test_episode_zoom_tool_name_is_the_episodes_one():
    from toolshift.episodes.build import TOOL_NAME

    assert EPISODE_ZOOM_TOOL == TOOL_NAME == ZOOM_TOOL["function"]["name"]


def test_decoder_layers_not_found_is_config_error():
    with pytest.raises(ConfigError, match="decoder layers"):
        get_adapter("llava").decoder_layers(torch.nn.Linear(2, 2))


def test_decoder_layers_follow_the_family_path():
    layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    text_model = torch.nn.Module()
    text_model.layers = layers
    inner = torch.nn.Module()
    inner.text_model = text_model
    model = torch.nn.Module()
    model.model = inner
    assert get_adapter("idefics3").decoder_layers(model) is layers
    assert get_adapter("qwen2_5_vl").decoder_layers(model) is layers  # found by the generic search


# --------------------------------------------------------------------------- Hermes rendering


def test_tool_episode_renders_tool_prompt_call_and_response(episodes, results_root):
    tool_episode = episodes[1]
    assert tool_episode["condition"] == "tool"
    messages, images = get_adapter("qwen2_5_vl").render_messages(tool_episode, results_root)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"][0]["text"]
    assert system.startswith("You are a helpful assistant.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(ZOOM_TOOL) + "\n</tools>" in system
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in system
    assert messages[2]["content"] == [
        {
            "type": "text",
            "text": '<tool_call>\n{"name": "zoom_in", "arguments": {"bbox": '
            + str(BBOX)
            + "}}\n</tool_call>",
        }
    ]
    assert messages[3]["content"] == [
        {"type": "text", "text": "<tool_response>\n"},
        {"type": "image"},
        {"type": "text", "text": "\n</tool_response>"},
    ]
    # images in order of appearance: the attack image, then the zoom crop
    assert [im.size for im in images] == [(760, 760), (BBOX[2] - BBOX[0], BBOX[3] - BBOX[1])]
    assert all(im.mode == "RGB" for im in images)


def test_hermes_families_share_the_same_tool_framing(episodes, results_root):
    reference, _ = get_adapter("qwen2_5_vl").render_messages(episodes[1], results_root)
    for family in ("llava", "llava_onevision", "internvl", "gemma3", "idefics3", "smolvlm"):
        messages, _ = get_adapter(family).render_messages(episodes[1], results_root)
        assert [texts(m["content"]) for m in messages[:3]] == [texts(m["content"]) for m in reference[:3]]


def test_tools_without_system_message_get_the_default_system_prompt(episodes, results_root):
    episode = dict(episodes[1], messages=episodes[1]["messages"][1:])
    messages, _ = get_adapter("llava").render_messages(episode, results_root)
    assert messages[0]["role"] == "system"
    assert messages[0]["content"][0]["text"].startswith("You are a helpful assistant.\n\n# Tools")


def test_direct_and_text_trail_episodes(episodes, results_root):
    adapter = get_adapter("qwen2_5_vl")
    direct, images = adapter.render_messages(episodes[0], results_root)
    assert "# Tools" not in direct[0]["content"][0]["text"] and len(images) == 1
    trail, images = adapter.render_messages(episodes[2], results_root)
    assert len(images) == 1 and "# Tools" in trail[0]["content"][0]["text"]
    assert [p["type"] for p in trail[-1]["content"]] == ["text", "text", "text"]
    assert trail[-1]["content"][1]["text"] == "zoom_in returned the region [0, 0, 220, 320] of the image."


def test_missing_image_is_data_error(episodes, tmp_path):
    with pytest.raises(DataError, match="syn-000.png not found"):
        get_adapter("llava").render_messages(episodes[0], tmp_path)


def test_images_first_family_puts_the_returned_image_before_the_tool_response_tags(episodes, results_root):
    messages, images = get_adapter("llava_onevision").render_messages(episodes[1], results_root)
    assert messages[3]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "<tool_response>\n\n</tool_response>"},
    ]
    assert [im.size for im in images] == [(760, 760), (210, 320)]
    both, images = get_adapter("llava_onevision").render_messages(episodes[3], results_root)
    assert [p["type"] for p in both[1]["content"]] == ["image", "image", "text"]


# --------------------------------------------------------------------------- DeepEyes


def test_deepeyes_prompts_are_the_originals():
    assert sha256(DEEPEYES_SYSTEM_PROMPT) == DEEPEYES_SYSTEM_SHA256
    assert sha256(DEEPEYES_USER_PROMPT) == DEEPEYES_USER_SHA256
    assert '"name":"image_zoom_in_tool"' in DEEPEYES_SYSTEM_PROMPT
    assert '"required":["bbox"]' in DEEPEYES_SYSTEM_PROMPT  # the original's bug, kept


def test_deepeyes_tool_episode(episodes, results_root):
    messages, images = get_adapter("deepeyes").render_messages(episodes[1], results_root)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": DEEPEYES_SYSTEM_PROMPT}]
    question = episodes[1]["messages"][1]["content"][1]["text"]
    assert messages[1]["content"] == [
        {"type": "image"},
        {"type": "text", "text": question + DEEPEYES_USER_PROMPT},
    ]
    assert (
        messages[2]["content"]
        == [  # DeepEyes' format: a <think> block before the call
            {
                "type": "text",
                "text": DEEPEYES_CALL_REASONING
                + '\n<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 210, 320]}}'
                "\n</tool_call>",
            }
        ]
    )
    assert DEEPEYES_CALL_REASONING.startswith("<think>") and DEEPEYES_CALL_REASONING.endswith("</think>")
    assert messages[3]["content"] == [
        {"type": "text", "text": "<tool_response>"},
        {"type": "image"},
        {"type": "text", "text": DEEPEYES_USER_PROMPT},
        {"type": "text", "text": "</tool_response>"},
    ]
    assert [im.size for im in images] == [(760, 760), (210, 320)]


def test_deepeyes_text_trail_direct_and_other_system_text(episodes, results_root):
    adapter = get_adapter("deepeyes")
    trail, _ = adapter.render_messages(episodes[2], results_root)
    assert texts(trail[3]["content"]) == [  # the trail names DeepEyes' own tool and bbox_2d
        "<tool_response>",
        "image_zoom_in_tool returned the region [0, 0, 220, 320] of the image.",
        DEEPEYES_USER_PROMPT,
        "</tool_response>",
    ]
    # no tool framing: no tool prompt, the same answer format without its tool parts
    direct, _ = adapter.render_messages(episodes[0], results_root)
    assert direct[0]["content"][0]["text"] == "You are a helpful assistant."
    question = episodes[0]["messages"][1]["content"][1]["text"]
    assert direct[1]["content"][-1]["text"] == question + DEEPEYES_ANSWER_FORMAT
    assert DEEPEYES_ANSWER_FORMAT == (
        "\nThink first, then answer. Format strictly as:  <think>...</think>  <answer>...</answer> "
    )
    other = json.loads(json.dumps(episodes[1]))
    other["messages"][0]["content"][0]["text"] = "Be brief."
    messages, _ = adapter.render_messages(other, results_root)
    assert messages[0]["content"][0]["text"] == "Be brief.\n\n" + DEEPEYES_SYSTEM_PROMPT.split("\n\n", 1)[1]


def test_deepeyes_and_qwen3_render_only_the_zoom_tool(episodes, results_root):
    other = json.loads(json.dumps(episodes[1]))
    other["meta"]["tools"] = [{"type": "function", "function": {"name": "rotate", "parameters": {}}}]
    for family in ("deepeyes", "qwen3_vl"):
        with pytest.raises(ConfigError, match="rotate"):
            get_adapter(family).render_messages(other, results_root)
    call = {"name": "rotate", "arguments": {"angle": 90}}
    with pytest.raises(ConfigError, match="rotate"):
        get_adapter("deepeyes").tool_call_text(call, {"image_size": [760, 760]})


# --------------------------------------------------------------------------- Qwen3-VL


def test_relative_bbox():
    assert relative_bbox([0, 0, 760, 760], (760, 760)) == [0, 0, 1000, 1000]
    assert relative_bbox([100, 50, 300, 250], (1000, 500)) == [100, 100, 300, 500]
    assert relative_bbox([0, 0, 210, 320], (760, 760)) == [0, 0, 276, 421]  # 276.3, 421.05
    assert relative_bbox([1, 3, 5, 7], (2000, 2000)) == [1, 2, 3, 4]  # 0.5 -> 1, 1.5 -> 2: half up
    assert relative_bbox([-5, 0, 900, 10], (800, 100)) == [0, 0, 1000, 100]  # clamped


def test_qwen3_vl_tool_episode(episodes, results_root):
    messages, _ = get_adapter("qwen3_vl").render_messages(episodes[1], results_root)
    system = messages[0]["content"][0]["text"]
    section = system.split("\n\n", 1)[1]
    assert (
        system.startswith("You are a helpful assistant.\n\n")
        and sha256(section) == QWEN_AGENT_ZOOM_SECTION_SHA256
    )
    call = json.loads(
        texts(messages[2]["content"])[0].removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    )
    assert call == {
        "name": "image_zoom_in_tool",
        "arguments": {"label": Qwen3VLAdapter.zoom_label, "bbox_2d": [0, 0, 276, 421], "img_idx": 0},
    }
    assert list(call["arguments"]) == ["label", "bbox_2d", "img_idx"]
    assert texts(messages[3]["content"]) == ["<tool_response>\n", "\n</tool_response>"]


def test_qwen3_vl_uses_the_image_size_and_needs_it():
    adapter = get_adapter("qwen3_vl")
    call = {"name": "zoom_in", "arguments": {"bbox": [100, 50, 300, 250], "label": "the title"}}
    text = adapter.tool_call_text(call, {"image_size": [1000, 500]})
    assert json.loads(text.split("\n")[1])["arguments"] == {
        "label": "the title",
        "bbox_2d": [100, 100, 300, 500],
        "img_idx": 0,
    }
    with pytest.raises(ContractError, match="image_size"):
        adapter.tool_call_text(call, {"image_size": None}, "episode p/tool")


# --------------------------------------------------------------------------- processor inputs


class StubTokenizer:
    bos_token, bos_token_id = "<bos>", 2

    def __init__(self, adds_bos: bool) -> None:
        self.adds_bos = adds_bos

    def __call__(self, text):
        return {"input_ids": ([2] if self.adds_bos else []) + [7]}


class StubProcessor:
    image_token = "<img>"

    def __init__(self, adds_bos: bool = False) -> None:
        self.tokenizer = StubTokenizer(adds_bos)


def test_processor_inputs_group_images_per_prompt_where_the_family_needs_it():
    prompts = ["<bos>a <img> b", "<bos><img><img> c", "<bos>d"]
    images = ["i0", "i1", "i2"]
    nested = Gemma3Adapter().processor_inputs(StubProcessor(), prompts, images)
    assert nested == {"text": prompts, "images": [["i0"], ["i1", "i2"], []]}
    flat = LlavaAdapter().processor_inputs(StubProcessor(), prompts, images)
    assert flat == {"text": prompts, "images": images}
    assert LlavaAdapter().processor_inputs(StubProcessor(), ["x"], [])["images"] is None
    with pytest.raises(ContractError, match="3 <img> placeholders for 2 images"):
        Gemma3Adapter().processor_inputs(StubProcessor(), prompts, images[:2])


def test_processor_inputs_drop_the_template_bos_only_when_the_tokenizer_adds_one():
    prompts = ["<bos>a", "b"]
    assert LlavaAdapter().processor_inputs(StubProcessor(adds_bos=True), prompts, [])["text"] == ["a", "b"]
    assert LlavaAdapter().processor_inputs(StubProcessor(adds_bos=False), prompts, [])["text"] == prompts


# --------------------------------------------------------------------------- native calls back


def test_native_calls_map_back_to_the_episode_call():
    meta = {"image_size": [1000, 500]}
    call = {"name": "zoom_in", "arguments": {"bbox": [100, 50, 300, 250]}}
    for family in ADAPTERS:
        adapter = get_adapter(family)
        native = adapter.call_payload(call, meta, "test")
        back = adapter.episode_call(native, meta)
        assert back["name"] == "zoom_in" and back["arguments"]["bbox"] == [100, 50, 300, 250], family
    qwen3 = get_adapter("qwen3_vl")
    back = qwen3.episode_call(
        {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 1, 999, 999]}}, meta
    )
    assert back["arguments"]["bbox"] == [1.0, 0.5, 999.0, 499.5]
    with pytest.raises(ContractError, match="image_size"):
        qwen3.episode_call({"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 1, 2, 2]}}, {})
    other = {"name": "rotate", "arguments": {"angle": 90}}
    assert get_adapter("deepeyes").episode_call(other, meta) == other  # not its zoom tool: left as written


# --------------------------------------------------------------------------- every condition, every family


@pytest.fixture(scope="module")
def real_episodes(tmp_path_factory):
    """The episodes of every condition for two mini prompts, as the DAG builds them."""
    from toolshift.datasets.prompts import build_prompts, load_mini
    from toolshift.episodes.build import EPISODE_CONDITIONS, build_episodes_by_condition

    root = tmp_path_factory.mktemp("every_condition")
    prompts = build_prompts("mini", load_mini(), root, limit_per_class=1)
    return root, build_episodes_by_condition(prompts, EPISODE_CONDITIONS, root)


def without_tool_parts(text: str, adapter, tools) -> str:
    """A rendered text with the family's tool parts taken out: its tool section, the tool parts of its
    answer format."""
    if tools:
        text = text.replace("\n\n" + adapter.tool_prompt(tools), "", 1)
    for part in adapter.tool_format_parts:
        text = text.replace(part, "")
    return text


@pytest.mark.parametrize("family", sorted(set(ADAPTERS) - set(NATIVE_FAMILIES)))
def test_every_condition_shares_the_family_system_prompt_and_answer_format(family, real_episodes):
    """Every condition of a family (those in their own protocol: tests/test_native_families.py) renders
    with the same system prompt and the same question turn (answer-format instruction included), byte for
    byte, once the tool parts are taken out; the scripted
    call carries the family's reasoning prefix and the text trail names the family's own tool and box."""
    from toolshift.episodes.build import EPISODE_CONDITIONS, text_trail_line

    root, episodes = real_episodes
    adapter = get_adapter(family)
    assert without_tool_parts(adapter.answer_format(True), adapter, None) == adapter.answer_format(False)
    shared = {}
    for condition in EPISODE_CONDITIONS:
        episode = episodes[condition][0]
        tools = episode["meta"].get("tools")
        if condition == "text_trail_long":  # padded to the tokens of an image: needs the processor
            with pytest.raises(ContractError, match=r"/text_trail_long: .*needs the model.s processor"):
                adapter.render_messages(episode, root)
            continue
        messages, _ = adapter.render_messages(episode, root)
        system = messages[0]["content"][0]["text"]
        question_index = max(
            i for i, m in enumerate(episode["messages"]) if m["role"] == "user" and texts(m["content"])
        )
        question = "".join(texts(messages[question_index]["content"]))
        attack_text = texts(episode["messages"][question_index]["content"])[-1]
        assert question.endswith(attack_text + adapter.answer_format(bool(tools)))
        shared[condition] = (
            without_tool_parts(system, adapter, tools),
            without_tool_parts(question, adapter, tools),
        )
        if condition in ("tool", "tool_unsafe", "tool_benign", "tool_blank", "text_trail"):
            call = texts(messages[2]["content"])[0]
            assert call.startswith(
                adapter.call_reasoning + ("\n" if adapter.call_reasoning else "") + "<tool_call>"
            )
            payload = json.loads(call.split("<tool_call>\n", 1)[1].removesuffix("\n</tool_call>"))
            if condition == "text_trail":
                line = text_trail_line(adapter.bbox_argument(payload), payload["name"])
                assert line in "".join(texts(messages[3]["content"]))
                assert payload["name"] in line
    assert len(set(shared.values())) == 1, shared
    assert shared["direct"][0] == "You are a helpful assistant."


def test_qwen3_vl_text_trail_is_in_relative_coordinates(episodes, results_root):
    messages, _ = get_adapter("qwen3_vl").render_messages(episodes[2], results_root)
    assert "image_zoom_in_tool returned the region [0, 0, 289, 421] of the image." in texts(
        messages[3]["content"]
    )
