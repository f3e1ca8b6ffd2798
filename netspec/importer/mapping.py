"""From fx nodes to registry ops: each node of a traced model becomes one layer (op, arguments, the module path that
names its parameters), an alias of its input (identity, layout changes), a static value (sizes), or nothing."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from netspec.importer.errors import located
from netspec.ops import OPS

try:  # the helpers torchvision's models call as plain functions: traced as one call each
    from torchvision.models.shufflenetv2 import channel_shuffle as tv_channel_shuffle
    from torchvision.ops.stochastic_depth import stochastic_depth as tv_stochastic_depth
except ImportError:  # torchvision is optional; without it no model calls them
    tv_channel_shuffle = tv_stochastic_depth = None

WRAPPED_FUNCTIONS = tuple(f for f in (tv_channel_shuffle,) if f is not None)

ACTIVATIONS: dict[type, str] = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
                                nn.Tanh: "tanh", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
                                nn.Mish: "mish"}
LEAF_TYPES = frozenset(ACTIVATIONS) | {
    nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Linear, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm2d, nn.GELU, nn.ELU, nn.LeakyReLU, nn.PReLU, nn.Softmax, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.Upsample, nn.PixelShuffle,
    nn.LocalResponseNorm}

FUNCTION_ACTIVATIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu", torch.sigmoid: "sigmoid",
                        F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh", F.hardswish: "hardswish",
                        F.hardsigmoid: "hardsigmoid", F.mish: "mish", F.gelu: "gelu", F.elu: "elu",
                        F.leaky_relu: "leaky_relu"}
METHOD_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
AXES = {1: "channels", 2: "height", 3: "width"}


@dataclass(frozen=True)
class Ref:
    """A tensor passed to an op by name (add's, mul's and concat's other operands)."""

    value: str


@dataclass
class Layer:
    """One registry op: `source` is the value it consumes, `path` the module path that names its parameters."""

    op: str
    args: list[tuple[str | None, Any]]
    source: str
    output: str
    path: str | None = None
    refs: list[str] = field(default_factory=list)

    def has_state(self) -> bool:
        return self.path is not None


FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in [^\n]*\n(?P<code>[^\n]*)')
OWN_FILES = (str(Path(torch.__file__).parent), str(Path(__file__).parent))


def source_line(stack_trace: str) -> str | None:
    """The model's own line in the stack fx recorded for a node: the innermost frame outside torch and netspec."""
    frames = [m for m in FRAME.finditer(stack_trace) if not m["file"].startswith(OWN_FILES)]
    if not frames:
        return None
    last = frames[-1]
    return f"{last['file']}:{last['line']}: {last['code'].strip()}"


def pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def compact(value):
    """A pair with equal halves as one number, as a spec writes it."""
    if isinstance(value, (tuple, list)):
        items = list(value)
        return items[0] if len(items) == 2 and items[0] == items[1] else items
    return value


def is_default(op: str, key: str | None, value) -> bool:
    """Whether a keyword argument says what the op does anyway (pairs compared as pairs)."""
    fields = OPS[op].Args.model_fields
    if key is None or key not in fields:
        return False
    default = fields[key].default
    if isinstance(default, tuple) and isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool):
        return pair(value) == default
    return type(value) is type(default) and value == default


class Mapper:
    """Turns the nodes of one traced model into Layers, following aliases, layouts and static sizes."""

    def __init__(self, module: fx.GraphModule):
        self.module = module
        self.modules = dict(module.named_modules())
        self.alias: dict[str, str] = {}
        self.channels_last: set[str] = set()
        self.statics: dict[str, Any] = {}
        self.attributes: dict[str, str] = {}  # get_attr node -> parameter path
        self.order: dict[str, int] = {}  # value -> its position in the graph
        self.tuples: dict[str, list] = {}  # a tuple the forward builds to return several outputs

    # ---- values -------------------------------------------------------------------------------------------
    def value(self, arg) -> str:
        name = arg.name
        while name in self.alias:
            name = self.alias[name]
        return name

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def static(self, arg):
        """The Python value of an argument: constants as they are, sizes read from the example run."""
        if isinstance(arg, fx.Node):
            if arg.name in self.statics:
                return self.statics[arg.name]
            raise KeyError(arg.name)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.static(a) for a in arg)
        return arg

    def is_tensor(self, arg) -> bool:
        return isinstance(arg, fx.Node) and arg.name not in self.statics and arg.name not in self.attributes

    # ---- nodes --------------------------------------------------------------------------------------------
    def owner(self, node: fx.Node) -> str | None:
        stack = node.meta.get("nn_module_stack") or {}
        paths = [path for path, _ in stack.values()]
        return paths[-1] if paths else None

    def fail(self, node: fx.Node, what: str, hint: str):
        path = node.target if node.op == "call_module" else self.owner(node)
        return located(what, path, source_line(node.meta.get("stack_trace") or ""), hint)

    def layer(self, node: fx.Node, op: str, args, source=None, path=None, refs=()) -> Layer:
        first = source if source is not None else node.args[0]
        tail = [(None, Ref(r)) for r in refs]
        return Layer(op, list(args) + tail, self.value(first), node.name, path, list(refs))

    def convert(self, node: fx.Node) -> Layer | None:
        """The node's Layer, or None when it only aliases, sizes or names something."""
        if node.op == "get_attr":
            self.attributes[node.name] = node.target
            return None
        if node.op == "call_module":
            return self.convert_module(node, self.modules[node.target])
        if node.op == "call_function":
            return self.convert_function(node)
        if node.op == "call_method":
            return self.convert_method(node)
        return None

    def is_last(self, arg) -> bool:
        """Whether a tensor is channels-last: permuted, as ConvNeXt does around its layer norms and linears."""
        return isinstance(arg, fx.Node) and arg.name in self.channels_last

    def keep_layout(self, node: fx.Node, source) -> None:
        if self.is_last(source):
            self.channels_last.add(node.name)

    def need_channels_first(self, node: fx.Node, source, what: str) -> None:
        if self.is_last(source):
            raise self.fail(node, what, "it runs on a channels-last (permuted) tensor; netspec applies it to "
                                        "channels-first maps only")

    def convert_module(self, node: fx.Node, module: nn.Module) -> Layer | None:
        path = node.target
        kind = type(module)
        source = node.args[0]
        if kind is nn.Identity:
            self.keep_layout(node, source)
            self.alias[node.name] = self.value(source)
            return None
        if kind in ACTIVATIONS:
            self.keep_layout(node, source)
            return self.layer(node, ACTIVATIONS[kind], [], path=path)
        if kind in (nn.GELU, nn.ELU, nn.LeakyReLU, nn.Dropout):
            self.keep_layout(node, source)
            if kind is nn.GELU:
                op, args = "gelu", [("approximate", module.approximate == "tanh")]
            elif kind is nn.ELU:
                op, args = "elu", [("alpha", module.alpha)]
            elif kind is nn.LeakyReLU:
                op, args = "leaky_relu", [("negative_slope", module.negative_slope)]
            else:
                op, args = "dropout", [(None, module.p)]
            return self.layer(node, op, args, path=path)
        if kind is nn.Linear:
            over = "channels" if self.is_last(source) else "features"
            self.keep_layout(node, source)
            return self.layer(node, "linear", [(None, module.out_features), ("bias", module.bias is not None),
                                               ("over", over)], path=path)
        if kind is nn.LayerNorm:
            return self.layer_norm(node, tuple(module.normalized_shape), module.eps, module.weight, module.bias,
                                   path)
        self.need_channels_first(node, source, f"{kind.__name__}")
        if kind is nn.Conv2d:
            if module.padding_mode != "zeros":
                raise self.fail(node, "Conv2d", f"padding_mode='{module.padding_mode}' has no netspec op")
            padding = module.padding
            if isinstance(padding, str):
                if padding == "valid":
                    padding = (0, 0)
                elif all((module.dilation[i] * (module.kernel_size[i] - 1)) % 2 == 0 for i in range(2)):
                    padding = tuple(module.dilation[i] * (module.kernel_size[i] - 1) // 2 for i in range(2))
                else:
                    raise self.fail(node, "Conv2d", "padding='same' with an even kernel pads unevenly")
            return self.layer(node, "conv", [
                (None, module.out_channels), ("kernel", compact(module.kernel_size)),
                ("stride", compact(module.stride)), ("padding", compact(padding)),
                ("dilation", compact(module.dilation)), ("groups", module.groups), ("bias", module.bias is not None)],
                path=path)
        if kind is nn.ConvTranspose2d:
            return self.layer(node, "conv_transpose", [
                (None, module.out_channels), ("kernel", compact(module.kernel_size)),
                ("stride", compact(module.stride)), ("padding", compact(module.padding)),
                ("output_padding", compact(module.output_padding)), ("groups", module.groups),
                ("dilation", compact(module.dilation)), ("bias", module.bias is not None)], path=path)
        if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
            return self.layer(node, "batchnorm", [("eps", module.eps), ("momentum", module.momentum),
                                                  ("affine", module.affine),
                                                  ("track_running_stats", module.track_running_stats)], path=path)
        if kind is nn.GroupNorm:
            return self.layer(node, "groupnorm", [(None, module.num_groups), ("eps", module.eps),
                                                  ("affine", module.affine)], path=path)
        if kind is nn.InstanceNorm2d:
            return self.layer(node, "instancenorm", [("eps", module.eps), ("affine", module.affine),
                                                     ("track_running_stats", module.track_running_stats)], path=path)
        if kind is nn.PReLU:
            return self.layer(node, "prelu", [("per_channel", module.num_parameters > 1)], path=path)
        if kind is nn.Softmax:
            return self.softmax(node, module.dim, path)
        if kind is nn.MaxPool2d:
            return self.max_pool(node, module.kernel_size, module.stride, module.padding, module.dilation,
                                 module.ceil_mode, path)
        if kind is nn.AvgPool2d:
            return self.avg_pool(node, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                 module.count_include_pad, module.divisor_override, path)
        if kind in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
            op = "adaptive_avgpool" if kind is nn.AdaptiveAvgPool2d else "adaptive_maxpool"
            return self.adaptive(node, op, module.output_size, path)
        if kind is nn.Flatten:
            if module.start_dim != 1 or module.end_dim != -1:
                raise self.fail(node, "Flatten", "only flattening every dimension after the batch has an op")
            return self.layer(node, "flatten", [], path=path)
        if kind is nn.Upsample:
            return self.upsample(node, module.size, module.scale_factor, module.mode, module.align_corners, path)
        if kind is nn.PixelShuffle:
            return self.layer(node, "pixel_shuffle", [(None, module.upscale_factor)], path=path)
        if kind is nn.LocalResponseNorm:
            return self.layer(node, "lrn", [(None, module.size), ("alpha", module.alpha), ("beta", module.beta),
                                            ("k", module.k)], path=path)
        raise self.fail(node, kind.__name__, "netspec has no op for it")

    # ---- shared by modules and functions ------------------------------------------------------------------
    def layer_norm(self, node, normalized_shape, eps, weight, bias, path) -> Layer:
        source = node.args[0]
        shape = self.shape(source) if isinstance(source, fx.Node) else ()
        channels_last = self.is_last(source)
        last = shape[-1] if shape else None
        if tuple(normalized_shape) != (last,) or not (channels_last or len(shape) <= 3):
            raise self.fail(node, "layer_norm", f"normalising over {list(normalized_shape)} of a "
                                                f"{list(shape)} tensor: netspec normalises vectors, tokens and "
                                                "each position's channels")
        if (weight is None) != (bias is None):
            raise self.fail(node, "layer_norm", "a weight without a bias (or the reverse) has no op")
        self.keep_layout(node, source)
        return self.layer(node, "layernorm", [("eps", eps), ("affine", weight is not None)], path=path)

    def softmax(self, node, dim, path) -> Layer:
        rank = len(self.shape(node))
        dim = dim % rank if dim is not None and rank else dim
        if dim not in AXES or self.is_last(node.args[0]):
            raise self.fail(node, "softmax", f"over dimension {dim}: netspec's softmax runs over channels, height "
                                             "or width")
        return self.layer(node, "softmax", [("axis", AXES[dim])], path=path)

    def max_pool(self, node, kernel, stride, padding, dilation, ceil_mode, path) -> Layer:
        stride = stride if stride not in (None, [], ()) else kernel
        args = [(None, compact(kernel)), ("padding", compact(padding)), ("ceil_mode", ceil_mode),
                ("dilation", compact(dilation))]
        if pair(stride) != pair(kernel):
            args.insert(1, ("stride", compact(stride)))
        return self.layer(node, "maxpool", args, path=path)

    def avg_pool(self, node, kernel, stride, padding, ceil_mode, count_include_pad, divisor, path) -> Layer:
        if divisor is not None:
            raise self.fail(node, "avg_pool2d", "divisor_override has no op")
        stride = stride if stride not in (None, [], ()) else kernel
        args = [(None, compact(kernel)), ("padding", compact(padding)), ("ceil_mode", ceil_mode),
                ("count_include_pad", count_include_pad)]
        if pair(stride) != pair(kernel):
            args.insert(1, ("stride", compact(stride)))
        return self.layer(node, "avgpool", args, path=path)

    def adaptive(self, node, op, size, path) -> Layer:
        if any(s is None for s in pair(size)):
            raise self.fail(node, op, "an output size of None (keep that dimension) has no op")
        return self.layer(node, op, [(None, compact(size))], path=path)

    def upsample(self, node, size, scale, mode, align_corners, path) -> Layer:
        args = [("mode", mode)]
        if size is not None:
            args.append(("size", compact(size)))
        else:
            args.insert(0, (None, compact(scale)))
        if align_corners is not None:
            args.append(("align_corners", align_corners))
        return self.layer(node, "upsample", args, path=path)

    def flatten_or_reshape(self, node, source) -> Layer:
        shape = self.shape(node)[1:]
        if len(shape) == 1:
            return self.layer(node, "flatten", [], source=source)
        return self.layer(node, "reshape", [(None, list(shape))], source=source)

    def merge(self, node, op: str, operands) -> Layer | None:
        tensors = [a for a in operands if self.is_tensor(a)]
        constants = [a for a in operands if not isinstance(a, fx.Node)]
        parameters = [a for a in operands if isinstance(a, fx.Node) and a.name in self.attributes]
        if op == "mul" and len(tensors) == 1 and len(parameters) == 1:
            path = self.attributes[parameters[0].name]
            shape = tuple(self.module.get_parameter(path).shape)
            if len(shape) == 3 and shape[1:] == (1, 1):
                return self.layer(node, "layer_scale", [], source=tensors[0], path=path)
        if op == "mul" and len(tensors) == 1 and len(constants) == 1 and isinstance(constants[0], (int, float)):
            self.keep_layout(node, tensors[0])
            return self.layer(node, "scale", [(None, float(constants[0]))], source=tensors[0])
        if len(tensors) != len(operands) or len(tensors) < 2:
            raise self.fail(node, f"{op} of a tensor and {constants or 'a parameter'}",
                            f"netspec's {op} joins tensors")
        layouts = {self.is_last(t) for t in tensors}
        if len(layouts) != 1:
            raise self.fail(node, op, "its operands have different layouts")
        if layouts == {True}:
            self.channels_last.add(node.name)
        # the operand computed last continues the chain; sums and products of two do not depend on the order
        ordered = op not in ("sub", "div")  # a difference and a quotient keep their operands' order
        first, *rest = sorted(tensors, key=lambda t: -self.order.get(self.value(t), 0)) if ordered else tensors
        return self.layer(node, op, [], source=first, refs=[self.value(t) for t in rest])

    def concat(self, node, tensors, dim) -> Layer | None:
        if len(tensors) == 1:  # DenseNet's first layer joins a list of one
            self.alias[node.name] = self.value(tensors[0])
            return None
        rank = len(self.shape(node))
        dim = dim % rank
        if dim not in AXES or any(self.is_last(t) for t in tensors):
            raise self.fail(node, "cat", f"along dimension {dim}: netspec concatenates channels, height or width")
        args = [("axis", AXES[dim])]
        return self.layer(node, "concat", args, source=tensors[0], refs=[self.value(t) for t in tensors[1:]])

    def permute(self, node, source, dims) -> None:
        dims = tuple(d % 4 for d in dims)
        was_last = self.is_last(source)
        if dims == (0, 2, 3, 1) and not was_last:
            self.channels_last.add(node.name)
        elif dims == (0, 3, 1, 2) and was_last:
            pass
        else:
            raise self.fail(node, f"permute{list(dims)}", "netspec's maps are channels-first; only the move to "
                                                          "channels-last and back (as ConvNeXt does) is kept")
        self.alias[node.name] = self.value(source)
        return None

    def chunk_piece(self, node, producer: fx.Node, index: int) -> Layer:
        """x.chunk(n, 1)[i] or torch.split(x, sizes, 1)[i]: one piece, as chunk() or split() takes it."""
        source = producer.args[0]
        name = producer.target if isinstance(producer.target, str) else producer.target.__name__
        second = producer.args[1] if len(producer.args) > 1 else producer.kwargs.get(
            "chunks", producer.kwargs.get("split_size_or_sections", producer.kwargs.get("split_size")))
        dim = producer.args[2] if len(producer.args) > 2 else producer.kwargs.get("dim", 0)
        if dim % len(self.shape(source)) != 1:
            raise self.fail(producer, name, "only pieces along the channels have an op")
        if name == "chunk":
            return self.layer(node, "chunk", [(None, second), (None, index)], source=source)
        channels = self.shape(source)[1]
        sizes = [second] * (channels // second) if isinstance(second, int) else list(second)
        return self.layer(node, "split", [(None, sizes), (None, index)], source=source)

    # ---- call_function and call_method --------------------------------------------------------------------
    def fold_static(self, node, function, args, kwargs) -> bool:
        """Arithmetic on sizes (x.size(0), x.shape[1] // 2): computed now from the example run."""
        try:
            values = [self.static(a) for a in args]
            keywords = {k: self.static(v) for k, v in kwargs.items()}
        except KeyError:
            return False
        self.statics[node.name] = function(*values, **keywords)
        return True

    def convert_function(self, node: fx.Node) -> Layer | None:
        target, args, kwargs = node.target, node.args, node.kwargs
        if target is getattr:
            if self.is_tensor(args[0]) and args[1] == "shape":
                self.statics[node.name] = tuple(self.shape(args[0]))
                return None
        if target is operator.getitem:
            producer = args[0]
            if isinstance(producer, fx.Node) and producer.name in self.statics:
                self.statics[node.name] = self.statics[producer.name][args[1]]
                return None
            if isinstance(producer, fx.Node) and producer.op in ("call_method", "call_function") and (
                    getattr(producer.target, "__name__", producer.target) in ("chunk", "split")):
                return self.chunk_piece(node, producer, args[1])
            raise self.fail(node, "indexing a tensor", "netspec slices channels with slice(), chunk() or split()")
        if target in (operator.add, operator.iadd, torch.add) and not kwargs:
            if not any(self.is_tensor(a) for a in args) and self.fold_static(node, operator.add, args, {}):
                return None
            return self.merge(node, "add", args)
        if target in (operator.mul, operator.imul, torch.mul) and not kwargs:
            if not any(self.is_tensor(a) for a in args) and self.fold_static(node, operator.mul, args, {}):
                return None
            return self.merge(node, "mul", args)
        if target in (operator.floordiv, operator.sub, operator.truediv) and not any(self.is_tensor(a) for a in args):
            if self.fold_static(node, target, args, kwargs):
                return None
        if target in (operator.sub, operator.isub, torch.sub) and not kwargs:
            return self.merge(node, "sub", args)
        if target in (operator.truediv, operator.itruediv, torch.div) and not kwargs:
            return self.merge(node, "div", args)
        if target in FUNCTION_ACTIVATIONS:
            op = FUNCTION_ACTIVATIONS[target]
            self.keep_layout(node, args[0])
            extra = []
            if op == "gelu":
                extra = [("approximate", kwargs.get("approximate", "none") == "tanh")]
            elif op == "leaky_relu":
                extra = [("negative_slope", args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))]
            elif op == "elu":
                extra = [("alpha", args[1] if len(args) > 1 else kwargs.get("alpha", 1.0))]
            return self.layer(node, op, extra)
        if target is torch.flatten:
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            if start == 1 and end == -1:
                return self.layer(node, "flatten", [])
            raise self.fail(node, "torch.flatten", "only flattening every dimension after the batch has an op")
        if target is torch.cat:
            tensors = list(args[0])
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            return self.concat(node, tensors, dim)
        if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            op = "adaptive_avgpool" if target is F.adaptive_avg_pool2d else "adaptive_maxpool"
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            return self.adaptive(node, op, size, None)
        if target is F.dropout:
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            self.keep_layout(node, args[0])
            return self.layer(node, "dropout", [(None, p)])
        if target is F.max_pool2d:
            names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
            given = {**dict(zip(names, args)), **kwargs}
            return self.max_pool(node, given["kernel_size"], given.get("stride"), given.get("padding", 0),
                                 given.get("dilation", 1), given.get("ceil_mode", False), None)
        if target is F.avg_pool2d:
            names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                     "divisor_override")
            given = {**dict(zip(names, args)), **kwargs}
            return self.avg_pool(node, given["kernel_size"], given.get("stride"), given.get("padding", 0),
                                 given.get("ceil_mode", False), given.get("count_include_pad", True),
                                 given.get("divisor_override"), None)
        if target is F.layer_norm:
            names = ("input", "normalized_shape", "weight", "bias", "eps")
            given = {**dict(zip(names, args)), **kwargs}
            weight, bias = given.get("weight"), given.get("bias")
            path = None
            if weight is not None:
                weight_path = self.attributes.get(weight.name, "")
                bias_path = self.attributes.get(bias.name, "") if bias is not None else ""
                owner = weight_path.rpartition(".")[0]
                if not weight_path.endswith("weight") or bias_path != f"{owner}.bias" if owner else "bias":
                    raise self.fail(node, "layer_norm", "its weight and bias are not one module's weight and bias")
                path = owner
            return self.layer_norm(node, given["normalized_shape"], given.get("eps", 1e-5), weight, bias,
                                   path if path else None)
        if target is torch.permute:
            return self.permute(node, args[0], args[1] if len(args) > 1 else kwargs["dims"])
        if target in (torch.softmax, F.softmax):
            return self.softmax(node, args[1] if len(args) > 1 else kwargs.get("dim"), None)
        if target is F.interpolate:
            names = ("input", "size", "scale_factor", "mode", "align_corners")
            given = {**dict(zip(names, args)), **kwargs}
            return self.upsample(node, given.get("size"), given.get("scale_factor"), given.get("mode", "nearest"),
                                 given.get("align_corners"), None)
        if tv_stochastic_depth is not None and target is tv_stochastic_depth:
            names = ("input", "p", "mode", "training")
            given = {**dict(zip(names, args)), **kwargs}
            return self.layer(node, "stochastic_depth", [(None, given["p"]), ("mode", given["mode"])])
        if tv_channel_shuffle is not None and target is tv_channel_shuffle:
            return self.layer(node, "channel_shuffle", [(None, args[1] if len(args) > 1 else kwargs["groups"])])
        if target in (torch.chunk, torch.split):
            return None  # its pieces (getitem) become chunk() and split()
        if isinstance(target, type) and issubclass(target, tuple):  # a namedtuple of outputs (GoogLeNetOutputs)
            self.tuples[node.name] = [*args, *kwargs.values()]
            return None
        name = getattr(target, "__name__", str(target))
        module = getattr(target, "__module__", None) or "torch"  # torch's C functions (torch.erf) name none
        module = {"torch._C._nn": "torch.nn.functional", "_operator": "operator"}.get(module, module)
        raise self.fail(node, f"function {module}.{name}", "netspec has no op for it")

    def convert_method(self, node: fx.Node) -> Layer | None:
        method, args, kwargs = node.target, node.args, node.kwargs
        source = args[0]
        if method == "size":
            shape = self.shape(source)
            self.statics[node.name] = shape[args[1]] if len(args) > 1 else tuple(shape)
            return None
        if method in ("contiguous", "clone"):
            self.keep_layout(node, source)
            self.alias[node.name] = self.value(source)
            return None
        if method in METHOD_ACTIVATIONS:
            self.keep_layout(node, source)
            return self.layer(node, METHOD_ACTIVATIONS[method], [])
        if method in ("view", "reshape"):
            self.need_channels_first(node, source, method)
            return self.flatten_or_reshape(node, source)
        if method == "flatten":
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            if start == 1 and (len(args) < 3 or args[2] == -1):
                return self.layer(node, "flatten", [])
            raise self.fail(node, "Tensor.flatten", "only flattening every dimension after the batch has an op")
        if method == "permute":
            dims = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
            return self.permute(node, source, dims)
        if method == "mean":
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            dims = tuple(d % 4 for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
            if dims != (2, 3):
                raise self.fail(node, "Tensor.mean", "only the mean over all positions has an op")
            mean = self.layer(node, "reduce_mean", [])
            if keep:
                return mean
            # mean without keepdim is [N, C]: the positions' mean, flattened
            pooled = f"{node.name}.pooled"
            return Layer("reduce_mean", [], self.value(source), pooled, None, []), Layer(
                "flatten", [], pooled, node.name, None, [])
        if method in ("add", "add_", "mul", "mul_"):
            return self.merge(node, method.rstrip("_"), args)
        if method in ("chunk", "split"):
            return None
        raise self.fail(node, f"Tensor.{method}", "netspec has no op for it")
