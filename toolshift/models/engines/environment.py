"""Where the vLLM engine's Python environment is: vLLM lives in its own environment (`make vllm-env` builds
`.venv-vllm`; conda users: `envs/vllm.yml`), since it pins torch and transformers apart from the main one."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from toolshift import REPO_ROOT
from toolshift.errors import ConfigError

VLLM_VENV = REPO_ROOT / ".venv-vllm"
"""Where `make vllm-env` builds the vLLM environment."""

ENV_VAR = "TOOLSHIFT_VLLM_PYTHON"
"""An environment variable naming the vLLM environment's interpreter."""


def vllm_importable() -> bool:
    """Whether `vllm` and `vllm_lens` can be imported in this interpreter (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("vllm", "vllm_lens"))


def vllm_python(configured: str | None = None) -> str:
    """The interpreter that runs the vLLM engine.

    In order: `configured` (config key `generation.vllm_python`), $TOOLSHIFT_VLLM_PYTHON,
    `<repo>/.venv-vllm/bin/python`, this interpreter if vLLM is importable here; else ConfigError.
    """
    for what, value in (("generation.vllm_python", configured), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            found = value if Path(value).is_file() else shutil.which(value)
            if not found:
                raise ConfigError(
                    f"{what}: {value!r} is not a file nor a command (the vLLM environment's python)"
                )
            return str(found)
    local = VLLM_VENV / "bin" / "python"
    if local.is_file():
        return str(local)
    if vllm_importable():
        return sys.executable
    raise ConfigError(
        f"engine vllm: no vLLM environment found (no {local}, and vllm is not importable in "
        f"{sys.executable}): run `make vllm-env`, or set generation.vllm_python to one"
    )
