"""Model-family adapters: the little that differs between VLM families on the generic HF path.

Everything else goes through `AutoProcessor`, `AutoModelForImageTextToText` and the processor's own
chat template. An adapter knows (1) where the text decoder's layers are, for the residual-stream hooks,
and (2) how to render a model-agnostic episode (see the episodes contract) into the chat messages the
processor's template expects. The default rendering is the Hermes / Qwen / DeepEyes convention: the
tool spec goes into the system prompt, an assistant tool call becomes `<tool_call>{json}</tool_call>`
text and a tool turn becomes a *user* turn `<tool_response>` image(s) `</tool_response>`, which works
with chat templates that have no tool role.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from toolshift.errors import ConfigError, ContractError, DataError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

ChatMessage = dict[str, Any]


class FamilyAdapter:
    """Base adapter: Hermes-style tool rendering and a generic search for the decoder layers."""

    family: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    """`config.model_type` values this adapter accepts (empty: any)."""

    # ----------------------------------------------------------------- decoder layers

    def decoder_layers(self, model: Any) -> Any:
        """The text decoder's `nn.ModuleList` of layers (the residual stream the hooks act on)."""
        import torch

        candidates = (
            "model.language_model.layers",  # transformers 5.x composite VLMs
            "language_model.model.layers",  # 4.x layout
            "model.language_model.model.layers",
            "language_model.layers",
            "model.layers",
        )
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

    # ----------------------------------------------------------------- prompts

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

    def tool_call_text(self, call: dict[str, Any]) -> str:
        """One structured tool call rendered as the text the model would have written."""
        payload = {"name": call["name"], "arguments": call["arguments"]}
        return "<tool_call>\n" + json.dumps(payload, ensure_ascii=False) + "\n</tool_call>"

    # ----------------------------------------------------------------- episodes

    def render_messages(
        self, episode: dict[str, Any], results_root: str | os.PathLike[str]
    ) -> tuple[list[ChatMessage], list[Any]]:
        """Render an episode into (chat messages for the processor's template, PIL images in order).

        Image parts become `{"type": "image"}` placeholders; the images are returned separately, in
        the order they appear, to be passed to the processor as `images=`.
        """
        where = f"episode {episode.get('prompt_id', '?')}/{episode.get('condition', '?')}"
        root = Path(results_root)
        tools = (episode.get("meta") or {}).get("tools") or []
        messages: list[ChatMessage] = []
        images: list[Any] = []

        def parts(content: Any) -> list[dict[str, Any]]:
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            out = []
            for part in content or []:
                if part.get("type") == "image":
                    images.append(_load_image(root, part, where))
                    out.append({"type": "image"})
                elif part.get("type") == "text":
                    out.append({"type": "text", "text": part["text"]})
                else:
                    raise ContractError(f"{where}: content part of type {part.get('type')!r}")
            return out

        for i, msg in enumerate(episode["messages"]):
            role = msg.get("role")
            if role == "system":
                content = parts(msg.get("content"))
                if tools and i == 0:
                    content = self._with_tools(content, tools)
                messages.append({"role": "system", "content": content})
            elif role == "user":
                messages.append({"role": "user", "content": parts(msg.get("content"))})
            elif role == "assistant":
                content = parts(msg.get("content"))
                calls = [self.tool_call_text(c) for c in msg.get("tool_calls") or []]
                if calls:
                    prefix = "\n" if content else ""
                    content.append({"type": "text", "text": prefix + "\n".join(calls)})
                messages.append({"role": "assistant", "content": content})
            elif role == "tool":
                content = [
                    {"type": "text", "text": "<tool_response>\n"},
                    *parts(msg.get("content")),
                    {"type": "text", "text": "\n</tool_response>"},
                ]
                messages.append({"role": "user", "content": content})
            else:
                raise ContractError(f"{where}: message {i} has role {role!r}")
        if tools and (not messages or messages[0]["role"] != "system"):
            system = [{"type": "text", "text": DEFAULT_SYSTEM_PROMPT}]
            messages.insert(0, {"role": "system", "content": self._with_tools(system, tools)})
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


class Qwen25VLAdapter(FamilyAdapter):
    """Qwen2.5-VL (and DeepEyes, which is Qwen2.5-VL weights): Hermes tool format, ChatML template."""

    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class LlavaAdapter(FamilyAdapter):
    """LLaVA-1.5 (llava-hf): the same Hermes-style tool rendering in a "USER: ... ASSISTANT:" template."""

    family = "llava"
    model_types = ("llava",)


ADAPTERS: dict[str, type[FamilyAdapter]] = {
    Qwen25VLAdapter.family: Qwen25VLAdapter,
    LlavaAdapter.family: LlavaAdapter,
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


def _load_image(root: Path, part: dict[str, Any], where: str) -> Any:
    """Open an image part (path relative to the results root) as an RGB PIL image."""
    from PIL import Image

    path = root / part["path"]
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{where}: image {path} not found") from None
    except OSError as exc:
        raise DataError(f"{where}: image {path} cannot be read ({exc})") from None
