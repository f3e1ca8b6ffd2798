"""Architecture diagrams: the graph as DOT (Graphviz) or Mermaid text, with blocks as clusters.

By default every top-level block or group is one box; `expand` names the scopes to open, one level
each (`inception3a` shows its branches; `inception3a.branch2` opens that branch too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netspec.ground.errors import ToolError
from netspec.language.evaluate import show
from netspec.ir import Graph, Node
from netspec.ops import OPS

ALL = "all"


@dataclass
class Box:
    id: str
    name: str
    title: str  # the layer call, or the block's name for a collapsed block
    shape: tuple[int, ...]
    params: int
    trainable: int
    kind: str  # "input", "layer", "merge", "block" or "output"


@dataclass
class Cluster:
    path: str
    kind: str
    items: list[Box | Cluster] = field(default_factory=list)


@dataclass
class Edge:
    source: str
    target: str
    shape: tuple[int, ...]
    skip: bool  # a shortcut or branch joining a merge


@dataclass
class Diagram:
    title: str
    items: list[Box | Cluster]
    edges: list[Edge]

    def boxes(self) -> list[Box]:
        found, stack = [], list(self.items)
        while stack:
            item = stack.pop(0)
            if isinstance(item, Box):
                found.append(item)
            else:
                stack[:0] = item.items
        return found


def call_text(node: Node) -> str:
    """The layer as a spec would call it, with only the arguments that differ from their defaults."""
    op = OPS[node.op]
    parts = []
    for name, info in op.Args.model_fields.items():
        value = getattr(node.args, name)
        if name == "frozen" or (not info.is_required() and value == info.default):
            continue
        if name == "table":
            text = f"table={sum(map(sum, value))}/{len(value) * len(value[0])}"
        elif name == "shape":
            continue
        else:
            if isinstance(value, tuple) and len(set(value)) == 1:
                value = value[0]
            text = show(list(value) if isinstance(value, tuple) else value)
            if name not in op.positional:
                text = f"{name}={text}"
        parts.append(text)
    return f"{node.op}({', '.join(parts)})"


def _unit(node: Node, expanded) -> str:
    """The scope a node is drawn inside of as one box, or the node itself."""
    for scope in node.scope:
        if expanded != ALL and scope not in expanded:
            return scope
    return node.name


def layout(graph: Graph, expand: set[str] | str = frozenset()) -> Diagram:
    """Group an analysed graph's nodes into boxes and clusters, and its edges between them."""
    unit_of = {n.name: _unit(n, expand) for n in graph.nodes}
    nodes = {n.name: n for n in graph.nodes}
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        for source in node.inputs:
            consumers[source] = consumers.get(source, 0) + 1
    for node in graph.nodes:  # draw `conv -> relu` as one box when nothing else reads the conv
        if OPS[node.op].activation and unit_of[node.name] == node.name:
            source = nodes[node.inputs[0]]
            if (consumers[source.name] == 1 and source.scope == node.scope and source.op != "input"
                    and unit_of[source.name] in nodes):
                unit_of[node.name] = unit_of[source.name]
    boxes: dict[str, Box] = {}
    for node in graph.nodes:
        unit = unit_of[node.name]
        box = boxes.get(unit)
        if box is not None and unit in nodes:  # an activation drawn with its producer
            box.title += f" -> {call_text(node)}"
            box.shape = node.shape
            continue
        if box is None:
            if unit == node.name:
                kind = "input" if node.op == "input" else "merge" if OPS[node.op].inputs is None else "layer"
                title = "input" if node.op == "input" else call_text(node)
            else:
                kind, title = "block", graph.scopes[unit].kind
            boxes[unit] = Box(f"n{len(boxes)}", unit, title, node.shape, node.params, node.trainable, kind)
        else:
            box.shape = node.shape
            box.params += node.params
            box.trainable += node.trainable

    edges: dict[tuple[str, str], Edge] = {}
    for node in graph.nodes:
        for position, source in enumerate(node.inputs):
            if OPS[node.op].reconstructs_input and position == len(node.inputs) - 1:
                continue  # the network's input: the shape and training target of a reconstruction, not its data
            a, b = unit_of[source], unit_of[node.name]
            if a == b:
                continue
            skip = position > 0 and OPS[node.op].inputs is None
            key = (boxes[a].id, boxes[b].id)
            if key not in edges or (edges[key].skip and not skip):
                edges[key] = Edge(key[0], key[1], nodes[source].shape, skip)

    if graph.aux_outputs:  # several outputs: each drawn as an end point, the main one first
        declared = graph.output_names or [graph.output] + graph.aux_outputs
        for position, (name, shown) in enumerate(zip([graph.output] + graph.aux_outputs, declared)):
            title = "main output" if position == 0 else "auxiliary output (training)"
            end = Box(f"n{len(boxes)}", f"{shown} ->", title, nodes[name].shape, 0, 0, "output")
            boxes[end.name] = end
            edges[(boxes[unit_of[name]].id, end.id)] = Edge(boxes[unit_of[name]].id, end.id, nodes[name].shape,
                                                            False)
            unit_of[end.name] = end.name

    root: list[Box | Cluster] = []
    clusters: dict[str, Cluster] = {}
    for unit, box in boxes.items():
        container = root
        for scope in () if box.kind == "output" else nodes_scope(unit, graph, nodes):
            cluster = clusters.get(scope)
            if cluster is None:
                cluster = clusters[scope] = Cluster(scope, graph.scopes[scope].kind)
                container.append(cluster)
            container = cluster.items
        container.append(box)
    args = ", ".join(f"{k}={show(v)}" for k, v in graph.arguments.items())
    return Diagram(f"{graph.name}({args})", root, list(edges.values()))


def nodes_scope(unit: str, graph: Graph, nodes: dict[str, Node]) -> tuple[str, ...]:
    """The open scopes enclosing a box: a layer's own scopes, or those above a collapsed block."""
    if unit in nodes:
        return nodes[unit].scope
    first = next(n for n in graph.nodes if unit in n.scope)
    return first.scope[:first.scope.index(unit)]


def _label(box: Box, cluster: str) -> list[str]:
    name = box.name[len(cluster) + 1:] if cluster else box.name  # inside a cluster its path is the title
    lines = [name if box.kind != "input" else f"{name}: input"]
    if box.kind == "output":
        return [box.title, box.name.removesuffix(" ->")]
    if box.kind != "input":
        lines.append(box.title)
    if box.params:
        frozen = "" if box.trainable == box.params else " (frozen)" if not box.trainable else \
            f" ({box.params - box.trainable:,} frozen)"
        lines.append(f"{box.params:,} params{frozen}")
    return lines


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


_DOT_STYLE = {
    "input": 'shape=oval, style=filled, fillcolor="#e8f4ea"',
    "layer": 'shape=box, style="rounded,filled", fillcolor="#f5f7fb"',
    "merge": 'shape=box, style="rounded,filled,bold", fillcolor="#fff2cc"',
    "block": 'shape=box3d, style=filled, fillcolor="#dde7f7"',
    "output": 'shape=oval, style=filled, fillcolor="#fbe5d6"',
}


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _nest(diagram: Diagram, box_line, cluster_lines, close_line: str) -> list[str]:
    """Lines for every box and cluster, indented by nesting; `cluster_lines(cluster, number)` opens one."""
    out: list[str] = []
    clusters = 0

    def walk(items, depth: int, enclosing: str) -> None:
        nonlocal clusters
        pad = "  " * depth
        for item in items:
            if isinstance(item, Box):
                out.append(pad + box_line(item, enclosing))
            else:
                clusters += 1
                out.extend(pad + line for line in cluster_lines(item, clusters))
                walk(item.items, depth + 1, item.path)
                out.append(pad + close_line)

    walk(diagram.items, 1, "")
    return out


def to_dot(diagram: Diagram) -> str:
    """Graphviz DOT; skip connections are dashed and coloured."""
    def box(item: Box, enclosing: str) -> str:
        label = "\\n".join(_dot_text(line) for line in _label(item, enclosing))
        return f'{item.id} [label="{label}", {_DOT_STYLE[item.kind]}];'

    def cluster(item: Cluster, number: int) -> list[str]:
        return [f"subgraph cluster_{number} {{",
                f'  label="{_dot_text(item.path)} ({_dot_text(item.kind)})"; style="rounded,dashed"; color="#7f8fa6";']

    out = [
        "digraph netspec {",
        f'  graph [label="{_dot_text(diagram.title)}", labelloc=t, fontname="Helvetica", rankdir=TB];',
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
        *_nest(diagram, box, cluster, "}"),
    ]
    for edge in diagram.edges:
        style = ', style=dashed, color="#c0392b", fontcolor="#c0392b"' if edge.skip else ""
        out.append(f'  {edge.source} -> {edge.target} [label="{_shape(edge.shape)}"{style}];')
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


_MERMAID_SHAPE = {"input": ("([", "])"), "layer": ("[", "]"), "merge": ("{{", "}}"), "block": ("[[", "]]"), "output": ("([", "])")}


def to_mermaid(diagram: Diagram) -> str:
    """A Mermaid flowchart (GitHub renders these in Markdown); skip connections are dotted."""
    def box(item: Box, enclosing: str) -> str:
        left, right = _MERMAID_SHAPE[item.kind]
        label = "<br/>".join(_mermaid_text(line) for line in _label(item, enclosing))
        return f'{item.id}{left}"{label}"{right}'

    def cluster(item: Cluster, number: int) -> list[str]:
        return [f'subgraph c{number}["{_mermaid_text(item.path)} ({item.kind})"]']

    out = ["flowchart TB", *_nest(diagram, box, cluster, "end")]
    for edge in diagram.edges:
        arrow = "-.->" if edge.skip else "-->"
        out.append(f'  {edge.source} {arrow}|"{_shape(edge.shape)}"| {edge.target}')
    return "\n".join(out) + "\n"


DOT_MISSING = ("SVG and PNG need Graphviz's `dot` program, which is not installed.\n"
               "Install it with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
               "from https://graphviz.org/download/, or write text with --format dot or --format mermaid.")


class DotNotFound(ToolError):
    """Graphviz's `dot` program is needed for SVG and PNG."""

    exit_code = 2

    def __init__(self, message: str = DOT_MISSING):
        super().__init__(message)


def render(dot: str, fmt: str) -> bytes:
    """SVG or PNG bytes from DOT text, through the graphviz package and its `dot` program."""
    import graphviz

    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise DotNotFound from None
