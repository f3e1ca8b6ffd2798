"""The per-layer table and totals that `netspec check` prints."""

from __future__ import annotations

from math import prod
from typing import Any

from pydantic import BaseModel

from netspec.language.evaluate import Symbol
from netspec.ir import Graph

BYTES_PER_ELEMENT = 4  # float32


class Row(BaseModel):
    name: str
    op: str
    shape: list[int]
    params: int
    trainable: int
    buffers: int
    macs: int
    depth: int
    location: str | None = None


class Totals(BaseModel):
    params: int
    trainable: int
    non_trainable: int
    buffers: int
    macs: int
    flops: int
    activation_bytes: int
    input_shape: list[int]
    output_shape: list[int]


class Summary(BaseModel):
    ok: bool = True  # an error report has "ok": false (netspec.cli), so readers can test one key
    network: str
    file: str
    arguments: dict[str, Any]
    rows: list[Row]
    totals: Totals
    outputs: list[str]  # every output: the main one, the auxiliary ones, then any reconstruction()s
    aux_outputs: list[str] = []  # returned while training only (and in an ONNX export)
    takes_labels: bool  # whether its forward also takes `labels` (for training)
    warnings: list[dict[str, Any]] = []  # the spec checked, but these likely differ from what was meant


def summarize(graph: Graph, depth: int | None = None) -> Summary:
    """Rows per node, or with `depth` one row per scope at that depth (1: the top-level blocks).

    Expects a graph the passes have run over without errors.
    """
    rows: dict[str, Row] = {}
    for node in graph.nodes:
        key, op, level = node.name, node.op, len(node.scope)
        if depth is not None and len(node.scope) >= depth:
            key = node.scope[depth - 1]
            op, level = graph.scopes[key].kind, depth - 1
        loc = f"{node.span.file}:{node.span.line}" if node.span else None
        row = rows.get(key)
        if row is None:
            if key != node.name and graph.scopes[key].span is not None:
                loc = f"{graph.scopes[key].span.file}:{graph.scopes[key].span.line}"
            rows[key] = Row(name=key, op=op, shape=list(node.shape), params=node.params, trainable=node.trainable,
                            buffers=node.buffers, macs=node.macs, depth=level, location=loc)
        else:
            row.shape = list(node.shape)
            row.params += node.params
            row.trainable += node.trainable
            row.buffers += node.buffers
            row.macs += node.macs
    params = sum(n.params for n in graph.nodes)
    trainable = sum(n.trainable for n in graph.nodes)
    macs = sum(n.macs for n in graph.nodes)
    activations = sum(prod(n.shape) for n in graph.nodes if n.op != "input")
    totals = Totals(params=params, trainable=trainable, non_trainable=params - trainable,
                    buffers=sum(n.buffers for n in graph.nodes), macs=macs, flops=2 * macs,
                    activation_bytes=activations * BYTES_PER_ELEMENT, input_shape=list(graph.input_shape),
                    output_shape=list(graph.node(graph.output).shape))
    # A block or layer passed as an argument is reported by its name.
    arguments = {k: (v.name if isinstance(v, Symbol) else v) for k, v in graph.arguments.items()}
    # Declared outputs are shown as the `output` statement names them (`aux1`, not its last layer `aux1.fc2`).
    outputs = graph.output_names + graph.reconstructions() if graph.output_names else graph.outputs()
    return Summary(network=graph.name, file=graph.file, arguments=arguments, rows=list(rows.values()),
                   totals=totals, outputs=outputs, aux_outputs=graph.output_names[1:],
                   takes_labels=graph.takes_labels())
