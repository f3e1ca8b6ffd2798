"""Printing constructions as Python: literals (`scalar_literal`, `string_literal`), an expression on one line
(`flat`), and an assignment or call broken over several lines where one would pass WIDTH (`printed`). Arguments
equal to the callee's defaults are left out, and the leading required ones are written by position, as a person
would write `nn.Conv2d(3, 64, kernel_size=7)`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from torch import nn

from netspec.backends.torch import layers as torch_layers
from netspec.backends.torch.expressions import Call, Frozen, Literal, Named, Ref, Repeat, strict

WIDTH = 110  # longest line the printer writes before it breaks a call over several lines
# torch's containers, which the writer builds from dotted names (writer.py); their members are printed a line each
CONTAINERS = ("nn.ModuleList", "nn.ModuleDict", "nn.ParameterList", "nn.ParameterDict")

_SIGNATURES: dict[str, list[inspect.Parameter] | None] = {}


def constructor_parameters(callee: str) -> list[inspect.Parameter] | None:
    """The parameters of a torch.nn or helper layer class (`nn.Conv2d`, `Capsules`); None for anything else."""
    if callee not in _SIGNATURES:
        target = getattr(nn, callee[3:], None) if callee.startswith("nn.") else vars(torch_layers).get(callee)
        _SIGNATURES[callee] = (list(inspect.signature(target).parameters.values())
                               if inspect.isclass(target) and callee != "nn.Sequential" else None)
    return _SIGNATURES[callee]


def scalar_literal(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({string_literal(str(value))})"
    return string_literal(value) if isinstance(value, str) else repr(value)


def string_literal(text: str) -> str:
    """A string literal, in double quotes where repr's single ones are not needed."""
    return f'"{text}"' if text.isprintable() and not set(text) & {"'", '"', "\\"} else repr(text)


def _parts(value: Any) -> tuple[str, list[tuple[str, Any]], str] | None:
    """A value that prints as `head item, item, ... tail`, or None for an atom."""
    if isinstance(value, Literal):
        inner = value.value
        if isinstance(inner, (Call, Frozen, tuple, list, Named, Repeat)):
            return _parts(_literal_tree(inner))
        return None
    if isinstance(value, Frozen):
        parts = _parts(value.module)
        return None if parts is None else (parts[0], parts[1], parts[2] + ".requires_grad_(False)")
    if isinstance(value, Call) and value.callee in CONTAINERS and not value.kwargs and len(value.args) == 1:
        # nn.ModuleList([...]) and nn.ModuleDict(OrderedDict([...])): broken inside the brackets, a member a line
        head, items, tail = _parts(value.args[0])
        return f"{value.callee}({head}", items, f"{tail})"
    if isinstance(value, Call):
        items: list[tuple[str, Any]] = [("", a) for a in value.args]
        signature = constructor_parameters(value.callee)
        defaults = dict(value.defaults)
        kwargs = [(k, v) for k, v in value.kwargs if not (isinstance(v, Literal) and k in defaults
                                                          and strict(v.value) == strict(defaults[k]))]
        if signature is not None:
            defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
            kwargs = [(k, v) for k, v in kwargs if not (isinstance(v, Literal) and k in defaults
                                                        and strict(v.value) == strict(defaults[k]))]
            required = [p.name for p in signature if p.default is inspect.Parameter.empty
                        and p.kind is p.POSITIONAL_OR_KEYWORD][:2]
            while kwargs and required and kwargs[0][0] == required[0]:
                items.append(("", kwargs.pop(0)[1]))
                required.pop(0)
        items += [(f"{k}=", v) for k, v in kwargs]
        return f"{value.callee}(", items, ")"
    if isinstance(value, Named):
        return "OrderedDict([", [("", (Literal(n), v)) for n, v in zip(value.names, value.values)], "])"
    if isinstance(value, tuple):
        return "(", [("", v) for v in value], ",)" if len(value) == 1 else ")"
    if isinstance(value, list):
        return "[", [("", v) for v in value], "]"
    return None


def _literal_tree(value: Any) -> Any:
    """A constant construction, as the printer takes resolved ones."""
    if isinstance(value, Call):
        return Call(value.callee, tuple((k, _literal_tree(v)) for k, v in value.kwargs),
                    tuple(_literal_tree(v) for v in value.args), value.defaults)
    if isinstance(value, Frozen):
        return Frozen(_literal_tree(value.module))
    if isinstance(value, Repeat):
        return Repeat(_literal_tree(value.item), Literal(value.count))
    if isinstance(value, Named):
        return Named(value.names, tuple(_literal_tree(v) for v in value.values))
    if isinstance(value, (tuple, list)):
        items = [_literal_tree(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return Literal(value)


def _repeats(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """nn.Sequential's Repeat children: written out up to three times, else as a comprehension."""
    out = []
    for prefix, value in items:
        if isinstance(value, Repeat):
            count = value.count
            if isinstance(count, Literal) and count.value <= 3:
                out += [(prefix, value.item)] * count.value
            else:
                out.append(("*", value))
        else:
            out.append((prefix, value))
    return out


def flat(value: Any) -> str:
    """The value as Python on one line."""
    if isinstance(value, Ref):
        return value.name if not value.offset else f"{value.name} - {value.offset}"
    if isinstance(value, Repeat):
        return f"[{flat(value.item)} for _ in range({flat(value.count)})]"
    if isinstance(value, Frozen):
        return flat(value.module) + ".requires_grad_(False)"
    if isinstance(value, Literal) and not isinstance(value.value, (Call, Frozen, tuple, list, Named, Repeat)):
        return scalar_literal(value.value)
    parts = _parts(value)
    if parts is None:
        return scalar_literal(value)
    head, items, tail = parts
    return head + ", ".join(prefix + flat(v) for prefix, v in _repeats(items)) + tail


def printed(value: Any, indent: int, lead: str = "", trail: str = "") -> list[str]:
    """`lead + value + trail` at `indent`, a call broken one argument a line where it would pass WIDTH."""
    pad = " " * indent
    one = pad + lead + flat(value) + trail
    parts = None if isinstance(value, Ref) else _parts(value)
    if len(one) <= WIDTH or parts is None:
        return [one]
    head, items, tail = parts
    lines = [pad + lead + head]
    items = _repeats(items)
    # short arguments: as many a line as fit
    if head not in ("nn.Sequential(", "super().__init__(", "OrderedDict([") and not head.startswith(CONTAINERS) and all(
            prefix != "*" and len(flat(item)) <= 40 for prefix, item in items):
        line = pad + "   "
        for prefix, item in items:
            text = f" {prefix}{flat(item)},"
            if len(line) + len(text) > WIDTH and line.strip():
                lines.append(line)
                line = pad + "   "
            line += text
        return lines + [line, pad + tail.lstrip(",") + trail if tail.startswith(",") else pad + tail + trail]
    for prefix, item in items:
        if prefix == "*" and len(pad) + 5 + len(flat(item)) <= WIDTH:
            lines.append(f"{pad}    *{flat(item)},")
        elif prefix == "*":
            lines += printed(item.item, indent + 4, "*[", "")
            lines.append(f"{pad}    for _ in range({flat(item.count)})],")
        else:
            lines += printed(item, indent + 4, prefix, ",")
    lines.append(pad + tail.lstrip(",") + trail if tail.startswith(",") else pad + tail + trail)
    return lines
