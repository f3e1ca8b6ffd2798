"""Counts multiply-accumulates per sample, by torchinfo's rule (see docs/language.md)."""

from __future__ import annotations

from netspec.ir import Graph
from netspec.ground.limits import DEFAULT, Limits
from netspec.ops import OPS


def count_macs(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """Sets `macs`; requires shapes (infer_shapes)."""
    shapes = {n.name: n.shape for n in graph.nodes}
    for node in graph.nodes:
        if node.shape is None:
            continue
        node.macs = OPS[node.op].macs(node.args, [shapes[s] for s in node.inputs], node.shape)
    return graph
