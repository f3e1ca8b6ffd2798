"""Counts each node's parameters (trainable and frozen) and buffers."""

from __future__ import annotations

from netspec.ir import Graph
from netspec.ops import OPS


def count_params(graph: Graph) -> Graph:
    """Sets `params`, `trainable` and `buffers`; requires shapes (infer_shapes)."""
    shapes = {n.name: n.shape for n in graph.nodes}
    for node in graph.nodes:
        if node.shape is None:
            continue
        op, inputs = OPS[node.op], [shapes[s] for s in node.inputs]
        node.params = op.params(node.args, inputs, node.shape)
        node.trainable = 0 if node.args.frozen else node.params
        node.buffers = op.buffers(node.args, inputs, node.shape)
    return graph
