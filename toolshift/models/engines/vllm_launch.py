"""Starting the `vllm` engine: which families it serves, the `vllm.LLM` arguments, and the checks and
preparation before vLLM starts (the device, the CPU backend's head sizes, a LLaVA checkpoint's vision-tower
weight names). The engine itself is `toolshift.models.engines.vllm.VLLMEngine`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError

VLLM_FAMILIES: tuple[str, ...] = (
    "qwen2_5_vl",
    "deepeyes",
    "llava",
    "qwen3_vl",
    "internvl",
    "idefics3",
    "smolvlm",
)
"""Families the vllm engine serves: on their fixtures (float32, CPU) greedy tokens, captured states, `add` and
`ablate` equal the HF engine's (tests/test_vllm_engine.py checks qwen2_5_vl and llava on every run;
`python -m toolshift.models.engines.equivalence --family F` checks any of them)."""

UNSERVED: dict[str, str] = {
    "llava_onevision": (
        "vLLM 0.32 expands a prompt with several images into more image tokens than the HF processor does "
        "(the tool and image_no_tool conditions), so its outputs differ from the reference"
    ),
    "gemma3": (
        "vLLM 0.32's Gemma 3 processor looks up a literal newline token, which the fixture's byte-level "
        "vocabulary lacks, so it has not been checked against HF"
    ),
}
"""Family -> why the vllm engine does not serve it; `generation.engine: hf` does."""

CPU_DEFAULTS: dict[str, Any] = {"kv_cache_memory_bytes": 512 * 2**20, "max_num_seqs": 16}
"""vllm.LLM arguments on the CPU: the CPU worker refuses to start unless the KV cache size is given or its
default fraction of the machine's memory is free."""

DEFAULT_IMAGES_PER_PROMPT = 17
"""`limit_mm_per_prompt` for images unless generation.vllm sets it: the conditions show at most two images,
the free loop at most 1 + max_turns x max_calls_per_turn (17 with its default bounds)."""

EXTENSION = "toolshift.models.engines.vllm_extension.ToolshiftWorkerExtension"
"""vLLM's `worker_extension_cls`: vllm-lens's extension with toolshift's capture methods."""


VISION_TOWER_PREFIX = ("vision_tower.", "vision_tower.vision_model.")
"""LLaVA and LLaVA-OneVision checkpoints saved by transformers 5.x (the fixtures) name the vision tower's
weights `vision_tower.<...>`; vLLM's loader expects `vision_tower.vision_model.<...>` (hub checkpoints)."""

RENAMED_VISION_TOWER: tuple[str, ...] = ("llava", "llava_onevision")
"""Families whose checkpoints get VISION_TOWER_PREFIX renamed (in a temporary copy) when they need it."""


def llm_arguments(
    served: Path, dtype: str, trust_remote_code: bool, extra: Mapping[str, Any], platform: str
) -> dict[str, Any]:
    """The `vllm.LLM` keyword arguments for the model directory `served`: toolshift's fixed ones, the CPU
    defaults on the CPU (where vLLM then runs its engine core in this process), then `extra`
    (generation.vllm), which wins."""
    kwargs: dict[str, Any] = {
        "model": str(served),
        "worker_extension_cls": EXTENSION,
        "tokenizer": str(served),
        "dtype": dtype,
        "load_format": "safetensors",  # never a pickle checkpoint (as load_model)
        "seed": 0,
        "trust_remote_code": trust_remote_code,
        "enforce_eager": True,  # vllm-lens hooks are module hooks: no torch.compile / CUDA graphs
        "enable_prefix_caching": False,  # reruns independent of what ran before (KV is not reused)
        "limit_mm_per_prompt": {"image": DEFAULT_IMAGES_PER_PROMPT},
    }
    if platform == "cpu":
        kwargs.update(CPU_DEFAULTS)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    kwargs.update(extra)
    return kwargs


def vllm_platform() -> str:
    """`cpu` or `cuda` (or another accelerator name): the platform this vLLM build runs on."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else str(current_platform.device_type)


def check_cpu_head_size(text_config: Any, source: str) -> None:
    """vLLM's CPU attention serves a few head sizes only (its CPU backend's get_supported_head_sizes):
    refuse another with one line, before vLLM fails deep inside its start."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    heads = int(text_config.num_attention_heads)
    head_dim = int(getattr(text_config, "head_dim", None) or text_config.hidden_size // heads)
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_dim not in supported:
        raise ConfigError(
            f"engine vllm: model {source!r} has attention heads of size {head_dim}; vLLM on the CPU serves "
            f"{', '.join(map(str, supported))} (a fixture: hidden_size / num_heads must be one of them)"
        )


def select_device(device: str, platform: str, extra: Mapping[str, Any]) -> None:
    """Check `device` against this vLLM build's platform; for one accelerator `cuda:N` (the GPU the runner
    claimed for the job) make it the only visible one, for the engine core and worker processes vLLM starts
    (CUDA_VISIBLE_DEVICES, set before the engine starts). `auto` and `cuda` use what is visible."""
    kind, _, index = str(device).partition(":")
    if kind not in ("auto", platform) or (index and not index.isdigit()):
        raise ConfigError(f"engine vllm: device {device!r} asked for, but this vLLM build runs on {platform}")
    if not index or platform == "cpu":
        return
    if int(extra.get("tensor_parallel_size", 1)) > 1:
        raise ConfigError(
            f"engine vllm: device {device!r} names one GPU, but generation.vllm.tensor_parallel_size is "
            f"{extra['tensor_parallel_size']}: give the job device 'cuda' (all visible GPUs)"
        )
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[int(index)] if int(index) < len(visible) else index


def served_model_dir(source: Path, family: str) -> tuple[Path | None, Path]:
    """(temporary directory to remove or None, the directory vLLM loads): `source` itself, or for a LLaVA
    checkpoint whose vision-tower weights carry transformers 5.x names, a copy with them renamed."""
    if family not in RENAMED_VISION_TOWER:
        return None, source
    from safetensors import safe_open

    files = sorted(source.glob("*.safetensors"))
    old, new = VISION_TOWER_PREFIX

    def stale(name: str) -> bool:
        return name.startswith(old) and not name.startswith(new)

    needs = []
    for path in files:
        with safe_open(str(path), "pt") as handle:
            if any(stale(name) for name in handle.keys()):  # noqa: SIM118 - safe_open has no __iter__
                needs.append(path)
    if not needs:
        return None, source
    from safetensors.torch import load_file, save_file

    workdir = Path(tempfile.mkdtemp(prefix="toolshift-vllm-"))
    served = workdir / source.name
    served.mkdir()
    for item in source.iterdir():
        if item.suffix == ".safetensors" or item.name.endswith(".safetensors.index.json"):
            continue
        (served / item.name).symlink_to(item.resolve())
    for path in files:
        tensors = load_file(str(path))
        renamed = {(new + name[len(old) :] if stale(name) else name): t for name, t in tensors.items()}
        save_file(renamed, str(served / path.name), metadata={"format": "pt"})
    index = next(iter(source.glob("*.safetensors.index.json")), None)
    if index is not None:
        import json

        data = json.loads(index.read_text(encoding="utf-8"))
        data["weight_map"] = {
            (new + name[len(old) :] if stale(name) else name): f
            for name, f in data.get("weight_map", {}).items()
        }
        (served / index.name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return workdir, served
