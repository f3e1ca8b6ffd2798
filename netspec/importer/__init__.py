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
from netspec.importer.result import Imported, network_name
from netspec.importer.verify import verify

__all__ = ["ImportFailed", "Imported", "import_module", "import_onnx", "load_target", "parse_shape", "write_weights"]

TARGET = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)(?P<call>\(.*\))?\Z", re.S)


def import_module(model: nn.Module, input_shape: tuple[int, ...], name: str | None = None,
                  check: bool = True) -> Imported:
    """Trace `model` on inputs of `input_shape` (no batch dimension), write its spec and verify it. Raises
    ImportFailed for what cannot be imported, and when the written spec is not exact."""
    from netspec.importer.mapping import Mapper
    from netspec.importer.structure import scope_tree, unused_state
    from netspec.importer.trace import trace
    from netspec.importer.writer import KEYWORDS, make_blocks, network_text

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
    blocks = make_blocks(traced, set(KEYWORDS) | {name} | set(_op_names()))
    text = network_text(name, traced, blocks)
    verification = verify(text, name, model, tuple(input_shape)) if check else None
    if verification is not None and not verification.ok:
        raise ImportFailed(f"the spec imported from {name} is not exact: " + "; ".join(verification.problems)
                           + "; nothing was written. Unless the model's eval-mode forward is random, this is a bug "
                           "in netspec's importer: please report it with the model")
    return Imported(text, name, verification, len(blocks))


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
    from netspec.importer.onnx import import_onnx_file

    return import_onnx_file(path, name, check)


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
