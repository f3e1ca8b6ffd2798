"""From a traced model's layers to a spec's structure: the module calls nest as scopes; a module called on one tensor
that gives one becomes a block call (or, for a plain nn.Sequential, a group), any other is written out in place with
dotted labels; module paths become labels, so the compiled state_dict has the original's keys in its order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from torch import nn

from netspec.importer.mapping import Layer, Mapper, Ref, is_default

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(eq=False)
class Scope:
    """One call of a module that is not a leaf: the layers and nested calls its forward ran, in order."""

    path: str
    cls: type
    items: list = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    kind: str = "inline"  # "call" (a block), "group" (an nn.Sequential) or "inline" (dotted labels)
    input_shape: tuple[int, ...] = ()
    # set once its block is known
    block: Any = None
    values: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class Item:
    """One step of a spec body: a layer, a block call or a group."""

    kind: str  # "layer", "call", "group"
    name: str  # the op (layers); the block's name (calls) once known
    source: str
    output: str
    label: str | None = None
    args: list[tuple[str | None, Any]] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    body: list["Item"] = field(default_factory=list)
    instance: Scope | None = None
    shown_label: str | None = None  # the label as written: None where the position gives the same name
    repeat: int = 1
    loop: tuple | None = None  # (label prefix, first, last number, call text): a run of numbered labels
    condition: str | None = None  # the parameter that includes it (`add(x) if residual`)


def relative(path: str, base: str) -> str:
    return path if not base else path[len(base) + 1:]


def stateful(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


@dataclass
class Traced:
    """The scope tree of one traced model, with what each value feeds."""

    root: Scope
    output: str
    input: str
    input_shape: tuple[int, ...]
    shapes: dict[str, tuple[int, ...]]
    module_calls: dict[str, int]
    modules: dict[str, nn.Module]
    aux_outputs: list[str] = field(default_factory=list)  # outputs after the first (training-only branches)
    state_order: list[str] = field(default_factory=list)  # the original's state_dict keys, in order


def scope_tree(module: fx.GraphModule, mapper: Mapper, model_cls: type) -> Traced:
    """Convert every node, nesting the layers in the module calls they ran in."""
    root = Scope("", model_cls, kind="network")
    scopes: dict[str, Scope] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    output = placeholder = None
    aux_outputs: list[str] = []
    for index, node in enumerate(module.graph.nodes):
        mapper.order[node.name] = index
        if node.op == "placeholder":
            if placeholder is not None:
                raise mapper.fail(node, f"a second input '{node.name}'", "a network takes one input tensor")
            placeholder = node.name
            continue
        if node.op == "output":
            result = node.args[0]
            if isinstance(result, fx.Node) and result.name in mapper.tuples:
                result = mapper.tuples[result.name]
            results = list(result) if isinstance(result, (tuple, list)) else [result]
            if not results or not all(isinstance(r, fx.Node) for r in results):
                raise mapper.fail(node, "an output that is not a tensor or a tuple of tensors",
                                  "a network gives tensors: its output, then any auxiliary outputs")
            output, *aux_outputs = [mapper.value(r) for r in results]
            continue
        converted = mapper.convert(node)
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
            if calls[node.target] == 2 and stateful(mapper.modules[node.target]):
                raise mapper.fail(node, f"a second call of module '{node.target}'",
                                  "its weights are shared between the calls, and a spec gives every layer its own")
        if converted is None:
            continue
        layers = converted if isinstance(converted, tuple) else (converted,)
        stack = list((node.meta.get("nn_module_stack") or {}).items())
        if node.op == "call_module":
            stack = stack[:-1]
        parent = root
        for key, (path, cls) in stack:
            if key not in scopes:
                scopes[key] = Scope(path, cls)
                parent.items.append(scopes[key])
            parent = scopes[key]
        parent.items.extend(layers)
        shape = mapper.shape(node)[1:]
        if mapper.is_last(node) and len(shape) == 3:  # the spec's value is the channels-first map
            shape = (shape[-1], *shape[:-1])
        for layer in layers:
            shapes[layer.output] = shape
    input_shape = tuple(next(n for n in module.graph.nodes if n.op == "placeholder").meta["tensor_meta"].shape[1:])
    shapes[placeholder] = input_shape
    traced = Traced(root, output, placeholder, input_shape, shapes, calls, dict(module.named_modules()),
                    aux_outputs)
    concatenate_incrementally(root)
    classify(traced)
    return traced


def unused_state(traced: Traced, state_keys) -> list[str]:
    """The state_dict keys no layer of the eval-mode forward uses (an auxiliary classifier run only while
    training, a module built and never called)."""
    used = set()
    for layer in layers_of(traced.root):
        if layer.path is None:
            continue
        module = traced.modules.get(layer.path)
        if module is None:
            used.add(layer.path)  # a bare parameter (layer_scale)
            continue
        used.update(f"{layer.path}.{k}" for k, _ in module.named_parameters(recurse=False))
        used.update(f"{layer.path}.{k}" for k, _ in module.named_buffers(recurse=False))
    return [k for k in state_keys if k not in used]


def concatenate_incrementally(root: Scope) -> None:
    """DenseNet's layers each join every earlier feature map: torch.cat([f0, ..., fk]). The same tensor is
    torch.cat([cat([f0, ..., fk-1]), fk]): each join continues the one before, and a join of a module's input and
    output moves to the end of that module, so that every dense layer takes one tensor and gives one."""
    joins: dict[tuple[str, ...], str] = {}
    for layer in layers_of(root):
        if layer.op != "concat":
            continue
        operands = (layer.source, *layer.refs)
        earlier = joins.get(operands[:-1])
        if earlier is not None and len(operands) > 2:
            layer.source, layer.refs = earlier, [operands[-1]]
            layer.args = [a for a in layer.args if not isinstance(a[1], Ref)] + [(None, Ref(operands[-1]))]
        joins[operands] = layer.output
    move_joins_into_modules(root)


def boundary(scope: Scope) -> tuple[set[str], str | None]:
    """The values a scope reads from outside, and its last layer's output."""
    inside = list(layers_of(scope))
    produced = {layer.output for layer in inside}
    read = {v for layer in inside for v in (layer.source, *layer.refs) if v not in produced}
    return read, inside[-1].output if inside else None


def move_joins_into_modules(scope: Scope) -> None:
    for item in scope.items:
        if isinstance(item, Scope):
            move_joins_into_modules(item)
    index = 0
    while index < len(scope.items):
        item = scope.items[index]
        previous = scope.items[index - 1] if index else None
        join = item
        holder: Scope | None = None
        if isinstance(item, Scope) and item.items and isinstance(item.items[0], Layer):
            join, holder = item.items[0], item  # the join opens the next module
        if (isinstance(previous, Scope) and isinstance(join, Layer) and join.op == "concat" and len(join.refs) == 1
                and (holder is None or len(holder.items) > 1)):
            read, last = boundary(previous)
            if read == {join.source} and join.refs == [last]:
                previous.items.append(join)
                if holder is None:
                    scope.items.pop(index)
                    continue
                holder.items.pop(0)
        index += 1


def layers_of(scope: Scope):
    for item in scope.items:
        if isinstance(item, Layer):
            yield item
        else:
            yield from layers_of(item)


def classify(traced: Traced) -> None:
    """Each scope's inputs and outputs, and so its kind: one tensor in and one out makes a block call (a group for
    nn.Sequential), anything else is written out in place."""
    consumers: dict[str, list[Layer]] = {}
    for layer in layers_of(traced.root):
        for value in [layer.source, *layer.refs]:
            consumers.setdefault(value, []).append(layer)

    def visit(scope: Scope) -> None:
        inside = list(layers_of(scope))
        ids = {id(layer) for layer in inside}
        produced = {layer.output for layer in inside}
        inputs: list[str] = []
        for layer in inside:
            for value in [layer.source, *layer.refs]:
                if value not in produced and value not in inputs:
                    inputs.append(value)
        outputs = [v for v in dict.fromkeys(layer.output for layer in inside)
                   if v == traced.output or v in traced.aux_outputs
                   or any(id(c) not in ids for c in consumers.get(v, []))]
        scope.inputs, scope.outputs = inputs, outputs
        if scope.kind != "network":
            scope.input_shape = traced.shapes.get(inputs[0], ()) if inputs else ()
            # a module whose forward uses its own parameters functionally (LayerNorm2d) is a layer, not a block
            owns_layer = any(isinstance(i, Layer) and i.path == scope.path for i in scope.items)
            # a call of one layer (a wrapper such as StochasticDepth) reads best as that layer
            single = len(scope.items) == 1 and isinstance(scope.items[0], Layer)
            if len(inputs) == 1 and len(outputs) == 1 and not owns_layer and not single:
                scope.kind = "group" if scope.cls in CONTAINERS else "call"
            else:
                scope.kind = "inline"
        for item in scope.items:
            if isinstance(item, Scope):
                visit(item)

    visit(traced.root)


def body_of(scope: Scope, base: str, traced: Traced) -> list[Item]:
    """The items a scope's body is written with, labels relative to `base`."""
    items: list[Item] = []
    for entry in scope.items:
        if isinstance(entry, Layer):
            label = None
            if entry.path is not None:
                module = traced.modules.get(entry.path)
                if module is None or stateful(module) or traced.module_calls.get(entry.path, 0) <= 1:
                    label = relative(entry.path, base)
            items.append(Item("layer", entry.op, entry.source, entry.output, label, list(entry.args),
                              list(entry.refs)))
        elif entry.kind == "inline":
            items.extend(body_of(entry, base, traced))
        elif entry.kind == "group":
            items.append(Item("group", "", entry.inputs[0], entry.outputs[0], relative(entry.path, base),
                              body=body_of(entry, entry.path, traced)))
        else:
            items.append(Item("call", "", entry.inputs[0], entry.outputs[0], relative(entry.path, base),
                              instance=entry))
    return items


def is_plain_projection(group: Item) -> bool:
    """A group that is exactly what add(x, project=...) builds: a 1x1 convolution without bias, then batch norm
    with the defaults, at positions 0 and 1."""
    if group.kind != "group" or len(group.body) != 2:
        return False
    conv, norm = group.body
    if conv.kind != "layer" or conv.name != "conv" or norm.kind != "layer" or norm.name != "batchnorm":
        return False
    keywords = {k: v for k, v in conv.args if k is not None}
    plain = all(is_default("conv", k, keywords[k]) for k in ("padding", "dilation", "groups"))
    default_norm = all(is_default("batchnorm", k, v) for k, v in norm.args)
    return (conv.label in (None, "0") and norm.label in (None, "1") and plain and default_norm
            and keywords.get("kernel") == 1 and keywords.get("bias") is False and norm.source == conv.output)


def with_projections(items: list[Item], block_input: str) -> list[Item]:
    """ResNet's shortcut, a projection Sequential applied to the block's input right before the sum, as
    add(x, project="auto") labelled as the Sequential: the same parameters, keys and order."""
    result: list[Item] = []
    index = 0
    while index < len(items):
        item = items[index]
        after = items[index + 1] if index + 1 < len(items) else None
        if (after is not None and item.kind == "group" and item.source == block_input and is_plain_projection(item)
                and after.kind == "layer" and after.name == "add" and len(after.refs) == 1
                and item.output in (after.source, after.refs[0]) and result
                and result[-1].output in (after.source, after.refs[0])):
            result.append(Item("layer", "add", result[-1].output, after.output, item.label,
                               [("project", "auto")], [block_input]))
            index += 2
            continue
        result.append(item)
        index += 1
    return result


def show_labels(items: list[Item]) -> None:
    """Which labels a reader needs: a numeric label equal to the position the spec gives anyway is left out."""
    counter = 0
    for item in items:
        label = item.label
        if label is not None and label.isdecimal() and int(label) == counter:
            item.shown_label = None
        else:
            item.shown_label = label
        counter = int(label) + 1 if label is not None and label.isdecimal() else counter + 1
        if item.kind == "group":
            show_labels(item.body)
