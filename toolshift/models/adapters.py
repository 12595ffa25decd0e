"""Model-family adapters: the little that differs between VLM families on the generic HF path.

Everything else goes through `AutoProcessor`, `AutoModelForImageTextToText` and the processor's own
chat template. An adapter knows (1) where the text decoder's layers are, for the residual-stream hooks,
(2) how to render a model-agnostic episode (see the episodes contract) into the chat messages the
processor's template expects: the tool prompt, the tool call and the tool turn, and (3) how the
rendered prompts and their images are handed to the processor.

The default rendering is the Hermes / Qwen convention, also what Qwen-Agent's `NousFnCallPrompt` writes:
the tool spec goes into the system prompt, an assistant tool call becomes `<tool_call>{json}</tool_call>`
text and a tool turn becomes a *user* turn `<tool_response>` image(s) `</tool_response>`, which works with
chat templates that have no tool role. Families trained on a tool format of their own override it:
DeepEyes (its system prompt, `image_zoom_in_tool` with absolute `bbox_2d`, its user suffix, its
`<tool_response>` user turn) and Qwen3-VL (Qwen-Agent's `image_zoom_in_tool` with relative 0-1000
`bbox_2d`, `label` and `img_idx`). LLaVA, LLaVA-OneVision, InternVL3, Gemma 3, Idefics3 and SmolVLM have no
trained tool-call format (Gemma 3's documentation leaves the format to the prompt), so they share the
Hermes convention: the tool framing is then the same text for all of them.

Episodes name the zoom tool `zoom_in` with `bbox` in absolute pixels of the original image; an adapter
with a native zoom tool maps that call onto it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

from toolshift.errors import ConfigError, ContractError, DataError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

EPISODE_ZOOM_TOOL = "zoom_in"
"""The zoom tool's name in episodes (`toolshift.episodes.build.TOOL_NAME`); its argument is `bbox`."""

ChatMessage = dict[str, Any]

GENERIC_LAYER_PATHS: tuple[str, ...] = (
    "model.language_model.layers",  # transformers 5.x composite VLMs
    "model.text_model.layers",  # Idefics3 / SmolVLM
    "language_model.model.layers",  # 4.x layout
    "model.language_model.model.layers",
    "language_model.layers",
    "model.layers",
)
"""Where decoder layers are searched when a family's own path does not hold them."""


class FamilyAdapter:
    """Base adapter: Hermes-style tool rendering, decoder layers at `model.language_model.layers`."""

    family: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    """`config.model_type` values this adapter accepts (empty: any)."""
    layers_path: ClassVar[str] = "model.language_model.layers"
    """Dotted path from the loaded model to its text decoder's layers."""
    images_first: ClassVar[bool] = False
    """The chat template puts all of a turn's images before its text: render turns that way (images, then
    the turn's text parts joined into one), so the messages say what the template will show."""
    nested_images: ClassVar[bool] = False
    """The processor takes a batch's images grouped per prompt (a list of lists), not one flat list."""

    # ----------------------------------------------------------------- decoder layers

    def decoder_layers(self, model: Any) -> Any:
        """The text decoder's `nn.ModuleList` of layers (the residual stream the hooks act on)."""
        import torch

        candidates = (self.layers_path, *(p for p in GENERIC_LAYER_PATHS if p != self.layers_path))
        for dotted in candidates:
            obj = model
            for attr in dotted.split("."):
                obj = getattr(obj, attr, None)
                if obj is None:
                    break
            if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
                return obj
        raise ConfigError(
            f"{type(model).__name__}: cannot find the text decoder layers (tried {', '.join(candidates)})"
        )

    # ----------------------------------------------------------------- tool prompt, call, turn

    def tool_prompt(self, tools: list[dict[str, Any]]) -> str:
        """The system-prompt section declaring `tools` and how to call them (Hermes / Qwen style)."""
        lines = [
            "# Tools",
            "",
            "You may call one or more functions to assist with the user query.",
            "",
            "You are provided with function signatures within <tools></tools> XML tags:",
            "<tools>",
        ]
        for tool in tools:
            spec = tool if "function" in tool else {"type": "function", "function": tool}
            lines.append(json.dumps(spec, ensure_ascii=False))
        lines += [
            "</tools>",
            "",
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:",
            "<tool_call>",
            '{"name": <function-name>, "arguments": <args-json-object>}',
            "</tool_call>",
        ]
        return "\n".join(lines)

    def call_payload(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
        """The `{"name", "arguments"}` object the model writes for one structured episode tool call."""
        return {"name": call["name"], "arguments": call["arguments"]}

    def tool_call_text(
        self, call: dict[str, Any], meta: dict[str, Any] | None = None, where: str = "tool call"
    ) -> str:
        """One structured tool call rendered as the text the model would have written."""
        payload = self.call_payload(call, meta or {}, where)
        return "<tool_call>\n" + json.dumps(payload, ensure_ascii=False) + "\n</tool_call>"

    def episode_call(self, call: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """The inverse of `call_payload`: a call as this family's model writes it (a parsed
        `{"name", "arguments"}` object) as the episode's structured call. The default is the identity."""
        return {"name": call["name"], "arguments": dict(call["arguments"])}

    call_reasoning: ClassVar[str] = ""
    """Text the family's format requires before a tool call in an assistant turn (DeepEyes: a `<think>`
    block); written before the scripted call of the tool conditions."""

    tool_format_parts: ClassVar[tuple[str, ...]] = ()
    """The parts of `answer_format(True)` about the tool: `answer_format(False)` is it without them."""

    def answer_format(self, framed: bool) -> str:
        """The answer-format instruction the family appends to the question (`framed`: the episode offers
        tools). Every condition gets it, so that only the tool part differs between conditions; the
        default family has none."""
        return ""

    def user_content(self, content: list[dict[str, Any]], framed: bool) -> list[dict[str, Any]]:
        """The question turn's content parts (the episode's last user turn): `answer_format(framed)`
        appended to its last text part."""
        suffix = self.answer_format(framed)
        if not suffix:
            return content
        content = list(content)
        for j in range(len(content) - 1, -1, -1):
            if content[j]["type"] == "text":
                content[j] = {"type": "text", "text": content[j]["text"] + suffix}
                return content
        return [*content, {"type": "text", "text": suffix}]

    def bbox_argument(self, payload: dict[str, Any]) -> Any:
        """The box argument of a rendered call payload (`bbox`, or a family's own such as `bbox_2d`)."""
        arguments = payload.get("arguments") or {}
        return arguments.get("bbox", arguments.get("bbox_2d"))

    def text_trail_text(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> str:
        """The `text_trail` tool turn in this family's terms: its tool's name and the box as its call wrote
        it (absolute pixels, or 0-1000 relative coordinates for Qwen3-VL)."""
        from toolshift.episodes.build import text_trail_line

        payload = self.call_payload(call, meta, where)
        return text_trail_line(list(self.bbox_argument(payload)), payload["name"])

    def tool_turn(self, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The content of the user turn that carries a tool result (image or text parts)."""
        return [
            {"type": "text", "text": "<tool_response>\n"},
            *content,
            {"type": "text", "text": "\n</tool_response>"},
        ]

    # ----------------------------------------------------------------- episodes

    def render_messages(
        self, episode: dict[str, Any], results_root: str | os.PathLike[str]
    ) -> tuple[list[ChatMessage], list[Any]]:
        """Render an episode into (chat messages for the processor's template, PIL images in order).

        Image parts become `{"type": "image"}` placeholders; the images are returned separately, in
        the order the template shows them, to be passed to the processor as `images=`.
        """
        where = f"episode {episode.get('prompt_id', '?')}/{episode.get('condition', '?')}"
        root = Path(results_root)
        meta = episode.get("meta") or {}
        tools = meta.get("tools") or []
        framed = bool(tools)
        messages: list[ChatMessage] = []

        def parts(content: Any) -> list[dict[str, Any]]:
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            out = []
            for part in content or []:
                if part.get("type") == "image":
                    out.append({"type": "image", "path": part["path"]})
                elif part.get("type") == "text":
                    out.append({"type": "text", "text": part["text"]})
                else:
                    raise ContractError(f"{where}: content part of type {part.get('type')!r}")
            return out

        question = max((i for i, m in enumerate(episode["messages"]) if m.get("role") == "user"), default=-1)
        last_call: dict[str, Any] | None = None
        for i, msg in enumerate(episode["messages"]):
            role = msg.get("role")
            if role == "system":
                content = parts(msg.get("content"))
                if framed and i == 0:
                    content = self._with_tools(content, tools)
                messages.append({"role": "system", "content": content})
            elif role == "user":
                content = parts(msg.get("content"))
                if i == question:
                    content = self.user_content(content, framed)
                messages.append({"role": "user", "content": content})
            elif role == "assistant":
                content = parts(msg.get("content"))
                tool_calls = msg.get("tool_calls") or []
                calls = [self.tool_call_text(c, meta, where) for c in tool_calls]
                if calls:
                    last_call = tool_calls[-1]
                    text = "\n".join(calls)
                    if content:
                        text = "\n" + text
                    elif self.call_reasoning:
                        text = self.call_reasoning + "\n" + text
                    content.append({"type": "text", "text": text})
                messages.append({"role": "assistant", "content": content})
            elif role == "tool":
                content = parts(msg.get("content"))
                if meta.get("tool_result") == "text_trail" and last_call is not None:
                    content = [{"type": "text", "text": self.text_trail_text(last_call, meta, where)}]
                messages.append({"role": "user", "content": self.tool_turn(content)})
            else:
                raise ContractError(f"{where}: message {i} has role {role!r}")
        if framed and (not messages or messages[0]["role"] != "system"):
            system = [{"type": "text", "text": DEFAULT_SYSTEM_PROMPT}]
            messages.insert(0, {"role": "system", "content": self._with_tools(system, tools)})
        if self.images_first:
            messages = [{**m, "content": _images_first(m["content"])} for m in messages]
        images = []
        for message in messages:
            for part in message["content"]:
                if part["type"] == "image":
                    images.append(_load_image(root, part.pop("path"), where))
        return messages, images

    def _with_tools(self, content: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the tool prompt to a system message's text (after the last text part)."""
        content = list(content)
        section = self.tool_prompt(tools)
        for j in range(len(content) - 1, -1, -1):
            if content[j]["type"] == "text":
                content[j] = {"type": "text", "text": content[j]["text"].rstrip() + "\n\n" + section}
                return content
        content.append({"type": "text", "text": section})
        return content

    # ----------------------------------------------------------------- processor

    def processor_inputs(self, processor: Any, texts: list[str], images: list[Any]) -> dict[str, Any]:
        """The `text=` and `images=` arguments of the processor call for a batch of rendered prompts.

        `images` is the batch's images in order (as `render_messages` returns them, concatenated over the
        prompts). They are grouped per prompt for families with `nested_images`, by counting the
        processor's image placeholder in each prompt. A leading BOS that the template wrote is dropped
        when the tokenizer adds one itself, so that no prompt starts with two.
        """
        texts = _without_duplicate_bos(processor, texts)
        if not images:
            return {"text": texts, "images": None}
        if not self.nested_images:
            return {"text": texts, "images": images}
        token = processor.image_token
        counts = [text.count(token) for text in texts]
        if sum(counts) != len(images):
            raise ContractError(
                f"{self.family}: the prompts hold {sum(counts)} {token} placeholders for {len(images)} images"
            )
        nested, start = [], 0
        for count in counts:
            nested.append(images[start : start + count])
            start += count
        return {"text": texts, "images": nested}


# --------------------------------------------------------------------------- helpers


def _images_first(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A turn's image parts, then its text parts joined into one (images-first chat templates)."""
    images = [p for p in content if p["type"] == "image"]
    texts = [p["text"] for p in content if p["type"] == "text"]
    return images + ([{"type": "text", "text": "".join(texts)}] if texts else [])


def _without_duplicate_bos(processor: Any, texts: list[str]) -> list[str]:
    tokenizer = getattr(processor, "tokenizer", processor)
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not any(text.startswith(bos) for text in texts):
        return texts
    probe = tokenizer("a")["input_ids"]
    if not probe or probe[0] != tokenizer.bos_token_id:  # the tokenizer adds no BOS: keep the template's
        return texts
    return [text[len(bos) :] if text.startswith(bos) else text for text in texts]


def _zoom_bbox(call: dict[str, Any], family: str, where: str) -> list[float]:
    """The bbox of an episode's zoom call, checked: a family with a native zoom tool renders only that."""
    if call.get("name") != EPISODE_ZOOM_TOOL:
        raise ConfigError(
            f"{where}: family {family} renders only the {EPISODE_ZOOM_TOOL} tool (as its own zoom tool), "
            f"not {call.get('name')!r}"
        )
    bbox = (call.get("arguments") or {}).get("bbox")
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        raise ContractError(
            f"{where}: {EPISODE_ZOOM_TOOL} call needs arguments.bbox [x1, y1, x2, y2], got {bbox!r}"
        )
    return list(bbox)


def _check_zoom_tools(tools: list[dict[str, Any]], family: str) -> None:
    names = [(t.get("function") or t).get("name") for t in tools]
    if names != [EPISODE_ZOOM_TOOL]:
        raise ConfigError(
            f"family {family} declares only its own zoom tool in place of {EPISODE_ZOOM_TOOL}; "
            f"meta.tools names {names}"
        )


def _image_size(meta: dict[str, Any], where: str) -> tuple[int, int]:
    size = meta.get("image_size")
    if not isinstance(size, list | tuple) or len(size) != 2 or min(size) <= 0:
        raise ContractError(
            f"{where}: meta.image_size [width, height] is needed to convert the bbox between pixels and "
            f"0-1000 coordinates, got {size!r}"
        )
    return int(size[0]), int(size[1])


IMAGE_CACHE_BYTES = 256 * 2**20
"""Decoded images kept in memory for later renders (a job renders the same attack image in every run)."""
_image_cache: dict[tuple[str, int, int], Any] = {}
_image_cache_bytes = 0


def _load_image(root: Path, relpath: str, where: str) -> Any:
    """Open an image (path relative to the results root) as an RGB PIL image (a copy of a decoded image
    kept by path, size and mtime while IMAGE_CACHE_BYTES lasts)."""
    global _image_cache_bytes
    from PIL import Image

    path = root / relpath
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _image_cache:
            return _image_cache[key].copy()
        with Image.open(path) as im:
            image = im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{where}: image {path} not found") from None
    except OSError as exc:
        raise DataError(f"{where}: image {path} cannot be read ({exc})") from None
    size = image.width * image.height * 3
    if _image_cache_bytes + size <= IMAGE_CACHE_BYTES:
        _image_cache[key] = image.copy()
        _image_cache_bytes += size
    return image


# --------------------------------------------------------------------------- Qwen families

# DeepEyes' prompts, verbatim (the study must show the model what it was trained and evaluated with).
# Source: github.com/Visual-Agent/DeepEyes at commit 6c5e79671dbff958a6f9d44848ba2ca87854f0b0,
# verl/workers/agent/envs/mm_process_engine/prompt.py: PROMPT.SYSTEM_PROMPT_V2 and PROMPT.USER_PROMPT_V2,
# which eval/eval_vstar.py uses unchanged (as instruction_prompt_system and USER_PROMPT_V2). The tool
# schema's `"required":["bbox"]` (the property is `bbox_2d`) is a bug of the original, kept as it is. The
# lines "**Example**:", "<tool_call>" and the example call end in two spaces in the original too.
DEEPEYES_SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "\n"
    "# Tools\n"
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type":"function","function":{"name":"image_zoom_in_tool","description":"Zoom in on a specific region '
    'of an image by cropping it based on a bounding box (bbox) and an optional object label.",'
    '"parameters":{"type":"object","properties":{"bbox_2d":{"type":"array","items":{"type":"number"},'
    '"minItems":4,"maxItems":4,"description":"The bounding box of the region to zoom in, as [x1, y1, x2, '
    'y2], where (x1, y1) is the top-left corner and (x2, y2) is the bottom-right corner."},"label":'
    '{"type":"string","description":"The name or label of the object in the specified bounding box '
    '(optional)."}},"required":["bbox"]}}}\n'
    "</tools>\n"
    "\n"
    "# How to call a tool\n"
    "Return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>\n"
    "\n"
    "**Example**:  \n"
    "<tool_call>  \n"
    '{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 100, 200], "label": "the apple on '
    'the desk"}}  \n'
    "</tool_call>"
)
DEEPEYES_USER_PROMPT = (
    "\nThink first, call **image_zoom_in_tool** if needed, then answer. Format strictly as:  "
    "<think>...</think>  <tool_call>...</tool_call> (if tools needed)  <answer>...</answer> "
)
DEEPEYES_TOOL_NAME = "image_zoom_in_tool"
DEEPEYES_TOOL_PARTS: tuple[str, ...] = (
    "call **image_zoom_in_tool** if needed, ",
    "<tool_call>...</tool_call> (if tools needed)  ",
)
"""The parts of DEEPEYES_USER_PROMPT that are about the tool: conditions without tools get the prompt
without them (the same answer format, `<think>` then `<answer>`, and nothing about a tool)."""
DEEPEYES_ANSWER_FORMAT = DEEPEYES_USER_PROMPT
for _part in DEEPEYES_TOOL_PARTS:
    DEEPEYES_ANSWER_FORMAT = DEEPEYES_ANSWER_FORMAT.replace(_part, "")
DEEPEYES_CALL_REASONING = (
    "<think>The text in the image is what I need to read. I will zoom in on it to see it clearly.</think>"
)
"""The `<think>` block before DeepEyes' scripted zoom call: its format asks for reasoning before a call."""

# Qwen3-VL's zoom tool as Qwen-Agent declares it (the tool the "think with images" cookbook,
# github.com/QwenLM/Qwen3-VL cookbooks/think_with_images.ipynb, gives the model). Source:
# github.com/QwenLM/Qwen-Agent at commit 31a4d36d123688581a9e9744427272b33ce940e0,
# qwen_agent/tools/image_zoom_in_qwen3vl.py (ImageZoomInToolQwen3VL: name, description, parameters),
# rendered into the system prompt by qwen_agent/llm/fncall_prompts/nous_fncall_prompt.py, whose
# FN_CALL_TEMPLATE is the Hermes section of FamilyAdapter.tool_prompt. `bbox_2d` is in relative
# coordinates, 0-1000 of the image's width and height (the cookbook's note; the tool maps it back).
QWEN3_VL_ZOOM_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "image_zoom_in_tool",
        "description": (
            "Zoom in on a specific region of an image by cropping it based on a bounding box (bbox) and an "
            "optional object label"
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "bbox_2d": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 4,
                    "maxItems": 4,
                    "description": (
                        "The bounding box of the region to zoom in, as [x1, y1, x2, y2], where (x1, y1) "
                        "is the top-left corner and (x2, y2) is the bottom-right corner"
                    ),
                },
                "label": {
                    "type": "string",
                    "description": "The name or label of the object in the specified bounding box",
                },
                "img_idx": {
                    "type": "number",
                    "description": "The index of the zoomed-in image (starting from 0)",
                },
            },
            "required": ["bbox_2d", "label", "img_idx"],
        },
    },
}


def relative_bbox(bbox: list[float], image_size: list[int] | tuple[int, int]) -> list[int]:
    """Absolute pixel box [x1, y1, x2, y2] of an image of size (width, height) -> integer 0-1000
    coordinates (Qwen3-VL grounding), rounded half up and clamped to [0, 1000]."""
    width, height = image_size
    scale = (1000 / width, 1000 / height, 1000 / width, 1000 / height)
    return [min(1000, max(0, math.floor(v * s + 0.5))) for v, s in zip(bbox, scale, strict=True)]


class Qwen25VLAdapter(FamilyAdapter):
    """Qwen2.5-VL: the Hermes tool format (prompted, as Qwen's docs do), ChatML template."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class DeepEyesAdapter(Qwen25VLAdapter):
    """DeepEyes (Qwen2.5-VL weights): its own system prompt, zoom tool, user suffix and tool turn.

    As DeepEyes' eval does: the system prompt is DEEPEYES_SYSTEM_PROMPT (its tool section follows the
    episode's system text), the call is `image_zoom_in_tool` with `bbox_2d` in absolute pixels, preceded by
    a `<think>` block (DEEPEYES_CALL_REASONING), the user question ends with DEEPEYES_USER_PROMPT, and the
    tool result is a user turn: text `<tool_response>`, the result's parts, DEEPEYES_USER_PROMPT again, text
    `</tool_response>` (parts joined with nothing between). Conditions without tools get the same system
    text without the tool section and the same answer format without its tool parts
    (DEEPEYES_ANSWER_FORMAT), so that direct-vs-tool does not also change the answer format.
    """

    family = "deepeyes"
    call_reasoning = DEEPEYES_CALL_REASONING
    tool_format_parts = DEEPEYES_TOOL_PARTS

    def answer_format(self, framed: bool) -> str:
        return DEEPEYES_USER_PROMPT if framed else DEEPEYES_ANSWER_FORMAT

    def tool_prompt(self, tools: list[dict[str, Any]]) -> str:
        _check_zoom_tools(tools, self.family)
        return DEEPEYES_SYSTEM_PROMPT.removeprefix(DEFAULT_SYSTEM_PROMPT + "\n\n")

    def call_payload(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"bbox_2d": _zoom_bbox(call, self.family, where)}
        if "label" in call["arguments"]:
            arguments["label"] = call["arguments"]["label"]
        return {"name": DEEPEYES_TOOL_NAME, "arguments": arguments}

    def episode_call(self, call: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        if call.get("name") != DEEPEYES_TOOL_NAME:
            return super().episode_call(call, meta)
        arguments = dict(call["arguments"])
        arguments["bbox"] = arguments.pop("bbox_2d", arguments.get("bbox"))
        return {"name": EPISODE_ZOOM_TOOL, "arguments": arguments}

    def tool_turn(self, content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"type": "text", "text": "<tool_response>"},
            *content,
            {"type": "text", "text": DEEPEYES_USER_PROMPT},
            {"type": "text", "text": "</tool_response>"},
        ]


class Qwen3VLAdapter(FamilyAdapter):
    """Qwen3-VL: Qwen-Agent's `image_zoom_in_tool` (relative 0-1000 `bbox_2d`, `label`, `img_idx`).

    The episode's absolute pixel bbox is converted with `meta.image_size`; the box is on the first image
    (`img_idx` 0, the attack image); `label` is the call's own if it has one, else `zoom_label`.
    Arguments are written in the order the model writes them in the cookbook (label, bbox_2d, img_idx).
    """

    family = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    zoom_label: ClassVar[str] = "the text in the image"

    def tool_prompt(self, tools: list[dict[str, Any]]) -> str:
        _check_zoom_tools(tools, self.family)
        return super().tool_prompt([QWEN3_VL_ZOOM_TOOL])

    def call_payload(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
        bbox = _zoom_bbox(call, self.family, where)
        size = _image_size(meta, where)
        arguments = call["arguments"]
        return {
            "name": QWEN3_VL_ZOOM_TOOL["function"]["name"],
            "arguments": {
                "label": arguments.get("label", self.zoom_label),
                "bbox_2d": relative_bbox(bbox, size),
                "img_idx": arguments.get("img_idx", 0),
            },
        }

    def episode_call(self, call: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        """`image_zoom_in_tool` -> `zoom_in` with `bbox` in absolute pixels (floats; clamping and
        rounding are the caller's), as Qwen-Agent's tool maps `bbox_2d` back; `label`, `img_idx` kept."""
        if call.get("name") != QWEN3_VL_ZOOM_TOOL["function"]["name"]:
            return super().episode_call(call, meta)
        arguments = dict(call["arguments"])
        width, height = _image_size(meta, "image_zoom_in_tool call")
        box = arguments.pop("bbox_2d")
        arguments["bbox"] = [v * s / 1000 for v, s in zip(box, (width, height, width, height), strict=True)]
        return {"name": EPISODE_ZOOM_TOOL, "arguments": arguments}


# --------------------------------------------------------------------------- Hermes-convention families


class LlavaAdapter(FamilyAdapter):
    """LLaVA-1.5 (llava-hf): the Hermes tool rendering in a "USER: ... ASSISTANT:" template."""

    family = "llava"
    model_types = ("llava",)


class LlavaOnevisionAdapter(FamilyAdapter):
    """LLaVA-OneVision (llava-hf): its template shows a turn's images before its text, so the returned
    image precedes the `<tool_response>` tags; a prompt's images go to the processor together (a prompt
    with several images uses base image features only, without anyres tiles)."""

    family = "llava_onevision"
    model_types = ("llava_onevision",)
    images_first = True
    nested_images = True


class InternVLAdapter(FamilyAdapter):
    """InternVL3 in the transformers-native format (`OpenGVLab/InternVL3-*-hf`, model_type `internvl`)."""

    family = "internvl"
    model_types = ("internvl",)


class Gemma3Adapter(FamilyAdapter):
    """Gemma 3: the template folds the system prompt into the first user turn and requires alternating
    user/model turns (episodes alternate: the tool turn is a user turn); images grouped per prompt."""

    family = "gemma3"
    model_types = ("gemma3",)
    nested_images = True


class Idefics3Adapter(FamilyAdapter):
    """Idefics3: decoder layers at `model.text_model.layers`; images grouped per prompt."""

    family = "idefics3"
    model_types = ("idefics3",)
    layers_path = "model.text_model.layers"
    nested_images = True


class SmolVLMAdapter(Idefics3Adapter):
    """SmolVLM: model_type `smolvlm` (SmolVLM2) or `idefics3` (SmolVLM v1 checkpoints)."""

    family = "smolvlm"
    model_types = ("smolvlm", "idefics3")


ADAPTERS: dict[str, type[FamilyAdapter]] = {
    adapter.family: adapter
    for adapter in (
        Qwen25VLAdapter,
        LlavaAdapter,
        DeepEyesAdapter,
        Qwen3VLAdapter,
        LlavaOnevisionAdapter,
        InternVLAdapter,
        Gemma3Adapter,
        Idefics3Adapter,
        SmolVLMAdapter,
    )
}
"""Registry: family name -> adapter class."""


def get_adapter(family: str) -> FamilyAdapter:
    """The adapter for `family`; an unknown family raises ConfigError listing the known ones."""
    try:
        return ADAPTERS[family]()
    except KeyError:
        raise ConfigError(
            f"model family {family!r} is unknown; known families: {', '.join(sorted(ADAPTERS))}"
        ) from None
