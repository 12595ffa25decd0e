"""The planted-mechanism fixture: a tiny Qwen2.5-VL whose refusals are read from one direction d at one
layer L, put there by hand so that the whole DAG can be checked against a known effect.

It starts as the random Qwen2.5-VL fixture (`toolshift.models.fixture_models.qwen`) and its weights are then
set by hand; nothing in the package knows about it: transformers saves, loads and generates with it as with
any checkpoint, and every hook, capture and intervention runs on it unchanged.

The mechanism, in an orthonormal basis of the residual stream (rotated at the end by a seeded random
rotation, so that d is a generic direction and not a coordinate axis):

- Every token embedding is the constant axis `constant`, plus one flag axis for the few tokens the
  mechanism uses: `marker` (`<tool_response>`, added to the tokenizer: it opens every tool turn, and only
  tool turns), `gen` (the last token of the generation prompt), `refuse` (`I'm sorry`) and the tokens of
  the compliant answer `Sure, here` (`s`, `ure`, `comma`, `here`). The vision merger writes `constant`,
  `image` (a flag) and `noise` (a random linear read-out of the image features).
- No decoder layer writes anything (o_proj and down_proj are zero, norms are 1) except the attention of
  layer L: head 0 attends to a `marker` token when there is one (through the lowest rotary frequency, so
  positions do not matter) and writes `shift`·d; head 1 attends to the image tokens and writes
  `noise_scale`·mean(noise)·d, a per-image offset: the only thing that differs between prompts.
- The LM head reads the final residual. At the `gen` position it writes `I'm sorry` when the projection
  on d exceeds `threshold`, else `S` (of `Sure, here`); every following token is fixed (`I'm sorry` ->
  end of turn, `S` -> `ure` -> `,` -> ` here` -> end of turn).

So the last prompt token's residual after layer L is constant + gen + s·d with
s = offset(images) + shift·[a tool turn is present], the tool vector is the mean of the paired change
of s times d, and the answer is a refusal iff s > threshold. `threshold` and `shift` are calibrated when
the model is built, on every harmful prompt of the embedded `mini` dataset rendered with the run's
episode options: `direct` has ASR `direct_asr` and `tool` the relative reduction `rel_reduction`.
The record (`PlantedRecord`) goes into the fixture marker (`FIXTURE.json` and `config.json`).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolshift.errors import ConfigError

AXES: tuple[str, ...] = (
    "constant",
    "marker",
    "image",
    "noise",
    "direction",
    "gen",
    "refuse",
    "s",
    "ure",
    "comma",
    "here",
)
"""The residual axes the mechanism uses (before the rotation), in this order."""
MARKER_TOKEN = "<tool_response>"
REFUSAL_TOKEN = "I'm sorry"
COMPLIANCE_TOKENS: tuple[str, ...] = ("S", "ure", ",", " here")
"""The compliant answer `Sure, here`, token by token (tokens of the fixture's trained BPE)."""
CHAIN_AXES: tuple[str, ...] = ("s", "ure", "comma", "here")
PLANTED_FAMILY = "qwen2_5_vl"
DEFAULTS: dict[str, float] = {"layer": 2, "direct_asr": 0.8, "rel_reduction": 0.3}
"""Default planted layer, ASR of `direct` and relative reduction in `tool` (the claim's own size)."""

_SCORE = 36.0
"""Attention logit of head 0 on a marker token (others: 0): all its weight goes to the marker."""
_IMAGE_SCORE = 20.0
"""Attention logit of head 1 on an image token (text tokens: 0): its weight is spread over the images."""
_GEN_BOOST = 10.0
_CHAIN = 20.0
_NOISE_READOUT = 0.05
"""Scale of the random image read-out on the `noise` axis: small, so the norm keeps it linear."""
CONSTANT = 10.0
"""The `constant` axis' value on every token: large against the flags, so that a vector added to the
residual (an intervention) barely moves the threshold the LM head reads against it."""


@dataclass(frozen=True)
class PlantedRecord:
    """What was planted, as recorded with the model."""

    layer: int
    direction: list[float]
    direct_asr: float
    rel_reduction: float
    threshold: float
    shift: float
    noise_scale: float
    noise_center: float
    marker_token: str
    refusal_text: str
    compliance_text: str
    calibration: dict[str, Any]


def check_spec(spec: Mapping[str, Any] | bool, num_layers: int) -> dict[str, float]:
    """The planted settings (`layer`, `direct_asr`, `rel_reduction`) with defaults, checked."""
    given = {} if spec is True else dict(spec)
    unknown = sorted(set(given) - set(DEFAULTS) - {"episodes"})
    if unknown:
        raise ConfigError(
            f"fixture.planted: unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}"
        )
    out = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
    layer = out["layer"]
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
        raise ConfigError(f"fixture.planted.layer must be an integer in [0, {num_layers - 1}], got {layer!r}")
    for key in ("direct_asr", "rel_reduction"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(f"fixture.planted.{key} must be a number in (0, 1), got {value!r}")
    return out


def rotation(hidden_size: int, seed: int) -> np.ndarray:
    """A random rotation of the residual stream (orthogonal, det +1), from `seed`."""
    rng = np.random.default_rng([seed, 0x9A7])
    q, r = np.linalg.qr(rng.standard_normal((hidden_size, hidden_size)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def add_marker_token(model: Any, tokenizer: Any) -> None:
    """Add `<tool_response>` to the tokenizer as one (non-special) token and grow the embeddings."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(MARKER_TOKEN, normalized=False, special=False)])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)


def _token(tokenizer: Any, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConfigError(f"planted fixture: {text!r} is not one token of the fixture tokenizer ({ids})")
    return int(ids[0])


def plant(
    model: Any,
    tokenizer: Any,
    *,
    layer: int,
    shift: float,
    noise_scale: float,
    threshold: float,
    rot: np.ndarray,
    noise_seed: int,
    noise_center: float = 0.0,
) -> None:
    """Set the weights of the mechanism (module docstring) in place: `rot` is the residual rotation,
    `noise_seed` seeds the image read-out and `noise_center` (weight of the image flag in head 1's value)
    centres the offsets. The other layers keep their random q/k/v and MLP input weights;
    what they write is zero."""
    import torch

    hidden = model.config.text_config.hidden_size
    if hidden < len(AXES):
        raise ConfigError(f"planted fixture needs hidden_size >= {len(AXES)}, got {hidden}")
    axis = {name: i for i, name in enumerate(AXES)}
    text = model.model.language_model
    heads = model.config.text_config.num_attention_heads
    head_dim = hidden // heads
    eps = float(model.config.text_config.rms_norm_eps)
    flag_norm = 1.0 / math.sqrt((CONSTANT**2 + 1) / hidden + eps)  # the norm's output on a flag of C + flag
    q = torch.tensor(rot, dtype=torch.float32)

    def reads(w: torch.Tensor) -> torch.Tensor:  # a weight applied to the residual: W Q^T
        return w @ q.T

    def writes(w: torch.Tensor) -> torch.Tensor:  # a weight writing into the residual: Q W
        return q @ w

    with torch.no_grad():
        embed = torch.zeros_like(text.embed_tokens.weight)
        embed[:, axis["constant"]] = CONSTANT
        marker, refuse = _token(tokenizer, MARKER_TOKEN), _token(tokenizer, REFUSAL_TOKEN)
        chain = [_token(tokenizer, t) for t in COMPLIANCE_TOKENS]
        gen = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"][-1]
        embed[marker, axis["marker"]] = 1.0
        embed[gen, axis["gen"]] = 1.0
        embed[refuse, axis["refuse"]] = 1.0
        for token, name in zip(chain, CHAIN_AXES, strict=True):
            embed[token, axis[name]] = 1.0
        text.embed_tokens.weight.copy_(reads(embed))

        merger = model.model.visual.merger.mlp[2]
        generator = torch.Generator().manual_seed(noise_seed)
        weight = torch.zeros_like(merger.weight)
        weight[axis["noise"]] = torch.randn(merger.weight.shape[1], generator=generator) * _NOISE_READOUT
        bias = torch.zeros_like(merger.bias)
        bias[axis["constant"]] = CONSTANT
        bias[axis["image"]] = 1.0
        merger.weight.copy_(writes(weight))
        merger.bias.copy_(q @ bias)

        slot_marker, slot_image = head_dim // 2 - 1, head_dim // 2 - 2  # the lowest rotary frequencies
        for index, block in enumerate(text.layers):
            attn, mlp = block.self_attn, block.mlp
            block.input_layernorm.weight.fill_(1.0)
            block.post_attention_layernorm.weight.fill_(1.0)
            mlp.down_proj.weight.zero_()
            if index != layer:
                attn.o_proj.weight.zero_()
                continue
            root = math.sqrt(_SCORE * math.sqrt(head_dim) / flag_norm)
            image_root = math.sqrt(_IMAGE_SCORE * math.sqrt(head_dim) / flag_norm)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight.zero_()
                proj.bias.zero_()
            attn.q_proj.bias[slot_marker] = root
            attn.q_proj.bias[head_dim + slot_image] = image_root
            k = torch.zeros_like(attn.k_proj.weight)
            k[slot_marker, axis["marker"]] = root
            k[slot_image, axis["image"]] = image_root
            v = torch.zeros_like(attn.v_proj.weight)
            v[0, axis["marker"]] = 1.0
            v[1, axis["noise"]] = 1.0
            v[1, axis["image"]] = noise_center
            attn.k_proj.weight.copy_(reads(k))
            attn.v_proj.weight.copy_(reads(v))
            o = torch.zeros_like(attn.o_proj.weight)
            o[axis["direction"], 0] = shift / flag_norm
            o[axis["direction"], head_dim + 1] = noise_scale
            attn.o_proj.weight.copy_(writes(o))
        text.norm.weight.fill_(1.0)

        head = torch.zeros_like(model.lm_head.weight)
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        head[refuse, axis["direction"]] = 1.0
        head[refuse, axis["constant"]] = -threshold / CONSTANT
        head[refuse, axis["gen"]] = _GEN_BOOST
        head[chain[0], axis["direction"]] = -1.0
        head[chain[0], axis["constant"]] = threshold / CONSTANT
        head[chain[0], axis["gen"]] = _GEN_BOOST
        for token, name in zip(chain[1:], CHAIN_AXES[:-1], strict=True):
            head[token, axis[name]] = _CHAIN
        head[end, axis[CHAIN_AXES[-1]]] = _CHAIN
        head[end, axis["refuse"]] = _CHAIN
        model.lm_head.weight.copy_(reads(head))


def _midpoint_above(values: np.ndarray, n_above: int) -> float:
    """A cut with exactly `n_above` of `values` above it, halfway between its neighbours."""
    ordered = np.sort(values)[::-1]
    if not 0 < n_above < ordered.size:
        raise ConfigError(f"planted fixture: cannot put {n_above} of {ordered.size} prompts above a cut")
    if ordered[n_above - 1] == ordered[n_above]:
        raise ConfigError(
            "planted fixture: two calibration prompts have the same image offset; use another seed"
        )
    return float((ordered[n_above - 1] + ordered[n_above]) / 2)


def _offsets(
    model_dir: Path, episodes: list[dict[str, Any]], root: Path, layer: int, direction: np.ndarray
) -> np.ndarray:
    """The projection on d of the last prompt token's residual after `layer`, per episode."""
    import torch

    from toolshift.models.generation import encode
    from toolshift.models.loading import load_model

    loaded = load_model(model_dir, PLANTED_FAMILY)
    out = []
    with torch.inference_mode():
        for start in range(0, len(episodes), 8):
            inputs = encode(loaded, episodes[start : start + 8], root)
            states = loaded.model(**inputs, output_hidden_states=True).hidden_states[layer + 1][:, -1]
            out.append(states.float().numpy() @ direction)
    return np.concatenate(out)


def calibrate(
    model: Any,
    processor: Any,
    *,
    seed: int,
    spec: Mapping[str, Any],
    episode_options: Mapping[str, Any] | None,
) -> PlantedRecord:
    """Plant the mechanism and calibrate it on the harmful `mini` prompts (module docstring): the image
    offsets are scaled to unit spread and centred, then `threshold` and `shift` are set from the measured
    offsets. Returns the record; the model is left planted with the calibrated values."""
    from toolshift.datasets.prompts import build_prompts, load_mini
    from toolshift.episodes.build import build_episodes_by_condition

    hidden = model.config.text_config.hidden_size
    num_layers = model.config.text_config.num_hidden_layers
    settings = check_spec(spec, num_layers)
    layer = int(settings["layer"])
    rot = rotation(hidden, seed)
    direction = rot[:, AXES.index("direction")]
    tokenizer = processor.tokenizer
    options = dict(episode_options or {})
    with tempfile.TemporaryDirectory(prefix="planted-calibration-") as tmp:
        root, model_dir = Path(tmp) / "results", Path(tmp) / "model"
        mini = load_mini()
        prompts = build_prompts("mini", mini[mini["harmful"]], root)
        episodes = build_episodes_by_condition(prompts, ["direct", "tool"], root, **options)

        def measure(scale: float, center: float) -> tuple[np.ndarray, np.ndarray]:
            plant(model, tokenizer, layer=layer, shift=0.0, noise_scale=scale, threshold=0.0, rot=rot,
                  noise_seed=seed, noise_center=center)  # fmt: skip
            model.save_pretrained(model_dir, safe_serialization=True)
            processor.save_pretrained(model_dir)
            return (
                _offsets(model_dir, episodes["direct"], root, layer, direction),
                _offsets(model_dir, episodes["tool"], root, layer, direction),
            )

        raw, _ = measure(1.0, 0.0)
        scale = 1.0 / float(np.std(raw))
        center = -float(np.mean(raw)) * math.sqrt((CONSTANT**2 + 1) / hidden)  # over the image flag's norm
        direct, tool = measure(scale, center)
    n = direct.size
    n_refuse_direct = round(n * (1 - settings["direct_asr"]))
    n_refuse_tool = round(n * (1 - settings["direct_asr"] * (1 - settings["rel_reduction"])))
    threshold = _midpoint_above(direct, n_refuse_direct)
    shift = threshold - _midpoint_above(tool, n_refuse_tool)
    if shift <= 0:
        raise ConfigError("planted fixture: the tool turn's images alone already lower ASR; use another seed")
    plant(model, tokenizer, layer=layer, shift=shift, noise_scale=scale, threshold=threshold, rot=rot,
          noise_seed=seed, noise_center=center)  # fmt: skip
    asr_direct = float(np.mean(direct <= threshold))
    asr_tool = float(np.mean(tool + shift <= threshold))
    calibration = {
        "dataset": "mini",
        "n_harmful": int(n),
        "episodes": {k: options[k] for k in sorted(options)},
        "direct_asr": asr_direct,
        "tool_asr": asr_tool,
        "rel_reduction": (asr_direct - asr_tool) / asr_direct,
        "mean_tool_shift": float(np.mean(tool + shift - direct)),
    }
    return PlantedRecord(
        layer=layer,
        direction=[float(v) for v in direction],
        direct_asr=float(settings["direct_asr"]),
        rel_reduction=float(settings["rel_reduction"]),
        threshold=threshold,
        shift=float(shift),
        noise_scale=scale,
        noise_center=center,
        marker_token=MARKER_TOKEN,
        refusal_text=REFUSAL_TOKEN,
        compliance_text="".join(COMPLIANCE_TOKENS),
        calibration=calibration,
    )


def record_dict(record: PlantedRecord) -> dict[str, Any]:
    """The record as JSON-ready data."""
    return asdict(record)
