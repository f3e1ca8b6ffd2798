"""`netspec import`: an existing PyTorch module (or ONNX model) becomes a readable spec that checks exactly.

>>> imported = import_module(torchvision.models.resnet50(), (3, 224, 224), "resnet50")   # doctest: +SKIP
>>> print(imported.text)                                                                # doctest: +SKIP

The module is traced with torch.fx; module paths become labels (so the compiled state_dict has the original's
keys, shapes and order), repeated module calls become blocks with parameters, skips become named values. Every
import is verified (netspec/importer/verify.py) before it is returned.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import sys

from torch import nn

from netspec.importer.errors import ImportFailed
from netspec.importer.result import Family, Imported, Source, network_name
from netspec.importer.verify import verify

__all__ = ["Family", "ImportFailed", "Imported", "Source", "import_family", "import_module", "import_onnx",
           "load_target", "module_source", "onnx_source", "parse_shape", "write_weights"]

TARGET = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)(?P<call>\(.*\))?\Z", re.S)


def import_module(model: nn.Module, input_shape: tuple[int, ...], name: str | None = None,
                  check: bool = True) -> Imported:
    """Trace `model` on inputs of `input_shape` (no batch dimension), write its spec and verify it. Raises
    ImportFailed for what cannot be imported, and when the written spec is not exact."""
    return import_family([module_source(model, input_shape, name)], check).networks[0]


def module_source(model: nn.Module, input_shape: tuple[int, ...], name: str | None = None) -> Source:
    """`model` traced on inputs of `input_shape`, ready to be written (alone or with others: import_family)."""
    from netspec.importer.mapping import Mapper
    from netspec.importer.structure import scope_tree, unused_state
    from netspec.importer.trace import trace

    name = network_name(name or type(model).__name__)
    traced_module = trace(model, tuple(input_shape))
    traced = scope_tree(traced_module, Mapper(traced_module), type(model))
    unused = unused_state(traced, model.state_dict())
    if unused:  # a branch run only while training (an auxiliary classifier): seen when traced in that mode
        try:
            retraced = trace(model, tuple(input_shape), training=True)
            again = scope_tree(retraced, Mapper(retraced), type(model))
        except ImportFailed as err:
            raise ImportFailed(f"{len(unused)} state_dict entries, the first '{unused[0]}', are not used by the "
                               f"forward in eval mode, and traced in training mode: {err}") from None
        if not unused_state(again, model.state_dict()):
            traced, unused = again, []
    if unused:
        owner = unused[0].rpartition(".")[0]
        raise ImportFailed(f"{len(unused)} state_dict entries are not used by the forward, in eval mode or in "
                           f"training mode, the first '{unused[0]}' (module '{owner}'): a module the forward never "
                           "calls has no place in the spec; build the model without it")
    traced.state_order = list(model.state_dict())
    shape = tuple(input_shape)
    return Source(name, traced, lambda text, network: verify(text, network, model, shape), name,
                  "nothing was written. Unless the model's eval-mode forward is random, this is a bug in netspec's "
                  "importer: please report it with the model")


def import_family(sources: list[Source], check: bool = True) -> Family:
    """Several traced models written into one file, one network each, the blocks they share written once (calls
    of one module class whose bodies are equal up to constants, across all the models, share a block). Every
    network is verified against its model; one that is not exact fails the whole import."""
    from netspec.importer.writer import KEYWORDS, family_text, make_blocks

    names = [source.name for source in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ImportFailed(f"two models give the network name '{repeated[0]}': a file's networks need their own "
                           "names (import models built by the same callable into separate files, or give --name "
                           "to a single one)")
    blocks = make_blocks([source.traced for source in sources], set(KEYWORDS) | set(names) | set(_op_names()))
    text = family_text([(source.name, source.traced) for source in sources], blocks)
    networks = []
    for source in sources:
        verification = source.verify(text, source.name) if check else None
        if verification is not None and not verification.ok:
            raise ImportFailed(f"the spec imported from {source.origin} is not exact: "
                               + "; ".join(verification.problems) + "; " + source.failure_hint)
        networks.append(Imported(text, source.name, verification, len(blocks), source.weights))
    return Family(text, networks, len(blocks))


def _op_names() -> list[str]:
    from netspec.ops import OPS

    return list(OPS)


def parse_shape(text: str) -> tuple[int, ...]:
    """`3,224,224` -> (3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise ImportFailed(f"--input {text!r} is not a shape: give the sizes without the batch, e.g. 3,224,224")
    return shape


def load_target(target: str) -> tuple[nn.Module, str]:
    """`torchvision.models:resnet50` or `mypkg.models:Net(width=2)`: the module the callable builds and its name.
    Keyword arguments are Python literals (read with ast.literal_eval, never run)."""
    match = TARGET.match(target.strip())
    if not match:
        raise ImportFailed(f"{target!r} is neither an .onnx file nor MODULE:CALLABLE (e.g. "
                           "torchvision.models:resnet50 or mypkg.models:Net(width=2))")
    kwargs = {}
    if match["call"]:
        try:
            call = ast.parse(f"f{match['call']}", mode="eval").body
        except SyntaxError:
            raise ImportFailed(f"cannot read the arguments {match['call']}: write them as keyword=literal") from None
        if not isinstance(call, ast.Call) or call.args:
            raise ImportFailed(f"the arguments {match['call']} must be keywords, e.g. Net(width=2)")
        for keyword in call.keywords:
            if keyword.arg is None:
                raise ImportFailed("**kwargs cannot be given; write each argument as keyword=literal")
            try:
                kwargs[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                raise ImportFailed(f"argument {keyword.arg}={ast.unparse(keyword.value)} is not a Python literal "
                                   "(numbers, strings, booleans, None, lists, tuples, dicts)") from None
    if os.getcwd() not in sys.path:  # `netspec import mypkg.models:Net` finds mypkg where it is run, as python -m
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(match["module"])
    except ImportError as err:
        raise ImportFailed(f"cannot import the Python module {match['module']!r}: {err}") from None
    builder = getattr(module, match["name"], None)
    if builder is None or not callable(builder):
        raise ImportFailed(f"{match['module']} has no callable {match['name']!r}")
    try:
        model = builder(**kwargs)
    except Exception as err:  # the user's builder, called with the user's arguments
        raise ImportFailed(f"{match['name']}(...) raised {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ImportFailed(f"{match['name']}(...) returned a {type(model).__name__}, not a torch.nn.Module")
    return model, match["name"]


def import_onnx(path, name: str | None = None, check: bool = True) -> Imported:
    """An ONNX model's spec (netspec/importer/onnx.py)."""
    return import_family([onnx_source(path, name)], check).networks[0]


def onnx_source(path, name: str | None = None) -> Source:
    """An .onnx file read into a scope tree, ready to be written (alone or with others: import_family)."""
    from netspec.importer.onnx import onnx_file_source

    return onnx_file_source(path, name)


def write_weights(path, imported: Imported, model: nn.Module | None = None) -> None:
    """The original's weights as a netspec checkpoint ({"model": state_dict}, as best.pt holds them), which
    `netspec eval`, `predict`, `export` and `train --init` read with the imported spec."""
    import io

    import torch

    from netspec.ground.files import write_atomic

    state = model.state_dict() if model is not None else imported.weights
    buffer = io.BytesIO()
    torch.save({"model": {k: v.detach().cpu() for k, v in state.items()}}, buffer)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as err:
        raise ImportFailed(f"cannot write {path}: {err.strerror or err}") from None
