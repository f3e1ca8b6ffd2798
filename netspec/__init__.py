"""netspec: a declarative architecture-spec compiler for convolutional networks.

>>> graph = netspec.load("specs/lenet5.net")          # doctest: +SKIP
>>> sum(n.params for n in graph.nodes)                # doctest: +SKIP
60840
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from netspec.analysis.pipeline import Analysis, analyse
from netspec.analysis.summary import Summary, summarize
from netspec.analysis.tables import show_tables
from netspec.ground.errors import Diagnostic, NetspecError, Sources, render, render_all
from netspec.ground.limits import DEFAULT, Limits
from netspec.ground.version import __version__
from netspec.ir import Graph, Node
from netspec.language.evaluate import show

__all__ = ["Analysis", "Diagnostic", "Graph", "Limits", "NetspecError", "Node", "Sources", "Summary", "__version__",
           "analyse", "compile", "load", "render", "render_all", "split_spec", "summarize"]


def split_spec(spec: str | Path) -> tuple[Path, str | None]:
    """`specs/resnet.net:ResNet50` -> (path, "ResNet50"); a plain path selects the file's only network."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head and tail.isidentifier() and not Path(text).exists():
        return Path(head), tail
    return Path(text), None


def load(spec: str | Path, sources: Sources | None = None, limits: Limits = DEFAULT, **overrides: Any) -> Graph:
    """Parse, resolve and analyse a spec; raise NetspecError with every diagnostic found when one is an error.
    Warnings alone do not stop it: they are in the graph's `warnings`.

    `limits` sets the ceilings (sizes, nesting, where imports may read) that keep hostile input harmless.
    """
    path, network = split_spec(spec)
    analysis = analyse(path, network, sources, limits, overrides)
    if any(d.is_error for d in analysis.diagnostics):
        diagnostics = sorted(analysis.diagnostics, key=_position)
        if overrides:  # a value from the command line is not in the file the caret points into
            given = ", ".join(f"{key}={show(value)}" for key, value in overrides.items())
            diagnostics = [replace(d, notes=d.notes + (f"the network's arguments include {given}, given with --set "
                                                        "(or to netspec.load), not in the spec",))
                           for d in diagnostics]
        raise NetspecError(diagnostics)
    graph = analysis.graphs[0]
    graph.warnings = sorted(analysis.diagnostics, key=_position)
    return graph


def compile(spec: str | Path, seed: int | None = None, **overrides: Any):
    """Compile a spec to a torch.nn.Module (a torch.fx GraphModule); needs torch.

    >>> model = netspec.compile("specs/resnet50.net", classes=10)   # doctest: +SKIP
    """
    from netspec.backends.torch import to_module

    return to_module(load(spec, **overrides), seed=seed)


def load_ipython_extension(ipython) -> None:
    """`%load_ext netspec` in IPython or Jupyter: adds the %%netspec cell magic (docs/notebooks.md)."""
    from netspec.notebook import register  # the front-end that uses the façade: a sanctioned lazy import

    register(ipython)


def _show_tables_in_ipython() -> None:
    """In a running IPython shell (Jupyter), graphs and summaries show as their tables from the first
    `import netspec`: the compiler's types know nothing of display, so the formatters are registered here."""
    ipython = sys.modules.get("IPython")  # never imported here: a script that has not loaded it has no shell
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and hasattr(shell, "display_formatter"):
        show_tables(shell)


def _position(d: Diagnostic) -> tuple:
    return (0, "", 0, 0) if d.span is None else (1, d.span.file, d.span.line, d.span.col)


_show_tables_in_ipython()
