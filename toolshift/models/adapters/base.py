"""The base family adapter, the default (Hermes / Qwen) rendering and the helpers the families share.

An adapter knows (1) where the text decoder's layers are, for the residual-stream hooks, (2) how to
render a model-agnostic episode (see the episodes contract) into the chat messages the processor's
template expects: the tool prompt, the tool call and the tool turn, and (3) how the rendered prompts and
their images are handed to the processor. The families and the registry are in the package
(`toolshift.models.adapters`), whose docstring says which family does what.

The default rendering is the Hermes / Qwen convention, also what Qwen-Agent's `NousFnCallPrompt` writes:
the tool spec goes into the system prompt, an assistant tool call becomes `<tool_call>{json}</tool_call>`
text and a tool turn becomes a *user* turn `<tool_response>` image(s) `</tool_response>`, which works with
chat templates that have no tool role.

Episodes name the zoom tool `zoom_in` with `bbox` in absolute pixels of the original image; an adapter
with a native zoom tool maps that call onto it (`zoom_bbox`, `check_zoom_tools`, `episode_image_size`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from toolshift.errors import ConfigError, ContractError
from toolshift.models.adapters.imaging import IMAGE_CACHE_BYTES  # noqa: F401 (re-exported)
from toolshift.models.adapters.imaging import load_episode_image as _load_image
from toolshift.models.token_counts import Rendered, TokenCounter, fit_text, token_counter

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
    protocol_source: ClassVar[str] = "prompted: the Hermes / Qwen convention (no trained tool format)"
    """Where the family's tool protocol comes from (repository: files @ commit), for the provenance page."""
    stop_strings: ClassVar[tuple[str, ...]] = ()
    """Strings generation stops after (included in the response), as the family's own evaluation stops
    (e.g. Thyme at `</code>`); empty: only the end-of-turn tokens stop it."""
    turn_end: ClassVar[str] = "<|im_end|>\n"
    """What the chat template writes after a turn: cut from a prompt whose last turn the model continues."""

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

    def user_content(
        self, content: list[dict[str, Any]], framed: bool, meta: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The question turn's content parts (the episode's last user turn): `answer_format(framed)`
        appended to its last text part (`meta`: the episode's, for families whose question wrapper needs
        it)."""
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
        self, episode: dict[str, Any], results_root: str | os.PathLike[str], processor: Any = None
    ) -> tuple[list[ChatMessage], list[Any]]:
        """Render an episode into (chat messages for the processor's template, PIL images in order).

        Image parts become `{"type": "image"}` placeholders; the images are returned separately, in
        the order the template shows them, to be passed to the processor as `images=`. `processor` (the
        model's) is needed by the conditions fitted to token counts (`render`).
        """
        rendered = self.render(episode, results_root, processor)
        return rendered.messages, rendered.images

    def render(
        self, episode: dict[str, Any], results_root: str | os.PathLike[str], processor: Any = None
    ) -> Rendered:
        """`render_messages`, with the attack text T and how many images come before it (the token counts
        of toolshift.models.token_counts).

        The question turn is the last user turn with a text part; the family's answer format is appended to
        it. Two conditions are fitted to the family's tokens, which needs `processor`: `image_turn`'s
        assistant line (`meta.pad_to_call`: NEUTRAL_TEXT of as many tokens as the call's assistant text in
        `tool`; without a processor the episode's stand-in line, as long in characters as the Hermes call,
        is kept) and `text_trail_long`'s tool turn (`meta.tool_result`: the `text_trail` line and
        NEUTRAL_TEXT, as many tokens as the image `meta.pad_to_image` costs; ContractError without a
        processor).
        """
        where = f"episode {episode.get('prompt_id', '?')}/{episode.get('condition', '?')}"
        root = Path(results_root)
        meta = episode.get("meta") or {}
        tools = meta.get("tools") or []
        framed = bool(tools)
        messages: list[ChatMessage] = []
        counter = token_counter(processor, self) if processor is not None else None

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

        question = _question_turn(episode["messages"])
        instruction = None
        last_call: dict[str, Any] | None = None
        for i, msg in enumerate(episode["messages"]):
            role = msg.get("role")
            if role == "system":
                content = parts(msg.get("content"))
                if i == 0:
                    content = self.system_content(content, tools)
                messages.append({"role": "system", "content": content})
            elif role == "user":
                content = [
                    {**p, "input": True} if p["type"] == "image" else p for p in parts(msg.get("content"))
                ]
                if i == question:
                    instruction = next(p["text"] for p in reversed(content) if p["type"] == "text")
                    content = self.user_content(content, framed, meta)
                messages.append({"role": "user", "content": content})
            elif role == "assistant":
                content = parts(msg.get("content"))
                tool_calls = msg.get("tool_calls") or []
                if msg.get("verbatim"):  # the model's own text, its calls written in it as it wrote them
                    last_call = tool_calls[-1] if tool_calls else last_call
                    self.add_assistant(messages, content)
                    continue
                calls = [self.tool_call_text(c, meta, where) for c in tool_calls]
                if calls:
                    last_call = tool_calls[-1]
                    text = "\n".join(calls)
                    if content:
                        text = "\n" + text
                    elif self.call_reasoning:
                        text = self.call_reasoning + "\n" + text
                    content.append({"type": "text", "text": text})
                elif meta.get("pad_to_call") and counter is not None:
                    target = counter.text_tokens(self.call_turn_text(meta["pad_to_call"], meta, where))
                    content = [{"type": "text", "text": fit_text(counter, target)}]
                messages.append({"role": "assistant", "content": content})
            elif role == "tool":
                content = parts(msg.get("content"))
                self.add_tool_result(messages, msg, content, last_call, episode, root, where, counter)
            else:
                raise ContractError(f"{where}: message {i} has role {role!r}")
        if framed and (not messages or messages[0]["role"] != "system"):
            system = [{"type": "text", "text": DEFAULT_SYSTEM_PROMPT}]
            messages.insert(0, {"role": "system", "content": self.system_content(system, tools)})
        messages = self.finish_messages(messages, episode, root, where)
        if self.images_first:
            messages = [{**m, "content": _images_first(m["content"])} for m in messages]
        images, before = [], 0
        for message in messages:
            for part in message["content"]:
                if part["type"] == "image":
                    image = part.pop("image", None)
                    if image is None:
                        image = _load_image(root, part.pop("path"), where)
                    if part.pop("input", False):
                        image = self.prepare_input(image, meta)
                    images.append(image)
                elif instruction is not None and part["type"] == "text" and instruction in part["text"]:
                    before = len(images)
        return Rendered(messages, images, instruction, before, where)

    def call_turn_text(self, call: dict[str, Any], meta: dict[str, Any], where: str) -> str:
        """The text of the assistant turn that makes `call` in `tool` (the family's reasoning, then the
        call): what `image_turn`'s neutral line is as long as."""
        text = self.tool_call_text(call, meta, where)
        return self.call_reasoning + "\n" + text if self.call_reasoning else text

    def _padded_trail(
        self, line: str, episode: dict[str, Any], root: Path, counter: TokenCounter | None, where: str
    ) -> str:
        """The `text_trail_long` tool turn: `line` padded with NEUTRAL_TEXT to the tokens of the image it
        replaces (`meta.pad_to_image`, in a prompt with one image more than the episode's)."""
        meta = episode.get("meta") or {}
        if counter is None:
            raise ContractError(
                f"{where}: text_trail_long is padded to the tokens of the image it replaces, which needs the "
                "model's processor (the api backend has none: leave text_trail_long out of its conditions)"
            )
        relpath = meta.get("pad_to_image")
        if not isinstance(relpath, str):
            raise ContractError(f"{where}: text_trail_long needs meta.pad_to_image, the image it replaces")
        from toolshift.datasets.images import image_size

        n_images = 1 + sum(
            p.get("type") == "image"
            for m in episode["messages"]
            if isinstance(m.get("content"), list)
            for p in m["content"]
        )
        return fit_text(counter, counter.image_tokens(image_size(root / relpath), n_images), head=line)

    def finish_messages(
        self, messages: list[ChatMessage], episode: dict[str, Any], root: Path, where: str
    ) -> list[ChatMessage]:
        """The rendered messages before their images are loaded (a family may still change them)."""
        return messages

    def add_assistant(self, messages: list[ChatMessage], content: list[dict[str, Any]]) -> None:
        """Append a verbatim assistant turn (the free loop's record of what the model wrote)."""
        messages.append({"role": "assistant", "content": content})

    def add_tool_result(
        self,
        messages: list[ChatMessage],
        message: dict[str, Any],
        content: list[dict[str, Any]],
        call: dict[str, Any] | None,
        episode: dict[str, Any],
        root: Path,
        where: str,
        counter: TokenCounter | None = None,
    ) -> None:
        """Append the rendering of one tool turn (`content`: its parts; `call`: the call it answers): a user
        turn `tool_turn(content)`, its content the `text_trail` line in `text_trail` episodes (padded to the
        replaced image's tokens in `text_trail_long`, which needs the processor's `counter`)."""
        meta = episode.get("meta") or {}
        result = meta.get("tool_result")
        if result in ("text_trail", "text_trail_long") and call is not None:
            line = self.text_trail_text(call, meta, where)
            if result == "text_trail_long":
                line = self._padded_trail(line, episode, root, counter, where)
            content = [{"type": "text", "text": line}]
        messages.append({"role": "user", "content": self.tool_turn(content)})

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        """An image of a user turn as the family's own evaluation hands it to the processor (e.g. resized
        first); the default hands it over as it is."""
        return image

    def chat_prompt(self, processor: Any, messages: list[ChatMessage]) -> str:
        """The prompt text of rendered messages: the chat template with the generation prompt, or, where the
        last turn is the assistant's (a tool result that continues the turn), without it and with that
        turn left open (`turn_end` cut), as Thyme's evaluation does."""
        if not messages or messages[-1]["role"] != "assistant":
            return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        if not text.endswith(self.turn_end):
            raise ContractError(
                f"{self.family}: the chat template does not end the continued assistant turn with "
                f"{self.turn_end!r}"
            )
        return text[: -len(self.turn_end)]

    def system_content(
        self, content: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The first system turn's parts: with the tool prompt appended where the episode offers tools."""
        return self._with_tools(content, tools) if tools else content

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


def _question_turn(messages: list[dict[str, Any]]) -> int:
    """The index of the question turn: the last user message with a text part (-1 if none), not counting
    the turns a free loop added (`loop`: e.g. OpenThinkIMG's re-ask)."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        content = message.get("content")
        if (
            message.get("role") == "user"
            and not message.get("loop")
            and (isinstance(content, str) or any(p.get("type") == "text" for p in content or []))
        ):
            return i
    return -1


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


def zoom_bbox(call: dict[str, Any], family: str, where: str) -> list[float]:
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


def check_zoom_tools(tools: list[dict[str, Any]], family: str) -> None:
    names = [(t.get("function") or t).get("name") for t in tools]
    if names != [EPISODE_ZOOM_TOOL]:
        raise ConfigError(
            f"family {family} declares only its own zoom tool in place of {EPISODE_ZOOM_TOOL}; "
            f"meta.tools names {names}"
        )


def episode_image_size(meta: dict[str, Any], where: str) -> tuple[int, int]:
    size = meta.get("image_size")
    if not isinstance(size, list | tuple) or len(size) != 2 or min(size) <= 0:
        raise ContractError(
            f"{where}: meta.image_size [width, height] is needed to convert the bbox between pixels and "
            f"0-1000 coordinates, got {size!r}"
        )
    return int(size[0]), int(size[1])
