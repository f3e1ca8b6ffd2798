"""ONNX models, read with onnx's own API: nodes become registry ops, initialisers become parameters. A PyTorch
export keeps each parameter's name (`layer1.0.conv1.weight`) and each node's module scope
(`/layer1/layer1.0/conv1/Conv`): the first gives the label, the second the nesting, so repeated structures
become blocks as they do from fx. The spec is verified against onnxruntime's outputs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netspec.importer.errors import ImportFailed
from netspec.importer.mapping import Layer, compact
from netspec.importer.structure import Scope, Traced, classify, concatenate_incrementally

ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish", "Mish": "mish"}
AXES = {1: "channels", 2: "height", 3: "width"}
SHAPE_OPS = {"Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Add", "Sub", "Mul", "Div"}


class Block(nn.Module):
    """Stands for any other scope of the exported model (ONNX keeps no class names)."""


def attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def scope_paths(node_name: str) -> list[str]:
    """`/layer2/layer2.0/downsample/downsample.0/Conv` -> the module paths it runs in, outermost first:
    layer2, layer2.0, layer2.0.downsample, layer2.0.downsample.0."""
    parts = [p for p in node_name.split("/") if p][:-1]
    paths: list[str] = []
    previous_part, previous_path = "", ""
    for part in parts:
        if previous_part and part.startswith(previous_part + "."):
            path = previous_path + part[len(previous_part):]
        else:
            path = f"{previous_path}.{part}" if previous_path else part
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)*", path):
            break
        paths.append(path)
        previous_part, previous_path = part, path
    return paths


class OnnxReader:
    """One ONNX graph's nodes as Layers, and the state_dict its initialisers make under the labels."""

    def __init__(self, model):
        import onnx

        self.graph = model.graph
        self.constants = {i.name: onnx.numpy_helper.to_array(i) for i in self.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for info in [*self.graph.value_info, *self.graph.input, *self.graph.output]:
            dims = info.type.tensor_type.shape.dim
            self.shapes[info.name] = tuple(d.dim_value for d in dims)
        self.alias: dict[str, str] = {}
        self.state: dict[str, torch.Tensor] = {}
        self.generated = 0
        self.owners: set[str] = set()
        self.position: dict[str, int] = {}  # value -> the order it is computed in
        self.grouped: dict[str, tuple[str, int]] = {}  # a map viewed as [N, groups, C/groups, H, W]
        self.grouped_transposed: dict[str, tuple[str, int]] = {}
        # ConvNeXt's channels-last stretch (Transpose to [N, H, W, C], layer norm, linear layers, back): the
        # values that are a map's channels-last view, the linear layers whose bias a following Add gives, and
        # GELU's exported pieces (x / sqrt 2, erf, + 1, x times it, times 1/2) by how far they have come
        self.channels_last: set[str] = set()
        self.linears: dict[str, Layer] = {}
        self.gelu: dict[str, tuple[str, int]] = {}

    def value(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def fail(self, node, hint: str) -> ImportFailed:
        return ImportFailed(f"cannot import ONNX node '{node.name}' ({node.op_type}): {hint}")

    def owner(self, node, weight: str) -> str:
        """The label a node's parameters take: the parameter's module path, or a new name where the export has
        none (folded or renamed initialisers)."""
        if weight.endswith(".weight") and re.fullmatch(r"[A-Za-z0-9_.-]+", weight):
            return weight[: -len(".weight")]
        paths = scope_paths(node.name)  # a folded conv (batch norm merged in) keeps its module's scope name
        if paths and paths[-1] not in self.owners:
            self.owners.add(paths[-1])
            return paths[-1]
        self.generated += 1
        return f"{node.op_type.lower()}{self.generated}"

    def keep(self, path: str, key: str, array) -> None:
        self.state[f"{path}.{key}"] = torch.from_numpy(np.array(array, copy=True))

    def layer(self, node, op: str, args, path=None, refs=()) -> Layer:
        return Layer(op, list(args) + [(None, _ref(r)) for r in refs], self.value(node.input[0]), node.output[0],
                     path, list(refs))

    def fold(self, node, given) -> bool:
        """Shape arithmetic (Shape, Gather, Unsqueeze, Concat of sizes, ...): computed now, as a constant."""
        kind = node.op_type
        inputs = [i for i in node.input if i]
        if kind == "Shape" and self.shapes.get(node.input[0]):
            self.constants[node.output[0]] = np.array(self.shapes[node.input[0]], dtype=np.int64)
            return True
        if kind not in SHAPE_OPS or not all(i in self.constants for i in inputs):
            return False
        values = [self.constants[i] for i in inputs]
        if kind == "Gather":
            result = np.take(values[0], values[1], axis=given.get("axis", 0))
        elif kind in ("Unsqueeze", "Squeeze"):
            axes = given.get("axes", values[1].tolist() if len(values) > 1 else None)
            result = np.expand_dims(values[0], axes) if kind == "Unsqueeze" else np.squeeze(values[0], tuple(axes))
        elif kind == "Concat":
            result = np.concatenate([np.atleast_1d(v) for v in values], axis=given.get("axis", 0))
        elif kind == "Cast":
            result = values[0]
        else:
            a, b = values
            integer = a.dtype.kind in "iu" and b.dtype.kind in "iu"
            result = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                      "Div": (lambda x, y: np.trunc(x / y).astype(a.dtype)) if integer else np.divide}[kind](a, b)
        self.constants[node.output[0]] = np.asarray(result)
        return True

    def convert(self, node) -> Layer | tuple[Layer, ...] | None:
        kind, given = node.op_type, attributes(node)
        for output in node.output:
            self.position[output] = len(self.position)
        if self.fold(node, given):
            return None
        channels_last = self.channels_last_layer(node, kind, given)
        if channels_last is not False:
            return channels_last
        if kind == "Slice":
            return self.slice(node)
        if kind == "Split":
            return self.split(node, given)
        if kind == "Transpose" and self.value(node.input[0]) in self.grouped and \
                list(given.get("perm", [])) == [0, 2, 1, 3, 4]:
            self.grouped_transposed[node.output[0]] = self.grouped[self.value(node.input[0])]
            shape = self.shapes.get(node.input[0], ())
            if len(shape) == 5:
                self.shapes[node.output[0]] = (shape[0], shape[2], shape[1], *shape[3:])
            return None
        if kind in ("Identity", "Dropout"):
            if node.input[0] in self.constants:
                self.constants[node.output[0]] = self.constants[node.input[0]]
            else:
                self.alias[node.output[0]] = self.value(node.input[0])
            return None
        if kind == "Constant":
            import onnx

            self.constants[node.output[0]] = onnx.numpy_helper.to_array(given["value"])
            return None
        if kind in ACTIVATIONS:
            return self.layer(node, ACTIVATIONS[kind], [])
        if kind == "Clip":
            low = self.constant_input(node, 1, given.get("min"))
            high = self.constant_input(node, 2, given.get("max"))
            if low == 0 and high == 6:
                return self.layer(node, "relu6", [])
            raise self.fail(node, f"clipping to [{low}, {high}] has no op (only relu6's [0, 6])")
        if kind == "HardSigmoid" and abs(given.get("alpha", 0.2) - 1 / 6) < 1e-6 and given.get("beta", 0.5) == 0.5:
            return self.layer(node, "hardsigmoid", [])
        if kind == "LeakyRelu":
            return self.layer(node, "leaky_relu", [("negative_slope", given.get("alpha", 0.01))])
        if kind == "Elu":
            return self.layer(node, "elu", [("alpha", given.get("alpha", 1.0))])
        if kind in ("Conv", "ConvTranspose"):
            return self.conv(node, given)
        if kind == "BatchNormalization":
            path = self.owner(node, node.input[1])
            for key, index in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
                self.keep(path, key, self.constants[node.input[index]])
            self.state[f"{path}.num_batches_tracked"] = torch.tensor(0)
            return self.layer(node, "batchnorm", [("eps", _float(given.get("epsilon", 1e-5))),
                                                  ("momentum", round(1 - _float(given.get("momentum", 0.9)), 7))], path)
        if kind == "Gemm":
            if given.get("alpha", 1.0) != 1.0 or given.get("beta", 1.0) != 1.0 or given.get("transA", 0):
                raise self.fail(node, "only Gemm with alpha = beta = 1 and an untransposed input is a linear layer")
            weight = self.constants[node.input[1]]
            weight = weight if given.get("transB", 0) else weight.T
            path = self.owner(node, node.input[1])
            self.keep(path, "weight", weight)
            if len(node.input) > 2:
                self.keep(path, "bias", self.constants[node.input[2]])
            return self.layer(node, "linear", [(None, int(weight.shape[0])), ("bias", len(node.input) > 2)], path)
        if kind in ("MaxPool", "AveragePool"):
            kernel = compact(given["kernel_shape"])
            pads = given.get("pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:
                raise self.fail(node, "uneven padding has no op")
            args = [(None, kernel), ("stride", compact(given.get("strides", given["kernel_shape"]))),
                    ("padding", compact(pads[:2])), ("ceil_mode", bool(given.get("ceil_mode", 0)))]
            if kind == "MaxPool":
                return self.layer(node, "maxpool", args + [("dilation", compact(given.get("dilations", [1, 1])))])
            return self.layer(node, "avgpool", args + [("count_include_pad",
                                                        bool(given.get("count_include_pad", 0)))])
        if kind in ("GlobalAveragePool", "GlobalMaxPool"):
            return self.layer(node, "adaptive_avgpool" if kind == "GlobalAveragePool" else "adaptive_maxpool",
                              [(None, 1)])
        if kind == "Flatten" and given.get("axis", 1) == 1:
            return self.layer(node, "flatten", [])
        if kind == "Reshape":
            source = self.shapes.get(node.input[0], ())
            target = self.shapes.get(node.output[0], ())
            if not target or not all(target):  # inference leaves a size computed in the graph unknown (0)
                target = self.reshaped(source, node.input[1])
            self.shapes[node.output[0]] = target
            if len(target) == 5 and len(source) == 4 and target[1] * target[2] == source[1]:
                # ShuffleNet's channel shuffle: view as [N, g, C/g, H, W], transpose the groups, view back
                self.grouped[node.output[0]] = (self.value(node.input[0]), target[1])
                return None
            if node.input[0] in self.grouped_transposed and len(target) == 4:
                value, groups = self.grouped_transposed[node.input[0]]
                return Layer("channel_shuffle", [(None, groups)], value, node.output[0], None, [])
            shape = target[1:]
            if len(shape) == 1:
                return self.layer(node, "flatten", [])
            if shape and all(shape):
                return self.layer(node, "reshape", [(None, list(shape))])
            raise self.fail(node, "the shape it reshapes to is not known")
        if kind in ("Add", "Mul", "Sub", "Div"):
            operands = [self.value(i) for i in node.input]
            if any(o in self.constants for o in operands):
                raise self.fail(node, f"{kind} with a constant has no op")
            op = kind.lower()
            if op in ("add", "mul") and self.position.get(operands[0], -1) < self.position.get(operands[1], -1):
                operands.reverse()  # the operand computed last continues the chain, as from PyTorch
            return Layer(op, [(None, _ref(operands[1]))], operands[0], node.output[0], None, [operands[1]])
        if kind == "Concat" and len(node.input) == 1:
            self.alias[node.output[0]] = self.value(node.input[0])
            return None
        if kind == "ReduceMean" and given.get("keepdims", 1) in (0, 1):
            axes = given.get("axes")
            if axes is None and len(node.input) > 1:
                axes = [int(a) for a in self.constants[node.input[1]]]
            if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
                raise self.fail(node, "only the mean over all positions has an op")
            mean = self.layer(node, "reduce_mean", [])
            if given.get("keepdims", 1):
                return mean
            pooled = f"{node.output[0]}.pooled"
            mean.output = pooled
            return mean, Layer("flatten", [], pooled, node.output[0], None, [])
        if kind == "Concat":
            axis = given["axis"] % 4
            if axis not in AXES:
                raise self.fail(node, f"concatenating along axis {axis} has no op")
            operands = [self.value(i) for i in node.input]
            shapes = [self.shapes.get(i, ()) for i in node.input]
            if all(shape and all(shape) for shape in shapes):  # sizes inference could not follow
                joined = list(shapes[0])
                joined[axis] = sum(shape[axis] for shape in shapes)
                self.shapes[node.output[0]] = tuple(joined)
            return Layer("concat", [(None, _ref(o)) for o in operands[1:]] + [("axis", AXES[axis])], operands[0],
                         node.output[0], None, operands[1:])
        if kind == "Softmax" and given.get("axis", -1) % 4 in AXES:
            return self.layer(node, "softmax", [("axis", AXES[given.get("axis", -1) % 4])])
        raise self.fail(node, "netspec has no op for it")

    def channels_last_layer(self, node, kind: str, given) -> Layer | None | bool:
        """ConvNeXt's layers as the PyTorch export writes them: its permutes to channels-last and back (aliases:
        netspec's layer norm and linear layers act on each position's channels of the map), layer norm, a linear
        layer as MatMul and Add, GELU as erf, and its layer scale. False: the node is none of those."""
        inputs = list(node.input)
        first = inputs[0] if inputs else ""
        out = node.output[0] if node.output else ""
        perm = list(given.get("perm", []))
        if kind == "Transpose" and first in self.constants:  # an nn.Linear weight transposed for MatMul
            self.constants[out] = np.transpose(self.constants[first], perm or None)
            return None
        if kind == "Transpose" and perm == [0, 2, 3, 1] and len(self.shapes.get(first, ())) == 4 \
                and first not in self.channels_last:
            self.alias[out] = self.value(first)
            self.channels_last.add(out)
            return None
        if kind == "Transpose" and perm == [0, 3, 1, 2] and first in self.channels_last:
            self.alias[out] = self.value(first)
            return None
        if kind == "LayerNormalization" and first in self.channels_last and given.get("axis", -1) in (-1, 3):
            path = self.owner(node, inputs[1])
            self.keep(path, "weight", self.constants[inputs[1]])
            self.keep(path, "bias", self.constants[inputs[2]])
            self.channels_last.add(out)
            return self.layer(node, "layernorm", [("eps", _float(given.get("epsilon", 1e-5)))], path)
        if kind == "MatMul" and first in self.channels_last and inputs[1] in self.constants \
                and self.constants[inputs[1]].ndim == 2:
            weight = self.constants[inputs[1]].T  # MatMul multiplies by the transposed nn.Linear weight
            path = self.owner(node, inputs[1])
            self.keep(path, "weight", weight)
            self.channels_last.add(out)
            layer = self.linears[out] = self.layer(node, "linear", [(None, int(weight.shape[0])), ("bias", False),
                                                                    ("over", "channels")], path)
            return layer
        constant = next((i for i in inputs if i in self.constants), None)
        linear = next((i for i in inputs if i in self.linears), None)
        if kind == "Add" and linear is not None and constant is not None and len(inputs) == 2:  # its bias
            layer = self.linears.pop(linear)
            layer.args[layer.args.index(("bias", False))] = ("bias", True)
            self.keep(layer.path, "bias", self.constants[constant])
            self.alias[out] = self.value(linear)
            self.channels_last.add(out)
            return None
        value = float(np.asarray(self.constants[constant]).reshape(-1)[0]) if constant is not None and \
            np.asarray(self.constants[constant]).size == 1 else None
        if kind == "Gelu":  # opset 20's; earlier ones spell it out with erf, below
            if first in self.channels_last:
                self.channels_last.add(out)
            approximate = given.get("approximate", b"none")
            tanh = (approximate.decode() if isinstance(approximate, bytes) else approximate) == "tanh"
            return self.layer(node, "gelu", [("approximate", True)] if tanh else [])
        tensor = next((i for i in inputs if i not in self.constants), first)
        stage = self.gelu.get(tensor, (None, 0))
        if kind == "Div" and value is not None and abs(value - 2 ** 0.5) < 1e-6 and first == tensor:
            self.gelu[out] = (first, 1)
        elif kind == "Erf" and stage[1] == 1:
            self.gelu[out] = (stage[0], 2)
        elif kind == "Add" and stage[1] == 2 and value == 1.0:
            self.gelu[out] = (stage[0], 3)
        elif kind == "Mul" and len(inputs) == 2 and {self.gelu.get(i, (None, 0))[1] for i in inputs} == {0, 3} \
                and self.gelu.get(inputs[0], self.gelu.get(inputs[1]))[0] in inputs:
            self.gelu[out] = (self.gelu.get(inputs[0], self.gelu.get(inputs[1]))[0], 4)
        elif kind == "Mul" and stage[1] == 4 and value == 0.5:
            x = stage[0]
            if x in self.channels_last:
                self.channels_last.add(out)
            return Layer("gelu", [], self.value(x), out, None, [])
        elif kind == "Mul" and len(inputs) == 2 and any(self.is_layer_scale(i) for i in inputs):
            scale = next(i for i in inputs if self.is_layer_scale(i))
            source = next(i for i in inputs if i != scale)
            self.state[scale] = torch.from_numpy(np.array(self.constants[scale], copy=True))
            return Layer("layer_scale", [], self.value(source), out, scale, [])
        else:
            return False
        return None

    def is_layer_scale(self, name: str) -> bool:
        """A learnt [C, 1, 1] scale exported under its parameter's name (ConvNeXt's `features.1.0.layer_scale`)."""
        array = self.constants.get(name)
        return array is not None and array.ndim == 3 and array.shape[1:] == (1, 1) and \
            re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)+", name) is not None

    def reshaped(self, source: tuple[int, ...], shape_input: str) -> tuple[int, ...]:
        """A Reshape's result from its (folded) shape input: 0 copies the size, -1 takes what is left."""
        if shape_input not in self.constants or not source or not all(source):
            return ()
        target = [source[i] if v == 0 else int(v) for i, v in enumerate(self.constants[shape_input].tolist())]
        if -1 in target:
            known = int(np.prod([t for t in target if t != -1]))
            target[target.index(-1)] = int(np.prod(source)) // known
        return tuple(target)

    def slice(self, node) -> Layer:
        """x[:, a:b] (torch's chunk, exported as Slice): slice(a, b) along the channels."""
        starts, ends = (self.constants.get(node.input[i]) for i in (1, 2))
        axes = self.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else np.array([0])
        steps = self.constants.get(node.input[4]) if len(node.input) > 4 and node.input[4] else np.array([1])
        if starts is None or ends is None or axes is None or steps is None or \
                axes.tolist() != [1] or steps.tolist() != [1]:
            raise self.fail(node, "only a constant slice of the channels has an op")
        shape = self.shapes.get(node.input[0], (0, 0, 0, 0))
        channels = shape[1]
        stop = int(ends[0])
        start = int(starts[0]) % channels if channels else int(starts[0])
        self.shapes[node.output[0]] = (shape[0], min(stop, channels) - start, *shape[2:])
        return self.layer(node, "slice", [(None, start), ("stop", None if stop >= channels else stop)])

    def split(self, node, given) -> tuple[Layer, ...]:
        if given.get("axis", 0) % 4 != 1:
            raise self.fail(node, "only a split of the channels has an op")
        sizes = [self.shapes[o][1] for o in node.output]
        source = self.value(node.input[0])
        return tuple(Layer("split", [(None, sizes), (None, i)], source, out, None, [])
                     for i, out in enumerate(node.output))

    def constant_input(self, node, index: int, default):
        if len(node.input) > index and node.input[index]:
            return float(self.constants[node.input[index]])
        return default

    def conv(self, node, given) -> Layer:
        weight = self.constants.get(node.input[1])
        if weight is None:
            raise self.fail(node, "its weight is computed, not an initialiser")
        pads = given.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:] or given.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.fail(node, "uneven or automatic padding has no op")
        path = self.owner(node, node.input[1])
        self.keep(path, "weight", weight)
        bias = len(node.input) > 2 and bool(node.input[2])
        if bias:
            self.keep(path, "bias", self.constants[node.input[2]])
        groups = given.get("group", 1)
        common = [("kernel", compact(list(weight.shape[2:]))), ("stride", compact(given.get("strides", [1, 1]))),
                  ("padding", compact(pads[:2]))]
        if node.op_type == "Conv":
            return self.layer(node, "conv", [(None, int(weight.shape[0]))] + common + [
                ("dilation", compact(given.get("dilations", [1, 1]))), ("groups", groups), ("bias", bias)], path)
        return self.layer(node, "conv_transpose", [(None, int(weight.shape[1]) * groups)] + common + [
            ("output_padding", compact(given.get("output_pads", [0, 0]))), ("groups", groups),
            ("dilation", compact(given.get("dilations", [1, 1]))), ("bias", bias)], path)


def _all_scopes(scope: Scope):
    for item in scope.items:
        if isinstance(item, Scope):
            yield item
            yield from _all_scopes(item)


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _ref(value: str):
    from netspec.importer.mapping import Ref

    return Ref(value)


def _float(value: float) -> float:
    """ONNX stores float32: 9.999999747378752e-06 is PyTorch's 1e-05."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def read(path: str | Path):
    import onnx

    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise ImportFailed(f"{path} does not exist") from None
    except Exception as err:  # onnx's parser reports a damaged file with several exception types
        raise ImportFailed(f"{path} is not an ONNX model ({type(err).__name__}: {err})") from None
    try:
        inferred = inferred_shapes(model)
    except Exception as err:
        raise ImportFailed(f"onnx cannot infer the shapes of {path}: {err}") from None
    return with_run_shapes(inferred)


def inferred_shapes(model):
    """onnx's shape inference, with data propagation (sizes computed in the graph too), run with the bytes of the
    large initialisers set aside: inference serialises the model, which protobuf refuses past 2 GiB (RegNet-Y-128GF's
    export), and reads only their shapes; the small ones, shape arithmetic's constants among them, stay."""
    import onnx

    kept = {}
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) > 1 << 20:
            kept[tensor.name] = tensor.raw_data
            tensor.raw_data = b""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    finally:
        for tensor in model.graph.initializer:
            if tensor.name in kept:
                tensor.raw_data = kept[tensor.name]
    for tensor in inferred.graph.initializer:
        if tensor.name in kept:
            tensor.raw_data = kept[tensor.name]
    return inferred


def with_run_shapes(model):
    """Sizes that inference left unknown (a slice whose bounds the graph computes from the input's shape, as
    torch's chunk exports) read from one onnxruntime run on zeros, every intermediate value an output."""
    import onnx
    import onnxruntime

    known = {i.name for i in model.graph.initializer}
    unknown = [v for v in model.graph.value_info
               if not all(d.dim_value for d in v.type.tensor_type.shape.dim) and v.name not in known]
    if not unknown:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    listed = {o.name for o in probe.graph.output}
    names = [out for node in probe.graph.node for out in node.output if out and out not in listed]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    feed = [i for i in model.graph.input if i.name not in known][0]
    shape = [d.dim_value or 1 for d in feed.type.tensor_type.shape.dim]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its optimiser's notices about the probe's extra outputs are not ours
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(None, {feed.name: np.zeros(shape, dtype=np.float32)})
    shapes = dict(zip([o.name for o in session.get_outputs()], (v.shape for v in values)))
    for info in model.graph.value_info:
        if info.name in shapes and info in unknown:
            dims = info.type.tensor_type.shape.dim
            del dims[:]
            for size in shapes[info.name]:
                dims.add().dim_value = int(size)
    return model


def traced_from_onnx(model) -> tuple[Traced, dict[str, torch.Tensor]]:
    """The scope tree the writer takes, built from the nodes' scope names."""
    reader = OnnxReader(model)
    inputs = [i for i in model.graph.input if i.name not in reader.constants]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ImportFailed("netspec imports ONNX models with one input and one output")
    input_name = inputs[0].name
    input_shape = reader.shapes[input_name][1:]
    if not input_shape or not all(input_shape):
        raise ImportFailed(f"the input's shape {list(reader.shapes[input_name])} has unknown sizes")
    root = Scope("", Block, kind="network")
    scopes: dict[str, Scope] = {}
    shapes = {input_name: input_shape}
    converted = []
    for node in model.graph.node:
        result = reader.convert(node)
        layers = result if isinstance(result, tuple) else (result,) if result is not None else ()
        converted.extend((node, layer) for layer in layers)
    # the module paths that hold parameters, and their containers: a scope name that is none of these is a
    # parameter-free leaf module (relu), not a scope
    known = {layer.path.rpartition(".")[0] for _, layer in converted if layer.path}
    known |= {p for path in list(known) for p in _prefixes(path)}
    open_scopes: dict[str, Scope] = {}  # the scopes the previous node ran in: a scope is one run of nodes
    for node, layer in converted:
        parent = root
        chain: dict[str, Scope] = {}
        for path in scope_paths(node.name):
            if path not in known or (layer.path is not None and not layer.path.startswith(path + ".")):
                break
            if path not in open_scopes:
                open_scopes[path] = Scope(path, Block)
                parent.items.append(open_scopes[path])
                scopes.setdefault(path, open_scopes[path])
            chain[path] = parent = open_scopes[path]
        open_scopes = chain
        parent.items.append(layer)
        shapes[layer.output] = reader.shapes.get(node.output[0], ())[1:]
    for scope in _all_scopes(root):
        members = [i.path.rpartition(".")[2] for i in scope.items if getattr(i, "path", None)]
        if members and all(m.isdigit() for m in members):
            scope.cls = nn.Sequential  # its members are numbered: written as a group
    output = reader.value(model.graph.output[0].name)
    traced = Traced(root, output, input_name, input_shape, shapes, {}, {})
    concatenate_incrementally(root)
    classify(traced)
    return traced, reader.state


def onnx_file_source(path, name: str | None = None):
    """The .onnx file's scope tree and initialisers, with the check of a spec text against onnxruntime."""
    from netspec.importer.result import Source, network_name

    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportFailed(f"reading ONNX needs {' and '.join(missing)}: pip install -e \".[onnx]\"")
    model = read(path)
    name = network_name(name or Path(path).stem)
    traced, state = traced_from_onnx(model)
    return Source(name, traced, lambda text, network: verify_onnx(text, network, path, state, traced.input_shape),
                  str(path), "nothing was written", state)


def verify_onnx(text: str, name: str, path, state: dict, input_shape):
    """The spec's module with the initialisers as weights, against onnxruntime on a seeded input."""
    from netspec.backends.torch import to_module
    from netspec.importer.verify import TOLERANCE, Verification, load_text

    graph = load_text(text, name)
    module = to_module(graph, seed=0).eval()
    ours = module.state_dict()
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked")))
    spec_params = sum(n.params for n in graph.nodes)
    keys_equal = sorted((k, tuple(v.shape)) for k, v in ours.items()) == sorted(
        (k, tuple(v.shape)) for k, v in state.items())
    report = Verification(params, spec_params, len(state), keys_equal, False, ordered=False,
                          reference="onnxruntime's")
    if spec_params != params:
        report.problems.append(f"the spec has {spec_params:,} parameters, the ONNX model {params:,}")
    if not keys_equal:
        report.problems.append("the spec's state_dict keys are not the initialisers' names")
    try:
        module.load_state_dict({k: state[k] for k in ours if k in state}, strict=True)
        report.strict_load = True
    except RuntimeError as err:
        report.problems.append(f"load_state_dict(strict=True) failed: {str(err).splitlines()[0]}")
        return report
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    batch = feed.shape[0] if isinstance(feed.shape[0], int) else 2
    example = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    want = torch.from_numpy(session.run(None, {feed.name: example.numpy()})[0])
    with torch.no_grad():
        got = module(example)
    report.outputs_compared = True
    if got.shape != want.shape:
        report.problems.append(f"output shapes differ: spec {list(got.shape)}, onnxruntime {list(want.shape)}")
        return report
    report.scale = want.abs().max().item()
    report.max_difference = (got - want).abs().max().item()
    if not report.max_difference <= TOLERANCE * max(report.scale, 1.0):
        report.problems.append(f"outputs differ from onnxruntime's by {report.max_difference:.3g}")
    return report
