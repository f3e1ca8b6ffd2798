"""Warns about values that are computed and never used: a merge or branch whose result nothing reads is almost
always a statement that continued from the wrong value (docs/language.md, "What a spec means")."""

from __future__ import annotations

from netspec.ground.errors import WARNING, Diagnostic, Related
from netspec.ground.limits import DEFAULT, Limits
from netspec.ir import Graph
from netspec.ops import OPS
from netspec.semantics.shapes import call_sites


def warn_unused(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """NS401 once per place for each layer whose output no layer reads and that is not an output."""
    if any(d.is_error for d in graph.diagnostics):  # after an error, a dead end is likely its consequence
        return graph
    read = {source for node in graph.nodes for source in node.inputs} | set(graph.outputs())
    seen = set()
    for node in graph.nodes:
        if node.name in read or node.span is None or node.span in seen or OPS[node.op].reconstructs_input:
            continue
        seen.add(node.span)
        merge = OPS[node.op].inputs is None
        what = f"the result of {'the merge ' if merge else ''}'{node.name}' ({node.op})"
        local = node.name.rsplit(".", 1)[-1]
        use = f"`add({local})`" if local.isidentifier() else f"label it, `skip: {node.op}(...)`, then `add(skip)`"
        sites = call_sites(graph.scopes, node.scope)
        graph.diagnostics.append(Diagnostic(
            "NS401", f"{what} is never used", node.span,
            f"a statement continues from the value before it unless it starts with a name: read this value ({use}) "
            "or delete the layer",
            ("nothing reads it and it is not an output of the network",
             *(f"in {block} called at {span}" for block, span in sites)),
            tuple(Related(span, f"in {block} called here") for block, span in sites), severity=WARNING))
    return graph
