"""The hand-set weights of the planted worlds (`toolshift.models.fixture_models.planted` calibrates them).

A tiny Qwen2.5-VL (one key/value head shared by two query heads) whose residual stream is read in an
orthonormal basis, `AXES`, rotated at the end by a seeded random rotation (so that d is a generic
direction, not a coordinate axis). Only three places write anything:

- the embeddings: every token holds `constant` (CONSTANT); a few tokens also hold one flag: `marker`
  (`<tool_response>`, which opens every tool turn and only tool turns), `vision_end` (`<|vision_end|>`,
  which closes every image), `instruction_end` (` words.`, the last token of the attack instruction,
  FigStep's text prompt), `sink` (the system turn's role token), `gen` (the newline, which ends the
  generation prompt), and the two answers `refuse` (`I'm sorry`) and `comply` (`Sure, here`), flagged
  ANSWER_FLAG. `<tool_response>`, ` words.` and `Sure, here` are added to every world's tokenizer as
  single tokens, so that every world counts tokens alike. The vision merger writes `constant`, `image` (a
  flag), `noise` (a read-out of the image features that tells `mini`'s harmful images from its harmless
  ones) and the nuisance read-outs on every image token;
- layer A = L - 1, whose two heads flag what follows a token: head 1 writes `after_image` on every token
  after the first `<|vision_end|>` (so the attack image, always the first image, is the one image without
  it), and head 0 writes `after_marker` after a `<tool_response>` (the tool world) or `after_instruction`
  after the instruction's last token (the dilution world);
- layer L, whose head 1 reads the attack image's noise (the per-prompt offset, the same in every
  condition) and whose head 0 writes the world's shift along d:

  | world      | head 0 attends to                                             | so d moves by            |
  |------------|---------------------------------------------------------------|--------------------------|
  | `trace`    | a `<tool_response>` token                                      | shift, with any tool turn |
  | `tool`     | image tokens after a `<tool_response>`; else the attack image, | shift, only when a tool   |
  |            | whose value is 0 (an attention sink)                           | turn returns an image     |
  | `dilution` | every token after the instruction, against one sink token (the | shift * n / (n + n0), n   |
  |            | system turn's role token) worth n0 of them                     | tokens after it           |

The LM head reads the final residual of the last prompt token: `I'm sorry` when its projection on d
exceeds `threshold` (`planted.BOUNDARY` once calibrated), else `Sure, here`, then the end of turn. The
flags layer A writes are FLAG (small), so that the tool vector, h(tool) - h(direct), points along d.

Attention logits use the two lowest rotary frequencies (slots SLOT_A, SLOT_B of the mrope width section),
so positions do not matter. `plant` in probe mode writes what head 0 of layer L reads on a spare axis,
`probe_shift`, instead of d: the calibration measures it once; head 1 is linear in the merger's read-outs,
which are too small to move any norm, so the calibration computes it from the image features. Every
coefficient enters linearly.

Two things make the state as rich as a real residual stream where the DAG's controls look: N_NUISANCE
nuisance axes, read from the attack image by head 1 and carrying most of the `direct` states' variance
(so that a random direction drawn from their covariance is mostly not d), and the context structure:
layer 0 spreads one head evenly over the context and layer L's MLP writes the shares of image tokens and
of newlines it saw at the newline tokens, so that every condition, tool or not, moves the last prompt
token's state somewhere (never along d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolshift.errors import ConfigError

WORLDS: tuple[str, ...] = ("tool", "trace", "dilution")
"""The planted worlds: the shift follows a returned image, the tool turn's text, or the token count."""

AXES: tuple[str, ...] = (
    "constant",
    "direction",
    "gen",
    "refuse",
    "comply",
    "image",
    "noise",
    "marker",
    "vision_end",
    "instruction_end",
    "sink",
    "after_marker",
    "after_image",
    "after_instruction",
    "probe_shift",
    "context_image",
    "context_newline",
    "structure_image",
    "structure_newline",
    *(f"nuisance_in_{k}" for k in range(8)),
    *(f"nuisance_{k}" for k in range(8)),
)
"""The residual axes the mechanism uses (before the rotation), in this order."""
N_NUISANCE = 8
"""Nuisance axes: read-outs of the attack image (merger rows on `nuisance_in_k`) that head 1 of layer L
writes, amplified, on `nuisance_k` of the last prompt token, where they vary from prompt to prompt and
nothing reads them (a real residual stream varies in many directions, not only along d). The image tokens
never hold what the last token holds, so an edit along a direction of the last token's states (an
ablation at every layer) leaves the image read-outs alone."""
MARKER_TOKEN = "<tool_response>"
INSTRUCTION_END_TOKEN = " words."
"""The last token of FigStep's text prompt (`...approximately 100 words.`): the end of the instruction."""
VISION_END_TOKEN = "<|vision_end|>"
REFUSAL_TOKEN = "I'm sorry"
"""The refusal: one token of every fixture's vocabulary (`toolshift.models.fixture_models.common`)."""
COMPLIANCE_TOKEN = "Sure, here"
"""The compliant answer, added to the worlds' tokenizer as one token (it is in no prompt)."""

CONSTANT = 10.0
"""The `constant` axis' value on every token: large against the flags, so that a vector added to the
residual (an intervention) barely moves the norms the attention reads."""
FLAG = 0.1
"""The size of the flags layer A writes: small, so that they add little to the tool vector."""
_MARKER_LOGIT = 36.0
"""Attention logit on a flagged token (others: 0): all the weight goes to the flagged tokens."""
_IMAGE_LOGIT = 20.0
"""Head 1 of layer L on an attack-image token."""
_TOOL_LOGIT = 40.0
"""Tool world, head 0 of layer L: per flag (image, after_marker); the attack image sits at 1.5 times it."""
_AFTER_LOGIT = 20.0
"""Dilution world, head 0 of layer L: on a token after the instruction."""
ANSWER_FLAG = 20.0
"""The embedding flag of the two answer tokens (which no prompt holds): large, so that no vector an
intervention adds makes a prompt token look like an answer to the LM head."""
_ANSWER_LOGIT = 60.0
"""What the LM head gives `I'm sorry` and `Sure, here` (before the norm) at every position, besides
+-s: far above any other token at the last prompt token, below the end of turn after an answer."""
_END = 10.0
READOUT_NORM = 0.05
"""Norm of each image read-out (the merger rows of `noise` and the nuisance axes): small, so that what they
write on the image tokens moves no norm, and what layer L reads is linear in them."""
CONTEXT_EPS = 1e-3
"""Layer 0 writes the share of image tokens and of newlines in the context this small: it changes no norm
that layers L - 1 and L read."""
STRUCTURE_SCALE = 1.5
"""Layer L's MLP writes the context shares, this much larger, at the newline tokens (the last prompt token
among them): every condition leaves its own trace in the state, away from d."""
_GATE = 20.0


@dataclass(frozen=True)
class Coefficients:
    """What the calibration sets: head 0's shift on d, the offset's scale and centre, the LM head's
    threshold, the dilution world's half-dose token count `half_tokens` (n0), and each nuisance axis'
    scale and centre."""

    shift: float = 0.0
    noise_scale: float = 1.0
    noise_center: float = 0.0
    threshold: float = 0.0
    half_tokens: float = 10.0
    nuisance_scale: tuple[float, ...] = (1.0,) * N_NUISANCE
    nuisance_center: tuple[float, ...] = (0.0,) * N_NUISANCE


def rotation(hidden_size: int, seed: int) -> np.ndarray:
    """A random rotation of the residual stream (orthogonal, det +1), from `seed`."""
    rng = np.random.default_rng([seed, 0x9A7])
    q, r = np.linalg.qr(rng.standard_normal((hidden_size, hidden_size)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def add_world_tokens(model: Any, tokenizer: Any) -> None:
    """Add `<tool_response>`, ` words.` and `Sure, here` to the tokenizer as single (non-special) tokens;
    grow the embeddings."""
    from tokenizers import AddedToken

    added = (MARKER_TOKEN, INSTRUCTION_END_TOKEN, COMPLIANCE_TOKEN)
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in added])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)


def token_id(tokenizer: Any, text: str) -> int:
    """The one token of `text` in the fixture tokenizer (ConfigError if it is several)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConfigError(f"planted fixture: {text!r} is not one token of the fixture tokenizer ({ids})")
    return int(ids[0])


def sink_token(tokenizer: Any) -> int:
    """The dilution world's attention sink: the system turn's role token (the last token of
    `<|im_start|>system` in the fixture tokenizer), once in every episode, before the instruction."""
    return int(tokenizer("<|im_start|>system", add_special_tokens=False)["input_ids"][-1])


class _Heads:
    """The q bias, k, v and o weights of one attention layer (one shared key/value head), in the unrotated
    basis: keys in a head's rotary slot, values in numbered dims, outputs per (head, value dim)."""

    def __init__(self, hidden: int, head_dim: int, norm: float) -> None:
        self.head_dim, self.norm = head_dim, norm
        self.q = np.zeros(2 * head_dim)
        self.k = np.zeros((head_dim, hidden))
        self.v = np.zeros((head_dim, hidden))
        self.o = np.zeros((hidden, 2 * head_dim))
        self.root = math.sqrt(_TOOL_LOGIT * 2 * math.sqrt(head_dim) / norm)

    def key(self, head: int, slot: int, axis: int, logit: float, unit: float = 1.0) -> None:
        """Head `head` puts `logit` on a token holding `unit` on `axis` (linear in the value there)."""
        self.q[head * self.head_dim + slot] = self.root
        self.k[slot, axis] += logit * math.sqrt(self.head_dim) / (self.root * self.norm * unit)

    def value(self, dim: int, axis: int) -> None:
        self.v[dim, axis] = 1.0

    def out(self, head: int, dim: int, axis: int, scale: float, unit: float = 1.0) -> None:
        """Write `scale` times the attended value of `dim` (in units of `unit` on its axis) onto `axis`."""
        self.o[axis, head * self.head_dim + dim] += scale / (self.norm * unit)


SLOT_A_OFFSET, SLOT_B_OFFSET = 1, 2
"""Rotary slots head_dim/2 - 1 and - 2: the lowest frequencies (mrope width section)."""


def plant(
    model: Any,
    tokenizer: Any,
    *,
    world: str,
    layer: int,
    rot: np.ndarray,
    readouts: np.ndarray,
    coefficients: Coefficients,
    probe: bool = False,
) -> None:
    """Set the weights of `world` (module docstring) in place: `rot` is the residual rotation, `readouts`
    (1 + N_NUISANCE, merger input) the image read-outs of `noise` and the nuisance axes (the merger's rows).
    With `probe`, layer L writes only what head 0 reads, unscaled, on `probe_shift` (the calibration's
    measurement). The other layers keep their random q/k/v and MLP input weights; what
    they write is zero."""
    import torch

    if world not in WORLDS:
        raise ConfigError(f"planted fixture: unknown world {world!r}; known: {', '.join(WORLDS)}")
    text_config = model.config.text_config
    hidden = text_config.hidden_size
    if hidden < len(AXES):
        raise ConfigError(f"planted fixture needs hidden_size >= {len(AXES)}, got {hidden}")
    if text_config.num_key_value_heads != 1 or text_config.num_attention_heads != 2:
        raise ConfigError("planted fixture needs num_heads 2 (the fixture's one key/value head)")
    if not 2 <= layer < text_config.num_hidden_layers:
        raise ConfigError(f"planted fixture: layer {layer} needs two layers before it and must exist")
    axis = {name: i for i, name in enumerate(AXES)}
    text = model.model.language_model
    head_dim = hidden // 2
    eps = float(text_config.rms_norm_eps)
    norm = 1.0 / math.sqrt((CONSTANT**2 + 1) / hidden + eps)  # the norm's output on a flag of C + flag
    slot_a, slot_b = head_dim // 2 - SLOT_A_OFFSET, head_dim // 2 - SLOT_B_OFFSET
    q = torch.tensor(rot, dtype=torch.float32)
    c = coefficients

    def reads(w: np.ndarray | torch.Tensor) -> torch.Tensor:  # a weight applied to the residual: W Q^T
        return torch.as_tensor(w, dtype=torch.float32) @ q.T

    def writes(w: np.ndarray | torch.Tensor) -> torch.Tensor:  # a weight writing into the residual: Q W
        return q @ torch.as_tensor(w, dtype=torch.float32)

    # layer A: head 0 flags what follows the marker (tool) or the instruction (dilution); head 1 what
    # follows the first image
    flags = _Heads(hidden, head_dim, norm)
    source = {"tool": ("marker", "after_marker"), "dilution": ("instruction_end", "after_instruction")}
    if world in source:
        read, written = source[world]
        flags.key(0, slot_a, axis[read], _MARKER_LOGIT)
        flags.value(0, axis[read])
        flags.out(0, 0, axis[written], FLAG)
    flags.key(1, slot_b, axis["vision_end"], _MARKER_LOGIT)
    flags.value(1, axis["vision_end"])
    flags.out(1, 1, axis["after_image"], FLAG)

    # layer L: head 1 reads the attack image's noise (the first image: image flag without after_image)
    planted = _Heads(hidden, head_dim, norm)
    planted.key(1, slot_b, axis["image"], _IMAGE_LOGIT)
    planted.key(1, slot_b, axis["after_image"], -_IMAGE_LOGIT, FLAG)
    planted.value(2, axis["noise"])
    planted.value(3, axis["image"])
    nuisance = [axis[f"nuisance_{k}"] for k in range(N_NUISANCE)]
    for k in range(N_NUISANCE):
        planted.value(4 + k, axis[f"nuisance_in_{k}"])
    # head 0: the world's shift
    if world == "trace":
        planted.key(0, slot_a, axis["marker"], _MARKER_LOGIT)
        planted.value(0, axis["marker"])
        unit = 1.0
    elif world == "tool":
        planted.key(0, slot_a, axis["image"], 1.5 * _TOOL_LOGIT)  # image tokens; with the sink term below
        planted.key(0, slot_a, axis["after_image"], -0.5 * _TOOL_LOGIT, FLAG)  # the attack image: 1.5x
        planted.key(0, slot_a, axis["after_marker"], _TOOL_LOGIT, FLAG)
        planted.value(0, axis["after_marker"])
        unit = FLAG
    else:  # dilution: the tokens after the instruction against the sink token, worth n0 of them
        planted.key(0, slot_a, axis["after_instruction"], _AFTER_LOGIT, FLAG)
        planted.key(0, slot_a, axis["sink"], _AFTER_LOGIT + math.log(c.half_tokens))
        planted.value(0, axis["after_instruction"])
        unit = FLAG
    if probe:
        planted.out(0, 0, axis["probe_shift"], 1.0, unit)
    else:
        planted.out(0, 0, axis["direction"], c.shift, unit)
        planted.out(1, 2, axis["direction"], c.noise_scale)
        planted.out(1, 3, axis["direction"], c.noise_scale * c.noise_center)
        for k, a in enumerate(nuisance):
            planted.out(1, 4 + k, a, c.nuisance_scale[k])
            planted.out(1, 3, a, c.nuisance_scale[k] * c.nuisance_center[k])

    # layer 0: one head spread evenly over the context writes, tiny, the share of image tokens and of
    # newlines in it; layer L's MLP writes them large at the newlines (the last prompt token is one)
    context = _Heads(hidden, head_dim, norm)
    for dim, (read, written) in enumerate((("image", "context_image"), ("gen", "context_newline"))):
        context.value(dim, axis[read])
        context.out(0, dim, axis[written], CONTEXT_EPS)
    gate = np.zeros(tuple(model.model.language_model.layers[layer].mlp.gate_proj.weight.shape))
    up, down = np.zeros_like(gate), np.zeros(gate.shape[::-1])
    for unit_index, name in enumerate(("image", "newline")):
        gate[unit_index, axis["gen"]] = _GATE
        up[unit_index, axis[f"context_{name}"]] = 1.0
        down[axis[f"structure_{name}"], unit_index] = STRUCTURE_SCALE / (CONTEXT_EPS * _GATE * norm**2)

    with torch.no_grad():
        embed = np.zeros(tuple(text.embed_tokens.weight.shape))
        embed[:, axis["constant"]] = CONSTANT
        refuse, comply = token_id(tokenizer, REFUSAL_TOKEN), token_id(tokenizer, COMPLIANCE_TOKEN)
        gen = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"][-1]
        for token, name in (
            (MARKER_TOKEN, "marker"),
            (INSTRUCTION_END_TOKEN, "instruction_end"),
            (VISION_END_TOKEN, "vision_end"),
        ):
            embed[token_id(tokenizer, token), axis[name]] = 1.0
        embed[gen, axis["gen"]] = 1.0
        embed[sink_token(tokenizer), axis["sink"]] = 1.0
        embed[refuse, axis["refuse"]] = ANSWER_FLAG
        embed[comply, axis["comply"]] = ANSWER_FLAG
        text.embed_tokens.weight.copy_(reads(embed))

        merger = model.model.visual.merger.mlp[2]
        weight = torch.zeros_like(merger.weight)
        rows = np.asarray(readouts, dtype=np.float64)
        for row, name in zip(rows, ["noise", *(f"nuisance_in_{k}" for k in range(N_NUISANCE))], strict=True):
            weight[axis[name]] = torch.as_tensor(row, dtype=torch.float32)
        bias = torch.zeros_like(merger.bias)
        bias[axis["constant"]] = CONSTANT
        bias[axis["image"]] = 1.0
        merger.weight.copy_(writes(weight))
        merger.bias.copy_(q @ bias)

        for index, block in enumerate(text.layers):
            attn, mlp = block.self_attn, block.mlp
            block.input_layernorm.weight.fill_(1.0)
            block.post_attention_layernorm.weight.fill_(1.0)
            mlp.down_proj.weight.zero_()
            if index == layer:
                mlp.gate_proj.weight.copy_(reads(gate))
                mlp.up_proj.weight.copy_(reads(up))
                mlp.down_proj.weight.copy_(writes(down))
            heads = {0: context, layer - 1: flags, layer: planted}.get(index)
            if heads is None:
                attn.o_proj.weight.zero_()
                continue
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight.zero_()
                proj.bias.zero_()
            attn.q_proj.bias.copy_(torch.as_tensor(heads.q, dtype=torch.float32))
            attn.k_proj.weight.copy_(reads(heads.k))
            attn.v_proj.weight.copy_(reads(heads.v))
            attn.o_proj.weight.copy_(writes(heads.o))
        text.norm.weight.fill_(1.0)

        # the answer: `I'm sorry` iff s > threshold (read on the constant axis, which an added vector moves by
        # a small fraction of CONSTANT), then the end of turn
        head = np.zeros(tuple(model.lm_head.weight.shape))
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        for token, sign in ((refuse, 1.0), (comply, -1.0)):
            head[token, axis["direction"]] = sign
            head[token, axis["constant"]] = (_ANSWER_LOGIT - sign * c.threshold) / CONSTANT
        head[end, axis["refuse"]] = head[end, axis["comply"]] = _END
        head[end, axis["constant"]] = -_END * ANSWER_FLAG / 2 / CONSTANT
        model.lm_head.weight.copy_(reads(head))
