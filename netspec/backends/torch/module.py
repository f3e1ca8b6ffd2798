"""PyTorch backend: the analysed graph -> a torch.fx GraphModule whose forward is generated Python.

Modules are nested by the spec's scopes, in declaration order, so a spec written in torchvision's
layout has torchvision's state_dict keys, shapes and order. Each layer's implementation comes from
its registry entry (`Op.torch`); this module only assembles them.
"""

from __future__ import annotations

import errno
import operator
import pickle
from pathlib import Path

import torch
from torch import fx, nn

from netspec.backends.torch import layers as torch_layers
from netspec.backends.torch.naming import RESERVED, is_identifier
from netspec.backends.torch.structure import registered
from netspec.ground.errors import ToolError, first_line
from netspec.ground.files import NotARegularFile, open_regular
from netspec.ir import Graph
from netspec.ops import OPS
from netspec.ops.base import TorchFunction, TorchLayer, TorchParameter
from netspec.analysis.passes.paths import module_path_problems

# Element-wise operators between values, applied left to right: `a - b - c` is (a - b) - c.
OPERATORS = {"add": operator.add, "mul": operator.mul, "sub": operator.sub, "div": operator.truediv}
FUNCTIONS = {**OPERATORS, "cat": torch.cat, "flatten": torch.flatten}


def layer_class(name: str) -> type[nn.Module]:
    return getattr(torch_layers, name, None) or getattr(nn, name)


def build_layer(spec: TorchLayer, frozen: bool) -> nn.Module:
    module = layer_class(spec.cls)(**spec.kwargs)
    if spec.init != "default":
        getattr(torch_layers, f"init_{spec.init}")(module)
    if frozen:
        module.requires_grad_(False)
    return module


def build_parameter(spec: TorchParameter, frozen: bool) -> nn.Parameter:
    value = torch.normal(spec.init, spec.std, size=spec.shape) if spec.std > 0 else torch.full(spec.shape, spec.init)
    return nn.Parameter(value, requires_grad=not frozen)


def combine_parameter(fx_graph: fx.Graph, spec: TorchParameter, x: fx.Node, name: str) -> fx.Node:
    """The input and a bare parameter combined as `spec.combine` says: x * p, x + p, or p put in front of the
    tokens, once per sample (ViT's class token: torch.cat([p.expand(batch, -1, -1), x], dim=1))."""
    parameter = fx_graph.get_attr(name)
    if spec.combine == "prepend":
        batch = fx_graph.call_method("size", (x, 0))
        expanded = fx_graph.call_method("expand", (parameter, batch, -1, -1))
        return fx_graph.call_function(torch.cat, ([expanded, x],), {"dim": 1})
    return fx_graph.call_function(operator.add if spec.combine == "add" else operator.mul, (x, parameter))


def _scope(root: nn.Module, qualified: str) -> tuple[nn.Module, str]:
    """The module that holds `qualified` (its scopes created on the way) and the name within it."""
    parent = root
    *path, leaf = qualified.split(".")
    for part in path:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    return parent, leaf


def _install(root: nn.Module, qualified: str, module: nn.Module) -> None:
    parent, leaf = _scope(root, qualified)
    parent.add_module(leaf, module)


def layers(graph: Graph) -> dict[str, TorchLayer | TorchFunction | TorchParameter]:
    """Each node's implementation, from the op registry."""
    shapes = {n.name: n.shape for n in graph.nodes}
    return {n.name: OPS[n.op].torch(n.args, [shapes[s] for s in n.inputs], n.shape)
            for n in graph.nodes if n.op != "input"}


class ModuleTooLarge(ToolError):
    """A network whose weights do not fit in this machine's memory (check accepts any size)."""


class ModulePathError(ToolError):
    """A dotted label (`convs.0`) whose containers cannot be built: the message names the label and why."""


def check_module_paths(graph: Graph) -> None:
    """Raise ModulePathError for a dotted label the containers cannot hold (netspec.analysis.passes.paths, which
    check already ran on graphs it loaded: this guards graphs built or changed by other means)."""
    problems = module_path_problems(graph)
    if problems:
        raise ModulePathError(problems[0][1])


def parameter_count(graph: Graph) -> int:
    return sum(n.params for n in graph.nodes)


def readable_bytes(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation that failed: Python's MemoryError, torch's OutOfMemoryError (a GPU), or the
    RuntimeError that torch's CPU allocator raises."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def too_large(graph: Graph, err: BaseException, where: str = "memory") -> ModuleTooLarge:
    """The error for a network whose weights could not be allocated, with how much was asked for."""
    count = parameter_count(graph)
    return ModuleTooLarge(f"{graph.name} has {count:,} parameters, about {readable_bytes(4 * count)} as float32, and "
                          f"they do not fit in {where} ({type(err).__name__}: {first_line(err)}); make the network "
                          "smaller (netspec check shows where its parameters are)")


def apply_registration(module: nn.Module, graph: Graph) -> None:
    """Reorder the children of each body with a `register` statement as it lists them: fx registers a module's
    children in the order its forward first uses them, torch's own classes in their `__init__` order."""
    orders = [("", graph.registration)] + [(path, scope.registration) for path, scope in graph.scopes.items()
                                           if scope.registration]
    for path, order in orders:
        owner: nn.Module | None = module
        for part in path.split(".") if path else ():
            owner = owner._modules.get(part) if owner is not None else None
        if owner is None:  # a body of functions alone has no module
            continue
        for table in (owner._modules, owner._parameters):
            names = registered(list(table), order)
            if names != list(table):
                entries = {name: table[name] for name in names}
                table.clear()
                table.update(entries)


def to_module(graph: Graph, seed: int | None = None) -> fx.GraphModule:
    """Build the PyTorch module of an analysed graph; `seed` makes the initial weights reproducible. Raises
    ModuleTooLarge when its weights cannot be allocated."""
    try:
        return build_module(graph, seed)
    except (MemoryError, RuntimeError) as err:
        if is_out_of_memory(err):
            raise too_large(graph, err) from None
        raise


def build_module(graph: Graph, seed: int | None = None) -> fx.GraphModule:
    implementations = layers(graph)
    check_module_paths(graph)
    if seed is not None:
        torch.manual_seed(seed)
    root = nn.Module()
    fx_graph = fx.Graph()
    values: dict[str, fx.Node] = {}
    labels = None
    for node in graph.nodes:
        if node.op == "input":
            # the forward's parameter: the input's name, unless Python or the file needs it (`input self: ...`)
            values[node.name] = fx_graph.placeholder(node.name if is_identifier(node.name)
                                                      and node.name not in RESERVED else "x")
            values[node.name].meta["netspec_name"] = node.name
            if graph.takes_labels():
                labels = fx_graph.placeholder("labels_" if node.name == "labels" else "labels", default_value=None)
            continue
        impl = implementations[node.name]
        args = tuple(values[s] for s in node.inputs)
        if OPS[node.op].takes_labels:
            args += (labels,)
        if isinstance(impl, TorchFunction):
            fn = FUNCTIONS[impl.fn]
            if impl.fn == "cat":
                value = fx_graph.call_function(fn, (list(args),), impl.kwargs)
            elif impl.fn in OPERATORS:  # one operator per extra operand: `a + b` or `a / b` when generated
                value = args[0]
                for other in args[1:]:
                    value = fx_graph.call_function(fn, (value, other))
            else:
                value = fx_graph.call_function(fn, args, impl.kwargs)
        elif isinstance(impl, TorchParameter):
            parent, leaf = _scope(root, node.name)
            parent.register_parameter(leaf, build_parameter(impl, node.args.frozen))
            value = combine_parameter(fx_graph, impl, args[0], node.name)
        else:
            _install(root, node.name, build_layer(impl, node.args.frozen))
            value = fx_graph.call_module(node.name, args)
        value.meta["netspec_name"] = node.name
        values[node.name] = value
    if graph.aux_outputs:
        # torchvision's rule for auxiliary classifiers: every output while training, the main one in eval
        # (all of them when `all_outputs` is set, as for an ONNX export).
        root.all_outputs = False
        flags = (fx_graph.get_attr("training"), fx_graph.get_attr("all_outputs"))
        main = [values[graph.output]] + [values[o] for o in graph.reconstructions()]
        aux = [values[o] for o in graph.aux_outputs]
        selected = fx_graph.create_node("call_function", torch_layers.select_outputs, (*flags, main, aux),
                                        name="selected_outputs")  # not the function's name: a local would hide it
        fx_graph.output(selected)
    else:
        outputs = graph.outputs()
        fx_graph.output(values[outputs[0]] if len(outputs) == 1 else tuple(values[o] for o in outputs))
    module = fx.GraphModule(root, fx_graph, class_name=graph.name)
    apply_registration(module, graph)
    # torch.fx prints a traceback and the failing line of the generated forward to stderr before it re-raises an
    # error; netspec reports errors itself (one line, exit 3, NETSPEC_DEBUG=1 for the traceback: docs/errors.md).
    # Each GraphModule has a class of its own, so this changes no other module.
    type(module)._wrapped_call = staticmethod(nn.Module.__call__)
    module.netspec_graph = graph
    return module


# Loading weights -----------------------------------------------------------------

class StateDictMismatch(ValueError):
    """A foreign state_dict that does not fit the compiled module."""


def load_foreign_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """Load weights whose keys differ from the module's only in naming: matched by order, checked by shape.

    Returns the (own key, foreign key) pairs. Raises StateDictMismatch naming the first key that does not fit.
    """
    own = module.state_dict()
    if len(own) != len(state):
        raise StateDictMismatch(f"the module has {len(own)} entries but the state_dict has {len(state)}")
    pairs = []
    for (own_key, own_value), (key, value) in zip(own.items(), state.items()):
        if tuple(own_value.shape) != tuple(value.shape):
            raise StateDictMismatch(f"'{own_key}' has shape {list(own_value.shape)} but the state_dict's entry "
                                    f"in its place, '{key}', has shape {list(value.shape)}")
        pairs.append((own_key, key))
    module.load_state_dict({own_key: state[key] for own_key, key in pairs})
    return pairs


class WeightsError(ToolError, ValueError):
    """A weights file that cannot be read, or does not fit the module; the message names the first bad key."""


def load_weights(model: nn.Module, weights: str | Path | list[str | Path]) -> None:
    """Load each of `weights` into `model`: a path loads the whole model, `member=path` only the submodule
    `member` (an ensemble member, loading the weights it was trained with as a network of its own)."""
    entries = [weights] if isinstance(weights, (str, Path)) else list(weights)
    for entry in entries:
        member, sep, path = str(entry).partition("=")
        if not sep or Path(entry).exists():
            _load_into(model, entry)
            continue
        try:
            target = model.get_submodule(member)
        except AttributeError:
            members = [name for name, _ in model.named_children()]
            raise WeightsError(f"--weights {entry}: the network has no member '{member}'; its top-level parts "
                               f"are {', '.join(members)}") from None
        _load_into(target, path)


# What torch says about a file that is not a weights-only pickle: its first sentence is the same for every file.
REFUSAL_PREAMBLE = "Weights only load failed."
# A refusal's reason is quoted whole; only a name absurdly long (a hostile file's) is cut.
LONGEST_REASON = 1000


def refusal_reason(err: BaseException) -> str:
    """The first sentence of why torch's weights-only unpickler refused a file, whole ("Unsupported global: GLOBAL
    posix.system was not an allowed global by default."), without torch's advice around it."""
    inner = err.__context__ if isinstance(err.__context__, pickle.UnpicklingError) else None
    text = str(inner) if inner is not None else str(err)
    if inner is None:  # the reason is the paragraph after the preamble, after "WeightsUnpickler error:" if present
        text = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else \
            next((part for part in text.split("\n\n")[1:] if part.strip()), text)
    text = " ".join(text.split())
    sentence = text.split(". ", 1)[0].rstrip(".") + "."
    return sentence if len(sentence) <= LONGEST_REASON else sentence[:LONGEST_REASON] + "..."


def read_weights_file(path: str | Path) -> object:
    """What torch.load reads from `path`, tensors and plain containers only (`weights_only=True`: a file cannot
    run code). Raises WeightsError saying whether the file is missing, unreadable, refused or not a checkpoint."""
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except NotARegularFile as err:
        raise WeightsError(f"{path} is {err.strerror}; weights are read from a file") from None
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err.strerror or err}") from None
    with handle:
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            reason = refusal_reason(err)
            if REFUSAL_PREAMBLE in str(err) and ("global" in reason.lower() or "class" in reason.lower()):
                raise WeightsError(f"{path} was refused: it asks to run code or build objects other than tensors "
                                   f"(torch: {reason}); netspec reads weights only, so save the state_dict "
                                   "(torch.save(model.state_dict(), path))") from None
            raise WeightsError(f"{path} is truncated or not a PyTorch checkpoint") from None
        except OSError as err:
            if err.errno == errno.EIO:  # the disk, not the file's contents
                raise WeightsError(f"cannot read {path}: {err.strerror}") from None
            raise WeightsError(f"{path} is truncated or not a PyTorch checkpoint") from None
        except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            if is_out_of_memory(err):
                raise WeightsError(f"{path} does not fit in memory ({first_line(err)})") from None
            # torch's zip reader ("failed finding central directory"), a pickle cut short, a malformed record
            raise WeightsError(f"{path} is truncated or not a PyTorch checkpoint") from None


def _load_into(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict (or a checkpoint holding one under "model" or "state_dict") into `model`."""
    state = read_weights_file(path)
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state_dict of tensors")
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            raise WeightsError(f"{path} has no entry '{key}' (shape {list(value.shape)}); it was saved from "
                              "another network")
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(f"'{key}' has shape {list(state[key].shape)} in {path} but {list(value.shape)} in "
                              "the spec")
    extra = [key for key in state if key not in own]
    if extra:
        raise WeightsError(f"{path} has an entry '{extra[0]}' that the spec does not")
    model.load_state_dict(state)
