"""Grouping the instances into classes: the instances of a block (or of a group label within one parent) form a
family; its members whose forwards match share a class, the values they differ in becoming its parameters, and a
family whose forwards differ gets a few classes. Families are written children first, in the order they run.
"""

from __future__ import annotations

from typing import Any

from netspec.backends.torch.expressions import Call, Named, Repeat
from netspec.backends.torch.naming import camel_case, free_class_name, local_name, network_class_name
from netspec.backends.torch.statements import StatementBuilder
from netspec.backends.torch.structure import LABELS, Class, Instance, Scopes, Stmt, sequential_children
from netspec.backends.torch.writer import ClassWriter


class ClassPlanner:
    """Builds every instance and writes the classes they share: `classes` holds each class with its source
    lines, children first."""

    def __init__(self, scopes: Scopes, builder: StatementBuilder):
        self.scopes = scopes
        self.graph = scopes.graph
        self.builder = builder
        self.network_class = network_class_name(self.graph.name)
        self.class_names: set[str] = {self.network_class}
        self.writer = ClassWriter(scopes, self.class_names, self.network_class)
        self.classes: list[tuple[Class, list[str]]] = []

    def run(self) -> None:
        """Builds the instances and writes their classes, each family after the families it uses."""
        families: dict[tuple, list[Instance]] = {}
        for inst in self.scopes.instances.values():
            families.setdefault(self._family(inst), []).append(inst)
        done: set[tuple] = set()

        def process(family: tuple) -> None:
            if family in done:
                return
            done.add(family)
            for inst in families[family]:
                for kind, name in inst.items:
                    if kind == "scope":
                        process(self._family(self.scopes.instances[name]))
            for inst in sorted(families[family], key=lambda i: self._runs_at(i.path)):
                self.builder.build(inst)
            self._classes(family, families[family])

        for family in sorted(families, key=lambda f: self._runs_at(families[f][0].path)):
            process(family)

    def _family(self, inst: Instance) -> tuple:
        """The instance's family; a block that calls itself has one family per level of its recursion, since a
        class is written after the classes it uses (Tree, Tree_2, ... from the innermost)."""
        level, path = 0, inst.path
        while path:
            path = path.rpartition(".")[0]
            enclosing = self.scopes.instances.get(path)
            level += enclosing is not None and enclosing.family == inst.family
        return inst.family + (level,) if level else inst.family

    def _runs_at(self, scope: str) -> int:
        """Where the scope's first layer runs: instances and families are taken in that order."""
        return self.scopes.index[self.scopes.first_node(scope)]

    def _classes(self, family: tuple, instances: list[Instance]) -> None:
        """The family's classes: its instances grouped by matching templates, named, and written (a group that
        is a plain chain is written as an nn.Sequential where it is used, with no class)."""
        if family[0] == "group":
            inline = [i for i in instances if i.kind == "sequential"]
            for inst in inline:
                inst.expr = Call("nn.Sequential", (), sequential_children(inst))
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
                cls.name = self.network_class
            else:
                base = family[1] if family[0] == "block" else camel_case(family[2] if family[2] != "#" else "group")
                cls.name = free_class_name(base, self.class_names)
            if cls.kind == "module":
                cls.stmts, cls.optional = template[1], template[2]
            lines = self.writer.render(cls, inline=family[0] == "block")
            if lines is None:  # a Sequential whose class would read worse than the Sequential itself
                self.class_names.discard(cls.name)
                for inst in cls.instances:
                    inst.expr = Call("nn.Sequential", (), sequential_children(inst))
            else:
                self.classes.append((cls, lines))

    def _template(self, inst: Instance) -> tuple:
        """What instances of one class share: the layout of a Sequential, or the statements of a forward."""
        if inst.kind == "sequential":
            shape = [("named", c.names) if isinstance(c, Named) else "repeat" if isinstance(c, Repeat) else "item"
                     for c in sequential_children(inst)]
            return ("sequential", shape)
        return ("module", list(inst.stmts), frozenset(), tuple(v == LABELS for v in inst.inputs),
                tuple(local_name(inst.path, o) for o in inst.outputs))

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
