"""The package's own interpreter for the image-manipulation Python that code-writing models write.

Thyme and DeepEyesV2 answer a zoom request with Python (`<code>```python ... ```</code>`), which their own
evaluation runs in a sandbox. Here model-written code is **never executed**: it is parsed with `ast`,
checked against a whitelist as a whole (this module), and then evaluated node by node
(`toolshift.episodes.image_code_eval`) on stand-in values (`image_code_values`) with the operations of
`image_code_lib`, so nothing the model wrote is ever looked up on a real module or object. Accepted:

- statements: assignment (to names, or unpacked into names), augmented assignment, expression
  statements, `if`, `for` over `range`/tuples/lists/strings, `while`, `break`, `continue`, `pass`, and the
  imports `PIL` (`Image`, `ImageEnhance`), `cv2`, `numpy`, `os`/`os.path`, `uuid`, `matplotlib.pyplot`,
  `math`, which bind stand-ins (see the library module for their operations);
- expressions: literals, names, arithmetic, comparisons, boolean logic, conditional expressions, tuples
  and lists, indexing and slicing (an image array sliced `a[y1:y2, x1:x2]` is a crop), f-strings, calls of
  whitelisted functions and methods, and the builtins `print`, `int`, `float`, `str`, `bool`, `round`,
  `min`, `max`, `abs`, `len`, `range`, `tuple`, `list`, `enumerate`, `zip` (and `display` in a notebook
  sandbox).

Refused, with a one-line reason, before anything runs: any other import; attribute access outside the
whitelist; any name or attribute with a double underscore; function or class definitions, lambdas, `with`,
`try`, `raise`, `global`, `del`, comprehensions, starred arguments, dict literals; the names `open`,
`exec`, `eval`, `compile`, `getattr` and the other file, code and introspection builtins. Refused while it
runs: reading any file but the given image, writing outside the sandbox's output directory, more loop
iterations or evaluation steps than the bounds (`image_code_lib.Limits`), images, strings, sequences or
integers over their size bounds. A whitelisted operation failing on its arguments (a crop box whose right
is left of its left) is a failure, reported as the original sandbox would report an exception.

`run_image_code` never raises on a string: it returns a `CodeResult` whose `error` holds the reason.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from toolshift.episodes import image_code_lib as lib
from toolshift.episodes.image_code_eval import Interpreter
from toolshift.episodes.image_code_values import (
    CodeFailed,
    CodeRefused,
    Context,
    Img,
    Limits,
    Module,
    Sandbox,
)

__all__ = ["CodeFailed", "CodeRefused", "CodeResult", "Limits", "Sandbox", "run_image_code"]

FORBIDDEN_NAMES: frozenset[str] = frozenset(
    "open exec eval compile getattr setattr delattr hasattr globals locals vars input breakpoint exit "
    "quit help dir type object super memoryview bytearray bytes classmethod staticmethod property "
    "importlib sys subprocess socket shutil".split()
)
"""Names refused wherever they are read: file, code, network and introspection access."""

_REFUSED_NODES: dict[type, str] = {
    ast.FunctionDef: "defining functions",
    ast.AsyncFunctionDef: "defining functions",
    ast.Lambda: "lambdas",
    ast.ClassDef: "defining classes",
    ast.With: "with blocks",
    ast.AsyncWith: "with blocks",
    ast.Try: "try blocks",
    ast.Raise: "raise",
    ast.Global: "global",
    ast.Nonlocal: "nonlocal",
    ast.Delete: "del",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.NamedExpr: "assignment expressions",
    ast.Starred: "starred arguments",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.Assert: "assert",
    ast.AsyncFor: "async loops",
    ast.Match: "match statements",
}
_ALLOWED_NODES: tuple[type, ...] = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.If, ast.For, ast.While, ast.Break, ast.Continue,
    ast.Pass, ast.Import, ast.ImportFrom, ast.alias, ast.Constant, ast.Name, ast.Load, ast.Store,
    ast.Attribute, ast.Call, ast.keyword, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Tuple, ast.List, ast.Subscript, ast.Slice, ast.JoinedStr, ast.FormattedValue, ast.operator,
    ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip


@dataclass(frozen=True)
class CodeResult:
    """What a run produced: `stdout`, the images `shown` (plt.show, display, a notebook's last expression),
    the images `saved` by path (in order), the `crops` applied to the given image (boxes in its pixels),
    `error` (the reason, None when the code ran to its end), `refused` (the error is a refusal, not a
    failure of a whitelisted operation) and `env` (the names bound, for the next block of the same
    session)."""

    stdout: str = ""
    shown: tuple[Image.Image, ...] = ()
    saved: dict[str, Image.Image] = field(default_factory=dict)
    crops: tuple[tuple[int, ...], ...] = ()
    error: str | None = None
    refused: bool = False
    env: dict[str, Any] = field(default_factory=dict)


def run_image_code(
    code: str,
    sandbox: Sandbox,
    env: dict[str, Any] | None = None,
    transform: Callable[[ast.Module], ast.Module] | None = None,
) -> CodeResult:
    """Check and evaluate `code` in `sandbox` (see the module docstring); `env` holds the names a previous
    block of the same session bound (as a notebook kernel or Thyme's sandbox context keeps them);
    `transform` rewrites the parsed tree first (a family's own sandbox pre-pass, e.g. Thyme's clamping)."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a string, got {type(code).__name__}")
    ctx = Context(sandbox)
    names = dict(env or {})
    if not names:
        names.update({k: Img(v.copy(), (0, 0)) for k, v in sandbox.variables.items()})
    interpreter = Interpreter(ctx, names)
    error, refused = None, False
    try:
        tree = _parse(code, sandbox.limits)
        if transform is not None:
            tree = ast.fix_missing_locations(transform(tree))
        _check(tree, sandbox.limits)
        interpreter.run(tree)
    except CodeRefused as exc:
        error, refused = _line(exc), True
    except CodeFailed as exc:
        error = _line(exc)
    except RecursionError:
        error, refused = "the code is nested too deeply", True
    except MemoryError:
        error, refused = "the code needs too much memory", True
    return CodeResult(
        stdout="".join(ctx.stdout),
        shown=tuple(ctx.shown),
        saved=dict(ctx.saved),
        crops=tuple(tuple(c) for c in ctx.crops),
        error=error,
        refused=refused,
        env=interpreter.names if error is None else dict(env or {}),
    )


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _parse(code: str, limits: Limits) -> ast.Module:
    if len(code) > limits.max_code_chars:
        raise CodeRefused(f"the code has {len(code)} characters, over the bound of {limits.max_code_chars}")
    try:
        return ast.parse(textwrap.dedent(code).strip(), mode="exec")
    except SyntaxError as exc:
        raise CodeFailed(f"SyntaxError: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise CodeRefused(f"the code cannot be parsed ({type(exc).__name__})") from None


def _dunder(name: str | None) -> bool:
    return bool(name) and (name.startswith("__") or name.endswith("__"))


def _check(tree: ast.Module, limits: Limits) -> None:
    """Refuse the code as a whole before it runs (node kinds, names, imports, size)."""
    nodes = list(ast.walk(tree))
    if len(nodes) > limits.max_nodes:
        raise CodeRefused(f"the code has {len(nodes)} syntax nodes, over the bound of {limits.max_nodes}")
    modules = lib.modules()
    for node in nodes:
        for kind, what in _REFUSED_NODES.items():
            if isinstance(node, kind):
                raise CodeRefused(
                    f"{what}: not allowed in this sandbox (line {getattr(node, 'lineno', '?')})"
                )
        if not isinstance(node, _ALLOWED_NODES):
            raise CodeRefused(f"{type(node).__name__} is not allowed in this sandbox")
        for name in _identifiers(node):
            if _dunder(name):
                raise CodeRefused(f"dunder access: {name!r} is not allowed")
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in FORBIDDEN_NAMES:
            raise CodeRefused(f"{node.id!r} is not allowed (file, network, code or introspection access)")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in modules:
                    raise CodeRefused(
                        f"import of {alias.name!r} is not allowed (allowed: {_allowed(modules)})"
                    )
        if isinstance(node, ast.ImportFrom):
            module = modules.get(node.module or "") if node.level == 0 else None
            if module is None:
                raise CodeRefused(
                    f"import from {node.module!r} is not allowed (allowed: {_allowed(modules)})"
                )
            for alias in node.names:
                if alias.name not in module.attrs:
                    raise CodeRefused(f"import of {node.module}.{alias.name} is not allowed")
        if isinstance(node, ast.Assign | ast.For):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                _check_target(target)
        if isinstance(node, ast.AugAssign) and not isinstance(node.target, ast.Name):
            raise CodeRefused("augmented assignment to anything but a name is not allowed")
        if isinstance(node, ast.Call) and any(k.arg is None for k in node.keywords):
            raise CodeRefused("**keyword unpacking is not allowed")


def _identifiers(node: ast.AST) -> list[str | None]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.alias):
        return [node.name, node.asname, *node.name.split(".")]
    if isinstance(node, ast.keyword):
        return [node.arg]
    if isinstance(node, ast.ImportFrom):
        return [node.module]
    return []


def _check_target(target: ast.AST) -> None:
    if isinstance(target, ast.Name):
        return
    if isinstance(target, ast.Tuple | ast.List) and all(isinstance(e, ast.Name) for e in target.elts):
        return
    raise CodeRefused("assignment to anything but names (item or attribute assignment) is not allowed")


def _allowed(modules: dict[str, Module]) -> str:
    return ", ".join(sorted(modules))
