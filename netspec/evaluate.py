"""Evaluates spec expressions: integer, float, bool, string and list arithmetic. Never Python's eval."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

from netspec import ast
from netspec.errors import Diagnostic, NetspecError, did_you_mean

# A value larger than this is not a plausible size; refusing it keeps arithmetic cheap.
MAX_MAGNITUDE = 10**18
# Items in one list value, nested lists counted through: `let b = [a, a]` shares `a` but doubles the count.
MAX_LIST_ITEMS = 100_000
MAX_LIST_DEPTH = 100
SHOWN_CHARS = 200  # of a value quoted in a message


POISONED = object()  # the value of a `let` whose definition had an error; its users stay silent


@dataclass(frozen=True)
class Symbol:
    """A bare name that is not bound: a block passed as an argument, or a word such as `auto`."""

    name: str


def show(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as a spec would write it, cut to about `limit` characters."""
    text = _show(value, limit)
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: Any, limit: int) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, (list, tuple)):
        parts, length = [], 0
        for v in value:  # stop early: a shared nested list can stand for 10^5 numbers
            if length > limit:
                parts.append("...")
                break
            parts.append(_show(v, limit - length))
            length += len(parts[-1]) + 2
        return "[" + ", ".join(parts) + "]"
    return repr(value)


def _list_problem(value: list) -> str | None:
    """Why a list value is too big to keep, if it is; stops looking as soon as it knows."""
    budget = MAX_LIST_ITEMS
    stack = [(value, 1)]
    while stack:
        items, depth = stack.pop()
        budget -= len(items)
        if budget < 0:
            return f"a list holding more than {MAX_LIST_ITEMS:,} items, nested lists counted through"
        if depth > MAX_LIST_DEPTH:  # `let a2 = [a1]`, and so on: deep without deep syntax
            return f"lists nested more than {MAX_LIST_DEPTH} deep"
        stack.extend((v, depth + 1) for v in items if isinstance(v, list))
    return None


def _error(code: str, message: str, node, hint: str | None = None) -> NetspecError:
    return NetspecError(Diagnostic(code, message, node.span, hint))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _floordiv(a, b):
    return a // b


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": _floordiv, "%": operator.mod, "**": operator.pow,
}
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
            ">=": operator.ge}


def evaluate(expr: ast.Expr, lookup: Callable[[str], Any], names: Callable[[], list[str]] | None = None,
             allow_symbol: bool = False) -> Any:
    """Evaluate `expr`; `lookup(name)` returns a value or raises KeyError.

    >>> from netspec.parse import parse
    >>> e = parse('let a = c * 4 + 1').items[0].value
    >>> evaluate(e, {"c": 16}.__getitem__)
    65
    """
    if isinstance(expr, ast.Literal):
        return expr.value
    if isinstance(expr, ast.Name):
        try:
            value = lookup(expr.id)
            if value is POISONED:
                raise NetspecError([])  # its own definition was reported already
            return value
        except KeyError:
            if allow_symbol:
                return Symbol(expr.id)
            hint = did_you_mean(expr.id, names()) if names else None
            raise _error("NS205", f"undefined name '{expr.id}'", expr, hint) from None
    if isinstance(expr, ast.ListExpr):
        return _sized([evaluate(item, lookup, names) for item in expr.items], expr)
    if isinstance(expr, ast.Unary):
        value = evaluate(expr.operand, lookup, names)
        if expr.op == "not":
            return not value
        if not _is_number(value):
            raise _error("NS212", f"cannot negate {show(value)}", expr)
        return -value
    if isinstance(expr, ast.Index):
        target = evaluate(expr.target, lookup, names)
        index = evaluate(expr.index, lookup, names)
        if not isinstance(target, list):
            raise _error("NS212", f"cannot index {show(target)}: it is not a list", expr)
        if not isinstance(index, int) or isinstance(index, bool):
            raise _error("NS212", f"a list index must be an integer, got {show(index)}", expr.index)
        if not -len(target) <= index < len(target):
            raise _error("NS212", f"index {index} is out of range for a list of {len(target)}", expr.index)
        return target[index]
    if isinstance(expr, ast.Binary):
        return _binary(expr, lookup, names)
    raise TypeError(f"not an expression: {expr!r}")


def _binary(expr: ast.Binary, lookup, names) -> Any:
    left = evaluate(expr.left, lookup, names)
    if expr.op == "and":
        return left and evaluate(expr.right, lookup, names)
    if expr.op == "or":
        return left or evaluate(expr.right, lookup, names)
    right = evaluate(expr.right, lookup, names)
    if expr.op in _COMPARE:
        try:
            return _COMPARE[expr.op](left, right)
        except TypeError:
            raise _error("NS212", f"cannot compare {show(left)} {expr.op} {show(right)}", expr) from None
    if expr.op == "+" and isinstance(left, list) and isinstance(right, list):
        if len(left) + len(right) > MAX_LIST_ITEMS:
            raise _error("NS213", f"a list of {len(left) + len(right):,} items (limit {MAX_LIST_ITEMS:,})", expr)
        return _sized(left + right, expr)
    if not (_is_number(left) and _is_number(right)):
        raise _error("NS212", f"'{expr.op}' needs numbers, got {show(left)} and {show(right)}", expr)
    if expr.op in ("/", "//", "%") and right == 0:
        raise _error("NS212", "division by zero", expr.right)
    if expr.op == "**" and (abs(right) > 64 or (isinstance(right, int) and right < 0 and isinstance(left, int))):
        if abs(right) > 64:
            raise _error("NS213", f"exponent {right} is too large (at most 64)", expr.right)
        left = float(left)
    try:
        result = _ARITH[expr.op](left, right)
    except OverflowError:
        raise _error("NS213", "number too large", expr) from None
    except ZeroDivisionError:  # 0 ** -1, 0.0 ** -0.5
        raise _error("NS212", "division by zero", expr) from None
    if _is_number(result) and abs(result) > MAX_MAGNITUDE:
        raise _error("NS213", f"{result:.3g} is larger than any plausible size (limit 1e18)", expr)
    if isinstance(result, complex) or (isinstance(result, float) and result != result):
        raise _error("NS212", "the result is not a real number", expr)
    return result


def _sized(value: list, expr) -> list:
    problem = _list_problem(value)
    if problem:
        raise _error("NS213", problem, expr)
    return value
