"""`netspec lsp`: the language server (docs/editors.md), over stdin and stdout, built on pygls.

Every open document is checked as `netspec check` checks it: parsed with its imports (an open file's unsaved
text read instead of the file on disk), each of its networks instantiated with its default arguments and
analysed. The checks run one at a time on a worker thread, newest text first, so a request never waits for
one: hover, definition, completion and the outline read the last check whose text parsed, with positions
carried across the lines edited since. Diagnostics are published per file: a mistake inside an imported
block shows in the block's file (when it is open) and at the call in the file that instantiated it.

Only pygls and lsprotocol are needed beyond `netspec check`'s own imports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import traceback
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from netspec import __version__, ast
from netspec.errors import Diagnostic, NetspecError, Sources, Span
from netspec.evaluate import FUNCTIONS, Symbol, show
from netspec.ir import Graph, Node
from netspec.limits import Limits, search_path_from_environment
from netspec.lower import Program, load_program, lower
from netspec.ops import OPS
from netspec.ops.base import fmt as shape_text
from netspec.ops.base import signature
from netspec.passes import PASSES

INSTANCES_SHOWN = 8  # instances of a layer listed in a hover; the rest are counted
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CALLED_AT = re.compile(r"called at (.+):(\d+):(\d+)\)?$")


# Positions ---------------------------------------------------------------------------------------------------

def _units(text: str, encoding: str) -> int:
    """The length of `text` in the client's position units."""
    if encoding == lsp.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == lsp.PositionEncodingKind.Utf32:
        return len(text)
    return len(text) + sum(ord(c) > 0xFFFF for c in text)


class TextIndex:
    """One text's offsets, the parser's line:column (lines end at "\\n" only; a leading BOM is not counted) and
    LSP positions (lines end at "\\n", "\\r\\n" or "\\r"; columns in the client's units)."""

    def __init__(self, text: str):
        self.text = text
        self.shift = len(text) - len(text.lstrip("\ufeff"))
        self.parser_lines = [self.shift] + [m.end() for m in re.finditer("\n", text)]
        self.lsp_lines = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]

    def offset(self, line: int, col: int) -> int:
        """The offset of the parser's 1-based line and column."""
        line = min(max(line, 1), len(self.parser_lines))
        start = self.parser_lines[line - 1]
        end = self.parser_lines[line] - 1 if line < len(self.parser_lines) else len(self.text)
        return min(start + max(col, 1) - 1, max(end, start) + 1, len(self.text))

    def span_offsets(self, span: Span) -> tuple[int, int]:
        start = self.offset(span.line, span.col)
        return start, max(start, self.offset(span.end_line, span.end_col))

    def _line_end(self, line: int) -> int:
        if line + 1 < len(self.lsp_lines):
            end = self.lsp_lines[line + 1]
            return end - (2 if self.text[end - 2:end] == "\r\n" else 1)
        return len(self.text)

    def position(self, offset: int, encoding: str) -> lsp.Position:
        offset = min(max(offset, 0), len(self.text))
        line = bisect_right(self.lsp_lines, offset) - 1
        offset = min(offset, self._line_end(line))
        return lsp.Position(line, _units(self.text[self.lsp_lines[line]:offset], encoding))

    def range(self, start: int, end: int, encoding: str) -> lsp.Range:
        return lsp.Range(self.position(start, encoding), self.position(end, encoding))

    def from_position(self, position: lsp.Position, encoding: str) -> int:
        line = min(max(position.line, 0), len(self.lsp_lines) - 1)
        start, end = self.lsp_lines[line], self._line_end(line)
        if encoding == lsp.PositionEncodingKind.Utf32:
            return min(start + position.character, end)
        units = 0
        for offset in range(start, end):
            if units >= position.character:
                return offset
            units += _units(self.text[offset], encoding)
        return end


def _map_offset(offset: int, source: str, target: str) -> int | None:
    """Where `offset` of `source` is in `target`, for lines the edits between them left alone: those before
    the first changed line, and those after the last (moved up or down); None elsewhere."""
    if source == target:
        return offset
    a, b = source.split("\n"), target.split("\n")
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    line = source.count("\n", 0, offset)
    column = offset - (source.rfind("\n", 0, offset) + 1)
    if line < prefix:
        new_line = line
    elif line >= len(a) - suffix:
        new_line = line + len(b) - len(a)
    else:
        return None
    return sum(len(x) + 1 for x in b[:new_line]) + column


# What the checker found --------------------------------------------------------------------------------------

@dataclass
class Binding:
    """Where a name is bound: `where` is the name itself when `exact`, else the statement that binds it."""

    name: str
    kind: str  # parameter, let, loop variable, input, value, layer, block, network
    file: str
    where: Span
    exact: bool
    owner: str = ""  # "block Bottleneck", "network ResNet50"
    node: Any = None  # the ast node: a Param, Let, Step (a layer label), Block or NetworkAlias


@dataclass
class Occurrence:
    """Something a request can land on, by its offsets in the analysed text."""

    start: int
    end: int
    kind: str  # callee, label, call, name, ref, function, definition, input, import, train
    node: Any
    binding: Binding | None = None
    step: ast.Step | None = None  # the step a callee, label or call belongs to


@dataclass
class Analysis:
    """One check of one document: its text, syntax tree, graphs and diagnostics."""

    uri: str
    path: Path
    name: str  # the file name its spans carry
    version: int | None
    text: str
    module: ast.Module | None
    program: Program | None
    graphs: list[Graph]
    diagnostics: list[Diagnostic]
    sources: Sources
    trees: dict[str, ast.Module]
    index: TextIndex
    occurrences: list[Occurrence] = field(default_factory=list)
    blocks: dict[str, Binding] = field(default_factory=dict)  # blocks and networks the file can see
    files: set[Path] = field(default_factory=set)  # every file read, resolved
    nodes: dict[tuple, list[tuple[Graph, Node]]] = field(default_factory=dict)  # by (file, span)
    scopes: dict[tuple, list[tuple[Graph, str]]] = field(default_factory=dict)
    indexes: dict[str, TextIndex] = field(default_factory=dict)
    totals: dict[int, dict[str, tuple]] = field(default_factory=dict)  # per graph: scope -> its sums

    def scope_totals(self, graph: Graph) -> dict[str, tuple]:
        """Each scope's parameters, MACs and last layer, summed in one pass over the graph (on first use)."""
        if id(graph) not in self.totals:
            sums: dict[str, list] = {}
            for node in graph.nodes:
                for path in node.scope:
                    entry = sums.setdefault(path, [0, 0, None])
                    entry[0] += node.params or 0
                    entry[1] += node.macs or 0
                    entry[2] = node
            self.totals[id(graph)] = {path: tuple(entry) for path, entry in sums.items()}
        return self.totals[id(graph)]

    def text_index(self, name: str) -> TextIndex | None:
        """The index of a file as this check read it."""
        if name == self.name:
            return self.index
        if name not in self.indexes:
            text = self.sources.texts.get(name)
            if text is None:
                return None
            self.indexes[name] = TextIndex(text)
        return self.indexes[name]

    def at(self, offset: int) -> Occurrence | None:
        """The innermost occurrence holding `offset` (a name's end counts as inside it)."""
        best = None
        for o in self.occurrences:
            if o.start <= offset <= o.end and (best is None or o.end - o.start < best.end - best.start):
                best = o
        return best


def _word(name: str) -> re.Pattern:
    """`name` as a whole word."""
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")


@lru_cache(maxsize=4096)
def resolved(name: str) -> Path:
    """A file name as one path, whichever way it was reached (`specs/x/../y.net`, a link)."""
    try:
        return Path(name).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, a loop of links
        return Path(name)


def _key(span: Span) -> tuple:
    return (resolved(span.file), span.line, span.col, span.end_line, span.end_col)


def limits() -> Limits:
    """`netspec check`'s defaults: imports read the spec's folder and NETSPEC_PATH."""
    search = search_path_from_environment()
    return Limits(import_roots=search, import_search=search)


def analyse(uri: str, path: Path, text: str, version: int | None, texts: dict[Path, str]) -> Analysis:
    """Check `text` as the file at `path`, with the open documents' `texts`; never raises a NetspecError."""
    sources, trees = Sources(), {}
    name = str(path)
    diagnostics: list[Diagnostic] = []
    graphs: list[Graph] = []
    program = None
    chosen = limits()
    try:
        program = load_program(path, sources, chosen, texts={**texts, resolved(name): text}, trees=trees)
    except NetspecError as err:
        diagnostics += err.diagnostics
    for network in program.root.networks if program is not None else []:
        try:
            graph = lower(program, network)
            for run_pass in PASSES:
                graph = run_pass(graph, chosen)
        except NetspecError as err:
            diagnostics += err.diagnostics
            continue
        graphs.append(graph)
        diagnostics += graph.diagnostics
    unique = list({(d.code, d.span, d.message): d for d in diagnostics}.values())
    analysis = Analysis(uri, path, name, version, text, trees.get(name), program, graphs, unique, sources, trees,
                        TextIndex(text))
    analysis.files = {resolved(f) for f in sources.texts}
    for graph in graphs:
        for node in graph.nodes:
            if node.span is not None:
                analysis.nodes.setdefault(_key(node.span), []).append((graph, node))
        for scope in graph.scopes.values():
            if scope.span is not None:
                analysis.scopes.setdefault(_key(scope.span), []).append((graph, scope.path))
    if analysis.module is not None:
        _Walker(analysis).walk()
    return analysis


# Names and where they are bound --------------------------------------------------------------------------------

class _Scope:
    """Names visible in a body: values (inputs, `y = ...`, labels) up to the enclosing block, parameters
    (block parameters, loop variables) up to the file, whose lets end the chain."""

    def __init__(self, parent: _Scope | None, block: bool = False):
        self.parent = parent
        self.block = block  # values are not seen past a block's own body
        self.values: dict[str, Binding] = {}
        self.params: dict[str, Binding] = {}

    def value(self, name: str) -> Binding | None:
        scope = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            if scope.block:
                return None
            scope = scope.parent
        return None

    def param(self, name: str) -> Binding | None:
        scope = self
        while scope is not None:
            if name in scope.params:
                return scope.params[name]
            scope = scope.parent
        return None


class _Walker:
    """Records every name, call and label of the analysed file with the binding it refers to."""

    def __init__(self, analysis: Analysis):
        self.a = analysis
        self.file = _Scope(None)
        self.owner = ""

    def offsets(self, span: Span | None) -> tuple[int, int]:
        return self.a.index.span_offsets(span) if span is not None else (0, 0)

    def add(self, span: Span | None, kind: str, node, binding=None, step=None, name: str | None = None) -> None:
        """Record what `span` holds; with `name`, only that name's first appearance in it (`block Name`)."""
        if span is None or span.file != self.a.name:
            return
        start, end = self.offsets(span)
        if name is not None:
            found = _word(name).search(self.a.text, start, end)
            if found is None:
                return
            start, end = found.span()
        self.a.occurrences.append(Occurrence(start, end, kind, node, binding, step))

    def walk(self) -> None:
        module = self.a.module
        # What the file sees: its own definitions first, then those of the files it imports.
        for name, tree in [(self.a.name, module)] + [(f, t) for f, t in self.a.trees.items() if f != self.a.name]:
            for item in tree.items:
                if isinstance(item, ast.Let):
                    self.file.params.setdefault(item.name, Binding(item.name, "let", name, item.span, False,
                                                                   node=item))
                elif isinstance(item, (ast.Block, ast.NetworkAlias)):
                    network = isinstance(item, ast.NetworkAlias) or item.is_network
                    kind = "network" if network else "block"
                    self.a.blocks.setdefault(item.name, Binding(item.name, kind, name, item.span, False, node=item))
        for item in module.items:
            if isinstance(item, ast.Import):
                self.add(item.span, "import", item)
            elif isinstance(item, ast.Let):
                self.add(item.span, "definition", item, self.file.params.get(item.name), name=item.name)
                self.expr(item.value, self.file)
            elif isinstance(item, (ast.Block, ast.NetworkAlias)):
                self.definition(item)
            elif isinstance(item, ast.Train):
                self.add(item.span, "train", item, self.a.blocks.get(item.network), name=item.network)
                for setting in item.settings:
                    self.expr(setting.value, self.file)

    def definition(self, item: ast.Block | ast.NetworkAlias) -> None:
        kind = "network" if isinstance(item, ast.NetworkAlias) or item.is_network else "block"
        self.owner = f"{kind} {item.name}"
        self.add(item.span, "definition", item, self.a.blocks.get(item.name), name=item.name)
        scope = _Scope(self.file, block=True)
        for param in item.params:
            binding = Binding(param.name, "parameter", self.a.name, Span(param.span.file, param.span.line,
                              param.span.col, param.span.line, param.span.col + len(param.name)), True,
                              self.owner, param)
            self.add(binding.where, "name", param, binding)
            if param.default is not None:
                self.expr(param.default, scope)
            scope.params[param.name] = binding
        if isinstance(item, ast.NetworkAlias):
            self.step(item.step, scope)
        else:
            self.body(item.body, scope)

    def body(self, statements: list, scope: _Scope) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.Input):
                if stmt.shape is not None:
                    self.expr(stmt.shape, scope)
                binding = Binding(stmt.name, "input", self.a.name, stmt.span, False, self.owner, stmt)
                self.add(stmt.span, "input", stmt, binding, name=stmt.name)
                scope.values.setdefault(stmt.name, binding)
            elif isinstance(stmt, ast.Assign):
                self.chain(stmt.chain, scope)
                where = Span(stmt.span.file, stmt.span.line, stmt.span.col, stmt.span.line,
                             stmt.span.col + len(stmt.target))
                binding = Binding(stmt.target, "value", self.a.name, where, True, self.owner, stmt)
                self.add(where, "name", stmt, binding)
                scope.values.setdefault(stmt.target, binding)
            elif isinstance(stmt, ast.For):
                self.expr(stmt.values, scope)
                inner = _Scope(scope)
                binding = Binding(stmt.name, "loop variable", self.a.name, stmt.name_span, True, self.owner, stmt)
                self.add(stmt.name_span, "name", stmt, binding)
                inner.params[stmt.name] = binding
                self.body(stmt.body, inner)
            elif isinstance(stmt, ast.Output):
                for item in stmt.items:
                    self.add(Span(item.span.file, item.span.line, item.span.col, item.span.line,
                                  item.span.col + len(item.name)), "ref", item, scope.value(item.name))
                    if item.condition is not None:
                        self.expr(item.condition, scope)
            elif isinstance(stmt, ast.Chain):
                self.chain(stmt, scope)

    def chain(self, chain: ast.Chain, scope: _Scope) -> None:
        for step in chain.steps:
            self.step(step, scope)

    def step(self, step: ast.Step, scope: _Scope) -> None:
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
            self.body(core.body, _Scope(scope))
        else:
            self.call(core.call if isinstance(core, ast.Spread) else core, scope, step)
        if step.label is not None and step.label_span is not None and not isinstance(core, ast.Ref):
            label = step.label if isinstance(step.label, str) else None
            binding = Binding(label or "", "layer", self.a.name, step.label_span, True, self.owner, step)
            self.add(step.label_span, "label", step, binding, step)
            if label is not None:
                scope.values.setdefault(label, binding)

    def call(self, call: ast.Call, scope: _Scope, step: ast.Step) -> None:
        self.add(call.span, "call", call, None, step)
        binding = scope.param(call.callee) or self.a.blocks.get(call.callee)
        self.add(call.callee_span, "callee", call, binding, step)
        merge = call.callee in OPS and OPS[call.callee].inputs is None
        for arg in call.args:
            if merge and arg.name is None and isinstance(arg.value, ast.Name):  # `add(x)`: a value's name
                self.add(arg.value.span, "ref", arg.value, scope.value(arg.value.id))
            else:
                self.expr(arg.value, scope)

    def expr(self, root, scope: _Scope) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Name):
                binding = scope.param(node.id) or self.a.blocks.get(node.id)
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


# Text for hovers -----------------------------------------------------------------------------------------------

def _network(graph: Graph) -> str:
    """`ResNet50(classes=1000)`: a network with the arguments it was checked with, its defaults."""
    arguments = ", ".join(f"{k}={v.name if isinstance(v, Symbol) else show(v)}" for k, v in graph.arguments.items())
    return f"{graph.name}({arguments})" if arguments else graph.name


def _numbers(shape, params: int | None, macs: int | None) -> str:
    where = f"[{', '.join(map(str, shape))}]" if shape is not None else "shape unknown (see the errors)"
    return f"{where}, {params or 0:,} params, {macs or 0:,} MACs"


def _summary_line(analysis: Analysis, block: ast.Block | ast.NetworkAlias, file: str) -> str:
    """The first sentence of the comment right above a block's definition."""
    index = analysis.text_index(file)
    if index is None:
        return ""
    lines = index.text[:index.offset(block.span.line, 1)].split("\n")[:-1]
    comment: list[str] = []
    while lines and lines[-1].strip().startswith("#"):
        comment.insert(0, lines.pop().strip().lstrip("#").strip())
    text = " ".join(comment)
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text


def _source(analysis: Analysis, node) -> str:
    """A node's text as written (a parameter's default, say)."""
    index = analysis.text_index(node.span.file)
    if index is None:
        return "..."
    start, end = index.span_offsets(node.span)
    return " ".join(index.text[start:end].split())


def block_signature(analysis: Analysis, block: ast.Block | ast.NetworkAlias) -> str:
    kind = "network" if isinstance(block, ast.NetworkAlias) or block.is_network else "block"
    params = ", ".join(p.name if p.default is None else f"{p.name}={_source(analysis, p.default)}"
                       for p in block.params)
    return f"{kind} {block.name}({params})"


def _location(span: Span, relative_to: Path) -> str:
    try:
        shown = os.path.relpath(span.file, relative_to.parent)
    except ValueError:
        shown = span.file
    return f"{shown}:{span.line}"


class Hovers:
    """The markdown of a hover, from the analyses that know the graph (the document's own, or one that
    imports it)."""

    def __init__(self, analysis: Analysis, others: list[Analysis]):
        self.a = analysis
        self.analyses = [analysis] + others

    def instances(self, step: ast.Step | None, call) -> str:
        """Every layer or block instance a step made, per network: scoped name, shape, parameters, MACs."""
        spans = [s for s in (step.span if step else None, getattr(call, "span", None)) if s is not None]
        per_graph: dict[int, tuple[Graph, list[str]]] = {}
        for analysis in self.analyses:
            for span in spans:
                key = _key(span)
                for graph, node in analysis.nodes.get(key, []):
                    per_graph.setdefault(id(graph), (graph, []))[1].append(
                        f"`{node.name}` → {_numbers(node.shape, node.params, node.macs)}")
                for graph, path in analysis.scopes.get(key, []):
                    per_graph.setdefault(id(graph), (graph, []))[1].append(self._scope(analysis, graph, path))
            if per_graph:
                break
        out = []
        for graph, rows in per_graph.values():
            rows = list(dict.fromkeys(rows))
            shown = [f"- {row}" for row in rows[:INSTANCES_SHOWN]]
            if len(rows) > INSTANCES_SHOWN:
                shown.append(f"- … and {len(rows) - INSTANCES_SHOWN} more")
            out.append(f"{_network(graph)}:\n" + "\n".join(shown))
        return "\n\n".join(out)

    @staticmethod
    def _scope(analysis: Analysis, graph: Graph, path: str) -> str:
        """A block instance or group: the output of its last layer, its parameters and MACs summed."""
        params, macs, last = analysis.scope_totals(graph).get(path, (0, 0, None))
        return f"`{path}` ({graph.scopes[path].kind}) → {_numbers(last.shape if last else None, params, macs)}"

    def op(self, name: str) -> str:
        op = OPS[name]
        return f"```netspec\n{signature(op)}\n```\n{op.summary}"

    def block(self, binding: Binding) -> str:
        block = binding.node
        summary = _summary_line(self.a, block, binding.file)
        text = f"```netspec\n{block_signature(self.a, block)}\n```\n"
        if summary:
            text += summary + "\n\n"
        return text + f"Defined at {_location(block.span, self.a.path)}."

    def network(self, block) -> str:
        for analysis in self.analyses:
            for graph in analysis.graphs:
                if graph.name == block.name and resolved(graph.file) == resolved(block.span.file) \
                        and graph.nodes and graph.nodes[-1].shape is not None:
                    params = sum(n.params or 0 for n in graph.nodes)
                    macs = sum(n.macs or 0 for n in graph.nodes)
                    output = graph.node(graph.output).shape if graph.output else None
                    return (f"\n\n{_network(graph)}: input {shape_text(graph.input_shape)}, output "
                            f"{shape_text(output) if output else 'unknown'}, {params:,} params, {macs:,} MACs")
        return ""

    def binding(self, binding: Binding) -> str:
        where = _location(binding.where, self.a.path)
        node = binding.node
        if binding.kind in ("block", "network"):
            return self.block(binding) + (self.network(node) if binding.kind == "network" else "")
        if binding.kind == "parameter":
            default = f", default `{_source(self.a, node.default)}`" if node.default is not None else ""
            return f"`{binding.name}`: parameter of {binding.owner}{default} ({where})"
        if binding.kind == "let":
            value = ""
            if self.a.program is not None and binding.name in self.a.program.root.lets:
                value = f" = `{show(self.a.program.root.lets[binding.name], 80)}`"
            return f"`{binding.name}`: let{value} ({where})"
        if binding.kind == "loop variable":
            return f"`{binding.name}`: loop variable of the `for` at {where}"
        if binding.kind == "input":
            return f"`{binding.name}`: the input of {binding.owner} ({where})"
        if binding.kind == "value":
            return f"`{binding.name}`: the value bound at {where}"
        layer = self.layer(node, node.core if not isinstance(node.core, ast.Spread) else node.core.call)
        return f"`{binding.name}`: the layer labelled at {where}" + (f"\n\n{layer}" if layer else "")

    def layer(self, step: ast.Step | None, core) -> str:
        parts = [self.instances(step, core)]
        if isinstance(core, ast.Call):
            if core.callee in self.a.blocks:
                parts.append(self.block(self.a.blocks[core.callee]))
            elif core.callee in OPS and OPS[core.callee].inputs != 0:
                parts.append(self.op(core.callee))
        return "\n\n".join(p for p in parts if p)

    def occurrence(self, o: Occurrence) -> str:
        if o.kind == "callee":
            callee = o.node.callee
            head = self.binding(o.binding) if o.binding is not None and o.binding.kind == "parameter" else ""
            body = self.layer(o.step, o.node)
            if not body and callee in OPS and OPS[callee].inputs != 0:
                body = self.op(callee)
            return "\n\n".join(p for p in (head, body) if p)
        if o.kind in ("call", "label"):
            core = o.step.core if o.step is not None else o.node
            return self.layer(o.step, core.call if isinstance(core, ast.Spread) else core)
        if o.kind == "function":
            return f"```netspec\n{FUNCTIONS[o.node.name][0]}\n```\nbuilt-in function" if o.node.name in FUNCTIONS \
                else ""
        if o.kind in ("name", "ref", "definition", "train", "input") and o.binding is not None:
            return self.binding(o.binding)
        if o.kind == "name" and o.node.id in OPS:
            return self.op(o.node.id)
        return ""


# The server ----------------------------------------------------------------------------------------------------

def _path(uri: str) -> Path:
    path = to_fs_path(uri)
    return Path(path) if path else Path.cwd() / f"untitled-{abs(hash(uri))}.net"


class NetspecServer(LanguageServer):
    def __init__(self):
        super().__init__("netspec", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
        self.texts: dict[str, tuple[str, int | None]] = {}  # open documents: uri -> (text, version)
        self.latest: dict[str, Analysis] = {}  # the last check of each open document
        self.good: dict[str, Analysis] = {}  # the last check whose text parsed
        self.pending: dict[str, None] = {}  # documents waiting for a check, in order
        self.unpublished: set[str] = set()  # checked, waiting for the checks of files that read them
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netspec-check")

    # checking

    @property
    def encoding(self) -> str:
        try:
            return self.workspace.position_encoding or lsp.PositionEncodingKind.Utf16
        except RuntimeError:
            return lsp.PositionEncodingKind.Utf16

    def dependents(self, uri: str) -> list[str]:
        """Open documents whose last check read this one."""
        path = resolved(str(_path(uri)))
        return [u for u, a in self.latest.items() if u != uri and path in a.files]

    def schedule(self, uris: list[str]) -> None:
        for uri in uris:
            self.pending[uri] = None
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self.work())

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            uri = next(iter(self.pending))
            del self.pending[uri]
            if uri not in self.texts:
                continue
            text, version = self.texts[uri]
            buffers = {resolved(str(_path(u))): t for u, (t, _) in self.texts.items()}
            try:
                analysis = await loop.run_in_executor(self.executor, analyse, uri, _path(uri), text, version,
                                                      buffers)
            except Exception:  # a bug in netspec: say so, and keep serving
                self.report(f"checking {uri}")
                continue
            if uri not in self.texts:
                continue
            self.latest[uri] = analysis
            if analysis.module is not None:
                self.good[uri] = analysis
            if self.texts[uri][1] != version:
                continue  # edited meanwhile: its next check is queued
            self.publish_after(uri, analysis)
        for uri in list(self.unpublished):  # deferred for checks that did not run (their files were closed)
            self.publish(uri)

    def publish_after(self, uri: str, analysis: Analysis) -> None:
        """A file is published once the queued checks of the files reading it are done: they may find more
        mistakes in it (an imported block's, made where they instantiate it)."""
        if self.read_by_pending(uri):
            self.unpublished.add(uri)
        else:
            self.publish(uri)
        for other in self.texts:
            if other != uri and other not in self.pending and not self.read_by_pending(other) \
                    and resolved(str(_path(other))) in analysis.files:
                self.publish(other)

    def read_by_pending(self, uri: str) -> bool:
        path = resolved(str(_path(uri)))
        return any(path in self.latest[u].files for u in self.pending if u in self.latest and u != uri)

    def report(self, what: str) -> None:
        self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error,
                                                     f"netspec lsp: internal error {what}:\n{traceback.format_exc()}"))

    def publish(self, uri: str) -> None:
        self.unpublished.discard(uri)
        if uri not in self.texts:
            return
        try:
            diagnostics = self.diagnostics(uri)
        except Exception:  # a bug in netspec: say so, and keep serving
            self.report(f"publishing the diagnostics of {uri}")
            return
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, diagnostics, self.texts[uri][1]))

    def diagnostics(self, uri: str) -> list[lsp.Diagnostic]:
        """This file's own mistakes, those that checks of other open files found in it, and mistakes in the
        files it imports, shown where it calls into them (or at its imports)."""
        own = self.latest.get(uri)
        if own is None:
            return []
        path = resolved(own.name)
        found: dict[tuple, lsp.Diagnostic] = {}
        for analysis in [own] + [a for u, a in self.latest.items() if u != uri]:
            if analysis is not own and (path not in analysis.files or
                                        analysis.sources.texts.get(self._name_in(analysis, path)) != own.text
                                        .lstrip("\ufeff")):
                continue
            for d in analysis.diagnostics:
                if d.span is not None and resolved(d.span.file) == path:
                    found.setdefault((d.code, _key(d.span), d.message), self.convert(d, own.index))
                elif analysis is own:
                    converted = self.elsewhere(d, own)
                    found.setdefault((d.code, d.span and _key(d.span), d.message), converted)
        return list(found.values())

    @staticmethod
    def _name_in(analysis: Analysis, path: Path) -> str:
        return next((name for name in analysis.sources.texts if resolved(name) == path), "")

    def convert(self, d: Diagnostic, index: TextIndex, message: str | None = None,
                related: list | None = None) -> lsp.Diagnostic:
        start, end = index.span_offsets(d.span) if d.span is not None else (0, 0)
        text = message or d.message
        text += "".join(f"\nnote: {n}" for n in d.notes) + (f"\nhint: {d.hint}" if d.hint else "")
        return lsp.Diagnostic(index.range(start, end, self.encoding), text, lsp.DiagnosticSeverity.Error, d.code,
                              source="netspec",
                              related_information=related)

    def elsewhere(self, d: Diagnostic, own: Analysis) -> lsp.Diagnostic:
        """A mistake in another file (or none), shown in this one: at the call that led to it, else at the
        import of its file, else at the top."""
        where: Span | None = None
        for note in d.notes:
            match = _CALLED_AT.search(note)
            if match and resolved(match.group(1)) == resolved(own.name):
                line, col = int(match.group(2)), int(match.group(3))
                where = Span(own.name, line, col, line, col)
        imports = [i for i in (own.module.items if own.module else []) if isinstance(i, ast.Import)]
        if where is not None:
            start = own.index.offset(where.line, where.col)
            call = next((o for o in own.occurrences if o.kind == "callee" and o.start == start), None)
            if call is not None:
                where = call.node.callee_span
        elif d.span is not None and imports:
            target = resolved(d.span.file)
            chosen = next((i for i in imports if resolved(str(own.path.parent / i.path)) == target), imports[0])
            where = chosen.span
        related = None
        message = d.message
        if d.span is not None:
            index = own.text_index(d.span.file)
            shown = _location(d.span, own.path)
            message = f"{d.message} (in {shown})"
            if index is not None:
                start, end = index.span_offsets(d.span)
                related = [lsp.DiagnosticRelatedInformation(
                    lsp.Location(from_fs_path(str(resolved(d.span.file))), index.range(start, end, self.encoding)),
                    "the mistake is here")]
        return self.convert(Diagnostic(d.code, message, where, d.hint, d.notes), own.index, message, related)

    # requests

    def context(self, uri: str) -> tuple[Analysis, str] | None:
        """The last check of the document that parsed, and the document's current text."""
        if uri not in self.texts or uri not in self.good:
            return None
        return self.good[uri], self.texts[uri][0]

    def occurrence(self, uri: str, position: lsp.Position) -> tuple[Analysis, Occurrence] | None:
        """(analysis, the name occurrence under the cursor), or None where there is none."""
        found = self.to_analysis(uri, position)
        if found is None:
            return None
        analysis, offset = found
        o = analysis.at(offset)
        return None if o is None else (analysis, o)

    def to_analysis(self, uri: str, position: lsp.Position) -> tuple[Analysis, int] | None:
        found = self.context(uri)
        if found is None:
            return None
        analysis, text = found
        offset = TextIndex(text).from_position(position, self.encoding)
        mapped = _map_offset(offset, text, analysis.text)
        return (analysis, mapped) if mapped is not None else None

    def location(self, analysis: Analysis, file: str, start: int, end: int) -> lsp.Location | None:
        """Offsets of a file as `analysis` read it, in the file as it is now (open in the editor, or on disk)."""
        uri = from_fs_path(str(resolved(file)))
        index = analysis.text_index(file)
        if index is None:
            return None
        current = next((t for u, (t, _) in self.texts.items() if resolved(str(_path(u))) == resolved(file)), None)
        if current is not None and current != index.text:
            new_start, new_end = _map_offset(start, index.text, current), _map_offset(end, index.text, current)
            if new_start is None or new_end is None:
                return None
            index, start, end = TextIndex(current), new_start, new_end
        return lsp.Location(uri, index.range(start, end, self.encoding))

    def binding_location(self, analysis: Analysis, binding: Binding) -> lsp.Location | None:
        index = analysis.text_index(binding.file)
        if index is None:
            return None
        start, end = index.span_offsets(binding.where)
        if not binding.exact:  # the name inside its statement: `block Name`, `let name`, `input name`
            match = _word(binding.name).search(index.text, start, end)
            if match:
                start, end = match.span()
        return self.location(analysis, binding.file, start, end)

    def others(self, analysis: Analysis) -> list[Analysis]:
        """Checks of other documents that read this one's text as it was checked."""
        path, text = resolved(analysis.name), analysis.text.lstrip("\ufeff")
        return [a for u, a in self.latest.items()
                if u != analysis.uri and path in a.files and a.sources.texts.get(self._name_in(a, path)) == text]

    def hover(self, uri: str, position: lsp.Position) -> lsp.Hover | None:
        found = self.occurrence(uri, position)
        if found is None:
            return None
        analysis, o = found
        text = Hovers(analysis, self.others(analysis)).occurrence(o)
        if not text:
            return None
        location = self.location(analysis, analysis.name, o.start, o.end)
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text), location.range if location else None)

    def definition(self, uri: str, position: lsp.Position) -> list[lsp.Location] | None:
        found = self.occurrence(uri, position)
        if found is None:
            return None
        analysis, o = found
        if o.kind == "import":
            target = self.imported(analysis, o.node)
            return [lsp.Location(from_fs_path(str(target)), lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)))] \
                if target else None
        if o.kind in ("label", "call"):
            return None
        if o.binding is None:
            return None
        location = self.binding_location(analysis, o.binding)
        return [location] if location else None

    @staticmethod
    def imported(analysis: Analysis, item: ast.Import) -> Path | None:
        folder = resolved(analysis.name).parent
        for base in [folder, *limits().import_search]:
            candidate = resolved(str(Path(base) / item.path))
            if candidate in analysis.files or candidate.is_file():
                return candidate
        return None

    def completion(self, uri: str, position: lsp.Position) -> lsp.CompletionList | None:
        if uri not in self.texts:
            return None
        text = self.texts[uri][0]
        offset = TextIndex(text).from_position(position, self.encoding)
        where = call_context(text, offset)
        if where == "":
            return None  # in a comment or a string
        analysis = self.good.get(uri)
        items: list[lsp.CompletionItem] = []
        if where is not None:
            callee, given, positional = where
            items += self.argument_items(analysis, callee, given, positional)
        for name, op in sorted(OPS.items()):
            if op.inputs != 0:
                items.append(lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Function, detail=signature(op),
                                                documentation=op.summary, sort_text=f"1{name}"))
        for name, binding in sorted(analysis.blocks.items() if analysis else []):
            node = binding.node
            summary = _summary_line(analysis, node, binding.file)
            items.append(lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Class,
                                            detail=block_signature(analysis, node), documentation=summary or None,
                                            sort_text=f"1{name}"))
        return lsp.CompletionList(is_incomplete=False, items=items)

    def argument_items(self, analysis: Analysis | None, callee: str, given: set[str],
                       positional: int) -> list[lsp.CompletionItem]:
        """`name=` for each argument of the op or block being called that is not given yet (by name, or by
        position), its default shown."""
        rows: list[tuple[str, str]] = []
        if analysis is not None and callee in analysis.blocks:
            block = analysis.blocks[callee].node
            rows = [(p.name, p.name if p.default is None else f"{p.name}={_source(analysis, p.default)}")
                    for p in block.params]
            given = given | {name for name, _ in rows[:positional]}
            about = block_signature(analysis, block)
        elif callee in OPS and OPS[callee].inputs != 0:
            op = OPS[callee]
            fields = [(n, i) for n, i in op.Args.model_fields.items() if n != "frozen"] + \
                [("frozen", op.Args.model_fields["frozen"])]  # every op's, so last
            rows = [(name, name if info.is_required() else f"{name}={show(info.default)}") for name, info in fields]
            if op.inputs is not None:  # a merge's positional arguments are the values it joins
                given = given | set(op.positional[:positional])
            about = signature(op)
        else:
            return []
        return [lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Field, detail=shown if "=" in shown else
                                   f"{name} (required)", documentation=about, insert_text=f"{name}=",
                                   sort_text=f"0{n:03d}")
                for n, (name, shown) in enumerate(rows) if name not in given]

    def symbols(self, uri: str) -> list[lsp.DocumentSymbol] | None:
        found = self.context(uri)
        if found is None:
            return None
        analysis, text = found
        current = TextIndex(text)

        def span_range(span: Span) -> lsp.Range | None:
            start, end = analysis.index.span_offsets(span)
            new_start, new_end = _map_offset(start, analysis.text, text), _map_offset(end, analysis.text, text)
            if new_start is None or new_end is None:
                return None
            return current.range(new_start, new_end, self.encoding)

        def symbol(name: str, kind: lsp.SymbolKind, span: Span, detail: str, children) -> lsp.DocumentSymbol | None:
            whole = span_range(span)
            if whole is None:
                return None
            start, end = analysis.index.span_offsets(span)
            named = _word(name.split()[-1]).search(analysis.text, start, end)
            selection = whole
            if named:
                first = _map_offset(named.start(), analysis.text, text)
                last = _map_offset(named.end(), analysis.text, text)
                if first is not None and last is not None:
                    selection = current.range(first, last, self.encoding)
            return lsp.DocumentSymbol(name, kind, whole, selection, detail, children=[c for c in children if c])

        def layers(statements: list) -> list:
            out = []
            for stmt in statements:
                steps = stmt.chain.steps if isinstance(stmt, ast.Assign) else \
                    stmt.steps if isinstance(stmt, ast.Chain) else []
                for step in steps:
                    inner = layers(step.core.body) if isinstance(step.core, ast.Group) else []
                    if isinstance(step.label, str) and step.label_span is not None:
                        core = step.core.call if isinstance(step.core, ast.Spread) else step.core
                        detail = core.callee if isinstance(core, ast.Call) else "group"
                        out.append(symbol(step.label, lsp.SymbolKind.Field, step.span, detail, inner))
                    else:
                        out += inner
                if isinstance(stmt, ast.For):
                    out += layers(stmt.body)
            return out

        out = []
        for item in analysis.module.items:
            if isinstance(item, ast.Block):
                kind = lsp.SymbolKind.Class if item.is_network else lsp.SymbolKind.Function
                out.append(symbol(item.name, kind, item.span, block_signature(analysis, item), layers(item.body)))
            elif isinstance(item, ast.NetworkAlias):
                out.append(symbol(item.name, lsp.SymbolKind.Class, item.span, block_signature(analysis, item), []))
            elif isinstance(item, ast.Train):
                out.append(symbol(f"train {item.network}", lsp.SymbolKind.Event, item.span, "training recipe", []))
            elif isinstance(item, ast.Let):
                out.append(symbol(item.name, lsp.SymbolKind.Constant, item.span, "let", []))
        return [s for s in out if s]

    def formatting(self, text: str, uri: str) -> list[lsp.TextEdit] | None:
        """One edit to the whole text, or none when it is formatted already or does not parse."""
        from netspec.fmt import format_text

        try:
            formatted = format_text(text, str(_path(uri)))
        except NetspecError:
            return None  # it does not parse: the diagnostics say where
        if formatted == text:
            return []
        index = TextIndex(text)
        return [lsp.TextEdit(index.range(0, len(text), self.encoding), formatted)]


def call_context(text: str, offset: int) -> tuple[str, set[str], int] | str | None:
    """The call whose parentheses hold `offset`, the argument names given it so far and how many arguments
    came by position; None outside any call; "" in a comment or a string. Read from the text, so it works
    while the text does not parse."""
    opened: list[tuple[str, int]] = []
    i, end = 0, min(offset, len(text))
    while i < end:
        c = text[i]
        if c == "#":
            newline = text.find("\n", i)
            if newline < 0 or newline >= end:
                return ""
            i = newline
        elif c == '"':
            close, newline = text.find('"', i + 1), text.find("\n", i + 1)
            stop = min(x for x in (close, newline, len(text)) if x >= 0)
            if stop >= end:
                return ""
            i = stop
        elif c in "([{":
            opened.append((c, i))
        elif c in ")]}" and opened:
            opened.pop()
        i += 1
    if not opened or opened[-1][0] != "(":
        return None
    start = opened[-1][1]
    before = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", text[:start])
    if before is None:
        return None
    arguments = _top_level_parts(text[start + 1:end])[:-1]  # the last is the one being typed
    keyword = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")
    given = {m.group(1) for m in map(keyword.match, arguments) if m}
    return before.group(1), given, sum(1 for a in arguments if not keyword.match(a))


def _top_level_parts(text: str) -> list[str]:
    """`a, f(b, c), d=[1, 2]` -> the three arguments: split at commas outside brackets and strings."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def build_server() -> NetspecServer:
    server = NetspecServer()

    def guarded(handler):
        """A request that fails answers nothing rather than an error, and the failure is logged."""
        def run(ls: NetspecServer, params):
            try:
                return handler(ls, params)
            except Exception:
                ls.report(f"in {handler.__name__}")
                return None
        run.__name__ = handler.__name__
        return run

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetspecServer, params: lsp.DidOpenTextDocumentParams):
        doc = params.text_document
        ls.texts[doc.uri] = (doc.text, doc.version)
        ls.schedule([doc.uri] + ls.dependents(doc.uri))

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NetspecServer, params: lsp.DidChangeTextDocumentParams):
        uri = params.text_document.uri
        text = ls.texts.get(uri, ("", None))[0]
        for change in params.content_changes:  # whole texts: the server asks for full synchronisation
            text = change.text
        ls.texts[uri] = (text, params.text_document.version)
        ls.schedule([uri] + ls.dependents(uri))

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetspecServer, params: lsp.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        dependents = ls.dependents(uri)
        for store in (ls.texts, ls.latest, ls.good, ls.pending):
            store.pop(uri, None)
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))
        ls.schedule(dependents)  # they read the file on disk again

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def files_changed(ls: NetspecServer, params: lsp.DidChangeWatchedFilesParams):
        changed = {resolved(str(_path(c.uri))) for c in params.changes}
        ls.schedule([u for u, a in ls.latest.items() if a.files & changed and u not in
                     {c.uri for c in params.changes}])

    @server.feature(lsp.INITIALIZED)
    async def initialized(ls: NetspecServer, params: lsp.InitializedParams):
        watched = ls.client_capabilities.workspace and ls.client_capabilities.workspace.did_change_watched_files
        if watched and watched.dynamic_registration:  # imports edited outside the editor re-check their users
            try:
                await ls.client_register_capability_async(lsp.RegistrationParams([lsp.Registration(
                    "netspec-watch", lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                    lsp.DidChangeWatchedFilesRegistrationOptions([lsp.FileSystemWatcher("**/*.net")]))]))
            except Exception as err:  # the client declined: files saved in the editor still re-check their users
                ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info,
                                                           f"netspec lsp: no file watching ({err})"))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    @guarded
    def hover(ls: NetspecServer, params: lsp.HoverParams):
        return ls.hover(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    @guarded
    def definition(ls: NetspecServer, params: lsp.DefinitionParams):
        return ls.definition(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ",", " "]))
    @guarded
    def completion(ls: NetspecServer, params: lsp.CompletionParams):
        return ls.completion(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @guarded
    def symbols(ls: NetspecServer, params: lsp.DocumentSymbolParams):
        return ls.symbols(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    async def formatting(ls: NetspecServer, params: lsp.DocumentFormattingParams):
        """On a thread of its own: a 1,000-block spec takes half a second, and hovers go on meanwhile."""
        uri = params.text_document.uri
        if uri not in ls.texts:
            return None
        try:
            return await asyncio.get_running_loop().run_in_executor(None, ls.formatting, ls.texts[uri][0], uri)
        except Exception:
            ls.report("in formatting")
            return None

    return server


def serve() -> None:
    """Run the server on stdin and stdout until the client says exit."""
    logging.basicConfig(level=logging.WARNING)
    build_server().start_io()
