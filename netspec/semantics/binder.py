"""Names and where they are bound: every name, call and label of one file, with the binding it refers to.

`bind_names` walks a file's syntax tree (and sees the definitions of the files it imports) the way lowering
resolves names: values (inputs, `y = ...`, layer labels) are seen within their block, parameters and loop
variables down to the file, whose lets and blocks end the chain. What it finds are plain records with offsets
into the file's text, so editor features (hover, go to definition, completion, rename) are thin layers over it;
it knows nothing of any editor protocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from netspec.ground.errors import Span
from netspec.language import ast
from netspec.ops import OPS


class SourceOffsets:
    """One text's offsets from the parser's 1-based line:column (lines end at "\\n" only; a leading BOM is not
    counted)."""

    def __init__(self, text: str):
        self.text = text
        self.shift = len(text) - len(text.lstrip("\ufeff"))
        self.parser_lines = [self.shift] + [m.end() for m in re.finditer("\n", text)]

    def offset(self, line: int, col: int) -> int:
        """The offset of the parser's 1-based line and column, clamped to the text."""
        line = min(max(line, 1), len(self.parser_lines))
        start = self.parser_lines[line - 1]
        end = self.parser_lines[line] - 1 if line < len(self.parser_lines) else len(self.text)
        return min(start + max(col, 1) - 1, max(end, start) + 1, len(self.text))

    def span_offsets(self, span: Span) -> tuple[int, int]:
        start = self.offset(span.line, span.col)
        return start, max(start, self.offset(span.end_line, span.end_col))


def find_word(text: str, name: str, start: int, end: int) -> tuple[int, int] | None:
    """The offsets of `name`'s first appearance as a whole word in `text[start:end]`."""
    found = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])").search(text, start, end)
    return found.span() if found else None


@dataclass
class Binding:
    """Where a name is bound: `where` is the name itself when `exact`, else the statement that binds it."""

    name: str
    kind: str  # parameter, let, loop variable, input, value, layer, block, network
    file: str
    where: Span
    exact: bool
    owner: str = ""  # "block Bottleneck", "network ResNet50"
    node: Any = None  # the ast node: a Param, Let, Input, Assign, For, Step (a layer label), Block or NetworkAlias


def name_offsets(binding: Binding, index: SourceOffsets) -> tuple[int, int]:
    """The offsets of the bound name in its file's text (`index`): inside its statement when not `exact`
    (`block Name`, `let name`, `input name`)."""
    start, end = index.span_offsets(binding.where)
    if not binding.exact:
        return find_word(index.text, binding.name, start, end) or (start, end)
    return start, end


@dataclass
class Occurrence:
    """Something a request can land on, by its offsets in the bound text."""

    start: int
    end: int
    kind: str  # callee, label, call, name, ref, function, definition, input, import, train
    node: Any
    binding: Binding | None = None
    step: ast.Step | None = None  # the step a callee, label or call belongs to


@dataclass
class FileNames:
    """What `bind_names` found in one file."""

    occurrences: list[Occurrence] = field(default_factory=list)
    blocks: dict[str, Binding] = field(default_factory=dict)  # blocks and networks the file can see

    def at(self, offset: int) -> Occurrence | None:
        """The innermost occurrence holding `offset` (a name's end counts as inside it)."""
        best = None
        for o in self.occurrences:
            if o.start <= offset <= o.end and (best is None or o.end - o.start < best.end - best.start):
                best = o
        return best


class NameScope:
    """The names a body sees, by the one rule that lowering and the editor share: values (inputs, `y = ...`,
    layer labels) are seen up to the enclosing block's own body; parameters (block parameters, loop variables)
    up to the file, whose lets end the chain. Lowering keeps node names and evaluated values in it, the binder
    Bindings."""

    def __init__(self, parent: NameScope | None = None, block: bool = False, params: dict[str, Any] | None = None):
        self.parent = parent
        self.block = block  # values are not seen past a block's own body
        self.values: dict[str, Any] = {}
        self.params: dict[str, Any] = params if params is not None else {}

    def _value_scopes(self) -> Iterator[NameScope]:
        scope: NameScope | None = self
        while scope is not None:
            yield scope
            scope = None if scope.block else scope.parent

    def _param_scopes(self) -> Iterator[NameScope]:
        scope: NameScope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def find_value(self, name: str) -> Any:
        """What `name` is bound to as a value; KeyError if it is not seen here."""
        for scope in self._value_scopes():
            if name in scope.values:
                return scope.values[name]
        raise KeyError(name)

    def find_param(self, name: str) -> Any:
        """What `name` is bound to as a parameter, loop variable or let; KeyError if it is not seen here."""
        for scope in self._param_scopes():
            if name in scope.params:
                return scope.params[name]
        raise KeyError(name)

    def value(self, name: str) -> Any:
        try:
            return self.find_value(name)
        except KeyError:
            return None

    def param(self, name: str) -> Any:
        try:
            return self.find_param(name)
        except KeyError:
            return None

    def value_names(self) -> list[str]:
        return sorted({name for scope in self._value_scopes() for name in scope.values})

    def param_names(self) -> list[str]:
        return sorted({name for scope in self._param_scopes() for name in scope.params})


def bind_names(file: str, index: SourceOffsets, module: ast.Module, trees: dict[str, ast.Module]) -> FileNames:
    """Every name, call and label of `module` (the file named `file`, whose text `index` holds), with what it
    refers to; `trees` are the syntax trees of the files it imports, by file name."""
    binder = Binder(file, index, trees)
    binder.walk(module)
    return binder.found


def _name_span(span: Span, name: str) -> Span:
    """The span of a name that starts `span` (a parameter, an assignment's target)."""
    return Span(span.file, span.line, span.col, span.line, span.col + len(name))


class Binder:
    """Records every name, call and label of one file with the binding it refers to."""

    def __init__(self, file: str, index: SourceOffsets, trees: dict[str, ast.Module]):
        self.file_name = file
        self.index = index
        self.trees = trees
        self.found = FileNames()
        self.file = NameScope(None)
        self.owner = ""

    def add(self, span: Span | None, kind: str, node, binding=None, step=None, name: str | None = None) -> None:
        """Record what `span` holds; with `name`, only that name's first appearance in it (`block Name`)."""
        if span is None or span.file != self.file_name:
            return
        start, end = self.index.span_offsets(span)
        if name is not None:
            found = find_word(self.index.text, name, start, end)
            if found is None:
                return
            start, end = found
        self.found.occurrences.append(Occurrence(start, end, kind, node, binding, step))

    def walk(self, module: ast.Module) -> None:
        blocks = self.found.blocks
        # What the file sees: its own definitions first, then those of the files it imports.
        seen = [(self.file_name, module)] + [(f, t) for f, t in self.trees.items() if f != self.file_name]
        for name, tree in seen:
            for item in tree.items:
                if isinstance(item, ast.Let):
                    self.file.params.setdefault(item.name, Binding(item.name, "let", name, item.span, False,
                                                                   node=item))
                elif isinstance(item, (ast.Block, ast.NetworkAlias)):
                    network = isinstance(item, ast.NetworkAlias) or item.is_network
                    kind = "network" if network else "block"
                    blocks.setdefault(item.name, Binding(item.name, kind, name, item.span, False, node=item))
        for item in module.items:
            if isinstance(item, ast.Import):
                self.add(item.span, "import", item)
            elif isinstance(item, ast.Let):
                self.add(item.span, "definition", item, self.file.params.get(item.name), name=item.name)
                self.expr(item.value, self.file)
            elif isinstance(item, (ast.Block, ast.NetworkAlias)):
                self.definition(item)
            elif isinstance(item, ast.Train):
                self.add(item.span, "train", item, blocks.get(item.network), name=item.network)
                for setting in item.settings:
                    self.expr(setting.value, self.file)

    def definition(self, item: ast.Block | ast.NetworkAlias) -> None:
        kind = "network" if isinstance(item, ast.NetworkAlias) or item.is_network else "block"
        self.owner = f"{kind} {item.name}"
        self.add(item.span, "definition", item, self.found.blocks.get(item.name), name=item.name)
        scope = NameScope(self.file, block=True)
        for param in item.params:
            binding = Binding(param.name, "parameter", self.file_name, _name_span(param.span, param.name), True,
                              self.owner, param)
            self.add(binding.where, "name", param, binding)
            if param.default is not None:
                self.expr(param.default, scope)
            scope.params[param.name] = binding
        if isinstance(item, ast.NetworkAlias):
            self.step(item.step, scope)
        else:
            self.body(item.body, scope)

    def body(self, statements: list, scope: NameScope) -> None:
        registers: list[ast.Register] = []
        for stmt in statements:
            if isinstance(stmt, ast.Input):
                if isinstance(stmt.shape, ast.ListExpr):  # `[c, h, w]`: a name not bound yet is bound here
                    for item in stmt.shape.items:
                        if isinstance(item, ast.Name) and scope.param(item.id) is None \
                                and item.id not in self.found.blocks:
                            size = Binding(item.id, "input size", self.file_name, item.span, True, self.owner, stmt)
                            self.add(item.span, "name", item, size)
                            scope.params[item.id] = size
                        else:
                            self.expr(item, scope)
                elif stmt.shape is not None:
                    self.expr(stmt.shape, scope)
                binding = Binding(stmt.name, "input", self.file_name, stmt.span, False, self.owner, stmt)
                self.add(stmt.span, "input", stmt, binding, name=stmt.name)
                scope.values.setdefault(stmt.name, binding)
            elif isinstance(stmt, ast.Assign):
                self.chain(stmt.chain, scope)
                for n, target in enumerate(stmt.targets):
                    if n == 0:
                        where = _name_span(stmt.span, target)
                        binding = Binding(target, "value", self.file_name, where, True, self.owner, stmt)
                        self.add(where, "name", stmt, binding)
                    else:  # `hi, lo = ...`: found by its word in the statement
                        binding = Binding(target, "value", self.file_name, stmt.span, False, self.owner, stmt)
                        self.add(stmt.span, "name", stmt, binding, name=target)
                    scope.values.setdefault(target, binding)
            elif isinstance(stmt, ast.Let):
                self.expr(stmt.value, scope)
                binding = Binding(stmt.name, "let", self.file_name, stmt.span, False, self.owner, stmt)
                self.add(stmt.span, "name", stmt, binding, name=stmt.name)
                scope.params.setdefault(stmt.name, binding)
            elif isinstance(stmt, ast.Export):
                for name in stmt.names:
                    binding = scope.values.get(name)
                    self.add(stmt.span, "ref", stmt, binding, name=name)
                    if binding is not None and scope.parent is not None and not scope.block:
                        scope.parent.values.setdefault(name, binding)
            elif isinstance(stmt, ast.For):
                self.expr(stmt.values, scope)
                inner = NameScope(scope)
                binding = Binding(stmt.name, "loop variable", self.file_name, stmt.name_span, True, self.owner, stmt)
                self.add(stmt.name_span, "name", stmt, binding)
                inner.params[stmt.name] = binding
                self.body(stmt.body, inner)
            elif isinstance(stmt, ast.Output):
                for item in stmt.items:
                    self.add(_name_span(item.span, item.name), "ref", item, scope.value(item.name))
                    if item.condition is not None:
                        self.expr(item.condition, scope)
            elif isinstance(stmt, ast.Chain):
                self.chain(stmt, scope)
            elif isinstance(stmt, ast.Register):
                registers.append(stmt)
        for stmt in registers:  # after the body: it names labels made after it
            for name, where in zip(stmt.names, stmt.name_spans):
                self.add(where, "ref", stmt, scope.value(name))

    def chain(self, chain: ast.Chain, scope: NameScope) -> None:
        for step in chain.steps:
            self.step(step, scope)

    def step(self, step: ast.Step, scope: NameScope) -> None:
        if step.condition is not None:
            self.expr(step.condition, scope)
        if step.repeat is not None:
            self.expr(step.repeat, scope)
        if isinstance(step.label, ast.Template):
            for part in step.label.parts:
                if not isinstance(part, str):
                    self.expr(part, scope)
        core = step.core
        if isinstance(core, ast.Ref):
            self.add(core.span, "ref", core, scope.value(core.name), step)
        elif isinstance(core, ast.Group):
            self.add(core.span, "call", core, None, step)
            self.body(core.body, NameScope(scope))
        else:
            self.call(core.call if isinstance(core, ast.Spread) else core, scope, step)
        if step.label is not None and step.label_span is not None and not isinstance(core, ast.Ref):
            label = step.label if isinstance(step.label, str) else None
            binding = Binding(label or "", "layer", self.file_name, step.label_span, True, self.owner, step)
            self.add(step.label_span, "label", step, binding, step)
            if label is not None:
                scope.values.setdefault(label, binding)

    def call(self, call: ast.Call, scope: NameScope, step: ast.Step) -> None:
        self.add(call.span, "call", call, None, step)
        binding = scope.param(call.callee) or self.found.blocks.get(call.callee)
        self.add(call.callee_span, "callee", call, binding, step)
        merge = call.callee in OPS and OPS[call.callee].inputs is None
        for arg in call.args:
            if merge and arg.name is None and isinstance(arg.value, ast.Name):  # `add(x)`: a value's name
                self.add(arg.value.span, "ref", arg.value, scope.value(arg.value.id))
            elif (arg.name is not None and isinstance(arg.value, ast.Name) and scope.param(arg.value.id) is None
                  and scope.value(arg.value.id) is not None):  # a block's further input: `Up(64, skip=enc4)`
                self.add(arg.value.span, "ref", arg.value, scope.value(arg.value.id))
            else:
                self.expr(arg.value, scope)

    def expr(self, root, scope: NameScope) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Name):
                binding = scope.param(node.id) or self.found.blocks.get(node.id)
                self.add(node.span, "name", node, binding)
            elif isinstance(node, ast.Function):
                self.add(node.name_span, "function", node)
                stack.extend(arg.value for arg in node.args)
            elif isinstance(node, ast.ListExpr):
                stack.extend(node.items)
            elif isinstance(node, ast.Unary):
                stack.append(node.operand)
            elif isinstance(node, ast.Binary):
                stack += [node.left, node.right]
            elif isinstance(node, ast.Index):
                stack += [node.target, node.index]
            elif isinstance(node, ast.Slice):
                stack += [x for x in (node.target, node.start, node.stop) if x is not None]
            elif isinstance(node, ast.Conditional):
                stack += [node.condition, node.then, node.otherwise]
