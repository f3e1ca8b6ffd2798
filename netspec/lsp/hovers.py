"""The markdown of a hover: what a name is bound to, and every layer or block instance a step made.

Read from a document's last check and from the checks of the open files that import it (which know the
graphs its blocks are instantiated in). Also the texts other features share: a block's signature and the
summary line of the comment above it.
"""

from __future__ import annotations

import re

from netspec.ir import Graph
from netspec.language import ast
from netspec.language.evaluate import FUNCTIONS, Symbol, show
from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.positions import resolved, short_location, span_key
from netspec.ops import OPS
from netspec.ops.base import fmt as shape_text
from netspec.ops.base import signature
from netspec.semantics.binder import Binding, Occurrence

INSTANCES_SHOWN = 8  # instances of a layer listed in a hover; the rest are counted


def network_call(graph: Graph) -> str:
    """`ResNet50(classes=1000)`: a network with the arguments it was checked with, its defaults."""
    arguments = ", ".join(f"{k}={v.name if isinstance(v, Symbol) else show(v)}" for k, v in graph.arguments.items())
    return f"{graph.name}({arguments})" if arguments else graph.name


def numbers(shape, params: int | None, macs: int | None) -> str:
    where = f"`[{', '.join(map(str, shape))}]`" if shape is not None else "shape unknown (see the errors)"
    return f"{where}, {params or 0:,} params, {macs or 0:,} MACs"


def summary_line(analysis: DocumentAnalysis, block: ast.Block | ast.NetworkAlias, file: str) -> str:
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


def source_text(analysis: DocumentAnalysis, node) -> str:
    """A node's text as written (a parameter's default, say)."""
    index = analysis.text_index(node.span.file)
    if index is None:
        return "..."
    start, end = index.span_offsets(node.span)
    return " ".join(index.text[start:end].split())


def block_signature(analysis: DocumentAnalysis, block: ast.Block | ast.NetworkAlias) -> str:
    """`block Unit(c, stride=1)`, defaults as written."""
    kind = "network" if isinstance(block, ast.NetworkAlias) or block.is_network else "block"
    params = ", ".join(p.name if p.default is None else f"{p.name}={source_text(analysis, p.default)}"
                       for p in block.params)
    return f"{kind} {block.name}({params})"


class Hovers:
    """The markdown of a hover, from the analyses that know the graph (the document's own, or one that
    imports it)."""

    def __init__(self, analysis: DocumentAnalysis, others: list[DocumentAnalysis]):
        self.a = analysis
        self.analyses = [analysis] + others

    def instances(self, step: ast.Step | None, call) -> str:
        """Every layer or block instance a step made, per network: scoped name, shape, parameters, MACs."""
        spans = [s for s in (step.span if step else None, getattr(call, "span", None)) if s is not None]
        per_graph: dict[int, tuple[Graph, list[str]]] = {}
        for analysis in self.analyses:
            for span in spans:
                key = span_key(span)
                for graph, node in analysis.nodes.get(key, []):
                    per_graph.setdefault(id(graph), (graph, []))[1].append(
                        f"`{node.name}` → {numbers(node.shape, node.params, node.macs)}")
                for graph, path in analysis.scopes.get(key, []):
                    per_graph.setdefault(id(graph), (graph, []))[1].append(self.scope(analysis, graph, path))
            if per_graph:
                break
        out = []
        for graph, rows in per_graph.values():
            rows = list(dict.fromkeys(rows))
            shown = [f"- {row}" for row in rows[:INSTANCES_SHOWN]]
            if len(rows) > INSTANCES_SHOWN:
                shown.append(f"- … and {len(rows) - INSTANCES_SHOWN} more")
            out.append(f"{network_call(graph)}:\n" + "\n".join(shown))
        return "\n\n".join(out)

    @staticmethod
    def scope(analysis: DocumentAnalysis, graph: Graph, path: str) -> str:
        """A block instance or group: the output of its last layer, its parameters and MACs summed."""
        params, macs, last = analysis.scope_totals(graph).get(path, (0, 0, None))
        return f"`{path}` ({graph.scopes[path].kind}) → {numbers(last.shape if last else None, params, macs)}"

    def op(self, name: str) -> str:
        op = OPS[name]
        return f"```netspec\n{signature(op)}\n```\n{op.summary}"

    def block(self, binding: Binding) -> str:
        block = binding.node
        summary = summary_line(self.a, block, binding.file)
        text = f"```netspec\n{block_signature(self.a, block)}\n```\n"
        if summary:
            text += summary + "\n\n"
        return text + f"Defined at {short_location(block.span, self.a.path)}."

    def network(self, block) -> str:
        for analysis in self.analyses:
            for graph in analysis.graphs:
                if graph.name == block.name and resolved(graph.file) == resolved(block.span.file) \
                        and graph.nodes and graph.nodes[-1].shape is not None:
                    params = sum(n.params or 0 for n in graph.nodes)
                    macs = sum(n.macs or 0 for n in graph.nodes)
                    output = graph.node(graph.output).shape if graph.output else None
                    return (f"\n\n{network_call(graph)}: input `{shape_text(graph.input_shape)}`, output "
                            f"{f'`{shape_text(output)}`' if output else 'unknown'}, {params:,} params, {macs:,} MACs")
        return ""

    def binding(self, binding: Binding) -> str:
        where = short_location(binding.where, self.a.path)
        node = binding.node
        if binding.kind in ("block", "network"):
            return self.block(binding) + (self.network(node) if binding.kind == "network" else "")
        if binding.kind == "parameter":
            default = f", default `{source_text(self.a, node.default)}`" if node.default is not None else ""
            return f"`{binding.name}`: parameter of {binding.owner}{default} ({where})"
        if binding.kind == "let":
            value = ""
            if binding.owner:  # a body's own: its expression, evaluated per instance
                value = f" = `{source_text(self.a, node.value)}` in {binding.owner}"
            elif self.a.program is not None and binding.name in self.a.program.root.lets:
                value = f" = `{show(self.a.program.root.lets[binding.name], 80)}`"
            return f"`{binding.name}`: let{value} ({where})"
        if binding.kind == "loop variable":
            return f"`{binding.name}`: loop variable of the `for` at {where}"
        if binding.kind == "input":
            return f"`{binding.name}`: the input of {binding.owner} ({where})"
        if binding.kind == "value":
            return f"`{binding.name}`: the value bound at {where}"
        if binding.kind == "input size":
            return f"`{binding.name}`: a size of the input of {binding.owner}, read from what reaches it ({where})"
        layer = self.layer(node, node.core if not isinstance(node.core, ast.Spread) else node.core.call)
        return f"`{binding.name}`: the layer labelled at {where}" + (f"\n\n{layer}" if layer else "")

    def layer(self, step: ast.Step | None, core) -> str:
        parts = [self.instances(step, core)]
        if isinstance(core, ast.Call):
            if core.callee in self.a.names.blocks:
                parts.append(self.block(self.a.names.blocks[core.callee]))
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
