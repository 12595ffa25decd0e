"""Keep `import torchvision` working when its C++ ops did not load (the vLLM CPU environment).

PyPI's torchvision 0.28.0 is a CUDA build: beside torch 2.13.0+cpu its `_C.so` cannot load, and
`torchvision/__init__.py` then fails in `torchvision._meta_registrations` (it registers fake kernels
for `torchvision::nms` and `torchvision::qnms`, which do not exist). This meta-path finder makes that
one module empty, and only when `torchvision.extension._has_ops()` is False; with working ops (any proper
build) it does nothing. What toolshift and vLLM use of torchvision (transforms on tensors) needs no C++ op.

`make vllm-env` installs this file into the environment's site-packages as `toolshift_torchvision_guard.py`
with a `.pth` line that imports it, so it is active in every process of the environment (vLLM's engine
core included). Importing it imports nothing heavy (no torch).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

GUARDED = "torchvision._meta_registrations"


class _EmptyModuleLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "Emptied by toolshift_torchvision_guard: torchvision's C++ ops did not load."


class TorchvisionGuard(importlib.abc.MetaPathFinder):
    """Serves an empty `torchvision._meta_registrations` when torchvision's C++ ops are missing."""

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != GUARDED:
            return None
        extension = sys.modules.get("torchvision.extension")
        has_ops = getattr(extension, "_has_ops", None)
        if has_ops is None or has_ops():
            return None
        return importlib.machinery.ModuleSpec(name, _EmptyModuleLoader())


def install() -> None:
    """Put the guard first on sys.meta_path (once)."""
    if not any(isinstance(finder, TorchvisionGuard) for finder in sys.meta_path):
        sys.meta_path.insert(0, TorchvisionGuard())


install()
