"""The base of the families rendered in their own tool protocol, as their own evaluation code runs them:
Chain-of-Focus, Mini-o3, Pixel-Reasoner, Thyme, DeepEyesV2 and OpenThinkIMG (one module each).

Such a family replaces the episode's generic tool framing with its own, whole: its system prompt (the
family's text, not the episode's system text with a tool section), its question wrapper, its call syntax,
its coordinates, what its tool returns (its own crop post-processing, run on the episode's attack image)
and how the result comes back (its own turn, wrapper and numbering). Every condition keeps the family's
answer format; the conditions without tools get the family's own tool-free prompts where it has them, else
its prompts with the tool parts removed.

What the episode scripts is mapped onto the family's protocol:

- the `zoom_in(bbox)` call (bbox in pixels of the original image) becomes the call the family's model
  writes for that region (`scripted_call`), in the turn text it writes (`turn_text`);
- the tool turn's zoom image becomes what the family's own tool returns for that call (`execute`, on the
  attack image as the family's evaluation holds it), an override image is resized to that result's size
  (times its size over `meta.zoom_size`), and a `text_trail` turn puts the family's own line about the
  call (`trail_text`) where the image would be; `observation_turn` renders the result;
- a zoom image shown in a user turn (`image_no_tool` and the other zoom-without-tool conditions) is the same
  result image, so that those conditions show the pixels `tool` shows.

The free loop (`toolshift.inference.free_native`) reads a turn with `read_turn`, runs each accepted call with
`execute` and renders it with `observation_turn`; a call the family cannot run is malformed (its reason
recorded) and answered as the original would answer it (`on_malformed`). Turns the loop records are
re-rendered verbatim (`verbatim` assistant turns; tool turns with an `observation` record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from toolshift.errors import ContractError
from toolshift.models.adapters.base import (
    EPISODE_ZOOM_TOOL,
    ChatMessage,
    check_zoom_tools,
    episode_image_size,
    zoom_bbox,
)
from toolshift.models.adapters.imaging import load_episode_image as _load_image
from toolshift.models.adapters.imaging import scaled_like
from toolshift.models.adapters.qwen2_5_vl import Qwen25VLAdapter
from toolshift.models.token_counts import Rendered, TokenCounter, fit_text

IMAGE_PATH_KEY = "_image_path"
"""A render-local meta key: the attack image's path (relative to the results root)."""


@dataclass
class Observation:
    """What one call returns: images, a result text (a tool's message, stdout), an error (the failure a
    family shows, e.g. stderr), or a `trail` line standing where the image would be (`text_trail`)."""

    images: list[Any] = field(default_factory=list)
    text: str = ""
    error: str | None = None
    trail: str | None = None
    tool: str = ""
    """The tool that answered (OpenThinkIMG names it in its observation)."""


@dataclass(frozen=True)
class WrittenCall:
    """One call as the family's model writes it: the family's tool `name`, its `arguments` (a JSON object,
    or `{"code": ...}`), the call's text, and whether it follows a closed `</answer>`."""

    name: str
    arguments: dict[str, Any]
    text: str = ""
    after_answer: bool = False


@dataclass
class Session:
    """What the family's tool holds over one episode: the attack image as on disk (`original`) and as the
    family's evaluation holds it (`held`), the images returned so far, the interpreter's names (code
    families), the rounds so far (`turn`: tool rounds, failed ones included) and the last block's crops."""

    original: Image.Image
    held: Image.Image
    meta: dict[str, Any]
    image_path: str
    question: str = ""
    """The episode's question text (OpenThinkIMG asks it again after a turn without an action)."""
    observations: list[Image.Image] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    turn: int = 0
    crops: list[list[int]] = field(default_factory=list)
    """The boxes (pixels of the attack image) the last code block cropped, for the call's record."""


@dataclass
class TurnRead:
    """One generated turn read in the family's protocol: the `calls` to run, the `malformed` blocks
    (toolshift.episodes.toolcalls.MalformedCall), `final` (the turn ends the episode: an answer, or what
    the original takes as the end), and `reprompt` (a user text the original sends instead of a tool
    result when the turn has neither: OpenThinkIMG re-asks the question)."""

    calls: list[WrittenCall] = field(default_factory=list)
    malformed: list[Any] = field(default_factory=list)
    final: bool = False
    reprompt: str | None = None


class CallRejected(Exception):
    """The family's tool cannot run a written call: a one-line reason."""


class NativeAdapter(Qwen25VLAdapter):
    """A family in its own tool protocol (see the module docstring); subclasses fill in the protocol."""

    tool_name: ClassVar[str] = ""
    """The name of the family's call in the episodes' structured form."""
    question_text_first: ClassVar[bool] = False
    """The question turn shows the text before the image(s) (OpenThinkIMG): every image comes after T."""

    # ----------------------------------------------------------------- what a family defines

    def system_prompt(self, framed: bool) -> str | None:
        """The system text (`framed`: the episode offers tools); None: no system turn of its own."""
        raise NotImplementedError

    def question(self, text: str, framed: bool, meta: dict[str, Any]) -> str:
        """The question turn's text around the episode's text `text`."""
        raise NotImplementedError

    def scripted_call(self, bbox: list[float], meta: dict[str, Any]) -> WrittenCall:
        """The call the family's model writes to zoom into `bbox` (pixels of the original image)."""
        raise NotImplementedError

    def turn_text(self, call: WrittenCall) -> str:
        """The assistant turn the family's model writes around `call` (its reasoning, then the call)."""
        raise NotImplementedError

    def read_turn(self, text: str, session: Session) -> TurnRead:
        """The calls in one generated turn, read as the family's evaluation reads them."""
        raise NotImplementedError

    def execute(self, call: WrittenCall, session: Session) -> Observation:
        """What the family's tool returns for `call` (CallRejected: it cannot run it)."""
        raise NotImplementedError

    def on_malformed(self, reason: str, call: WrittenCall | None, session: Session) -> Observation | None:
        """What the original answers a call it cannot run (`call`: None where the turn's call could not be
        read) with; None: the turn ends the episode."""
        return None

    def observation_turn(self, messages: list[ChatMessage], obs: Observation, turn: int) -> None:
        """Append the rendering of `obs`, the result of tool round `turn` (0-based), to `messages`."""
        raise NotImplementedError

    def trail_text(self, call: WrittenCall, meta: dict[str, Any]) -> str:
        """The `text_trail` line: the family's tool and the region as the call wrote it."""
        from toolshift.episodes.build import text_trail_line

        box = call.arguments.get("bbox_2d", call.arguments.get("bbox"))
        return text_trail_line(list(box) if box is not None else [], call.name)

    def prepare_input(self, image: Any, meta: dict[str, Any]) -> Any:
        """The attack image as the family's evaluation hands it to the model (`held` in a Session)."""
        return image

    def structured(self, call: WrittenCall, session: Session) -> dict[str, Any]:
        """The episodes' structured form of a written call."""
        return {"name": self.tool_name or call.name, "arguments": dict(call.arguments)}

    def writes_call(self, text: str) -> bool:
        """Whether a reply holds a call the family's evaluation would run (or try to, malformed): what a
        non-answer rule needs beyond the `<tool_call>` syntax (`<grounding>`, `<code>`, JSON actions)."""
        blank = Image.new("RGB", (1, 1))
        read = self.read_turn(text, Session(blank, blank, {}, ""))
        return bool(read.calls or read.malformed)

    # ----------------------------------------------------------------- sessions

    def session(self, original: Image.Image, meta: dict[str, Any], image_path: str) -> Session:
        """A fresh tool session on the attack image `original` (RGB, as on disk)."""
        return Session(original, self.prepare_input(original, meta), meta, image_path)

    # ----------------------------------------------------------------- rendering

    def render(self, episode: dict[str, Any], results_root: Any, processor: Any = None) -> Rendered:
        meta = dict(episode.get("meta") or {})
        meta[IMAGE_PATH_KEY] = _attack_path(episode)
        return super().render({**episode, "meta": meta}, results_root, processor)

    def system_content(
        self, content: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if tools:
            check_zoom_tools(tools, self.family)
        text = self.system_prompt(bool(tools))
        return [{"type": "text", "text": text}] if text is not None else []

    def user_content(
        self, content: list[dict[str, Any]], framed: bool, meta: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        content = list(content)
        for j in range(len(content) - 1, -1, -1):
            if content[j]["type"] == "text":
                content[j] = {"type": "text", "text": self.question(content[j]["text"], framed, meta or {})}
                return content
        return [*content, {"type": "text", "text": self.question("", framed, meta or {})}]

    def tool_call_text(
        self, call: dict[str, Any], meta: dict[str, Any] | None = None, where: str = "tool call"
    ) -> str:
        written = self.scripted_call(zoom_bbox(call, self.family, where), meta or {})
        return self.turn_text(written)

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
        meta = episode.get("meta") or {}
        record = message.get("observation")
        if isinstance(record, dict):  # a result the free loop recorded: its images are the family's own
            images = [p for p in content if p["type"] == "image"]
            obs = Observation(
                images=images,
                text=str(record.get("text", "")),
                error=record.get("error"),
                tool=str(record.get("tool", "")),
            )
            self.observation_turn(messages, obs, int(record.get("turn", 0)))
            return
        scripted = self._scripted(meta, root, where)
        if meta.get("tool_result") == "text_trail_long":  # the line, as long as the image it replaces
            line = self.trail_text(self._written(meta, where), meta)
            trail = self._long_trail(line, scripted, episode, counter, where)
            obs = Observation(text=scripted.text, trail=trail, tool=scripted.tool)
        elif meta.get("tool_result") == "text_trail":
            obs = Observation(
                text=scripted.text,
                trail=self.trail_text(self._written(meta, where), meta),
                tool=scripted.tool,
            )
        else:
            images = []
            for part in content:
                if part["type"] != "image":
                    continue
                if part["path"] == meta.get("override_image"):
                    reference = scripted.images[0].size if scripted.images else meta.get("zoom_size")
                    override = _load_image(root, part["path"], where)
                    images.append(
                        {"type": "image", "image": scaled_like(override, reference, meta.get("zoom_size"))}
                    )
                else:
                    images.extend({"type": "image", "image": im.copy()} for im in scripted.images)
            obs = Observation(images=images, text=scripted.text, error=scripted.error, tool=scripted.tool)
        self.observation_turn(messages, obs, 0)

    def finish_messages(
        self, messages: list[ChatMessage], episode: dict[str, Any], root: Path, where: str
    ) -> list[ChatMessage]:
        """A zoom image in a user turn (not the attack image, not an override) is the family's result."""
        meta = episode.get("meta") or {}
        attack = meta.get(IMAGE_PATH_KEY)
        if meta.get("bbox") is None:
            return messages
        for message in messages:
            if message["role"] != "user":
                continue
            new = []
            for part in message["content"]:
                if (
                    part["type"] == "image"
                    and "path" in part
                    and part["path"] not in (attack, meta.get("override_image"))
                ):
                    scripted = self._scripted(meta, root, where)
                    new.extend({"type": "image", "image": im.copy()} for im in scripted.images)
                else:
                    new.append(part)
            message["content"] = new
        return messages

    def _long_trail(
        self,
        line: str,
        scripted: Observation,
        episode: dict[str, Any],
        counter: TokenCounter | None,
        where: str,
    ) -> str:
        """`text_trail_long`'s line: padded with NEUTRAL_TEXT to the tokens of the image the family's own
        tool returns in `tool` (the result of the scripted call, not the episode's generic zoom)."""
        if counter is None:
            raise ContractError(
                f"{where}: text_trail_long is padded to an image's tokens, which needs the processor"
            )
        if not scripted.images:
            return line
        n_images = 1 + sum(
            p.get("type") == "image"
            for m in episode["messages"]
            if isinstance(m.get("content"), list)
            for p in m["content"]
        )
        return fit_text(counter, counter.image_tokens(scripted.images[0].size, n_images), head=line)

    def _written(self, meta: dict[str, Any], where: str) -> WrittenCall:
        bbox = meta.get("bbox")
        if bbox is None:
            raise ContractError(f"{where}: a scripted tool turn needs meta.bbox")
        return self.scripted_call(list(bbox), meta)

    def _scripted(self, meta: dict[str, Any], root: Path, where: str) -> Observation:
        """What the family's tool returns for the episode's scripted call (computed once per render)."""
        cached = meta.get("_scripted")
        if isinstance(cached, Observation):
            return cached
        episode_image_size(meta, where)
        path = meta.get(IMAGE_PATH_KEY)
        if not path:
            raise ContractError(f"{where}: no attack image in the question turn")
        session = self.session(_load_image(root, path, where), meta, path)
        try:
            obs = self.execute(self._written(meta, where), session)
        except CallRejected as exc:
            raise ContractError(
                f"{where}: family {self.family} cannot run its own scripted call ({exc})"
            ) from None
        meta["_scripted"] = obs
        return obs


def _attack_path(episode: dict[str, Any]) -> str | None:
    """The attack image: the first image of the first user turn that holds one."""
    for message in episode.get("messages") or []:
        if message.get("role") != "user" or isinstance(message.get("content"), str):
            continue
        for part in message.get("content") or []:
            if part.get("type") == "image":
                return part.get("path")
    return None


def structured_zoom(pixel_bbox: list[float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The episodes' `zoom_in` call for a box in pixels of the original image."""
    return {"name": EPISODE_ZOOM_TOOL, "arguments": {"bbox": list(pixel_bbox), **(extra or {})}}
