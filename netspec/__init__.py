"""netspec: a declarative architecture-spec compiler for convolutional networks.

>>> graph = netspec.load("specs/lenet5.net")          # doctest: +SKIP
>>> sum(n.params for n in graph.nodes)                # doctest: +SKIP
60840
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netspec.errors import Diagnostic, NetspecError, Sources, render, render_all
from netspec.ir import Graph, Node
from netspec.limits import DEFAULT, Limits
from netspec.lower import load_program, lower
from netspec.passes import PASSES
from netspec.summary import Summary, summarize

__version__ = "0.1.0"
__all__ = ["Diagnostic", "Graph", "Limits", "NetspecError", "Node", "Sources", "Summary", "compile", "load", "render",
           "render_all", "split_spec", "summarize"]


def split_spec(spec: str | Path) -> tuple[Path, str | None]:
    """`specs/resnet.net:ResNet50` -> (path, "ResNet50"); a plain path selects the file's only network."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head and tail.isidentifier() and not Path(text).exists():
        return Path(head), tail
    return Path(text), None


def load(spec: str | Path, sources: Sources | None = None, limits: Limits = DEFAULT, **overrides: Any) -> Graph:
    """Parse, resolve and analyse a spec; raise NetspecError with every diagnostic found.

    `limits` sets the ceilings (sizes, nesting, where imports may read) that keep hostile input harmless.
    """
    path, network = split_spec(spec)
    program = load_program(path, sources, limits)
    graph = lower(program, network, overrides)
    for run_pass in PASSES:
        graph = run_pass(graph, limits)
    if graph.diagnostics:
        diagnostics = sorted(graph.diagnostics, key=_position)
        if overrides:  # a value from the command line is not in the file the caret points into
            from dataclasses import replace

            from netspec.evaluate import show

            given = ", ".join(f"{key}={show(value)}" for key, value in overrides.items())
            diagnostics = [replace(d, notes=d.notes + (f"the network's arguments include {given}, given with --set "
                                                        "(or to netspec.load), not in the spec",))
                           for d in diagnostics]
        raise NetspecError(diagnostics)
    return graph


def compile(spec: str | Path, seed: int | None = None, **overrides: Any):
    """Compile a spec to a torch.nn.Module (a torch.fx GraphModule); needs torch.

    >>> model = netspec.compile("specs/resnet50.net", classes=10)   # doctest: +SKIP
    """
    from netspec.backends.torch import to_module

    return to_module(load(spec, **overrides), seed=seed)


def load_ipython_extension(ipython) -> None:
    """`%load_ext netspec` in IPython or Jupyter: adds the %%netspec cell magic (docs/notebooks.md)."""
    from netspec.notebook import register

    register(ipython)


def _position(d: Diagnostic) -> tuple:
    return (0, "", 0, 0) if d.span is None else (1, d.span.file, d.span.line, d.span.col)
