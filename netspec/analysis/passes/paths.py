"""Dotted labels (`convs.0`, `stage2.0.branches.1`) name layers inside torch containers that only dotted labels
make, as torch code builds them with nn.ModuleList and nn.ModuleDict. This pass refuses, at check time and at the
label, the paths those containers cannot hold, so that what checks also compiles (the torch backend asks the same
question through `module_path_problems`)."""

from __future__ import annotations

import keyword

from netspec.ground.errors import Diagnostic
from netspec.ground.limits import DEFAULT, Limits
from netspec.ir import Graph
from netspec.ops import OPS
from netspec.ops.base import TorchParameter
from netspec.semantics.reserved import CONTAINER_ATTRIBUTES, GRAPH_MODULE_ATTRIBUTES, NETSPEC_ATTRIBUTES


def parent_scopes(graph: Graph) -> dict[str, str]:
    """Each layer's and each scope's enclosing scope ("" for the network itself)."""
    parents: dict[str, str] = {}
    for node in graph.nodes:
        if node.op == "input":
            continue
        chain = ("",) + tuple(node.scope)
        parents.update(zip(chain[1:], chain[:-1]))
        parents[node.name] = chain[-1]
    return parents


def module_path_problems(graph: Graph) -> list[tuple[str, str]]:
    """(layer or scope name, why its path cannot be built), first problem of each label: no part of a path may be
    a layer, block or group of its own, a Python keyword or an attribute the containers have, and one container
    holds layers or bare parameters, not both (nn.ModuleList or nn.ParameterList)."""
    parents = parent_scopes(graph)
    nodes = {node.name: node for node in graph.nodes}
    shapes = {node.name: node.shape for node in graph.nodes}
    problems: list[tuple[str, str]] = []
    held: dict[str, dict[str, str]] = {}  # container -> {member's full name: "parameter" or "layer"}
    for name, parent in parents.items():
        local = name[len(parent) + 1:] if parent else name
        parts = local.split(".")
        if len(parts) == 1:
            continue
        problem = None
        for k, part in enumerate(parts):
            top = k == 0 and not parent  # a part of the compiled GraphModule itself
            if keyword.iskeyword(part):  # torch.fx writes `self.blocks.class(x)` for the layer blocks.class
                problem = (f"the label '{local}' has the part '{part}', a Python keyword, which the compiled "
                           "module's generated forward cannot name; choose another name")
            elif part in CONTAINER_ATTRIBUTES or (top and part in GRAPH_MODULE_ATTRIBUTES | NETSPEC_ATTRIBUTES):
                problem = (f"the label '{local}' has the part '{part}', which torch's containers (nn.ModuleList, "
                           "nn.ModuleDict) already have as an attribute; choose another name")
            if problem:
                break
        for k in range(1, len(parts)):
            if problem:
                break
            container = ".".join(filter(None, (parent, *parts[:k])))
            if container in parents:
                what = "a block or group" if container in graph.scopes else "a layer"
                problem = (f"the label '{local}' puts a layer inside '{container}', which is {what} of its own; the "
                           "parts before a dot name containers that only dotted labels make")
                break
            member = ".".join(filter(None, (parent, *parts[:k + 1])))
            node = nodes.get(member)
            bare = node is not None and node.shape is not None and isinstance(
                OPS[node.op].torch(node.args, [shapes[s] for s in node.inputs], node.shape), TorchParameter)
            held.setdefault(container, {})[member] = "parameter" if bare else "layer"
        if problem:
            problems.append((name, problem))
    for container, members in held.items():
        if len(set(members.values())) > 1:
            parameter = next(m for m, kind in members.items() if kind == "parameter")
            layer = next(m for m, kind in members.items() if kind == "layer")
            problems.append((parameter, f"'{container}' would hold both a bare parameter ('{parameter}') and a layer "
                                        f"('{layer}'), which neither nn.ModuleList nor nn.ParameterList can; give the "
                                        "parameter a container of its own, or put both in a block"))
    return problems


def check_module_paths(graph: Graph, limits: Limits = DEFAULT) -> Graph:
    """NS203 at each dotted label whose containers cannot be built."""
    if any(d.is_error for d in graph.diagnostics):
        return graph
    nodes = {node.name: node for node in graph.nodes}
    for name, problem in module_path_problems(graph):
        where = nodes[name].span if name in nodes else graph.scopes[name].span
        graph.diagnostics.append(Diagnostic("NS203", problem, where))
    return graph
