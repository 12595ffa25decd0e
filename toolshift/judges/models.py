"""Model judges: Llama Guard (3 text, 3 Vision, 4) and the HarmBench classifier, loaded like the VLMs.

Each judge renders its published prompt in code here (not through the checkpoint's chat template, so the
prompt is the same whatever tokenizer files a revision ships), generates greedily in batches and parses the
verdict:

- **Llama Guard 3 8B** (`llamaguard`, ``variant: llamaguard3``): a Llama 3.1 causal LM. Prompt layout and
  the hazard categories S1-S14 (MLCommons taxonomy) as given on the model card / prompt-format page
  (https://huggingface.co/meta-llama/Llama-Guard-3-8B, https://www.llama.com/docs/model-cards-and-prompt-
  formats/llama-guard-3/); the conversation is ``User:`` the request, ``Agent:`` the response, and the
  verdict is about the last Agent turn. Output ``safe`` or ``unsafe\\nS<k>[,S<j>...]``.
- **Llama Guard 3 11B-Vision** (``variant: llamaguard3_vision``, model_type ``mllama``): the same layout
  with the ``<|image|>`` token before the task text and categories S1-S13 (no code-interpreter
  category), per its model card (https://huggingface.co/meta-llama/Llama-Guard-3-11B-Vision).
- **Llama Guard 4 12B** (``variant: llamaguard4``, model_type ``llama4``): Llama 4 header tokens
  (``<|header_start|>``/``<|header_end|>``/``<|eot|>``), categories S1-S14, the image in the User turn,
  per its model card (https://huggingface.co/meta-llama/Llama-Guard-4-12B).
- **HarmBench classifier** (`harmbench`, ``cais/HarmBench-Llama-2-13b-cls``, a Llama 2 causal LM): the
  published ``LLAMA2_CLS_PROMPT`` (HarmBench repo, ``eval_utils.py``; also on the model card) with the
  behaviour (the request) and the generation; output ``Yes`` (unsafe) or ``No``. One new token, as in
  HarmBench's own evaluation.

Verdicts: ``judge_raw`` is the judge's decoded output, stripped. An output that is neither verdict is
recorded as ``invalid: <output>`` and counted as not unsafe (see ``toolshift.judges.keyword.INVALID_PREFIX``).

Loading mirrors ``toolshift.models.loading.load_model``: safetensors only, a pinned revision, a dtype, a
device, ``trust_remote_code`` off; the text judges load with AutoTokenizer + AutoModelForCausalLM, the vision
ones with AutoProcessor + AutoModelForImageTextToText. Tiny random fixtures of each architecture
(``toolshift.models.fixture_models.judges``) run every path offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.errors import ConfigError, DataError
from toolshift.judges.keyword import INVALID_PREFIX, request_texts
from toolshift.models.judge_formats import (
    PROMPT_BUILDERS,
    VARIANTS,
    parse_harmbench,
    parse_llamaguard,
)
from toolshift.models.loading import DTYPES, _fixture_revision, check_model_files, load_error, resolve_device

# --------------------------------------------------------------------------- verdicts


def verdict(unsafe: bool | None, output: str) -> tuple[bool, str]:
    """``(unsafe, judge_raw)`` for the judged table; an unparseable output is ``invalid: ...``, not unsafe."""
    text = output.strip()
    if unsafe is None:
        return False, INVALID_PREFIX + text
    return unsafe, text


# --------------------------------------------------------------------------- loading


@dataclass
class JudgeModel:
    """A loaded judge model and its tokenizer (text variants) or processor (vision variants)."""

    model: Any
    processor: Any
    variant: str
    model_id: str
    revision: str

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (the processor's for vision variants)."""
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device


def load_judge_model(
    path_or_id: str | os.PathLike[str],
    variant: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> JudgeModel:
    """Load a judge model like ``toolshift.models.loading.load_model`` (safetensors only, eval mode, left
    padding).

    Text variants use AutoTokenizer + AutoModelForCausalLM, vision variants AutoProcessor +
    AutoModelForImageTextToText; the loaded model_type must be one of the variant's (VARIANTS).
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    if variant not in VARIANTS:
        raise ConfigError(f"judge model variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"judge model dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    spec = VARIANTS[variant]
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    device = resolve_device(device)
    source = str(path_or_id)
    common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    placement = {} if device == "cpu" else {"device_map": device}
    check_model_files(source)  # a local folder: config.json there, no truncated file
    try:
        # the architecture is checked before any weights are read
        model_type = AutoConfig.from_pretrained(source, **common).model_type
    except Exception as exc:  # noqa: BLE001 - load_error keeps its own errors and re-raises the rest
        raise load_error(exc, f"judge model {source!r} (revision {revision})", source) from None
    if model_type not in spec["model_types"]:
        raise ConfigError(
            f"judge model {source!r} has model_type {model_type!r}, but variant {variant!r} "
            f"expects {' or '.join(spec['model_types'])}"
        )
    try:
        if spec["vision"]:
            processor = AutoProcessor.from_pretrained(source, **common)
            auto = AutoModelForImageTextToText
        else:
            processor = AutoTokenizer.from_pretrained(source, **common)
            auto = AutoModelForCausalLM
        model = auto.from_pretrained(source, dtype=torch_dtype, use_safetensors=True, **placement, **common)
    except Exception as exc:  # noqa: BLE001 - load_error keeps its own errors and re-raises the rest
        raise load_error(exc, f"judge model {source!r} (revision {revision})", source) from None
    if device == "cpu":
        model.to(device)
    model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return JudgeModel(model, processor, variant, source, revision or _fixture_revision(source) or "unpinned")


# --------------------------------------------------------------------------- generation


def generate_verdicts(
    judge: JudgeModel,
    prompts: Sequence[str],
    images: Sequence[Any] | None = None,
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
) -> list[str]:
    """Greedy outputs (decoded new tokens, special tokens skipped) for rendered `prompts`, in batches.

    `images` (PIL images, one per prompt) is required for the vision variants. `max_new_tokens` defaults
    to 1 for HarmBench (as HarmBench evaluates) and 10 for Llama Guard (verdict + categories).
    """
    import torch

    spec = VARIANTS[judge.variant]
    if spec["vision"] and (images is None or len(images) != len(prompts)):
        raise ConfigError(f"judge model variant {judge.variant!r} needs one image per prompt")
    if batch_size < 1:
        raise ConfigError(f"judge batch_size: expected an integer >= 1, got {batch_size!r}")
    if max_new_tokens is None:
        max_new_tokens = 1 if judge.variant == "harmbench" else 10
    tokenizer = judge.tokenizer
    # batches of prompts of similar length (less padding); outputs go back to prompt order
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    prompts = [prompts[i] for i in order]
    images = None if images is None else [images[i] for i in order]
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts = list(prompts[start : start + batch_size])
        if spec["vision"]:
            batch_images = [[im] for im in images[start : start + batch_size]]  # type: ignore[index]
            inputs = judge.processor(
                text=texts, images=batch_images, return_tensors="pt", padding=True, add_special_tokens=False
            )
        else:
            # the Llama Guard prompts carry <|begin_of_text|>; HarmBench's gets <s> from the tokenizer
            add = judge.variant == "harmbench"
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add)
        inputs = inputs.to(judge.device)
        if "pixel_values" in inputs:  # the Llama 4 image processor returns bfloat16
            inputs["pixel_values"] = inputs["pixel_values"].to(judge.model.dtype)
        with torch.inference_mode():
            generated = judge.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = generated[:, inputs["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    restored = [""] * len(outputs)
    for position, index in enumerate(order):
        restored[index] = outputs[position]
    return restored


def _load_images(paths: Sequence[str], results_root: str | os.PathLike[str] | None) -> list[Any]:
    from PIL import Image

    if results_root is None:
        raise ConfigError("a vision judge needs results_root (image paths are relative to it)")
    images = []
    for rel in paths:
        path = Path(results_root) / rel
        if not rel or not path.is_file():
            raise DataError(f"{path}: image for the vision judge not found")
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images


def judge_with_model(
    df: pd.DataFrame,
    prompts: pd.DataFrame | None,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    variant: str,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    batch_size: int = 8,
    request_field: str = "question",
    results_root: str | os.PathLike[str] | None = None,
    max_new_tokens: int | None = None,
    loaded: JudgeModel | None = None,
) -> list[tuple[bool, str]]:
    """``(unsafe, judge_raw)`` per response under a model judge (see the module docstring).

    The request shown to the judge is the prompts-table column `request_field` (``question``: the plain
    harmful request, the default; ``instruction``: the text the VLM saw). Vision variants also get the
    prompt's image (``image``, relative to `results_root`). `loaded` reuses an already loaded model.
    """
    name = "harmbench" if variant == "harmbench" else "llamaguard"
    if variant not in VARIANTS:
        raise ConfigError(f"judge model variant {variant!r} is not one of {', '.join(VARIANTS)}")
    requests = request_texts(df, prompts, request_field, judge=name)
    responses = ["" if not isinstance(r, str) else r for r in df["response"].tolist()]
    if loaded is None:
        if model_dir is None:
            raise ConfigError(
                f"judge {name!r}: model_dir (the judge model's directory or hub id) is required"
            )
        loaded = load_judge_model(model_dir, variant, revision=revision, dtype=dtype, device=device)
    build = PROMPT_BUILDERS[variant]
    rendered = [build(q, r) for q, r in zip(requests, responses, strict=True)]
    images = None
    if VARIANTS[variant]["vision"]:
        images = _load_images(request_texts(df, prompts, "image", judge=name), results_root)
    outputs = generate_verdicts(
        loaded, rendered, images, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    if variant == "harmbench":
        return [verdict(parse_harmbench(o), o) for o in outputs]
    return [verdict(parse_llamaguard(o)[0], o) for o in outputs]


def llamaguard_judge(
    df: pd.DataFrame, prompts: pd.DataFrame | None, *, variant: str = "llamaguard3", **options: Any
) -> list[tuple[bool, str]]:
    """The ``llamaguard`` judge: Llama Guard 3 (text), 3 Vision or 4 by `variant`."""
    if variant not in ("llamaguard3", "llamaguard3_vision", "llamaguard4"):
        raise ConfigError(
            f"llamaguard variant {variant!r} is not one of llamaguard3, llamaguard3_vision, llamaguard4"
        )
    return judge_with_model(df, prompts, variant=variant, **options)


def harmbench_judge(df: pd.DataFrame, prompts: pd.DataFrame | None, **options: Any) -> list[tuple[bool, str]]:
    """The ``harmbench`` judge: the HarmBench Llama-2-13b classifier."""
    return judge_with_model(df, prompts, variant="harmbench", **options)
