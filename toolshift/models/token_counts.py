"""Token counts of rendered prompts, and text fitted to a number of tokens, on a family's own processor.

Every response records how its prompt splits into tokens (toolshift.contracts.TOKEN_COLUMNS), read from the
engine's own prompt ids (hf: the processor's input ids; vllm: the prompt token ids, rendered alike):

- `n_images`: the images in the prompt;
- `n_visual_tokens`: the tokens the images add: the prompt's length minus that of the same prompt rendered
  without its images (so it holds everything an image brings: its patch tokens, the markers around them such
  as Qwen's `<|vision_start|>`/`<|vision_end|>` or Idefics3's tile markers, and the whitespace a processor
  inserts);
- `n_text_tokens`: `n_prompt_tokens - n_visual_tokens`;
- `n_after_instruction`: the prompt tokens after the end of the attack text T. T is the last text part of
  the question turn (the last user turn with text; `image_turn`'s zoom turn has none) as the episode holds it,
  before any family suffix (DeepEyes' answer format follows T and is counted after it), so the tokens after
  it include the rest of the turn, any later turns and the generation prompt (e.g. `<|im_start|>assistant`).
  T's tokens are found in the prompt ids (their last occurrence); a token straddling T's end counts as T's;
- `n_visual_after_instruction`: the visual tokens among them (the same count on the prompt without images,
  subtracted).

Where the attack text cannot be found in the rendered prompt (a template that rewrites a turn's text) or the
tokenizer gives no character offsets (a slow tokenizer), the two counts after the instruction are -1 and
the job logs a warning once; the other counts are always made.

`fit_text` writes neutral text of an exact number of tokens: `image_turn`'s assistant line (as many tokens
as the family's rendered tool call) and `text_trail_long`'s line (as many as the image it replaces,
`TokenCounter.image_tokens`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from toolshift.episodes.neutral import NEUTRAL_TEXT
from toolshift.errors import ContractError

log = logging.getLogger(__name__)

UNKNOWN = -1
"""A token count a backend cannot know (the API backend has no processor)."""

PAD_UNITS: tuple[str, ...] = (" .", ".", " ,", " -", " a", " the", "\n", " x", "!")
"""Candidate one-token units that `fit_text` appends to reach a count exactly (the first that adds exactly
one token per copy on the family's tokenizer)."""


@dataclass
class Rendered:
    """An episode rendered for a family: the chat messages, their images in order, the attack text T and
    how many of the images the template shows before T's end."""

    messages: list[dict[str, Any]]
    images: list[Any]
    instruction: str | None = None
    images_before: int = 0
    where: str = "episode"


@dataclass
class TokenCounter:
    """Counts tokens on one processor (see the module docstring); image costs are cached per size."""

    processor: Any
    adapter: Any
    """The family adapter (toolshift.models.adapters.FamilyAdapter) whose `processor_inputs` is used."""
    _images: dict[tuple[int, int, int], int] = field(default_factory=dict)
    _warned: bool = False

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def text_tokens(self, text: str) -> int:
        """Tokens of `text` alone, no special tokens added."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _template(self, messages: list[dict[str, Any]]) -> str:
        text = self.adapter.chat_prompt(self.processor, messages)  # a continued assistant turn stays open
        return self.adapter.processor_inputs(self.processor, [text], [])["text"][0]

    def image_tokens(self, size: tuple[int, int], n_images: int = 1) -> int:
        """The tokens an image of `size` adds to a prompt of `n_images` images on this processor: a one-turn
        chat with `n_images` blank images of that size, minus the chat without them, over `n_images` (some
        processors show each image of a multi-image prompt smaller: LLaVA-OneVision)."""
        key = (int(size[0]), int(size[1]), int(n_images))
        if key not in self._images:
            from PIL import Image

            blank = Image.new("RGB", key[:2], (255, 255, 255))
            lengths = []
            for n in (n_images, 0):
                parts = [{"type": "image"}] * n + [{"type": "text", "text": "x"}]
                text = self.processor.apply_chat_template(
                    [{"role": "user", "content": parts}], tokenize=False, add_generation_prompt=True
                )
                arguments = self.adapter.processor_inputs(self.processor, [text], [blank] * n)
                lengths.append(int(self.processor(**arguments, return_tensors="pt")["input_ids"].shape[1]))
            self._images[key] = round((lengths[0] - lengths[1]) / max(1, n_images))
        return self._images[key]

    def counts(self, prompt_ids: list[int], text: str, rendered: Rendered) -> dict[str, int]:
        """TOKEN_COLUMNS of a prompt: `prompt_ids` are the engine's (no padding), `text` the rendered prompt
        as handed to the processor, `rendered` what the adapter rendered it from."""
        n_prompt = len(prompt_ids)
        without = [
            {
                **m,
                "content": [p for p in m["content"] if p["type"] != "image"]
                or [{"type": "text", "text": ""}],
            }
            for m in rendered.messages
        ]
        text_only = self._template(without) if rendered.images else text
        n_text = len(self.tokenizer(text_only)["input_ids"])
        counts = {
            "n_images": len(rendered.images),
            "n_visual_tokens": n_prompt - n_text,
            "n_text_tokens": n_text,
            "n_after_instruction": UNKNOWN,
            "n_visual_after_instruction": UNKNOWN,
        }
        if rendered.instruction is not None:
            try:
                after = self.tokens_after(prompt_ids, text, rendered.instruction, rendered.where)
                text_after = self.tokens_after(None, text_only, rendered.instruction, rendered.where)
            except (
                ContractError,
                NotImplementedError,
            ) as exc:  # a template that rewrites T, a slow tokenizer
                if not self._warned:
                    log.warning(
                        "%s: tokens after the instruction not counted (-1): %s", self.adapter.family, exc
                    )
                    self._warned = True
                return counts
            counts["n_after_instruction"] = after
            counts["n_visual_after_instruction"] = after - text_after
        return counts

    def tokens_after(self, prompt_ids: list[int] | None, text: str, instruction: str, where: str) -> int:
        """The tokens of `prompt_ids` (None: `text` tokenized) after the end of `instruction` in `text`:
        T's tokens (as `text` tokenizes them, its first and last dropped if the prompt ids merge them with
        their neighbours) are found in the ids at their last occurrence; a token straddling T's end is T's."""
        end = instruction_end(text, instruction, where)
        start = end - len(instruction)
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        span = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > start and a < end and b > a]
        if prompt_ids is None:
            return len(ids) - (span[-1] + 1)
        seq = [ids[i] for i in span]
        for trim in (0, 1):
            inner = seq[trim : len(seq) - trim] if len(seq) > 2 * trim else []
            found = _last_occurrence(prompt_ids, inner) if inner else -1
            if found >= 0:
                return len(prompt_ids) - (found + len(inner) + trim)
        raise ContractError(f"{where}: the attack text's tokens are not in the prompt ids")


def _last_occurrence(haystack: list[int], needle: list[int]) -> int:
    """The start of the last occurrence of `needle` in `haystack`, -1 if none."""
    n = len(needle)
    last = needle[-1]
    for i in range(len(haystack) - 1, n - 2, -1):
        if haystack[i] == last and haystack[i - n + 1 : i + 1] == needle:
            return i - n + 1
    return -1


def instruction_end(text: str, instruction: str, where: str) -> int:
    """The character offset just after the attack text in a rendered prompt (its last occurrence: T is the
    question, nothing after it repeats it)."""
    start = text.rfind(instruction) if instruction else -1
    if start < 0:
        raise ContractError(f"{where}: the rendered prompt lacks the attack text {instruction[:60]!r}")
    return start + len(instruction)


_counters: dict[tuple[int, str], tuple[Any, TokenCounter]] = {}


def token_counter(processor: Any, adapter: Any) -> TokenCounter:
    """The TokenCounter of a processor and family, made once (its image costs are kept)."""
    key = (id(processor), adapter.family)
    if key not in _counters or _counters[key][0] is not processor:
        _counters[key] = (processor, TokenCounter(processor, adapter))
    return _counters[key][1]


def fit_text(counter: TokenCounter, target: int, head: str = "", filler: str = NEUTRAL_TEXT) -> str:
    """`head`, then `filler`'s words (repeated) as long as they fit, later shorter words where the next does
    not, then one-token units (PAD_UNITS): text of exactly `target` tokens on the counter's tokenizer, or
    `head` alone if it already has as many. Where no unit reaches the count exactly, the closest text
    below it."""
    if counter.text_tokens(head) >= target:
        return head
    words = filler.split()
    sep = " " if head else ""
    while counter.text_tokens(head + sep + " ".join(words)) <= target:
        words = words + filler.split()

    def text(k: int) -> str:
        return head + (sep + " ".join(words[:k]) if k else "")

    lo, hi = 0, len(words)  # the longest prefix of at most `target` tokens: text(lo) fits, text(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if counter.text_tokens(text(mid)) <= target else (lo, mid)
    base = text(lo)
    for word in words[lo + 1 : lo + 1 + MAX_SKIPPED_WORDS]:  # shorter later words that still fit
        if counter.text_tokens(base) == target:
            return base
        longer = base + (" " if base else "") + word
        if counter.text_tokens(longer) <= target:
            base = longer
    missing = target - counter.text_tokens(base)
    for unit in PAD_UNITS:
        if counter.text_tokens(base + unit * missing) == target:
            return base + unit * missing
    return base


MAX_SKIPPED_WORDS = 40
"""How many words after the longest fitting prefix `fit_text` tries before it pads with one-token units."""
