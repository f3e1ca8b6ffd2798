"""A layer's output shape, inferred as lowering makes the layer: a block's `input x: [c, h, w]` binds the sizes of
what reaches it, so the shapes before a block must be known when the block is instantiated. The analysis pass
`infer_shapes` shapes what lowering could not (graphs built by other means)."""

from __future__ import annotations

from math import prod

from netspec.ground.errors import Diagnostic, Related, ShapeRuleError, Span
from netspec.ground.limits import Limits
from netspec.ir import Node, Scope
from netspec.ops import OPS
from netspec.ops.base import fmt


def call_sites(scopes: dict[str, Scope], scope: tuple[str, ...]) -> list[tuple[str, Span]]:
    """`("block Fire ('stage1.fire')", where it is called)`, innermost first, for each block instance enclosing
    a layer."""
    sites = []
    for path in reversed(scope):
        enclosing = scopes.get(path)
        if enclosing is not None and enclosing.kind != "group" and enclosing.span is not None:
            sites.append((f"block {enclosing.kind} ('{path}')", enclosing.span))
    return sites


def infer_node(node: Node, shapes: dict[str, tuple[int, ...]], scopes: dict[str, Scope],
               limits: Limits) -> Diagnostic | None:
    """Set `node.shape` (and `shapes[node.name]`) from its inputs' shapes, all in `shapes`; or say why not."""
    inputs = [shapes[source] for source in node.inputs]
    try:
        shape = OPS[node.op].shape(node.args, inputs)
    except ShapeRuleError as err:
        where = f"at layer '{node.name}' ({node.op}), whose input is {' and '.join(map(fmt, inputs))}"
        sites = call_sites(scopes, node.scope)
        notes = (where, *(f"in {block} called at {span}" for block, span in sites))
        related = tuple(Related(span, f"in {block} called here") for block, span in sites)
        return Diagnostic(err.code, err.message, node.span, err.hint, notes, related)
    size = prod(shape)
    if size > limits.elements:  # not trainable on any machine; reporting it beats computing with it
        return Diagnostic("NS213", f"layer '{node.name}' outputs {fmt(shape)}, {size:.3g} elements per sample "
                                   f"(limit {limits.elements:.3g})", node.span)
    node.shape = shape
    shapes[node.name] = shape
    return None
