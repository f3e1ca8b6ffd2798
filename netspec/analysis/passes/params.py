"""Counts each node's parameters (trainable and frozen) and buffers."""

from __future__ import annotations

from netspec.ground.errors import Diagnostic
from netspec.ir import Graph
from netspec.ground.limits import DEFAULT, Limits
from netspec.ops import OPS


def count_params(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """Sets `params`, `trainable` and `buffers`; requires shapes (infer_shapes).

    Reports the layer at which the network's total passes `limits.params`.
    """
    shapes = {n.name: n.shape for n in graph.nodes}
    total = 0
    for node in graph.nodes:
        if node.shape is None:
            continue
        op, inputs = OPS[node.op], [shapes[s] for s in node.inputs]
        node.params = op.params(node.args, inputs, node.shape)
        node.trainable = 0 if node.args.frozen else node.params
        node.buffers = op.buffers(node.args, inputs, node.shape)
        if total <= limits.params < total + node.params:
            graph.diagnostics.append(Diagnostic(
                "NS213", f"the network's parameters pass the ceiling of {limits.params:,} at layer '{node.name}' "
                         f"({node.params:,} of its own, {total + node.params:,} so far)", node.span,
                "raise the ceiling with --max-params N if the network is really this large"))
        total += node.params
    return graph
