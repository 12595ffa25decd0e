"""Parsing model-written tool calls: JSON only, known tools only, boxes checked and clamped, bounded work."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolshift.episodes.toolcalls import (
    COORD_LIMIT,
    MAX_CALLS,
    MAX_PAYLOAD_CHARS,
    CallRejected,
    MalformedCall,
    ParseResult,
    ToolCall,
    parse_tool_calls,
)
from toolshift.errors import ContractError
from toolshift.models.adapters import DeepEyesAdapter, Qwen3VLAdapter

SIZE = (760, 500)


def block(payload: object) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"<tool_call>\n{text}\n</tool_call>"


def zoom_call(bbox: object, key: str = "bbox", **extra: object) -> str:
    return block({"name": "zoom_in", "arguments": {key: bbox, **extra}})


def only_reason(result: ParseResult) -> str:
    assert result.calls == () and len(result.malformed) == 1, result
    return result.malformed[0].reason


def test_valid_call_with_text_around_it():
    text = "Let me look closer.\n" + zoom_call([10, 20, 300, 400]) + "\n"
    result = parse_tool_calls(text, SIZE)
    assert result.malformed == () and not result.truncated
    assert result.calls == (
        ToolCall(
            name="zoom_in",
            arguments={"bbox": [10, 20, 300, 400]},
            bbox=[10, 20, 300, 400],
            raw_bbox=[10, 20, 300, 400],
            pixel_bbox=[10, 20, 300, 400],
            clamped=False,
            written={"name": "zoom_in", "arguments": {"bbox": [10, 20, 300, 400]}},
        ),
    )
    assert result.content == "Let me look closer."
    assert result.calls[0].structured() == {"name": "zoom_in", "arguments": {"bbox": [10, 20, 300, 400]}}
    assert json.loads(json.dumps(result.to_dict()))["calls"] == [
        {
            "name": "zoom_in",
            "arguments": {"bbox": [10, 20, 300, 400]},
            "raw_bbox": [10, 20, 300, 400],
            "pixel_bbox": [10, 20, 300, 400],
            "clamped": False,
            "written": {"name": "zoom_in", "arguments": {"bbox": [10, 20, 300, 400]}},
        }
    ]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "zoom_in", "arguments": {"bbox": [1, 2, 3, 4]}}</tool_call>',
        '<tool_call>\n\n  {"name":"zoom_in","arguments":{"bbox":[1,2,3,4]}}  \n</tool_call>',
        '< tool_call >\t{"name": "zoom_in", "arguments": {"bbox": [1, 2, 3, 4]}}\r\n< / tool_call >',
        # OpenAI-style arguments given as a JSON string
        '<tool_call>{"name": "zoom_in", "arguments": "{\\"bbox\\": [1, 2, 3, 4]}"}</tool_call>',
    ],
)
def test_whitespace_and_argument_forms_are_tolerated(text):
    result = parse_tool_calls(text, SIZE)
    assert [c.bbox for c in result.calls] == [[1, 2, 3, 4]] and result.malformed == ()
    assert result.content == ""


def test_bbox_2d_and_extra_arguments_are_kept_as_data():
    result = parse_tool_calls(zoom_call([5.5, 6, 50, 60.2], key="bbox_2d", label="list"), SIZE)
    (call,) = result.calls
    assert call.bbox == [5, 6, 50, 61] and call.raw_bbox == [5.5, 6, 50, 60.2] and call.clamped
    assert call.arguments == {"bbox_2d": [5, 6, 50, 61], "label": "list"}


def test_several_calls_in_one_turn():
    text = "a" + zoom_call([0, 0, 10, 10]) + " b " + zoom_call([100, 100, 200, 220]) + "c"
    result = parse_tool_calls(text, SIZE)
    assert [c.bbox for c in result.calls] == [[0, 0, 10, 10], [100, 100, 200, 220]]
    assert result.content == "a b c"


def test_calls_over_the_limit_are_malformed_and_not_parsed():
    text = "".join(zoom_call([i, i, i + 10, i + 10]) for i in range(MAX_CALLS + 2))
    result = parse_tool_calls(text, SIZE)
    assert [c.bbox[0] for c in result.calls] == list(range(MAX_CALLS))
    assert [m.reason for m in result.malformed] == [f"over the limit of {MAX_CALLS} tool calls per turn"] * 2
    assert len(parse_tool_calls(text, SIZE, max_calls=1).calls) == 1


def test_no_call():
    result = parse_tool_calls("I can't help with that.", SIZE)
    assert result == ParseResult(content="I can't help with that.")


@pytest.mark.parametrize(
    "payload,reason",
    [
        ('{"name": "zoom_in", "arguments": {"bbox": [1, 2, 3, 4]}', "not valid JSON"),
        ("{'name': 'zoom_in'}", "not valid JSON"),
        ("zoom_in(bbox=[1, 2, 3, 4])", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2, 3, 4]", "payload is a JSON list, not an object"),
        ('{"arguments": {"bbox": [1, 2, 3, 4]}}', "no string 'name'"),
        ('{"name": 7, "arguments": {"bbox": [1, 2, 3, 4]}}', "no string 'name'"),
        ('{"name": "crop", "arguments": {"bbox": [1, 2, 3, 4]}}', "unknown tool 'crop'; known: zoom_in"),
        ('{"name": "zoom_in", "arguments": [1, 2, 3, 4]}', "'arguments' is a JSON list"),
        ('{"name": "zoom_in", "arguments": "not json"}', "not valid JSON"),
        ('{"name": "zoom_in", "arguments": {}}', "exactly one of bbox, bbox_2d, got 0"),
        ('{"name": "zoom_in"}', "exactly one of bbox, bbox_2d, got 0"),
        ('{"name": "zoom_in", "arguments": {"bbox": [1,2,3,4], "bbox_2d": [1,2,3,4]}}', "got 2"),
    ],
)
def test_malformed_payloads(payload, reason):
    result = parse_tool_calls("Sure. " + block(payload) + " Done.", SIZE)
    assert reason in only_reason(result)
    assert result.malformed[0].excerpt.startswith("<tool_call>")
    assert result.content == "Sure.  Done."


@pytest.mark.parametrize(
    "bbox,reason",
    [
        ([1, 2, 3], "bbox must be a list of 4 numbers, got 3 elements"),
        ([1, 2, 3, 4, 5], "got 5 elements"),
        ([], "got 0 elements"),
        ("[1, 2, 3, 4]", "got a JSON str"),
        ({"x1": 1}, "got a JSON dict"),
        (12, "got a JSON int"),
        (None, "got a JSON NoneType"),
        (["1", 2, 3, 4], "bbox must hold 4 numbers, got an element '1'"),
        ([1, 2, None, 4], "got an element None"),
        ([True, 2, 3, 4], "got an element True"),
        ([[1], 2, 3, 4], "got an element [1]"),
        ([float("nan"), 2, 3, 4], "non-finite number nan"),
        ([1, 2, float("inf"), 4], "non-finite number inf"),
        ([1, 2, float("-inf"), 4], "non-finite number -inf"),
    ],
)
def test_bad_boxes(bbox, reason):
    assert reason in only_reason(parse_tool_calls(zoom_call(bbox), SIZE))


def test_overflowing_json_float_is_non_finite():
    assert "non-finite" in only_reason(
        parse_tool_calls(zoom_call("X").replace('"X"', "[1, 2, 1e999, 4]"), SIZE)
    )


def test_huge_and_reversed_boxes_are_clamped_inside_the_image():
    huge = 10**400  # beyond float range: limited to +-2**53, then clamped
    cases = {
        (-50, -50, 10**9, 10**9): [0, 0, 760, 500],
        (huge, huge, -huge, -huge): [0, 0, 760, 500],
        (-1e300, 20, 1e300, 30): [0, 20, 760, 30],
        (300, 400, 100, 200): [100, 200, 300, 400],  # corners ordered
        (5000, 5000, 6000, 6000): [759, 499, 760, 500],  # outside: the last pixel
        (10, 10, 10, 10): [10, 10, 11, 11],  # empty: one pixel
    }
    for raw, expected in cases.items():
        (call,) = parse_tool_calls(zoom_call(list(raw)), SIZE).calls
        assert call.bbox == expected, raw
        assert call.clamped == (list(raw) != expected)
    (call,) = parse_tool_calls(zoom_call([huge, 0, 1, 1]), SIZE).calls
    assert call.raw_bbox[0] == COORD_LIMIT


def test_oversize_payload_is_rejected_unread():
    padding = " " * MAX_PAYLOAD_CHARS
    reason = only_reason(parse_tool_calls(zoom_call([1, 2, 3, 4]).replace("{", "{" + padding, 1), SIZE))
    assert reason.startswith("payload of") and f"over the limit of {MAX_PAYLOAD_CHARS}" in reason
    assert parse_tool_calls(zoom_call([1, 2, 3, 4]), SIZE, max_payload_chars=20).calls == ()


def test_deep_nesting_is_malformed_not_a_crash():
    deep = "[" * 1900 + "]" * 1900
    payload = '{"name": "zoom_in", "arguments": {"bbox": ' + deep + "}}"
    assert only_reason(parse_tool_calls(block(payload), SIZE, max_payload_chars=10_000)) in (
        "JSON nested too deeply",
        "bbox must be a list of 4 numbers, got 1 elements",
    )
    assert "deeply" in only_reason(parse_tool_calls(block("[" * 5000), SIZE, max_payload_chars=10_000))


def test_long_text_is_scanned_up_to_the_limit():
    text = zoom_call([1, 2, 3, 4]) + "x" * 100 + zoom_call([5, 6, 7, 8])
    result = parse_tool_calls(text, SIZE, max_text_chars=len(text) - 5)
    assert result.truncated and [c.bbox for c in result.calls] == [[1, 2, 3, 4]]
    assert [m.reason for m in result.malformed] == ["unclosed <tool_call> block"]


def test_unclosed_block():
    result = parse_tool_calls('ok <tool_call>{"name": "zoom_in", "arguments": {"bbox": [1, 2, 3, 4]}}', SIZE)
    assert only_reason(result) == "unclosed <tool_call> block" and result.content == "ok"
    # a stray closing tag is just text
    assert parse_tool_calls("</tool_call> hi", SIZE) == ParseResult(content="</tool_call> hi")


def test_code_in_payload_is_only_data(tmp_path, monkeypatch):
    """Nothing in a payload is evaluated, imported or formatted: it stays inert data."""
    import builtins

    calls = []
    monkeypatch.setattr(builtins, "__import__", lambda *a, **k: calls.append(a) or pytest.fail("import"))
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    payloads = [
        {"__import__": "os", "name": "zoom_in", "arguments": {"bbox": [1, 2, 3, 4], "cmd": code}},
        {"name": code, "arguments": {"bbox": [1, 2, 3, 4]}},
        {"name": "zoom_in", "arguments": {"bbox": [code, 2, 3, 4]}},
        {"name": "zoom_in", "arguments": {"bbox": "{0.__class__}"}},
    ]
    results = [parse_tool_calls(block(p), SIZE) for p in payloads]
    monkeypatch.undo()
    assert not calls and not marker.exists()
    (call,) = results[0].calls
    assert call.arguments == {"bbox": [1, 2, 3, 4], "cmd": code}  # kept verbatim as a string
    assert only_reason(results[1]).startswith("unknown tool \"__import__('os')")
    assert "got an element" in only_reason(results[2])
    assert "got a JSON str" in only_reason(results[3])


def test_known_tools_are_configurable():
    text = block({"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [1, 2, 3, 4]}})
    assert "unknown tool" in only_reason(parse_tool_calls(text, SIZE))
    assert len(parse_tool_calls(text, SIZE, known_tools=["image_zoom_in_tool"]).calls) == 1


# --------------------------------------------------------------------------- family tools, mapped back

NATIVE = "image_zoom_in_tool"


def native_call(bbox: object, key: str = "bbox_2d", **extra: object) -> str:
    return block({"name": NATIVE, "arguments": {key: bbox, **extra}})


def qwen3_mapper(size=SIZE):
    meta = {"image_size": list(size)}
    return lambda call: Qwen3VLAdapter().episode_call(call, meta)


def test_relative_boxes_are_mapped_to_pixels_before_clamping():
    text = "Looking. " + native_call([100, 200, 500, 1200], label="the list", img_idx=0)
    (call,) = parse_tool_calls(text, SIZE, known_tools=[NATIVE], to_episode=qwen3_mapper()).calls
    # 0-1000 of 760 x 500: x * 0.76, y * 0.5; y2 = 600 lies outside the image and is clamped to 500
    assert call.raw_bbox == [100, 200, 500, 1200]
    assert call.pixel_bbox == pytest.approx([76, 100, 380, 600])
    assert call.bbox == [76, 100, 380, 500] and call.clamped
    assert call.structured() == {
        "name": "zoom_in",
        "arguments": {"bbox": [76, 100, 380, 500], "label": "the list", "img_idx": 0},
    }
    assert call.written == {
        "name": NATIVE,
        "arguments": {"bbox_2d": [100, 200, 500, 1200], "label": "the list", "img_idx": 0},
    }
    # without the mapping the same box would have been read as pixels
    (as_pixels,) = parse_tool_calls(text, SIZE, known_tools=[NATIVE]).calls
    assert as_pixels.bbox == [100, 200, 500, 500]


def test_absolute_native_boxes_map_by_name_only():
    meta = {"image_size": list(SIZE)}
    mapper = lambda call: DeepEyesAdapter().episode_call(call, meta)  # noqa: E731
    (call,) = parse_tool_calls(
        native_call([10, 20, 900, 400]), SIZE, known_tools=[NATIVE], to_episode=mapper
    ).calls
    assert call.structured() == {"name": "zoom_in", "arguments": {"bbox": [10, 20, 760, 400]}}
    assert call.pixel_bbox == [10, 20, 900, 400] and call.clamped


def test_the_mapper_sees_only_checked_boxes_and_its_rejections_are_malformed():
    seen = []

    def mapper(call):
        seen.append(call)
        if call["arguments"].get("label") == "no":
            raise CallRejected("label no:\nrejected")
        return {"name": "zoom_in", "arguments": {"bbox": call["arguments"]["bbox_2d"]}}

    bad_boxes = [native_call([1, 2, 3]), native_call(["1", 2, 3, 4]), native_call([1, 2, 3, 4], key="bbox")]
    text = "".join(bad_boxes) + native_call([1, 2, 3, 4], label="no") + native_call([5, 6, 7, 8])
    result = parse_tool_calls(text, SIZE, known_tools=[NATIVE], to_episode=mapper, max_calls=8)
    assert [c.bbox for c in result.calls] == [[5, 6, 7, 8]]
    reasons = [m.reason for m in result.malformed]
    assert "bbox_2d must be a list of 4 numbers, got 3 elements" in reasons[0]
    assert "got an element '1'" in reasons[1]
    assert reasons[2].startswith("'image_zoom_in_tool' call does not map to an episode call (KeyError")
    assert reasons[3] == "label no: rejected"  # one line
    assert [c["arguments"] for c in seen] == [
        {"bbox": [1, 2, 3, 4]},
        {"bbox_2d": [1, 2, 3, 4], "label": "no"},
        {"bbox_2d": [5, 6, 7, 8]},
    ]


def test_the_mapped_call_is_checked_again():
    def mapper(result):
        return lambda call: result

    text = native_call([1, 2, 3, 4])
    cases = {
        "exactly one of bbox, bbox_2d, got 0": {"name": "zoom_in", "arguments": {}},
        "non-finite number nan": {"name": "zoom_in", "arguments": {"bbox": [float("nan"), 1, 2, 3]}},
    }
    for reason, mapped in cases.items():
        got = only_reason(parse_tool_calls(text, SIZE, known_tools=[NATIVE], to_episode=mapper(mapped)))
        assert got.startswith("as the episode's 'zoom_in' call:") and reason in got
    with pytest.raises(ContractError, match="mapper returned None"):
        parse_tool_calls(text, SIZE, known_tools=[NATIVE], to_episode=mapper(None))
    with pytest.raises(ContractError, match="image_size"):  # a caller's bug propagates
        parse_tool_calls(
            text, SIZE, known_tools=[NATIVE], to_episode=lambda c: Qwen3VLAdapter().episode_call(c, {})
        )


def test_caller_errors():
    with pytest.raises(ContractError, match="must be a string, got bytes"):
        parse_tool_calls(b"<tool_call>", SIZE)  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="image_size must be positive"):
        parse_tool_calls("", (0, 10))
    with pytest.raises(ContractError, match="image_size must be"):
        parse_tool_calls("", "big")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fuzzing

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 759, 760, 761, 1e308, -1e308, 2**53 + 1]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
boxes = st.one_of(st.lists(numbers, min_size=4, max_size=4), json_values)
payloads = st.one_of(
    st.builds(
        lambda name, key, bbox: json.dumps({"name": name, "arguments": {key: bbox}}),
        st.sampled_from(["zoom_in", "zoom_in", "crop", ""]),
        st.sampled_from(["bbox", "bbox_2d", "box"]),
        boxes,
    ),
    json_values.map(json.dumps),
    st.text(max_size=40),
)
fragments = st.one_of(
    st.sampled_from(
        ["<tool_call>", "</tool_call>", "< tool_call >", "</ tool_call>", "<", ">", "\n", "{", "}"]
    ),
    payloads,
    st.text(max_size=30),
)
texts = st.one_of(st.text(max_size=200), st.lists(fragments, max_size=12).map("".join))
sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000))


FUZZ = {"deadline": None, "derandomize": True, "database": None}
"""Deterministic fuzzing (the same examples on every run, no example database written to disk)."""


def check(result: ParseResult, size: tuple[int, int]) -> None:
    assert isinstance(result, ParseResult)
    width, height = size
    for call in result.calls:
        assert isinstance(call, ToolCall) and call.name == "zoom_in"
        x1, y1, x2, y2 = call.bbox
        assert all(type(v) is int for v in call.bbox)
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert all(math.isfinite(v) for v in call.raw_bbox)
        assert call.arguments.get("bbox", call.arguments.get("bbox_2d")) == call.bbox
    for bad in result.malformed:
        assert isinstance(bad, MalformedCall) and bad.reason and "\n" not in bad.reason
    json.dumps(result.to_dict(), allow_nan=False)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], **FUZZ)
@given(text=texts, size=sizes)
def test_fuzz_arbitrary_text_always_parses(text, size):
    check(parse_tool_calls(text, size), size)


native_payloads = st.builds(
    lambda name, key, bbox, extra: json.dumps({"name": name, "arguments": {key: bbox, **extra}}),
    st.sampled_from([NATIVE, NATIVE, "zoom_in"]),
    st.sampled_from(["bbox_2d", "bbox_2d", "bbox"]),
    boxes,
    st.dictionaries(st.sampled_from(["label", "img_idx", "bbox"]), json_values, max_size=2),
)
native_texts = st.lists(st.one_of(fragments, native_payloads.map(block)), max_size=8).map("".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], **FUZZ)
@given(text=native_texts, size=sizes)
def test_fuzz_relative_boxes_always_parse_inside_the_image(text, size):
    result = parse_tool_calls(text, size, known_tools=[NATIVE], to_episode=qwen3_mapper(size))
    check(result, size)
    for call in result.calls:
        assert call.written["name"] == NATIVE and "bbox_2d" not in call.arguments
        assert all(math.isfinite(v) for v in call.pixel_bbox)


@settings(max_examples=300, **FUZZ)
@given(bbox=st.lists(numbers, min_size=4, max_size=4), size=sizes, key=st.sampled_from(["bbox", "bbox_2d"]))
def test_fuzz_every_accepted_box_is_inside_the_image(bbox, size, key):
    result = parse_tool_calls("x" + zoom_call(bbox, key=key) + "y", size)
    check(result, size)
    finite = all(math.isfinite(v) for v in bbox)
    assert len(result.calls) == (1 if finite else 0)
    assert len(result.malformed) == (0 if finite else 1)
