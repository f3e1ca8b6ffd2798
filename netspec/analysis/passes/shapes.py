"""Infers the output shape of every node that lowering left unshaped.

Lowering shapes each layer as it makes it (netspec.semantics.shapes), and checks a block's declared input shape
there; this pass serves graphs built or changed by other means, and repeats nothing for a graph lowering shaped.
"""

from __future__ import annotations

from netspec.ground.limits import DEFAULT, Limits
from netspec.ir import Graph
from netspec.semantics.shapes import infer_node


def infer_shapes(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """Sets `node.shape`. A node whose input failed is skipped, so one mistake reports once."""
    shapes = {node.name: node.shape for node in graph.nodes if node.shape is not None}
    for node in graph.nodes:
        if node.shape is not None or any(source not in shapes for source in node.inputs):
            continue
        problem = infer_node(node, shapes, graph.scopes, limits)
        if problem is not None:
            graph.diagnostics.append(problem)
    return graph
