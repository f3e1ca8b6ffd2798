"""Evaluates spec expressions: integer, float, bool, string and list arithmetic. Never Python's eval."""

from __future__ import annotations

import math
import operator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

from netspec.language import ast
from netspec.ground.errors import Diagnostic, NetspecError, did_you_mean

# A value larger than this is not a plausible size; refusing it keeps arithmetic cheap.
MAX_MAGNITUDE = 10**18
# Items in one list value, nested lists counted through: `let b = [a, a]` shares `a` but doubles the count.
MAX_LIST_ITEMS = 100_000
MAX_LIST_DEPTH = 100
SHOWN_CHARS = 200  # of a value quoted in a message


POISONED = object()  # the value of a `let` whose definition had an error; its users stay silent


class _Steps:
    """What the evaluations of one spec may still spend (Limits.evaluation_steps)."""

    __slots__ = ("left", "limit", "reported", "sizes")

    def __init__(self, limit: int):
        self.left = self.limit = limit
        self.reported = False
        self.sizes: dict[int, tuple[list, int]] = {}  # id -> (list, items counted through), kept alive here


_STEPS: ContextVar[_Steps | None] = ContextVar("netspec_evaluation_steps", default=None)


@contextmanager
def step_limit(steps: int):
    """Bound the evaluations inside to `steps` steps: an expression node, or a list item made, read or passed on.

    The other limits bound each expression and the number of layers, not their product: a block instantiated
    10,000 times evaluates its arguments 10,000 times, and a name can hand the same 100,000-item list to each.
    Outside this context nothing is counted.
    """
    token = _STEPS.set(_Steps(steps))
    try:
        yield
    finally:
        _STEPS.reset(token)


def _spend(steps: int, expr) -> None:
    budget = _STEPS.get()
    if budget is not None:
        budget.left -= steps
        if budget.left < 0:
            _overspent(budget, expr)


def _overspent(budget: _Steps, expr) -> None:
    if budget.reported:  # reported where it ran out; what follows stops as quietly as after a poisoned `let`
        raise NetspecError([])
    budget.reported = True
    raise _error("NS213", f"evaluating the spec's expressions takes more than {budget.limit:,} steps", expr,
                 "a block repeated many times evaluates its arguments each time: compute a value once with `let`, "
                 "and keep lists short")


def steps_spent() -> int:
    """The steps spent so far inside step_limit (0 outside it)."""
    budget = _STEPS.get()
    return 0 if budget is None else budget.limit - budget.left


def spend_as_before(steps: int) -> bool:
    """Charge the steps that evaluations already made once would spend again (lowering copying a block instance
    instead of evaluating its arguments); False, charging nothing, when fewer are left, so that the caller evaluates
    them and the limit is reported where it runs out."""
    budget = _STEPS.get()
    if budget is None:
        return True
    if budget.left < steps:
        return False
    budget.left -= steps
    return True


def spent_on(value: Any) -> int:
    """The steps that walking a value costs: a list's items, nested lists counted through (each list counted
    once and remembered); 0 for anything else, or when nothing is counted."""
    budget = _STEPS.get()
    if budget is None or type(value) is not list:
        return 0
    known = budget.sizes.get(id(value))
    if known is None or known[0] is not value:
        _, count = _list_problem(value)
        known = budget.sizes[id(value)] = (value, count)
    return known[1]


def handed_on(value: Any, expr) -> Any:
    """`value`, counted as walked: what the evaluator hands to a layer (validation, the argument cache, the
    shape rules) is read again for every instance, so a name can make one big list cost once per layer."""
    if type(value) is list:
        _spend(spent_on(value), expr)
    return value


@dataclass(frozen=True)
class Symbol:
    """A bare name that is not bound: a block passed as an argument, or a word such as `auto`.

    `home` is the file (netspec.semantics.lower.Definitions) where a block's name was written, so the block it names is
    found there, whichever file defines the block that calls it."""

    name: str
    home: Any = field(default=None, compare=False, hash=False, repr=False)
    # where the word was written: a mistyped name passed down through blocks is reported there, once
    span: Any = field(default=None, compare=False, hash=False, repr=False)


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


def _list_problem(value: list) -> tuple[str | None, int]:
    """Why a list value is too big to keep, if it is, and the items looked at; stops as soon as it knows."""
    budget = MAX_LIST_ITEMS
    stack = [(value, 1)]
    while stack:
        items, depth = stack.pop()
        budget -= len(items)
        if budget < 0:
            return (f"a list holding more than {MAX_LIST_ITEMS:,} items, nested lists counted through",
                    MAX_LIST_ITEMS - budget)
        if depth > MAX_LIST_DEPTH:  # `let a2 = [a1]`, and so on: deep without deep syntax
            return f"lists nested more than {MAX_LIST_DEPTH} deep", MAX_LIST_ITEMS - budget
        stack.extend((v, depth + 1) for v in items if isinstance(v, list))
    return None, MAX_LIST_ITEMS - budget


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

    >>> from netspec.language.parse import parse
    >>> e = parse('let a = c * 4 + 1').items[0].value
    >>> evaluate(e, {"c": 16}.__getitem__)
    65
    """
    budget = _STEPS.get()
    if budget is not None:
        budget.left -= 1
        if budget.left < 0:
            _overspent(budget, expr)
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
                return Symbol(expr.id, span=expr.span)
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
    if isinstance(expr, ast.Conditional):
        chosen = expr.then if evaluate(expr.condition, lookup, names) else expr.otherwise
        return evaluate(chosen, lookup, names, allow_symbol)  # `act=hardswish if hs else relu`
    if isinstance(expr, ast.Slice):
        return _slice(expr, lookup, names)
    if isinstance(expr, ast.Function):
        return _call(expr, lookup, names)
    raise TypeError(f"not an expression: {expr!r}")


def _binary(expr: ast.Binary, lookup, names) -> Any:
    left = evaluate(expr.left, lookup, names)
    if expr.op == "and":
        return left and evaluate(expr.right, lookup, names)
    if expr.op == "or":
        return left or evaluate(expr.right, lookup, names)
    right = evaluate(expr.right, lookup, names)
    if expr.op in _COMPARE:
        if isinstance(left, list) and isinstance(right, list):  # compared item by item
            _spend(spent_on(left) + spent_on(right), expr)
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
    problem, looked_at = _list_problem(value)
    if problem:  # the more telling error first
        raise _error("NS213", problem, expr)
    _spend(looked_at, expr)
    return value


def _slice(expr: ast.Slice, lookup, names) -> list:
    target = evaluate(expr.target, lookup, names)
    if not isinstance(target, list):
        raise _error("NS212", f"cannot slice {show(target)}: it is not a list", expr)
    bounds = []
    for bound in (expr.start, expr.stop):
        value = None if bound is None else evaluate(bound, lookup, names)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _error("NS212", f"a slice bound must be an integer, got {show(value)}", bound)
        bounds.append(value)
    result = target[bounds[0]:bounds[1]]
    _spend(len(result), expr)
    return result


def _integer(name: str, value: Any, node) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _error("NS212", f"{name} needs an integer, got {show(value)}", node)
    return value


def _number(name: str, value: Any, node) -> int | float:
    if not _is_number(value):
        raise _error("NS212", f"{name} needs a number, got {show(value)}", node)
    if isinstance(value, float) and not math.isfinite(value):
        raise _error("NS212", f"{name} needs a finite number, got {show(value)}", node)
    return value


def _numbers(name: str, values: list, node) -> list:
    """The arguments of min/max/sum: several numbers, or one list of them."""
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    if not values:
        raise _error("NS212", f"{name} of nothing", node)
    _spend(len(values), node)
    return [_number(name, v, node) for v in values]


def _range(name: str, args: list, node) -> list:
    bounds = [_integer(name, a, node) for a in args]
    if not 1 <= len(bounds) <= 3:
        raise _error("NS211", f"range takes 1 to 3 integers, got {len(bounds)}", node)
    if len(bounds) == 3 and bounds[2] == 0:
        raise _error("NS212", "range step must not be zero", node)
    values = range(*bounds)
    if len(values) > MAX_LIST_ITEMS:
        raise _error("NS213", f"range of {len(values):,} items (limit {MAX_LIST_ITEMS:,})", node)
    _spend(len(values), node)
    return list(values)


def make_divisible(value: float, divisor: int, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """The nearest multiple of `divisor` to `value`, at least `min_value` (default `divisor`), raised by one
    `divisor` when that fell below `round_limit` × `value`: timm's `make_divisible`; round_limit 0.9 is
    torchvision's `_make_divisible` (MobileNet, MNASNet and EfficientNet widths), 0 never raises it.

    >>> make_divisible(32 * 0.75, 8), make_divisible(20, 16), make_divisible(20, 16, round_limit=0.0)
    (24, 32, 16)
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


MAKE_DIVISIBLE = ("value", "divisor", "min_value", "round_limit")


def _make_divisible(name: str, args: list, node, **keywords) -> int:
    if not 2 <= len(args) <= len(MAKE_DIVISIBLE):
        raise _error("NS211", f"make_divisible takes (value, divisor, min_value=none, round_limit=0.9), got "
                              f"{len(args)} positional", node)
    given = dict(zip(MAKE_DIVISIBLE, args))
    for key, value in keywords.items():
        if key in given:
            raise _error("NS203", f"make_divisible's {key} given twice, by position and by name", node)
        given[key] = value
    value = _number(name, given["value"], node)
    divisor = _integer(name, given["divisor"], node)
    if divisor <= 0:
        raise _error("NS212", f"make_divisible's divisor must be positive, got {divisor}", node)
    min_value = given.get("min_value")
    if min_value is not None:
        min_value = _integer(name, min_value, node)
    round_limit = _number(name, given.get("round_limit", 0.9), node)
    return make_divisible(value, divisor, min_value, round_limit)


def _to_int(name: str, value, node) -> int:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _error("NS212", f"int({show(value)}): not an integer", node) from None
    return int(_number(name, value, node))


def _length(name: str, value, node) -> int:
    if not isinstance(value, (list, str)):
        raise _error("NS212", f"len needs a list or a string, got {show(value)}", node)
    return len(value)


# Past these, round(x, digits) of a number within MAX_MAGNITUDE changes no more, and Python's int rounding to a
# huge negative number of digits would compute 10 ** -digits.
ROUND_DIGITS = (-20, 400)


def _round(name: str, args: list, node):
    """round(x) or round(x, digits); `args` are the positional arguments, as for every function."""
    value = _number(name, args[0], node)
    if len(args) == 1:
        return round(value)
    digits = _integer(name, args[1], node)
    return round(value, min(max(digits, ROUND_DIGITS[0]), ROUND_DIGITS[1]))


# Built-in functions: name -> (summary, implementation(name, positional, node, **keywords)). Each is linear in
# its input at worst (range and sum are bounded by MAX_LIST_ITEMS), so no expression can hang the checker.
FUNCTIONS: dict[str, tuple[str, Callable[..., Any]]] = {
    "min": ("min(a, b, ...) or min(list)", lambda n, a, e: min(_numbers(n, a, e))),
    "max": ("max(a, b, ...) or max(list)", lambda n, a, e: max(_numbers(n, a, e))),
    "sum": ("sum(list)", lambda n, a, e: sum(_numbers(n, a, e)) if a != [[]] else 0),  # Python's sum([]) is 0
    "abs": ("abs(x)", lambda n, a, e: abs(_number(n, *a, e))),
    "round": ("round(x) to the nearest integer, ties to even, as Python; round(x, digits)", _round),
    "floor": ("floor(x): the largest integer <= x", lambda n, a, e: math.floor(_number(n, *a, e))),
    "ceil": ("ceil(x): the smallest integer >= x", lambda n, a, e: math.ceil(_number(n, *a, e))),
    "int": ("int(x): toward zero, as Python", lambda n, a, e: _to_int(n, *a, e)),
    "float": ("float(x)", lambda n, a, e: float(_number(n, *a, e))),
    "len": ("len(list)", lambda n, a, e: _length(n, *a, e)),
    "range": ("range(stop), range(start, stop[, step]): a list of integers", _range),
    "make_divisible": ("make_divisible(value, divisor, min_value=none, round_limit=0.9): timm's channel rounding "
                       "(torchvision's with the default round_limit)", _make_divisible),
}
_ARITY = {"abs": 1, "floor": 1, "ceil": 1, "int": 1, "float": 1, "len": 1, "round": (1, 2)}
_KEYWORDS = {"make_divisible": {"min_value", "round_limit"}}


def _call(expr: ast.Function, lookup, names) -> Any:
    if expr.name not in FUNCTIONS:
        raise _error("NS205", f"unknown function '{expr.name}'", _named(expr),
                     did_you_mean(expr.name, list(FUNCTIONS)) or f"functions: {', '.join(sorted(FUNCTIONS))}")
    positional, keywords = [], {}
    for arg in expr.args:
        value = evaluate(arg.value, lookup, names)
        if arg.name is None:
            positional.append(value)
        elif arg.name not in _KEYWORDS.get(expr.name, ()):
            raise _error("NS202", f"{expr.name} has no argument '{arg.name}'", arg, FUNCTIONS[expr.name][0])
        else:
            keywords[arg.name] = value
    arity = _ARITY.get(expr.name)
    if arity is not None:
        low, high = arity if isinstance(arity, tuple) else (arity, arity)
        if not low <= len(positional) <= high:
            raise _error("NS211", f"{expr.name} takes {low if low == high else f'{low} or {high}'} argument"
                                  f"{'s' if high > 1 else ''}, got {len(positional)}", expr, FUNCTIONS[expr.name][0])
    result = FUNCTIONS[expr.name][1](expr.name, positional, expr, **keywords)
    if _is_number(result) and abs(result) > MAX_MAGNITUDE:
        raise _error("NS213", f"{result:.3g} is larger than any plausible size (limit 1e18)", expr)
    return result


def _named(expr: ast.Function):
    """The function's name, for errors about the name itself."""
    return ast.Name(expr.name, expr.name_span or expr.span)
