"""Infers every node's output shape, and checks blocks' declared input shapes."""

from __future__ import annotations

from math import prod

from netspec.ground.errors import Diagnostic, Related, ShapeRuleError, Span
from netspec.ir import Graph
from netspec.ground.limits import DEFAULT, Limits
from netspec.ops import OPS
from netspec.ops.base import fmt


def call_sites(graph: Graph, scope: tuple[str, ...]) -> list[tuple[str, Span]]:
    """`("block Fire ('stage1.fire')", where it is called)`, innermost first, for each block instance enclosing
    a layer."""
    sites = []
    for path in reversed(scope):
        enclosing = graph.scopes.get(path)
        if enclosing is not None and enclosing.kind != "group" and enclosing.span is not None:
            sites.append((f"block {enclosing.kind} ('{path}')", enclosing.span))
    return sites


def infer_shapes(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """Sets `node.shape`. A node whose input failed is skipped, so one mistake reports once."""
    shapes: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes:
        if any(source not in shapes for source in node.inputs):
            continue
        inputs = [shapes[source] for source in node.inputs]
        try:
            shape = OPS[node.op].shape(node.args, inputs)
        except ShapeRuleError as err:
            where = f"at layer '{node.name}' ({node.op}), whose input is {' and '.join(map(fmt, inputs))}"
            sites = call_sites(graph, node.scope)
            notes = (where, *(f"in {block} called at {span}" for block, span in sites))
            related = tuple(Related(span, f"in {block} called here") for block, span in sites)
            graph.diagnostics.append(Diagnostic(err.code, err.message, node.span, err.hint, notes, related))
            continue
        size = prod(shape)
        if size > limits.elements:  # not trainable on any machine; reporting it beats computing with it
            graph.diagnostics.append(Diagnostic(
                "NS213", f"layer '{node.name}' outputs {fmt(shape)}, {size:.3g} elements per sample "
                         f"(limit {limits.elements:.3g})", node.span))
            continue
        node.shape = shape
        shapes[node.name] = shape
    for check in graph.checks:
        got = shapes.get(check.value)
        if got is not None and got != check.expected:
            graph.diagnostics.append(Diagnostic(
                "NS306", f"block '{check.block}' declares input {fmt(check.expected)} but receives {fmt(got)}",
                check.span, "change the declared shape, or the layers before the block"))
    return graph
