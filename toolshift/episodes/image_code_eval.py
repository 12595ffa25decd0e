"""The evaluator of `toolshift.episodes.image_code`: walks a tree the guard accepted, node by node, on the
stand-in values of `toolshift.episodes.image_code_values`, calling only the operations of
`toolshift.episodes.image_code_lib` (never a name looked up on a real object), and counting evaluation steps
and loop iterations against the sandbox's limits.
"""

from __future__ import annotations

import ast
import math
import numbers
from collections.abc import Callable
from functools import partial
from typing import Any

from toolshift.episodes import image_code_lib as lib
from toolshift.episodes.image_code_values import (
    Arr,
    CodeFailed,
    CodeRefused,
    Context,
    Enhancer,
    FixedUUID,
    Func,
    Img,
    Module,
    int_of,
    number_of,
    render,
    represent,
    type_name,
)

_STR_METHODS = ("join", "replace", "split", "strip", "lower", "upper", "startswith", "endswith", "format")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Interpreter:
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
            raise CodeFailed(f"cannot loop over a {type_name(iterable)}")
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
        where = f"{type_name(obj)}.{name}"
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
            raise CodeFailed(f"TypeError: a {type_name(func)} is not callable")
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
            raise CodeFailed(f"TypeError: unsupported operands {type_name(left)} and {type_name(right)}")
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
            raise CodeFailed(f"TypeError: bad operand {type_name(operand)} for {type(op).__name__}")
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
        raise CodeFailed(f"TypeError: a {type_name(value)} cannot be indexed by {type_name(key)}")

    def formatted(self, node: ast.FormattedValue) -> str:
        value = self.eval(node.value)
        if node.conversion == ord("r"):
            value = represent(value)
        elif node.conversion in (ord("s"), ord("a")):
            value = render(value)
        spec = self.eval(node.format_spec) if node.format_spec is not None else ""
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return format(value, spec)
            except ValueError as exc:
                raise CodeFailed(f"ValueError: {exc}") from None
        return render(value)

    # ----------------------------------------------------------------- builtins and plain methods

    def _str_method(self, text: str, name: str, *args: Any) -> Any:
        if name == "join":
            (items,) = args
            if not isinstance(items, tuple | list) or not all(isinstance(i, str) for i in items):
                raise CodeFailed("join takes a sequence of strings")
            return text.join(items)
        if name == "format":
            return text.format(*(a if isinstance(a, int | float | str) else render(a) for a in args))
        if not all(isinstance(a, str | int) for a in args):
            raise CodeFailed(f"{name} takes strings")
        return getattr(text, name)(*args)

    def _append(self, items: list[Any], value: Any) -> None:
        if len(items) >= self.limits.max_sequence:
            raise CodeRefused("a list over the sandbox's size bound")
        items.append(value)

    def _b_print(self, *values: Any, sep: Any = " ", end: Any = "\n", **kw: Any) -> None:
        self.ctx.write(str(sep).join(render(v) for v in values) + str(end))

    def _b_int(self, value: Any = 0) -> int:
        if isinstance(value, str):
            return int(value.strip())
        return int(number_of(value, "int's argument"))

    def _b_float(self, value: Any = 0.0) -> float:
        return float(value) if isinstance(value, str) else number_of(value, "float's argument")

    def _b_str(self, value: Any = "") -> str:
        return render(value)

    def _b_bool(self, value: Any = False) -> bool:
        return self.truth(value)

    def _b_round(self, value: Any, digits: Any = None) -> Any:
        number = number_of(value, "round's argument")
        return round(number) if digits is None else round(number, int_of(digits, "digits"))

    def _b_min(self, *values: Any) -> Any:
        items = values[0] if len(values) == 1 else values
        return min(self._numbers(items, "min"))

    def _b_max(self, *values: Any) -> Any:
        items = values[0] if len(values) == 1 else values
        return max(self._numbers(items, "max"))

    def _numbers(self, items: Any, name: str) -> list[Any]:
        if not isinstance(items, tuple | list) or not items:
            raise CodeFailed(f"{name} takes numbers")
        return [number_of(v, f"{name}'s argument") if not isinstance(v, int) else v for v in items]

    def _b_abs(self, value: Any) -> Any:
        return abs(value) if isinstance(value, int) else abs(number_of(value, "abs's argument"))

    def _b_len(self, value: Any) -> int:
        if not isinstance(value, tuple | list | str | range):
            raise CodeFailed(f"TypeError: object of type {type_name(value)} has no len()")
        return len(value)

    def _b_range(self, *args: Any) -> range:
        return range(*(int_of(a, "range's argument") for a in args))

    def _b_tuple(self, value: Any = ()) -> tuple:
        return tuple(self._sequence(value))

    def _b_list(self, value: Any = ()) -> list:
        return list(self._sequence(value))

    def _b_enumerate(self, value: Any, start: Any = 0) -> list:
        return [(i + int_of(start, "start"), v) for i, v in enumerate(self._sequence(value))]

    def _b_zip(self, *values: Any) -> list:
        return list(zip(*(self._sequence(v) for v in values), strict=False))

    def _sequence(self, value: Any) -> tuple | list | str | range:
        if not isinstance(value, tuple | list | str | range):
            raise CodeFailed(f"a {type_name(value)} is not a sequence")
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
