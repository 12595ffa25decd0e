"""Load a VLM (hub id or `save_pretrained` directory, fixtures included) through the generic HF path."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError
from toolshift.models.adapters import FamilyAdapter, get_adapter

DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class LoadedModel:
    """A model ready for inference, with what the hooks and the provenance records need."""

    model: Any
    processor: Any
    adapter: FamilyAdapter
    model_id: str
    revision: str
    n_layers: int
    hidden_size: int

    @property
    def device(self) -> Any:
        """The device of the model's parameters (inputs go there)."""
        return next(self.model.parameters()).device


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` if available else `cpu`; anything else is returned as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(
    path_or_id: str | os.PathLike[str],
    family: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load processor + model with AutoProcessor / AutoModelForImageTextToText (safetensors only).

    The model is put in eval mode and the tokenizer pads on the left (batched generation). The recorded
    revision is `revision` if given, else `fixture-seed<N>` for a fixture directory, else `unpinned`.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter = get_adapter(family)
    if not isinstance(trust_remote_code, bool):
        raise ConfigError(f"trust_remote_code must be true or false, got {trust_remote_code!r}")
    check_safetensors_only(path_or_id)
    if dtype not in DTYPES:
        raise ConfigError(f"model dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    device = resolve_device(device)
    source = str(path_or_id)
    common: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        processor = AutoProcessor.from_pretrained(source, **common)
        # on an accelerator, load the weights straight onto it (no full copy in host memory first)
        placement = {} if device == "cpu" else {"device_map": device}
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=torch_dtype, use_safetensors=True, **placement, **common
        )
    except Exception as exc:  # noqa: BLE001 - load_error keeps its own errors and re-raises the rest
        raise load_error(exc, f"model {source!r} (revision {revision})", source) from None
    if adapter.model_types and model.config.model_type not in adapter.model_types:
        raise ConfigError(
            f"model {source!r} has model_type {model.config.model_type!r}, but family {family!r} expects "
            f"{' or '.join(adapter.model_types)}"
        )
    if device == "cpu":
        model.to(device)
    model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    text_config = model.config.get_text_config()
    layers = adapter.decoder_layers(model)
    return LoadedModel(
        model=model,
        processor=processor,
        adapter=adapter,
        model_id=source,
        revision=revision or _fixture_revision(source) or "unpinned",
        n_layers=len(layers),
        hidden_size=int(text_config.hidden_size),
    )


PICKLE_WEIGHTS: tuple[str, ...] = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
"""Weight files that unpickle (and so can run code) when loaded: never loaded here."""


def load_error(exc: BaseException, what: str, source: str | os.PathLike[str]) -> BaseException:
    """The ConfigError for an exception `from_pretrained` raised while loading `what` from `source`:
    the whole message on one line (a custom-code refusal says how to opt in), or, for an exception that is
    not about the model's files, the exception itself (the rule's log gets its traceback)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if "contains custom code" in message or "trust_remote_code" in message:
        return ConfigError(
            f"{what} contains custom code (auto_map in its config.json), which toolshift runs only when the "
            "model entry sets `trust_remote_code: true`; read the repository's *.py files before you set it"
        )
    if type(exc).__name__ == "SafetensorError":
        return ConfigError(
            f"{what}: a *.safetensors file cannot be read ({message}): the weights are truncated or corrupt; "
            f"delete {source} and rerun so that it is built or downloaded again"
        )
    if not isinstance(exc, OSError | ValueError):
        return exc
    if len(message) > 500:
        message = message[:500] + "..."
    return ConfigError(f"{what} cannot be loaded: {message}")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (its header, or its length against the header), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short for a safetensors header"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"its header claims {n} bytes but the file has {size}"
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its header cannot be read ({type(exc).__name__})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        return "its header has malformed data_offsets"
    if 8 + n + end != size:
        return f"{size} bytes where its header describes {8 + n + end}"
    return None


def check_model_files(path_or_id: str | os.PathLike[str]) -> None:
    """A local model folder holds what loading needs, each file whole: `config.json`, every JSON file
    parses, every safetensors file's length matches its header, every shard of an index is there.
    ConfigError naming the file and the fix otherwise. A hub id is left to `from_pretrained`."""
    folder = Path(path_or_id)
    if not folder.is_dir():
        return
    fix = f"delete {folder} and rerun so that it is built or downloaded again"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder / 'config.json'}: file missing, so the model folder is incomplete: {fix}")
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"{path}: not valid JSON ({detail}), truncated or corrupt: {fix}") from None
    for path in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            raise ConfigError(f"{path}: truncated or corrupt safetensors file ({problem}): {fix}")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        missing = sorted(
            {str(f) for f in weight_map.values()} - {p.name for p in folder.glob("*.safetensors")}
        )
        if missing:
            raise ConfigError(f"{index}: lists {', '.join(missing)}, which the folder lacks: {fix}")


def check_safetensors_only(path_or_id: str | os.PathLike[str]) -> None:
    """Refuse a local model directory whose weights are not safetensors (pickle weights can run code),
    or whose files are missing or truncated (`check_model_files`).

    A hub id is left to `from_pretrained(use_safetensors=True)`, which refuses pickle weights itself.
    """
    folder = Path(path_or_id)
    if not folder.is_dir():
        return
    if any(folder.glob("*.safetensors")):
        check_model_files(folder)
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    found = f"found {', '.join(pickled)}" if pickled else "found no weight files"
    raise ConfigError(
        f"model directory {str(folder)!r} has no *.safetensors weights ({found}): "
        "toolshift loads safetensors only"
    )


FIXTURE_FILE = "FIXTURE.json"
"""Marker file written into every fixture directory (the same record is in `config.json`)."""


def read_fixture_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The fixture record of a model directory, or None if it is not a fixture."""
    marker = Path(path) / FIXTURE_FILE
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))


def _fixture_revision(source: str) -> str | None:
    """`fixture-seed<N>` if `source` is a fixture directory built by `toolshift.models.fixtures`."""
    marker = read_fixture_marker(source) if Path(source).is_dir() else None
    return None if marker is None else f"fixture-seed{marker['seed']}"
