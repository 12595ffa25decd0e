"""The package's own interpreter for the image-manipulation Python that code-writing models write.

Thyme and DeepEyesV2 answer a zoom request with Python (`<code>```python ... ```</code>`), which their own
evaluation runs in a sandbox. Here model-written code is **never executed**: it is parsed with `ast`,
checked against a whitelist as a whole, and then evaluated node by node by this module on stand-in values
(`toolshift.episodes.image_code_lib`), so nothing the model wrote is ever looked up on a real module or
object. Accepted:

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
import math
import numbers
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from PIL import Image

from toolshift.episodes import image_code_lib as lib
from toolshift.episodes.image_code_lib import (
    Arr,
    CodeFailed,
    CodeRefused,
    Context,
    Enhancer,
    FixedUUID,
    Func,
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
_STR_METHODS = ("join", "replace", "split", "strip", "lower", "upper", "startswith", "endswith", "format")


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


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


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
    interpreter = _Interpreter(ctx, names)
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


class _Interpreter:
    """Evaluates a checked tree on stand-in values, counting steps and loop iterations."""

    def __init__(self, ctx: Context, names: dict[str, Any]) -> None:
        self.ctx = ctx
        self.names = names
        self.limits = ctx.sandbox.limits
        self.steps = 0
        self.iterations = 0
        self.modules = lib.modules()
        self.builtins: dict[str, Func] = {
            name: Func(name, partial(getattr(self, f"_b_{name}")))
            for name in ("print", "int", "float", "str", "bool", "round", "min", "max", "abs", "len")
            + ("range", "tuple", "list", "enumerate", "zip")
        }
        if ctx.sandbox.jupyter:
            self.builtins["display"] = Func("display", partial(lib.display, ctx))

    # ----------------------------------------------------------------- statements

    def run(self, tree: ast.Module) -> None:
        body = tree.body
        for i, statement in enumerate(body):
            last = i == len(body) - 1
            if last and self.ctx.sandbox.jupyter and isinstance(statement, ast.Expr):
                value = self.eval(statement.value)
                if isinstance(value, Img | Arr):
                    lib.show_value(self.ctx, value)
                continue
            self.exec(statement)

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise CodeRefused(f"more than {self.limits.max_steps} evaluation steps")

    def loop(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.max_loop_iterations:
            raise CodeRefused(f"loops beyond the bound of {self.limits.max_loop_iterations} iterations")

    def exec_body(self, body: list[ast.stmt]) -> None:
        for statement in body:
            self.exec(statement)

    def exec(self, node: ast.stmt) -> None:
        self.tick()
        if isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value)
            for target in node.targets:
                self.assign(target, value)
        elif isinstance(node, ast.AugAssign):
            assert isinstance(node.target, ast.Name)
            self.names[node.target.id] = self.binop(node.op, self.load(node.target.id), self.eval(node.value))
        elif isinstance(node, ast.If):
            self.exec_body(node.body if self.truth(self.eval(node.test)) else node.orelse)
        elif isinstance(node, ast.For):
            self.exec_for(node)
        elif isinstance(node, ast.While):
            while self.truth(self.eval(node.test)):
                self.loop()
                try:
                    self.exec_body(node.body)
                except _Break:
                    return
                except _Continue:
                    continue
            self.exec_body(node.orelse)
        elif isinstance(node, ast.Break):
            raise _Break
        elif isinstance(node, ast.Continue):
            raise _Continue
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.names[alias.asname] = self.modules[alias.name]
                else:
                    top = alias.name.split(".")[0]
                    self.names[top] = self.modules[top]
        elif isinstance(node, ast.ImportFrom):
            module = self.modules[node.module or ""]
            for alias in node.names:
                self.names[alias.asname or alias.name] = module.attrs[alias.name]
        elif not isinstance(node, ast.Pass):
            raise CodeRefused(f"{type(node).__name__} is not allowed in this sandbox")

    def exec_for(self, node: ast.For) -> None:
        iterable = self.eval(node.iter)
        if not isinstance(iterable, range | tuple | list | str):
            raise CodeFailed(f"cannot loop over a {lib.type_name(iterable)}")
        for item in iterable:
            self.loop()
            self.assign(node.target, item)
            try:
                self.exec_body(node.body)
            except _Break:
                return
            except _Continue:
                continue
        self.exec_body(node.orelse)

    def assign(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value
            return
        assert isinstance(target, ast.Tuple | ast.List)
        if not isinstance(value, tuple | list | str) or len(value) != len(target.elts):
            n = len(value) if isinstance(value, tuple | list | str) else "a non-sequence"
            raise CodeFailed(f"cannot unpack {n} into {len(target.elts)} names")
        for element, item in zip(target.elts, value, strict=True):
            self.assign(element, item)

    # ----------------------------------------------------------------- expressions

    def load(self, name: str) -> Any:
        if name in self.names:
            return self.names[name]
        if name in self.builtins:
            return self.builtins[name]
        raise CodeFailed(f"NameError: name {name!r} is not defined")

    def eval(self, node: ast.AST) -> Any:
        self.tick()
        if isinstance(node, ast.Constant):
            value = node.value
            if not (value is None or isinstance(value, bool | int | float | str)):
                raise CodeRefused(f"a constant of type {type(value).__name__} is not allowed")
            return self.bounded(value)
        if isinstance(node, ast.Name):
            return self.load(node.id)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.eval(node.value), node.attr)
        if isinstance(node, ast.Call):
            func = self.eval(node.func)
            args = [self.eval(a) for a in node.args]
            kwargs = {k.arg: self.eval(k.value) for k in node.keywords if k.arg is not None}
            return self.call(func, args, kwargs)
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.UnaryOp):
            return self.unary(node.op, self.eval(node.operand))
        if isinstance(node, ast.BoolOp):
            value: Any = None
            for operand in node.values:
                value = self.eval(operand)
                if isinstance(node.op, ast.And) != self.truth(value):
                    return value
            return value
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.truth(self.eval(node.test)) else node.orelse)
        if isinstance(node, ast.Tuple | ast.List):
            items = [self.eval(e) for e in node.elts]
            return self.bounded(tuple(items) if isinstance(node, ast.Tuple) else items)
        if isinstance(node, ast.Subscript):
            return self.subscript(self.eval(node.value), self.eval(node.slice))
        if isinstance(node, ast.Slice):
            return slice(*(None if p is None else self.eval(p) for p in (node.lower, node.upper, node.step)))
        if isinstance(node, ast.JoinedStr):
            return self.bounded(
                "".join(
                    self.eval(v) if isinstance(v, ast.FormattedValue) else str(v.value) for v in node.values
                )
            )
        if isinstance(node, ast.FormattedValue):
            return self.formatted(node)
        raise CodeRefused(f"{type(node).__name__} is not allowed in this sandbox")

    def attribute(self, obj: Any, name: str) -> Any:
        where = f"{lib.type_name(obj)}.{name}"
        if isinstance(obj, Module):
            if name in obj.attrs:
                return obj.attrs[name]
            where = f"{obj.name}.{name}"
        elif isinstance(obj, Img):
            if name in lib.IMG_METHODS:
                return Func(name, partial(lib.IMG_METHODS[name], self.ctx, obj))
            if name in ("size", "width", "height", "mode"):
                return {"size": obj.pil.size, "width": obj.pil.width, "height": obj.pil.height}.get(
                    name, obj.pil.mode
                )
        elif isinstance(obj, Arr):
            if name == "shape":
                return tuple(int(v) for v in obj.a.shape)
            if name in lib.ARR_METHODS:
                return Func(name, partial(lib.ARR_METHODS[name], self.ctx, obj))
        elif isinstance(obj, Enhancer) and name == "enhance":
            return Func(name, partial(lib.enhance, self.ctx, obj))
        elif isinstance(obj, FixedUUID) and name == "hex":
            return obj.hex
        elif isinstance(obj, str) and name in _STR_METHODS:
            return Func(name, partial(self._str_method, obj, name))
        elif isinstance(obj, list) and name == "append":
            return Func(name, partial(self._append, obj))
        raise CodeRefused(f"attribute access: {where} is not in the whitelist")

    def call(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if not isinstance(func, Func):
            raise CodeFailed(f"TypeError: a {lib.type_name(func)} is not callable")
        bound = func.fn if isinstance(func.fn, partial) else partial(func.fn, self.ctx)
        try:
            return self.bounded(bound(*args, **kwargs))
        except TypeError as exc:
            raise CodeFailed(f"TypeError in {func.name}(): {exc}") from None
        except (ValueError, OverflowError, ZeroDivisionError) as exc:
            raise CodeFailed(f"{type(exc).__name__} in {func.name}(): {exc}") from None

    def bounded(self, value: Any) -> Any:
        if isinstance(value, str | tuple | list) and len(value) > self.limits.max_sequence:
            raise CodeRefused(
                f"a sequence of {len(value)} items is over the bound of {self.limits.max_sequence}"
            )
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value.bit_length() > self.limits.max_int_bits
        ):
            raise CodeRefused(f"an integer over {self.limits.max_int_bits} bits is over the sandbox's bound")
        return value

    def binop(self, op: ast.operator, left: Any, right: Any) -> Any:
        plain = (int, float, str, tuple, list, bool)
        if not isinstance(left, plain) or not isinstance(right, plain):
            raise CodeFailed(
                f"TypeError: unsupported operands {lib.type_name(left)} and {lib.type_name(right)}"
            )
        if isinstance(op, ast.Mult) and isinstance(left, str | tuple | list) != isinstance(
            right, str | tuple | list
        ):
            seq, times = (left, right) if isinstance(left, str | tuple | list) else (right, left)
            if isinstance(times, int) and len(seq) * max(times, 0) > self.limits.max_sequence:
                raise CodeRefused("a repeated sequence is over the sandbox's size bound")
        if isinstance(op, ast.Pow) and isinstance(left, numbers.Real) and isinstance(right, numbers.Real):
            if abs(right) > 64 or (
                abs(left) > 1 and abs(right) * math.log2(abs(left)) > self.limits.max_int_bits
            ):
                raise CodeRefused("a power over the sandbox's size bound")
        operations: dict[type, Callable[[Any, Any], Any]] = {
            ast.Add: lambda a, b: a + b,
            ast.Sub: lambda a, b: a - b,
            ast.Mult: lambda a, b: a * b,
            ast.Div: lambda a, b: a / b,
            ast.FloorDiv: lambda a, b: a // b,
            ast.Mod: lambda a, b: a % b,
            ast.Pow: lambda a, b: a**b,
        }
        if type(op) not in operations or (isinstance(op, ast.Mod) and isinstance(left, str)):
            raise CodeRefused(f"the operator {type(op).__name__} is not allowed")
        try:
            return self.bounded(operations[type(op)](left, right))
        except (TypeError, ZeroDivisionError, OverflowError, ValueError) as exc:
            raise CodeFailed(f"{type(exc).__name__}: {exc}") from None

    def unary(self, op: ast.unaryop, operand: Any) -> Any:
        if isinstance(op, ast.Not):
            return not self.truth(operand)
        if not isinstance(operand, int | float) or isinstance(op, ast.Invert):
            raise CodeFailed(f"TypeError: bad operand {lib.type_name(operand)} for {type(op).__name__}")
        return -operand if isinstance(op, ast.USub) else +operand

    def truth(self, value: Any) -> bool:
        if isinstance(value, Img | Arr | Module | Func | Enhancer | FixedUUID):
            return True
        return bool(value)

    def compare(self, node: ast.Compare) -> bool:
        left = self.eval(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator)
            if isinstance(op, ast.Is | ast.IsNot):
                if right is not None and left is not None:
                    raise CodeRefused("'is' is only allowed with None")
                result = (left is right) == isinstance(op, ast.Is)
            else:
                plain = (int, float, str, tuple, list, bool, type(None))
                if not isinstance(left, plain) or not isinstance(right, plain):
                    raise CodeFailed("TypeError: images cannot be compared")
                ops = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__"}
                ops |= {ast.Gt: "__gt__", ast.GtE: "__ge__"}
                try:
                    if isinstance(op, ast.In | ast.NotIn):
                        result = (left in right) == isinstance(op, ast.In)
                    else:
                        result = _COMPARE[ops[type(op)]](left, right)
                except TypeError as exc:
                    raise CodeFailed(f"TypeError: {exc}") from None
            if not result:
                return False
            left = right
        return True

    def subscript(self, value: Any, key: Any) -> Any:
        if isinstance(value, Arr):
            return lib.arr_slice(self.ctx, value, key)
        if (
            isinstance(value, tuple | list | str)
            and isinstance(key, int | slice)
            and not isinstance(key, bool)
        ):
            try:
                return value[key]
            except (IndexError, TypeError, ValueError) as exc:
                raise CodeFailed(f"{type(exc).__name__}: {exc}") from None
        raise CodeFailed(f"TypeError: a {lib.type_name(value)} cannot be indexed by {lib.type_name(key)}")

    def formatted(self, node: ast.FormattedValue) -> str:
        value = self.eval(node.value)
        if node.conversion == ord("r"):
            value = lib.represent(value)
        elif node.conversion in (ord("s"), ord("a")):
            value = lib.render(value)
        spec = self.eval(node.format_spec) if node.format_spec is not None else ""
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return format(value, spec)
            except ValueError as exc:
                raise CodeFailed(f"ValueError: {exc}") from None
        return lib.render(value)

    # ----------------------------------------------------------------- builtins and plain methods

    def _str_method(self, text: str, name: str, *args: Any) -> Any:
        if name == "join":
            (items,) = args
            if not isinstance(items, tuple | list) or not all(isinstance(i, str) for i in items):
                raise CodeFailed("join takes a sequence of strings")
            return text.join(items)
        if name == "format":
            return text.format(*(a if isinstance(a, int | float | str) else lib.render(a) for a in args))
        if not all(isinstance(a, str | int) for a in args):
            raise CodeFailed(f"{name} takes strings")
        return getattr(text, name)(*args)

    def _append(self, items: list[Any], value: Any) -> None:
        if len(items) >= self.limits.max_sequence:
            raise CodeRefused("a list over the sandbox's size bound")
        items.append(value)

    def _b_print(self, *values: Any, sep: Any = " ", end: Any = "\n", **kw: Any) -> None:
        self.ctx.write(str(sep).join(lib.render(v) for v in values) + str(end))

    def _b_int(self, value: Any = 0) -> int:
        if isinstance(value, str):
            return int(value.strip())
        return int(lib._number(value, "int's argument"))

    def _b_float(self, value: Any = 0.0) -> float:
        return float(value) if isinstance(value, str) else lib._number(value, "float's argument")

    def _b_str(self, value: Any = "") -> str:
        return lib.render(value)

    def _b_bool(self, value: Any = False) -> bool:
        return self.truth(value)

    def _b_round(self, value: Any, digits: Any = None) -> Any:
        number = lib._number(value, "round's argument")
        return round(number) if digits is None else round(number, lib._int(digits, "digits"))

    def _b_min(self, *values: Any) -> Any:
        items = values[0] if len(values) == 1 else values
        return min(self._numbers(items, "min"))

    def _b_max(self, *values: Any) -> Any:
        items = values[0] if len(values) == 1 else values
        return max(self._numbers(items, "max"))

    def _numbers(self, items: Any, name: str) -> list[Any]:
        if not isinstance(items, tuple | list) or not items:
            raise CodeFailed(f"{name} takes numbers")
        return [lib._number(v, f"{name}'s argument") if not isinstance(v, int) else v for v in items]

    def _b_abs(self, value: Any) -> Any:
        return abs(value) if isinstance(value, int) else abs(lib._number(value, "abs's argument"))

    def _b_len(self, value: Any) -> int:
        if not isinstance(value, tuple | list | str | range):
            raise CodeFailed(f"TypeError: object of type {lib.type_name(value)} has no len()")
        return len(value)

    def _b_range(self, *args: Any) -> range:
        return range(*(lib._int(a, "range's argument") for a in args))

    def _b_tuple(self, value: Any = ()) -> tuple:
        return tuple(self._sequence(value))

    def _b_list(self, value: Any = ()) -> list:
        return list(self._sequence(value))

    def _b_enumerate(self, value: Any, start: Any = 0) -> list:
        return [(i + lib._int(start, "start"), v) for i, v in enumerate(self._sequence(value))]

    def _b_zip(self, *values: Any) -> list:
        return list(zip(*(self._sequence(v) for v in values), strict=False))

    def _sequence(self, value: Any) -> tuple | list | str | range:
        if not isinstance(value, tuple | list | str | range):
            raise CodeFailed(f"a {lib.type_name(value)} is not a sequence")
        if len(value) > self.limits.max_sequence:
            raise CodeRefused(
                f"a sequence of {len(value)} items is over the bound of {self.limits.max_sequence}"
            )
        return value


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "__eq__": lambda a, b: a == b,
    "__ne__": lambda a, b: a != b,
    "__lt__": lambda a, b: a < b,
    "__le__": lambda a, b: a <= b,
    "__gt__": lambda a, b: a > b,
    "__ge__": lambda a, b: a >= b,
}
