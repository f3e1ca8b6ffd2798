"""Writing one generated class: its `__init__` (the merged constructions of its instances' attributes, with the
values that differ between instances as parameters) and its `forward` (one line per statement, with variables
named after the layers whose results are used again, else x and out reused as soon as they die).
"""

from __future__ import annotations

from typing import Any

from netspec.backends.torch import layers as torch_layers
from netspec.backends.torch.expressions import Call, Literal, Named
from netspec.backends.torch.naming import RESERVED, is_identifier, local_name
from netspec.backends.torch.parameters import NO_DEFAULT, Resolver, merge
from netspec.backends.torch.printing import flat, printed, scalar_literal, string_literal
from netspec.backends.torch.structure import (LABELS, Class, Instance, Scopes, Stmt, registered,
                                             sequential_children)


# How a forward writes each element-wise operator of module.OPERATORS: `a - b - c`, left to right as Python reads it.
OPERATOR_SIGNS = {"add": " + ", "mul": " * ", "sub": " - ", "div": " / "}


class ClassWriter:
    """Writes the classes of one graph; `class_names` are the names of the classes the file defines."""

    def __init__(self, scopes: Scopes, class_names: set[str], network_class: str):
        self.scopes = scopes
        self.graph = scopes.graph
        self.class_names = class_names
        self.network_class = network_class  # the network's own class (its name, unless the file needs that)

    def render(self, cls: Class, inline: bool = False) -> list[str] | None:
        """The class's source. With `inline`, None for a Sequential that needs parameters no block parameter
        names (a layer passed in, or values told apart only by number): clearer written out where it is used."""
        resolver = Resolver(cls.instances, self.class_names | set(vars(torch_layers)))
        body: list[str] = []
        if cls.kind == "sequential":
            children = [sequential_children(inst) for inst in cls.instances]
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
            bare = {stmt.how[1] for stmt in cls.stmts if stmt.how[0] == "param"}
            # resolved in the order the layers run, so parameters are named and ordered as without `register`;
            # assigned in the order the instances' `register` statements give (torch's __init__ order)
            lines: dict[str, list[str]] = {}
            for attr, tree in containers(attrs):
                if tree is not None:  # dotted names: nn.ModuleList / nn.ModuleDict built in one statement
                    values = [container(tree, inst, bare) for inst in cls.instances]
                    value = resolver.resolve(merge(values, list(range(len(values))), attr))
                    lines[attr] = assignment(attr, value, False)
                    continue
                members = [k for k, inst in enumerate(cls.instances) if attr in inst.attrs]
                values = [cls.instances[k].attrs[attr] for k in members]
                value = resolver.resolve(merge(values, members, attr if is_identifier(attr) else "layer"))
                param = any(s.how[0] == "param" and s.how[1] == attr for s in cls.stmts)
                condition = None
                if attr in cls.optional:
                    condition = resolver.presence(attr, [attr in inst.attrs for inst in cls.instances])
                lines[attr] = assignment(attr, value, param, condition)
            registration = tuple(dict.fromkeys(name for inst in cls.instances for name in inst.registration))
            for attr in registered(list(lines), registration):
                body += lines[attr]
            if cls.name == self.network_class and self.graph.aux_outputs:
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

    def _forward(self, cls: Class) -> list[str]:
        """The class's forward, from its first instance's arguments and the statements its instances share."""
        inst = cls.instances[0]
        access: dict[str, str] = {}  # a dotted attribute -> how the forward reaches it: self.convs[0]
        for attr, tree in containers([s.how[1] for s in cls.stmts if s.how[0] != "fn"]):
            if tree is not None:
                access.update(paths(tree, attribute("self", attr)))
        root = inst.path == "" and cls.name == self.network_class
        params: list[str] = []
        for value in inst.inputs:
            if value == LABELS:
                params.append("labels")
            elif root:
                name = self.graph.input
                params.append(name if is_identifier(name) and name not in RESERVED else "x")
            else:
                params.append("x" if "x" not in params else f"x{len(params)}")
        stmts = cls.stmts
        outputs = [("v", local_name(inst.path, o)) if self.scopes.is_inside(o, inst.path) else
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

        # the network's labels may be left out: capsule masks read them only while training
        arguments = [p + ("=None" if p == "labels" and root else "") for p in params]
        lines = [f"    def forward({', '.join(['self'] + arguments)}):"]
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
                    label = next((part for part in reversed(value[1].split(".")) if is_identifier(part)), "")
                    if (label and label not in RESERVED and label not in generic and free(label, dying)
                            and label not in targets):
                        name = label
                else:
                    label = stmt.ref
                    keep = (len(later) > 1 or later[0] != k + 1
                            or any(stmts[u].inputs.index(value) > 0 for u in later if u < end))
                    if (keep and is_identifier(label) and label not in RESERVED and label not in generic
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
            lines += statement_lines(stmt, args, targets, access)
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


def assignment(attr: str, value: Any, param: bool, condition: str | None = None, indent: int = 8) -> list[str]:
    """`self.attr = value` (add_module or register_parameter for a name that is not an identifier); with a
    condition, None when it is false."""
    if condition is not None:
        if is_identifier(attr):
            lines = printed(value, indent, f"self.{attr} = ", f" if {condition} else None")
        else:
            lines = printed(value, indent, f"self.add_module({string_literal(attr)}, ", f" if {condition} else None)")
        if len(lines) == 1:
            return lines
        empty = f"self.{attr} = None" if is_identifier(attr) else f"self.add_module({string_literal(attr)}, None)"
        return ([" " * indent + empty, " " * indent + f"if {condition}:"]
                + assignment(attr, value, param, None, indent + 4))
    if is_identifier(attr):
        return printed(value, indent, f"self.{attr} = ")
    method = "register_parameter" if param else "add_module"
    return printed(value, indent, f"self.{method}({string_literal(attr)}, ", ")")


def statement_lines(stmt: Stmt, args: list[str], targets: list[str | None], access: dict[str, str]) -> list[str]:
    """A statement of a forward, reading the variables `args` and assigning to `targets`; `access` says how to
    reach an attribute inside containers."""
    assign = f"{', '.join(targets)} = " if targets and targets[0] is not None else ""
    how = stmt.how

    def attr(name: str) -> str:
        return access.get(name) or attribute("self", name)

    def function(fn: str, kwargs: tuple) -> str:
        if fn in OPERATOR_SIGNS:
            return OPERATOR_SIGNS[fn].join(args)
        if fn == "cat":
            return f"torch.cat([{', '.join(args)}]{''.join(f', {k}={scalar_literal(v)}' for k, v in kwargs)})"
        if fn == "flatten" and [k for k, _ in kwargs] == ["start_dim"]:
            return f"torch.flatten({args[0]}, {scalar_literal(kwargs[0][1])})"
        return f"torch.{fn}({', '.join(args)}{''.join(f', {k}={scalar_literal(v)}' for k, v in kwargs)})"

    if how[0] == "fn":
        return [f"        {assign}{function(how[1], how[2])}"]
    if how[0] == "param" and how[2:] == ("add",):
        return [f"        {assign}{args[0]} + {attr(how[1])}"]
    if how[0] == "param" and how[2:] == ("prepend",):  # one copy per sample, in front of the tokens
        return [f"        {assign}torch.cat([{attr(how[1])}.expand({args[0]}.shape[0], -1, -1), {args[0]}], dim=1)"]
    if how[0] == "param":
        return [f"        {assign}{args[0]} * {attr(how[1])}"]
    if how[0] == "optional":
        return [f"        if {attr(how[1])} is not None:",
                f"            {assign}{attr(how[1])}({', '.join(args)})",
                "        else:",
                f"            {assign}{function(how[2], how[3])}"]
    return [f"        {assign}{attr(how[1])}({', '.join(args)})"]


def attribute(owner: str, name: str) -> str:
    """`owner.name`, or getattr(owner, "name") for a name that is not an identifier."""
    return f"{owner}.{name}" if is_identifier(name) else f"getattr({owner}, {string_literal(name)})"


def containers(attrs: list[str]) -> list[tuple[str, dict | None]]:
    """A class's attributes in the order they are registered, the dotted ones (`convs.0`, `convs.1`) gathered
    under their first part, where a layer of it first appears, as torch registers modules (module.py's `_scope`):
    (name, None) for a plain attribute, (first part, tree) for a container, each tree mapping a key to a member's
    dotted name or to the tree of a container inside."""
    order: list[str] = []
    trees: dict[str, dict] = {}
    for attr in attrs:
        if "." not in attr:
            order.append(attr)
            continue
        root, *inner, leaf = attr.split(".")
        if root not in trees:
            trees[root] = {}
            order.append(root)
        tree = trees[root]
        for part in inner:
            tree = tree.setdefault(part, {})
        tree[leaf] = attr
    return [(name, trees.get(name)) for name in order]


def listed(tree: dict) -> bool:
    """Whether a container's keys are 0, 1, 2, ... in order: an nn.ModuleList (else an nn.ModuleDict)."""
    return list(tree) == [str(k) for k in range(len(tree))]


def container(tree: dict, inst: Instance, bare: set[str]) -> Call:
    """How an instance builds a container: nn.ModuleList([...]) or nn.ModuleDict(OrderedDict([...])), or their
    Parameter versions for bare parameters; a member the instance lacks (a shortcut that is a plain add) is None."""
    values = tuple(container(sub, inst, bare) if isinstance(sub, dict) else inst.attrs.get(sub)
                   for sub in tree.values())
    kind = "Parameter" if any(sub in bare for sub in tree.values() if isinstance(sub, str)) else "Module"
    if listed(tree):
        return Call(f"nn.{kind}List", (), (list(values),))
    return Call(f"nn.{kind}Dict", (), (Named(tuple(tree), values),))


def paths(tree: dict, base: str) -> dict[str, str]:
    """How a forward reaches each member of a container: self.convs[0], self.stage2[0].branches[1]."""
    found: dict[str, str] = {}
    for key, sub in tree.items():
        if listed(tree):
            reach = f"{base}[{key}]"
        else:  # a ModuleDict's keys are attributes too (torch refuses keys that would hide its own)
            reach = f"{base}.{key}" if is_identifier(key) else f"{base}[{string_literal(key)}]"
        found.update(paths(sub, reach) if isinstance(sub, dict) else {sub: reach})
    return found
