"""Infers the output shape of every node that lowering left unshaped, and checks blocks' declared input shapes.

Lowering shapes each layer as it makes it (netspec.semantics.shapes); this pass serves graphs built or changed
by other means, and repeats nothing for a graph lowering shaped.
"""

from __future__ import annotations

from netspec.ground.errors import Diagnostic
from netspec.ground.limits import DEFAULT, Limits
from netspec.ir import Graph
from netspec.ops.base import fmt
from netspec.semantics.shapes import call_sites, infer_node

__all__ = ["call_sites", "infer_shapes"]


def infer_shapes(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """Sets `node.shape`. A node whose input failed is skipped, so one mistake reports once."""
    shapes = {node.name: node.shape for node in graph.nodes if node.shape is not None}
    for node in graph.nodes:
        if node.shape is not None or any(source not in shapes for source in node.inputs):
            continue
        problem = infer_node(node, shapes, graph.scopes, limits)
        if problem is not None:
            graph.diagnostics.append(problem)
    for check in graph.checks:
        got = shapes.get(check.value)
        if got is not None and got != check.expected:
            graph.diagnostics.append(Diagnostic(
                "NS306", f"block '{check.block}' declares input {fmt(check.expected)} but receives {fmt(got)}",
                check.span, "change the declared shape, or the layers before the block"))
    return graph
