"""Tracing a torch.nn.Module with torch.fx: the leaves are the torch.nn modules the op registry maps, every
other module is traced through so that its structure (and its module path) stays visible; shapes come from
running the traced graph once on an example input."""

from __future__ import annotations

import contextlib
import io
import traceback
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from netspec.importer.errors import ImportFailed, located
from netspec.importer.mapping import LEAF_TYPES, WRAPPED_FUNCTIONS

OWN_FILES = (str(Path(torch.__file__).parent), str(Path(__file__).parent))  # torch's and the importer's


class LeafTracer(fx.Tracer):
    """An fx Tracer that keeps the registry's torch.nn modules whole and remembers which module it is in, so a
    failure names the module path."""

    def __init__(self):
        super().__init__(autowrap_functions=WRAPPED_FUNCTIONS)
        self.record_stack_traces = True  # node.meta["stack_trace"]: the source line an unsupported op is on
        self.paths: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return type(module) in LEAF_TYPES

    def call_module(self, module, forward, args, kwargs):
        self.paths.append(self.path_of_module(module))
        try:
            return super().call_module(module, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module, seen first as the error unwinds
                self.failed_in = self.paths[-1] or None
            raise
        finally:
            self.paths.pop()


def user_line(err: BaseException) -> str | None:
    """The innermost frame of the traceback outside torch and the importer: the model's own source line."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(OWN_FILES)]
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"


def trace(model: nn.Module, input_shape: tuple[int, ...], training: bool = False) -> fx.GraphModule:
    """The model's fx graph with every node's example output in `node.meta` ("tensor_meta"), traced in eval
    mode, or in training mode to see branches that run only then (auxiliary classifiers); the example run is in
    eval mode either way, so batch-norm statistics are never updated. Raises ImportFailed naming the module where
    fx stopped (data-dependent control flow, mostly)."""
    model.train(training)
    tracer = LeafTracer()
    try:
        graph = tracer.trace(model)
    except ImportFailed:
        raise
    except Exception as err:  # fx reports untraceable code with several exception types; all are the model's
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise located("data-dependent control flow", tracer.failed_in, user_line(err),
                      f"torch.fx cannot trace it ({type(err).__name__}: {reason}); data-dependent control flow "
                      "(an `if` or loop on a tensor's values) has no static spec") from None
    finally:
        model.eval()
    module = fx.GraphModule(tracer.root, graph, type(model).__name__)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.zeros(1, *input_shape, device=device)
    try:
        # ShapeProp prints the traceback of a failing node itself; the error below says what went wrong
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(module).propagate(example)
    except Exception as err:  # the model's own error; ShapeProp wraps it with the whole node
        cause = err.__cause__ or err
        reason = str(cause).splitlines()[0] if str(cause) else ""
        raise ImportFailed(f"the model does not run on an input of shape {list(input_shape)} "
                           f"({type(cause).__name__}: {reason}); give the shape it takes with --input C,H,W") from None
    return module
