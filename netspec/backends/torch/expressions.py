"""The values the source writer builds and prints: how a layer, a block class or an nn.Sequential is constructed
(`Call`, `Frozen`, `Repeat`, `Named`), and, once a class's instances are merged, what each argument is (a `Literal`
or a `Ref` to an `__init__` parameter). `strict` compares them as a layer would: 1, 1.0 and True differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# keyword arguments that torch.nn takes as an int or a pair: (3, 3) is written 3
PAIRS = frozenset({"kernel_size", "stride", "padding", "dilation", "output_padding", "output_size", "size",
                   "scale_factor"})


@dataclass(frozen=True)
class Call:
    """`callee(*args, **kwargs)`: a layer, a block class, nn.Sequential, an init function."""

    callee: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    args: tuple[Any, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()  # a generated class's defaults: the printer leaves those out


@dataclass(frozen=True)
class Frozen:
    """`module.requires_grad_(False)`."""

    module: Any


@dataclass(frozen=True)
class Repeat:
    """`count` copies of `item` among nn.Sequential's children."""

    item: Any
    count: Any


@dataclass(frozen=True)
class Named:
    """nn.Sequential's children under names that are not 0, 1, 2, ...: `OrderedDict([("0", ...), ("2", ...)])`."""

    names: tuple[str, ...]
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Literal:
    """A value written as it is, the same in every instance of a class."""

    value: Any


@dataclass(frozen=True)
class Ref:
    """An `__init__` parameter, less `offset`."""

    name: str
    offset: int = 0


def strict(value: Any) -> Any:
    """A key equal only for equal values of equal types: 1, 1.0 and True differ, as they do to a layer."""
    if isinstance(value, Call):
        return ("call", value.callee, tuple((k, strict(v)) for k, v in value.kwargs), strict(value.args))
    if isinstance(value, Frozen):
        return ("frozen", strict(value.module))
    if isinstance(value, Repeat):
        return ("repeat", strict(value.item), strict(value.count))
    if isinstance(value, Named):
        return ("named", value.names, strict(value.values))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(strict(v) for v in value))
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def same(values: list) -> bool:
    """Whether all the values are strictly equal (see `strict`)."""
    return len({strict(v) for v in values}) <= 1
