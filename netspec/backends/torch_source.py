"""Standalone PyTorch source for an analysed graph (`netspec compile -o net.py`), written as a person would.

One nn.Module class per block, named after it; a `forward` of named calls (`self.conv1(x)`) and plain Python
(`out + x`, `torch.cat`, `torch.flatten`); nn.Sequential where a block or group is a straight chain of numbered
layers; and only the helper layers of torch_layers.py that the network uses.

The module defined is `to_module`'s: the same state_dict keys, shapes and order, the same outputs for the same
weights. Instances of one block whose layers differ take the differing values as `__init__` arguments, named
after the block's own parameters where a value equals one of them in every instance. Layers without state
(activations, pooling, dropout) carry no keys, so they are named for reading and one instance serves every
identical use in a class, as torchvision's blocks share `self.relu`.
"""

from __future__ import annotations

import ast as pyast
import builtins
import inspect
import keyword
import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netspec.backends import torch_layers
from netspec.backends.torch import build_layer, layers
from netspec.evaluate import Symbol
from netspec.ir import Graph
from netspec.lower import GRAPH_MODULE_ATTRIBUTES, MODULE_ATTRIBUTES, NETSPEC_ATTRIBUTES
from netspec.ops import OPS
from netspec.ops.base import TorchFunction, TorchLayer, TorchParameter

WIDTH = 110  # longest line the printer writes before it breaks a call over several lines
LABELS = "<labels>"  # the value of the class labels, which capsule masks read while training
# keyword arguments that torch.nn takes as an int or a pair: (3, 3) is written 3
PAIRS = frozenset({"kernel_size", "stride", "padding", "dilation", "output_padding", "output_size", "size",
                   "scale_factor"})
RESERVED = frozenset({"self", "torch", "nn", "OrderedDict", "labels"} | set(dir(builtins)) | set(keyword.kwlist))
ATTRIBUTE_CLASHES = MODULE_ATTRIBUTES | GRAPH_MODULE_ATTRIBUTES | NETSPEC_ATTRIBUTES


# Construction expressions ----------------------------------------------------------------------------------------

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
    return len({strict(v) for v in values}) <= 1


# The graph's structure ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stmt:
    """One line of a forward: a layer or a child scope. Values are ("in", k), the k-th argument of the forward,
    or ("v", local name), a value computed in the scope."""

    ref: str  # the layer's or child scope's name in the scope
    inputs: tuple[tuple[str, Any], ...]
    outputs: tuple[str, ...]
    how: tuple  # ("module", attr) | ("param", attr) | ("fn", fn, kwargs) | ("scope", attr) | ("optional", attr, fn, kwargs)


@dataclass
class Instance:
    """A block instance or group, or the network itself (path "")."""

    path: str
    family: tuple
    arguments: dict[str, Any]
    defaulted: tuple[str, ...]  # the arguments it took from the block's defaults
    inputs: list[str]  # the values it reads from outside, in the order first read
    outputs: list[str]  # its values read outside, or outputs of the network
    items: list[tuple[str, str]]  # ("node", name) or ("scope", path), in order
    kind: str = "module"  # or "sequential"
    stmts: list[Stmt] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)  # attribute -> construction, in registration order
    children: list[Any] = field(default_factory=list)  # sequential: construction of each child
    names: tuple[str, ...] = ()  # sequential: the children's names
    sequence: tuple | None = None  # sequential: nn.Sequential's arguments (see Generator._children)
    expr: Any = None  # how its parent builds it


NO_DEFAULT = object()


@dataclass
class Param:
    name: str
    values: list[Any]  # per instance of the class; None where it does not matter
    members: set[int]  # the instances it is defined for
    default: Any = NO_DEFAULT  # the block's default, where every instance that took it got the same value


@dataclass
class Class:
    name: str
    instances: list[Instance]
    kind: str
    stmts: list[Stmt] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)


def _local(path: str, name: str) -> str:
    return name[len(path) + 1:] if path else name


def _identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _camel(label: str) -> str:
    """A group's class name from its label: trunk_output -> TrunkOutput, block1-0 -> Block1_0."""
    name = ""
    for part in [p for p in "".join(c if c.isalnum() else "_" for c in label).split("_") if p]:
        name += ("_" if name[-1:].isdigit() and part[0].isdigit() else "") + part[0].upper() + part[1:]
    return name if name and not name[0].isdigit() else "Group" + name


class Generator:
    """Writes one graph's source: its scopes (blocks, groups, the network) become instances, the instances of a
    block become one class or a few, children before their parents, and each class's source is printed."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.impls = layers(graph)
        self.nodes = {n.name: n for n in graph.nodes}
        self.index = {n.name: i for i, n in enumerate(graph.nodes)}
        self.used_helpers: set[str] = set()
        self.stateless_cache: dict[Any, bool] = {}
        self.class_names: set[str] = {graph.name}
        self.classes: list[tuple[Class, list[str]]] = []  # with their source lines, children first
        self._structure()

    # scopes, their items, inputs and outputs ----------------------------------------------------------------

    def _structure(self) -> None:
        graph = self.graph
        self.items: dict[str, list[tuple[str, str]]] = {"": []}
        self.parent: dict[str, str] = {}
        span: dict[str, list[int]] = {}
        for position, node in enumerate(graph.nodes):
            if node.op == "input":
                continue
            chain = ("",) + tuple(node.scope)
            for outer, inner in pairwise(chain):
                if inner not in self.items:
                    self.items[inner] = []
                    self.items[outer].append(("scope", inner))
                    self.parent[inner] = outer
            self.items[chain[-1]].append(("node", node.name))
            for scope in chain[1:]:
                span.setdefault(scope, []).append(position)
        for scope, positions in span.items():  # the lowering emits a scope's layers together; one call runs them
            if positions[-1] - positions[0] + 1 != len(positions):
                raise RuntimeError(f"the layers of scope {scope!r} are not contiguous")
        self.span = {scope: (positions[0], positions[-1] + 1) for scope, positions in span.items()}
        self.consumers: dict[str, list[str]] = {}
        for node in graph.nodes:
            for source in self._inputs(node.name):
                self.consumers.setdefault(source, []).append(node.name)
        self.network_outputs = graph.outputs()
        self.instances: dict[str, Instance] = {}
        for scope in sorted(self.items, key=lambda s: -self._depth(s)):
            self.instances[scope] = self._instance(scope)

    def _depth(self, scope: str) -> int:
        depth = 0
        while scope:
            scope, depth = self.parent[scope], depth + 1
        return depth

    def _inputs(self, name: str) -> list[str]:
        node = self.nodes[name]
        return list(node.inputs) + ([LABELS] if OPS[node.op].takes_labels else [])

    def _inside(self, value: str, scope: str) -> bool:
        if value == LABELS or self.nodes[value].op == "input":
            return False
        return scope == "" or scope in self.nodes[value].scope

    def _instance(self, scope: str) -> Instance:
        reads: list[str] = []
        for kind, name in self.items[scope]:
            for value in (self._inputs(name) if kind == "node" else self.instances[name].inputs):
                if not self._inside(value, scope) and value not in reads:
                    reads.append(value)
        if scope == "":
            reads = [self.graph.input] + ([LABELS] if self.graph.takes_labels() else [])
            outputs = list(self.network_outputs)
            family: tuple = ("network",)
            arguments: dict[str, Any] = {}
            defaulted: tuple[str, ...] = ()
        else:
            start, end = self.span[scope]
            outputs = [n.name for n in self.graph.nodes[start:end] if n.name in self.network_outputs
                       or any(not self._inside(c, scope) for c in self.consumers.get(n.name, ()))]
            family, arguments = self._family(scope), self.graph.scopes[scope].arguments
            defaulted = self.graph.scopes[scope].defaulted
        return Instance(scope, family, arguments, defaulted, reads, outputs, self.items[scope])

    def _family(self, scope: str) -> tuple:
        """Whose instances may share a class: a block's; a group's of one label (numbers alike) in one parent."""
        if scope == "":
            return ("network",)
        kind = self.graph.scopes[scope].kind
        if kind != "group":
            return ("block", kind)
        label = _local(self.parent[scope], scope)
        return ("group", self._family(self.parent[scope]), "#" if label.isdecimal() else label)

    # one instance's layers ------------------------------------------------------------------------------------

    def _stateless(self, impl: TorchLayer) -> bool:
        key = (impl.cls, strict(tuple(sorted(impl.kwargs.items()))))
        if key not in self.stateless_cache:
            with torch.device("meta"):
                module = build_layer(TorchLayer(impl.cls, impl.kwargs), frozen=False)
            self.stateless_cache[key] = not module.state_dict()
        return self.stateless_cache[key]

    def _layer(self, name: str) -> Any:
        """How a layer is constructed."""
        impl, node = self.impls[name], self.nodes[name]
        if isinstance(impl, TorchParameter):
            kwargs = (("requires_grad", False),) if node.args.frozen else ()
            return Call("nn.Parameter", kwargs, (Call("torch.full", (), (tuple(impl.shape), impl.init)),))
        if impl.cls in vars(torch_layers):
            self.used_helpers.add(impl.cls)
            callee = impl.cls
        else:
            callee = f"nn.{impl.cls}"
        kwargs = []
        for key, value in impl.kwargs.items():
            if (callee.startswith("nn.") and key in PAIRS and isinstance(value, tuple) and len(value) == 2
                    and same(list(value))):
                value = value[0]
            kwargs.append((key, value))
        order = [p.name for p in _signature(callee) or ()]
        kwargs.sort(key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        built: Any = Call(callee, tuple(kwargs))
        if impl.init != "default":
            self.used_helpers.add(f"init_{impl.init}")
            built = Call(f"init_{impl.init}", (), (built,))
        return Frozen(built) if node.args.frozen else built

    def _build(self, inst: Instance) -> None:
        """The instance's statements and attributes (its children's constructions are known)."""
        scope = inst.path
        position = {value: k for k, value in enumerate(inst.inputs)}

        def ref(value: str) -> tuple[str, Any]:
            return ("in", position[value]) if value in position else ("v", _local(scope, value))

        raw = []  # (ref, inputs, outputs, what, construction)
        for kind, name in inst.items:
            local = _local(scope, name)
            if kind == "scope":
                child = self.instances[name]
                raw.append((local, tuple(ref(v) for v in child.inputs), tuple(_local(scope, o) for o in child.outputs),
                            "scope", child.expr))
                continue
            impl = self.impls[name]
            inputs = tuple(ref(v) for v in self._inputs(name))
            if isinstance(impl, TorchFunction):
                raw.append((local, inputs, (local,), ("fn", impl.fn, tuple(sorted(impl.kwargs.items()))), None))
            elif isinstance(impl, TorchParameter):
                raw.append((local, inputs, (local,), "param", self._layer(name)))
            else:
                raw.append((local, inputs, (local,), "stateless" if self._stateless(impl) else "module",
                            self._layer(name)))
        chain = (len(inst.inputs) == 1 and inst.inputs[0] != LABELS and raw
                 and all(what in ("module", "stateless", "scope") and len(outs) == 1 for _, _, outs, what, _ in raw)
                 and [o for _, _, o, _, _ in raw][-1] == tuple(_local(scope, o) for o in inst.outputs)
                 and all(ins == ((("in", 0),) if k == 0 else (("v", raw[k - 1][2][0]),))
                         for k, (_, ins, _, _, _) in enumerate(raw)))
        # A chain is an nn.Sequential when its names are numbers, or when a layer with state has a name that
        # cannot be an attribute; otherwise a class with named attributes reads better.
        names = [local for local, *_ in raw]
        odd = any(not _identifier(local) for local, _, _, what, _ in raw if what != "stateless")
        if chain and (all(n.isdecimal() for n in names) or odd):
            inst.kind, inst.names = "sequential", tuple(names)
            inst.children = [built for *_, built in raw]
            return
        taken = {local for local, _, _, what, _ in raw if what in ("module", "param", "scope")
                 or (what == "stateless" and _identifier(local))}
        stateless: dict[Any, str] = {}  # construction -> the attribute that holds it
        for local, inputs, outputs, what, built in raw:
            if isinstance(what, tuple):
                inst.stmts.append(Stmt(local, inputs, outputs, what))
                continue
            attr = local
            if what == "stateless":
                key = strict(built)
                if _identifier(local):
                    stateless.setdefault(key, local)
                elif key in stateless:
                    attr = stateless[key]
                else:
                    attr = self._free_name(self._stateless_name(inst, local), taken)
                    taken.add(attr)
                    stateless[key] = attr
            inst.attrs.setdefault(attr, built)
            inst.stmts.append(Stmt(local, inputs, outputs, ("param" if what == "param" else
                                                            "scope" if what == "scope" else "module", attr)))

    def _stateless_name(self, inst: Instance, local: str) -> str:
        op = self.nodes[f"{inst.path}.{local}" if inst.path else local].op
        for name, value in inst.arguments.items():  # `act()` with act=relu6 is `self.act`
            if isinstance(value, (Symbol, str)) and _word(value) == op and _identifier(name):
                return name
        return op

    @staticmethod
    def _free_name(base: str, taken: set[str]) -> str:
        name, k = base, 2
        while name in taken or name in ATTRIBUTE_CLASHES or not _identifier(name):
            name, k = f"{base}{k}", k + 1
        return name

    # classes ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        families: dict[tuple, list[Instance]] = {}
        for inst in self.instances.values():
            families.setdefault(inst.family, []).append(inst)
        done: set[tuple] = set()

        def process(family: tuple) -> None:
            if family in done:
                return
            done.add(family)
            for inst in families[family]:
                for kind, name in inst.items:
                    if kind == "scope":
                        process(self.instances[name].family)
            for inst in sorted(families[family], key=lambda i: self.index[self._first(i.path)]):
                self._build(inst)
            self._classes(family, families[family])

        for family in sorted(families, key=lambda f: self.index[self._first(families[f][0].path)]):
            process(family)

    def _first(self, scope: str) -> str:
        kind, name = self.items[scope][0] if self.items[scope] else ("node", self.graph.input)
        return name if kind == "node" else self._first(name)

    def _classes(self, family: tuple, instances: list[Instance]) -> None:
        if family[0] == "group":
            inline = [i for i in instances if i.kind == "sequential"]
            for inst in inline:
                inst.expr = Call("nn.Sequential", (), self._children(inst))
            instances = [i for i in instances if i.kind != "sequential"]
        groups: list[tuple[Class, Any]] = []  # each class with the template its instances share
        for inst in instances:
            for k, (cls, template) in enumerate(groups):
                merged = self._merge(template, inst)
                if merged is not None:
                    groups[k] = (cls, merged)
                    cls.instances.append(inst)
                    break
            else:
                groups.append((Class("", [inst], inst.kind), self._template(inst)))
        for cls, template in groups:
            if family[0] == "network":
                cls.name = self.graph.name
            else:
                base = family[1] if family[0] == "block" else _camel(family[2] if family[2] != "#" else "group")
                cls.name = self._class_name(base)
            if cls.kind == "module":
                cls.stmts, cls.optional = template[1], template[2]
            lines = self._render_class(cls, inline=family[0] == "block")
            if lines is None:  # a Sequential whose class would read worse than the Sequential itself
                self.class_names.discard(cls.name)
                for inst in cls.instances:
                    inst.expr = Call("nn.Sequential", (), self._children(inst))
            else:
                self.classes.append((cls, lines))

    def _class_name(self, base: str) -> str:
        """The block's name; a second class of one block (its instances differ in layers) gets _2, and so on."""
        base = base if _identifier(base) else "Block"
        name, k = base, 2
        while name in RESERVED or name in vars(torch_layers) or name in self.class_names:
            name, k = f"{base}_{k}", k + 1
        self.class_names.add(name)
        return name

    def _children(self, inst: Instance) -> tuple:
        """A sequential instance's children: nn.Sequential's arguments, runs of equal children as one Repeat."""
        if inst.sequence is None:
            if list(inst.names) != [str(k) for k in range(len(inst.names))]:
                inst.sequence = (Named(inst.names, tuple(inst.children)),)
                return inst.sequence
            out: list[Any] = [inst.children[0]]
            keys = [strict(child) for child in inst.children]
            for k, child in enumerate(inst.children[1:], start=1):
                if len(out) > 1 and keys[k] == keys[k - 1]:
                    out[-1] = Repeat(out[-1].item, out[-1].count + 1)
                else:
                    out.append(Repeat(child, 1))
            inst.sequence = tuple(out)
        return inst.sequence

    def _template(self, inst: Instance) -> tuple:
        """What instances of one class share: the layout of a Sequential, or the statements of a forward."""
        if inst.kind == "sequential":
            shape = [("named", c.names) if isinstance(c, Named) else "repeat" if isinstance(c, Repeat) else "item"
                     for c in self._children(inst)]
            return ("sequential", shape)
        return ("module", list(inst.stmts), frozenset(), tuple(v == LABELS for v in inst.inputs),
                tuple(_local(inst.path, o) for o in inst.outputs))

    def _merge(self, template: tuple, inst: Instance) -> tuple | None:
        """The template widened to take `inst` too, or None if it cannot: statements must match, except that a
        layer may be a module in some instances and a plain function in others (a projected shortcut)."""
        other = self._template(inst)
        if template[0] != other[0]:
            return None
        if template[0] == "sequential":
            return template if template[1] == other[1] else None
        _, stmts, optional, labels, outputs = template
        if (labels, outputs) != other[3:] or len(stmts) != len(other[1]):
            return None
        merged, optional = [], set(optional)
        for mine, theirs in zip(stmts, other[1]):
            if (mine.ref, mine.inputs, mine.outputs) != (theirs.ref, theirs.inputs, theirs.outputs):
                return None
            if mine.how == theirs.how:
                merged.append(mine)
                continue
            hows = (mine.how, theirs.how)
            modules = {h[1] for h in hows if h[0] in ("module", "optional")}
            functions = {h[1:] if h[0] == "fn" else h[2:] for h in hows if h[0] in ("fn", "optional")}
            if len(modules) != 1 or len(functions) != 1 or not {h[0] for h in hows} <= {"module", "fn", "optional"}:
                return None
            (attr,), (function,) = modules, functions
            merged.append(Stmt(mine.ref, mine.inputs, mine.outputs, ("optional", attr, *function)))
            optional.add(attr)
        return ("module", merged, frozenset(optional), labels, outputs)

    # a class's source -----------------------------------------------------------------------------------------

    def _render_class(self, cls: Class, inline: bool = False) -> list[str] | None:
        """The class's source. With `inline`, None for a Sequential that needs parameters no block parameter
        names (a layer passed in, or values told apart only by number): clearer written out where it is used."""
        resolver = Resolver(cls.instances, self.class_names | set(vars(torch_layers)))
        body: list[str] = []
        if cls.kind == "sequential":
            children = [self._children(inst) for inst in cls.instances]
            merged = merge([Call("nn.Sequential", (), c) for c in children], list(range(len(children))), "layer")
            resolved = resolver.resolve(merged)
            if resolver.awkward and inline:
                return None
            body = printed(Call("super().__init__", (), resolved.args), 8)
            base = "nn.Sequential"
        else:
            base = "nn.Module"
            body.append("        super().__init__()")
            attrs: list[str] = []
            for stmt in cls.stmts:
                if stmt.how[0] != "fn" and stmt.how[1] not in attrs:
                    attrs.append(stmt.how[1])
            for attr in attrs:
                members = [k for k, inst in enumerate(cls.instances) if attr in inst.attrs]
                values = [cls.instances[k].attrs[attr] for k in members]
                value = resolver.resolve(merge(values, members, attr if _identifier(attr) else "layer"))
                param = any(s.how == ("param", attr) for s in cls.stmts)
                condition = None
                if attr in cls.optional:
                    condition = resolver.presence(attr, [attr in inst.attrs for inst in cls.instances])
                body += self._assign(attr, value, param, condition)
            if cls.name == self.graph.name and self.graph.aux_outputs:
                body.append("        self.all_outputs = False  # True: the auxiliary outputs in eval too")
        params = sorted(resolver.params, key=lambda p: p.default is not NO_DEFAULT)  # defaults last, as Python wants
        for k, inst in enumerate(cls.instances):
            inst.expr = Call(cls.name, tuple((p.name, p.values[k]) for p in params),
                             defaults=tuple((p.name, p.default) for p in params if p.default is not NO_DEFAULT))
        signature = ", ".join(["self"] + [p.name if p.default is NO_DEFAULT else f"{p.name}={flat(Literal(p.default))}"
                                          for p in params])
        lines = [f"class {cls.name}({base}):", f"    def __init__({signature}):", *body]
        if cls.kind == "module":
            lines += [""] + self._forward(cls)
        return lines

    @staticmethod
    def _assign(attr: str, value: Any, param: bool, condition: str | None = None, indent: int = 8) -> list[str]:
        """`self.attr = value` (add_module or register_parameter for a name that is not an identifier); with a
        condition, None when it is false."""
        if condition is not None:
            if _identifier(attr):
                lines = printed(value, indent, f"self.{attr} = ", f" if {condition} else None")
            else:
                lines = printed(value, indent, f"self.add_module({_string(attr)}, ", f" if {condition} else None)")
            if len(lines) == 1:
                return lines
            empty = f"self.{attr} = None" if _identifier(attr) else f"self.add_module({_string(attr)}, None)"
            return ([" " * indent + empty, " " * indent + f"if {condition}:"]
                    + Generator._assign(attr, value, param, None, indent + 4))
        if _identifier(attr):
            return printed(value, indent, f"self.{attr} = ")
        method = "register_parameter" if param else "add_module"
        return printed(value, indent, f"self.{method}({_string(attr)}, ", ")")

    def _forward(self, cls: Class) -> list[str]:
        inst = cls.instances[0]
        root = inst.path == "" and cls.name == self.graph.name
        params: list[str] = []
        for value in inst.inputs:
            if value == LABELS:
                params.append("labels")
            elif root:
                name = self.graph.input
                params.append(name if _identifier(name) and name not in RESERVED else "x")
            else:
                params.append("x" if "x" not in params else f"x{len(params)}")
        stmts = cls.stmts
        outputs = [("v", _local(inst.path, o)) if self._inside(o, inst.path) else
                   ("in", inst.inputs.index(o)) for o in inst.outputs]
        end = len(stmts)
        uses: dict[Any, list[int]] = {}
        for k, stmt in enumerate(stmts):
            for value in stmt.inputs:
                uses.setdefault(value, []).append(k)
        for value in outputs:
            uses.setdefault(value, []).append(end)
        generic = {"x", "out"} | {p for p in params if p != "labels"}
        var: dict[Any, str] = {("in", k): p for k, p in enumerate(params)}
        live: dict[str, Any] = {p: ("in", k) for k, p in enumerate(params) if uses.get(("in", k))}

        def free(name: str, dying: set[str]) -> bool:
            return name not in live or name in dying

        lines = [f"    def forward({', '.join(['self'] + [p + ('=None' if p == 'labels' and root else '') for p in params])}):"]
        for k, stmt in enumerate(stmts):
            dying = {var[v] for v in stmt.inputs if max(uses[v]) == k}
            targets = []
            for position, value in enumerate(stmt.outputs):
                value = ("v", value)
                later = [u for u in uses.get(value, []) if u > k]
                name = None
                if not later:
                    name = "_" if len(stmt.outputs) > 1 else None
                elif len(stmt.outputs) > 1:  # named after the innermost label on its path: decoder, capsnet
                    label = next((part for part in reversed(value[1].split(".")) if _identifier(part)), "")
                    if label not in RESERVED and label not in generic and free(label, dying) and label not in targets:
                        name = label
                else:
                    label = stmt.ref
                    keep = (len(later) > 1 or later[0] != k + 1
                            or any(stmts[u].inputs.index(value) > 0 for u in later if u < end))
                    if (keep and _identifier(label) and label not in RESERVED and label not in generic
                            and free(label, dying)):
                        name = label
                    elif stmt.inputs and var.get(stmt.inputs[0]) in generic and var[stmt.inputs[0]] in dying:
                        name = var[stmt.inputs[0]]
                if later and name is None:
                    candidates = ["x", "out"] + [f"out{n}" for n in range(2, len(stmts) + 3)]
                    name = next(c for c in candidates if free(c, dying) and c not in targets)
                    generic.add(name)
                targets.append(name)
            for name in dying:
                live.pop(name, None)
            for value, name in zip(stmt.outputs, targets):
                if name not in (None, "_"):
                    var[("v", value)] = name
                    live[name] = ("v", value)
            args = [var[v] for v in stmt.inputs]
            lines += self._statement(stmt, args, targets)
        result = [var[v] for v in outputs]
        if root and self.graph.aux_outputs:
            main = [result[0]] + result[1 + len(self.graph.aux_outputs):]
            aux = result[1:1 + len(self.graph.aux_outputs)]
            lines += ["        if self.training or self.all_outputs:",
                      f"            return {', '.join([main[0], *aux, *main[1:]])}",
                      f"        return {', '.join(main)}"]
        elif result:
            lines.append(f"        return {', '.join(result)}")
        return lines

    @staticmethod
    def _statement(stmt: Stmt, args: list[str], targets: list[str | None]) -> list[str]:
        assign = f"{', '.join(targets)} = " if targets and targets[0] is not None else ""
        how = stmt.how

        def attr(name: str) -> str:
            return f"self.{name}" if _identifier(name) else f"getattr(self, {_string(name)})"

        def function(fn: str, kwargs: tuple) -> str:
            if fn == "add":
                return " + ".join(args)
            if fn == "mul":
                return " * ".join(args)
            if fn == "cat":
                return f"torch.cat([{', '.join(args)}]{''.join(f', {k}={_scalar(v)}' for k, v in kwargs)})"
            if fn == "flatten" and [k for k, _ in kwargs] == ["start_dim"]:
                return f"torch.flatten({args[0]}, {_scalar(kwargs[0][1])})"
            return f"torch.{fn}({', '.join(args)}{''.join(f', {k}={_scalar(v)}' for k, v in kwargs)})"

        if how[0] == "fn":
            return [f"        {assign}{function(how[1], how[2])}"]
        if how[0] == "param":
            return [f"        {assign}{args[0]} * {attr(how[1])}"]
        if how[0] == "optional":
            return [f"        if {attr(how[1])} is not None:",
                    f"            {assign}{attr(how[1])}({', '.join(args)})",
                    "        else:",
                    f"            {assign}{function(how[2], how[3])}"]
        return [f"        {assign}{attr(how[1])}({', '.join(args)})"]

    # the file ------------------------------------------------------------------------------------------------

    def source(self) -> str:
        self.run()
        classes = [line for _, lines in self.classes for line in ["", "", *lines]]
        parts = [f'"""{self.graph.name}: generated by netspec. Only torch is needed to use it."""',
                 f"# source: {Path(self.graph.file).name!r}  (repr: a file name never becomes code)", ""]
        if any("OrderedDict([" in line for line in classes):
            parts += ["from collections import OrderedDict", ""]
        parts += ["import torch", "from torch import nn"]
        for chunk in helper_sources(self.used_helpers):
            parts += ["", "", chunk]
        return "\n".join(parts + classes) + "\n"


# Merging the instances of a class -----------------------------------------------------------------------------

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
            if all(v is not None and v is not _NOT_PLAIN for v in values) and all(name in i.arguments for i in instances):
                self.candidates[name] = values
        self.block_names = {self._safe(name) for name in first}
        self.symbols = {name: [_word(inst.arguments[name]) for inst in instances] for name in first
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
        name = self._fresh(attr if _identifier(attr) else "has_layer")
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
        return name if _identifier(name) and name not in self.reserved else f"{name}_"

    def _fresh(self, base: str) -> str:
        base = base if _identifier(base) else "value"
        taken = {p.name for p in self.params} | self.block_names | self.reserved
        name, k = base, 2
        while name in taken:
            name, k = f"{base}{k}", k + 1
        return name


_NOT_PLAIN = object()


def _word(value: Symbol | str) -> str:
    return value.name if isinstance(value, Symbol) else value


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


# Printing -----------------------------------------------------------------------------------------------------

_SIGNATURES: dict[str, list[inspect.Parameter] | None] = {}


def _signature(callee: str) -> list[inspect.Parameter] | None:
    if callee not in _SIGNATURES:
        target = getattr(nn, callee[3:], None) if callee.startswith("nn.") else vars(torch_layers).get(callee)
        _SIGNATURES[callee] = (list(inspect.signature(target).parameters.values())
                               if inspect.isclass(target) and callee != "nn.Sequential" else None)
    return _SIGNATURES[callee]


def _scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({_string(str(value))})"
    return _string(value) if isinstance(value, str) else repr(value)


def _string(text: str) -> str:
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
    if isinstance(value, Call):
        items: list[tuple[str, Any]] = [("", a) for a in value.args]
        signature = _signature(value.callee)
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
    if isinstance(value, Ref):
        return value.name if not value.offset else f"{value.name} - {value.offset}"
    if isinstance(value, Repeat):
        return f"[{flat(value.item)} for _ in range({flat(value.count)})]"
    if isinstance(value, Frozen):
        return flat(value.module) + ".requires_grad_(False)"
    if isinstance(value, Literal) and not isinstance(value.value, (Call, Frozen, tuple, list, Named, Repeat)):
        return _scalar(value.value)
    parts = _parts(value)
    if parts is None:
        return _scalar(value)
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
    if head not in ("nn.Sequential(", "super().__init__(", "OrderedDict([") and all(
            prefix != "*" and len(flat(item)) <= 40 for prefix, item in items):  # short arguments: as many a line as fit
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


# Helpers ------------------------------------------------------------------------------------------------------

def helper_sources(names: set[str]) -> list[str]:
    """The source of each named class or function of torch_layers.py, and of those they use, in file order."""
    text = Path(torch_layers.__file__).read_text()
    tree = pyast.parse(text)
    defs = {n.name: n for n in tree.body if isinstance(n, (pyast.ClassDef, pyast.FunctionDef))}
    uses = {name: {n.id for n in pyast.walk(node) if isinstance(n, pyast.Name) and n.id in defs and n.id != name}
            for name, node in defs.items()}
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += uses[name]
    return [pyast.get_source_segment(text, node) for name, node in defs.items() if name in wanted]


def to_python(graph: Graph) -> str:
    """A standalone .py file (only torch imported) that defines the same module as `to_module`."""
    return Generator(graph).source()
