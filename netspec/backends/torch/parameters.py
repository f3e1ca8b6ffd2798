"""Merging the instances of one generated class: `merge` lays their constructions over each other, leaving a
`Leaf` wherever they may differ, and a `Resolver` turns each Leaf into a literal (the same in every instance) or
an `__init__` parameter, named after the block's own parameter where the values equal it in every instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netspec.backends.torch.expressions import PAIRS, Call, Frozen, Literal, Named, Ref, Repeat, same, strict
from netspec.backends.torch.naming import RESERVED, is_identifier, symbol_name
from netspec.backends.torch.structure import Instance
from netspec.language.evaluate import Symbol

NO_DEFAULT = object()  # a Param without a default
_NOT_PLAIN = object()  # a block argument no layer argument can hold


@dataclass
class Param:
    """An `__init__` parameter of a generated class."""

    name: str
    values: list[Any]  # per instance of the class; None where it does not matter
    members: set[int]  # the instances it is defined for
    default: Any = NO_DEFAULT  # the block's default, where every instance that took it got the same value


class Leaf:
    """A position whose value may differ between a class's instances: `values[i]` is instance `members[i]`'s."""

    def __init__(self, values: list, members: list[int], context: str):
        self.values, self.members, self.context = values, members, context


def merge(values: list, members: list[int], context: str) -> Any:
    """One construction with a Leaf wherever the instances' constructions may differ."""
    first = values[0]
    if all(isinstance(v, Call) and v.callee == first.callee and len(v.args) == len(first.args)
           and [k for k, _ in v.kwargs] == [k for k, _ in first.kwargs] for v in values):
        args = tuple(merge([v.args[i] for v in values], members, context) for i in range(len(first.args)))
        kwargs = tuple((key, merge([dict(v.kwargs)[key] for v in values], members, key)) for key, _ in first.kwargs)
        return Call(first.callee, kwargs, args, first.defaults)
    if all(isinstance(v, Frozen) for v in values):
        return Frozen(merge([v.module for v in values], members, context))
    if all(isinstance(v, Repeat) for v in values):
        return Repeat(merge([v.item for v in values], members, context),
                      merge([v.count for v in values], members, "count"))
    if all(isinstance(v, Named) and v.names == first.names for v in values):
        return Named(first.names, tuple(merge([v.values[i] for v in values], members, context)
                                        for i in range(len(first.names))))
    if (context not in PAIRS and all(type(v) is type(first) and isinstance(v, (tuple, list)) and len(v) == len(first)
                                     for v in values)):
        items = [merge([v[i] for v in values], members, context) for i in range(len(first))]
        return tuple(items) if isinstance(first, tuple) else items
    return Leaf(values, members, context)


class Resolver:
    """Turns each Leaf into a literal (the same in every instance) or an `__init__` parameter: a block parameter
    where the values equal one in every instance, else one named after the layer argument."""

    def __init__(self, instances: list[Instance], classes: set[str]):
        self.reserved = RESERVED | classes  # an __init__ parameter must not hide a class the __init__ builds
        self.count = len(instances)
        self.instances = instances
        self.awkward = False  # a parameter named only by a number, or a layer passed in that no block parameter names
        self.params: list[Param] = []
        self.candidates: dict[str, list[Any]] = {}
        first = instances[0].arguments
        for name in first:
            values = [_plain(inst.arguments.get(name)) for inst in instances]
            if (all(v is not None and v is not _NOT_PLAIN for v in values)
                    and all(name in i.arguments for i in instances)):
                self.candidates[name] = values
        self.block_names = {self._safe(name) for name in first}
        self.symbols = {name: [symbol_name(inst.arguments[name]) for inst in instances] for name in first
                        if all(isinstance(inst.arguments.get(name), (Symbol, str)) for inst in instances)}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Leaf):
            return self._leaf(value)
        if isinstance(value, Call):
            return Call(value.callee, tuple((k, self.resolve(v)) for k, v in value.kwargs),
                        tuple(self.resolve(v) for v in value.args), value.defaults)
        if isinstance(value, Frozen):
            return Frozen(self.resolve(value.module))
        if isinstance(value, Repeat):
            return Repeat(self.resolve(value.item), self.resolve(value.count))
        if isinstance(value, Named):
            return Named(value.names, tuple(self.resolve(v) for v in value.values))
        if isinstance(value, (tuple, list)):
            items = [self.resolve(v) for v in value]
            return tuple(items) if isinstance(value, tuple) else items
        return Literal(value)

    def _leaf(self, leaf: Leaf) -> Any:
        everyone = len(leaf.members) == self.count
        constant = same(leaf.values)
        if constant and everyone:
            return Literal(leaf.values[0])
        wanted = [strict(v) for v in leaf.values]
        if all(isinstance(v, Call) for v in leaf.values):  # a layer that differs: `act` for nn.ReLU / nn.Hardswish
            for name, values in self.symbols.items():
                pairs = {(values[m], v.callee) for m, v in zip(leaf.members, leaf.values)}
                if len(pairs) > 1 and len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}):
                    for param in self.params:
                        if param.name == self._safe(name) and set(leaf.members) <= param.members and [
                                strict(param.values[m]) for m in leaf.members] == wanted:
                            return Ref(param.name)
                    taken = any(param.name == self._safe(name) for param in self.params)
                    return Ref(self._new(self._fresh(name) if taken else self._safe(name), leaf))
        # A block parameter whose values are the leaf's names it, if the names agree or the values are too varied
        # to agree by chance (a padding of 1, 2, 1 is not a stride of 1, 2, 1).
        evidence = len(set(wanted)) >= 3
        for name, values in sorted(self.candidates.items(), key=lambda item: not _akin(item[0], leaf.context)):
            varies = not same(values)
            if ([strict(values[m]) for m in leaf.members] == wanted and (varies or not constant)
                    and (evidence or _akin(name, leaf.context))):
                return Ref(self._use(name, values))
        if leaf.context == "count" and evidence:
            for name, values in self.candidates.items():
                if all(isinstance(values[m], int) and not isinstance(values[m], bool) for m in leaf.members):
                    offsets = {values[m] - v for m, v in zip(leaf.members, leaf.values)}
                    if len(offsets) == 1 and next(iter(offsets)) > 0:
                        return Ref(self._use(name, values), next(iter(offsets)))
        for param in self.params:
            if param.name not in self.block_names and set(leaf.members) <= param.members and [
                    strict(param.values[m]) for m in leaf.members] == wanted:
                return Ref(param.name)
        if constant:
            return Literal(leaf.values[0])
        name = self._fresh(leaf.context)
        self.awkward = self.awkward or name != leaf.context or any(isinstance(v, Call) for v in leaf.values)
        return Ref(self._new(name, leaf))

    def _new(self, name: str, leaf: Leaf) -> str:
        values: list[Any] = [None] * self.count
        for m, v in zip(leaf.members, leaf.values):
            values[m] = v
        self.params.append(Param(name, values, set(leaf.members)))
        return name

    def presence(self, attr: str, present: list[bool]) -> str:
        """The parameter that says whether an optional layer exists."""
        for name, values in self.candidates.items():
            if all(isinstance(v, bool) for v in values) and values == present:
                return self._use(name, values)
        for param in self.params:
            if param.members == set(range(self.count)) and [strict(v) for v in param.values] == [
                    strict(v) for v in present]:
                return param.name
        name = self._fresh(attr if is_identifier(attr) else "has_layer")
        self.params.append(Param(name, list(present), set(range(self.count))))
        return name

    def _use(self, block_param: str, values: list[Any]) -> str:
        name = self._safe(block_param)
        if not any(p.name == name for p in self.params):
            taken = [v for v, inst in zip(values, self.instances) if block_param in inst.defaulted]
            default = taken[0] if taken and same(taken) else NO_DEFAULT
            self.params.append(Param(name, list(values), set(range(self.count)), default))
        return name

    def _safe(self, name: str) -> str:
        return name if is_identifier(name) and name not in self.reserved else f"{name}_"

    def _fresh(self, base: str) -> str:
        base = base if is_identifier(base) else "value"
        taken = {p.name for p in self.params} | self.block_names | self.reserved
        name, k = base, 2
        while name in taken:
            name, k = f"{base}{k}", k + 1
        return name


def _akin(param: str, context: str) -> bool:
    """Whether a block parameter's name is the layer argument's: `stride` for stride, `kernel` for kernel_size."""
    return param == context or context.startswith(param + "_") or context.endswith("_" + param)


def _plain(value: Any) -> Any:
    """A block argument as a layer argument could hold it (lists as tuples), or _NOT_PLAIN (a block, a symbol)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else tuple(items)
    return _NOT_PLAIN
