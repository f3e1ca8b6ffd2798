"""The graph's structure as the source writer sees it: the scope tree (blocks, groups, the network itself at path
""), each scope as an `Instance` with the values it reads and the values it gives out, and the records the later
steps fill in: each instance's forward statements (`Stmt`) and the class that its family's instances share (`Class`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from netspec.backends.torch.expressions import Named, Repeat, strict
from netspec.backends.torch.naming import local_name
from netspec.ir import Graph
from netspec.ops import OPS

LABELS = "<labels>"  # the value of the class labels, which capsule masks read while training


@dataclass(frozen=True)
class Stmt:
    """One line of a forward: a layer or a child scope. Values are ("in", k), the k-th argument of the forward,
    or ("v", local name), a value computed in the scope."""

    ref: str  # the layer's or child scope's name in the scope
    inputs: tuple[tuple[str, Any], ...]
    outputs: tuple[str, ...]
    # ("module", attr) | ("param", attr) | ("param", attr, "add" or "prepend") | ("fn", fn, kwargs) | ("scope", attr)
    # | ("optional", attr, fn, kwargs)
    how: tuple


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
    sequence: tuple | None = None  # sequential: nn.Sequential's arguments (see sequential_children)
    expr: Any = None  # how its parent builds it
    registration: tuple[str, ...] = ()  # its `register` statement: children registered in this order (torch's)


@dataclass
class Class:
    """A generated class and the instances it serves."""

    name: str
    instances: list[Instance]
    kind: str
    stmts: list[Stmt] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)


def registered(names: list[str], registration: tuple[str, ...]) -> list[str]:
    """`names` (a module's children in the order they run) in the order a `register` statement gives: the listed
    ones together, in its order, where the first of them would be; the others keep their places."""
    listed = [name for name in registration if name in names]
    if len(listed) < 2:
        return list(names)
    first = min(names.index(name) for name in listed)
    return list(names[:first]) + listed + [name for name in names[first:] if name not in listed]


def sequential_children(inst: Instance) -> tuple:
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


class Scopes:
    """The graph's scopes, each with its items in order, and one Instance per scope (innermost first)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = {n.name: n for n in graph.nodes}
        self.index = {n.name: i for i, n in enumerate(graph.nodes)}
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
            for source in self.node_inputs(node.name):
                self.consumers.setdefault(source, []).append(node.name)
        self.network_outputs = graph.outputs()
        self.instances: dict[str, Instance] = {}
        for scope in sorted(self.items, key=lambda s: -self.depth(s)):
            self.instances[scope] = self._instance(scope)

    def depth(self, scope: str) -> int:
        depth = 0
        while scope:
            scope, depth = self.parent[scope], depth + 1
        return depth

    def node_inputs(self, name: str) -> list[str]:
        """What a layer reads: its inputs, and the labels where it takes them."""
        node = self.nodes[name]
        return list(node.inputs) + ([LABELS] if OPS[node.op].takes_labels else [])

    def is_inside(self, value: str, scope: str) -> bool:
        """Whether `value` is computed inside `scope` (never the network's input or labels)."""
        if value == LABELS or self.nodes[value].op == "input":
            return False
        return scope == "" or scope in self.nodes[value].scope

    def first_node(self, scope: str) -> str:
        """The scope's first layer: classes are written in the order their first instances run."""
        kind, name = self.items[scope][0] if self.items[scope] else ("node", self.graph.input)
        return name if kind == "node" else self.first_node(name)

    def _instance(self, scope: str) -> Instance:
        reads: list[str] = []
        for kind, name in self.items[scope]:
            for value in (self.node_inputs(name) if kind == "node" else self.instances[name].inputs):
                if not self.is_inside(value, scope) and value not in reads:
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
                       or any(not self.is_inside(c, scope) for c in self.consumers.get(n.name, ()))]
            family, arguments = self._family(scope), self.graph.scopes[scope].arguments
            defaulted = self.graph.scopes[scope].defaulted
        registration = self.graph.scopes[scope].registration if scope else self.graph.registration
        return Instance(scope, family, arguments, defaulted, reads, outputs, self.items[scope],
                        registration=registration)

    def _family(self, scope: str) -> tuple:
        """Whose instances may share a class: a block's; a group's of one label (numbers alike) in one parent."""
        if scope == "":
            return ("network",)
        kind = self.graph.scopes[scope].kind
        if kind != "group":
            return ("block", kind)
        label = local_name(self.parent[scope], scope)
        return ("group", self._family(self.parent[scope]), "#" if label.isdecimal() else label)
