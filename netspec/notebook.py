"""Jupyter: graphs and summaries as HTML tables, diagrams as inline SVG, and the `%%netspec` cell magic
(docs/notebooks.md). Training runs started from a notebook show their live progress through netspec.train.live.

Importing this module imports neither IPython nor matplotlib nor torch; each is imported where it is used.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from functools import cached_property
from html import escape
from pathlib import Path
from typing import Any

from netspec.analysis.tables import STYLE, show_tables
from netspec.ground.errors import Diagnostic, NetspecError, Sources, render_all
from netspec.ir import Graph
from netspec.language.overrides import OverrideError, parse_override

CELL = "<cell>"  # how errors in a %%netspec cell name their file


# -- diagrams -------------------------------------------------------------------------------------------------------


DOT_NOTE = ("Graphviz's `dot` program is not installed, so here is the diagram as Mermaid text (JupyterLab 4.1 and "
            "later draw it). For SVG, install Graphviz: `apt-get install graphviz`, `brew install graphviz` or "
            "https://graphviz.org/download/.")


class Drawing:
    """A diagram that a notebook shows inline: SVG through Graphviz's `dot`, or, where `dot` is not installed,
    the Mermaid text (which JupyterLab 4.1 and GitHub draw) with a note saying how to get SVG."""

    def __init__(self, graph: Graph, expand: set[str] | str = frozenset()):
        from netspec.backends import graph as diagrams

        self.diagram = diagrams.layout(graph, expand)
        self.dot = diagrams.to_dot(self.diagram)
        self.mermaid = diagrams.to_mermaid(self.diagram)

    @cached_property
    def svg(self) -> str | None:
        """The SVG text, or None where Graphviz's `dot` is missing."""
        from netspec.backends.graph import DotNotFound, render

        try:
            return render(self.dot, "svg").decode()
        except DotNotFound:
            return None

    def _repr_svg_(self) -> str | None:
        return self.svg

    def _repr_markdown_(self) -> str | None:
        if self.svg is not None:
            return None
        return f"*{DOT_NOTE}*\n\n```mermaid\n{self.mermaid}```\n"

    def __repr__(self) -> str:
        boxes, edges = len(self.diagram.boxes()), len(self.diagram.edges)
        return f"<netspec diagram {self.diagram.title}: {boxes} boxes, {edges} edges>"


def draw(spec: Graph | str | Path, expand: list[str] | str = (), **overrides: Any) -> Drawing:
    """A diagram of a graph, or of a spec file (loaded with `overrides`); `expand` opens blocks, as
    `netspec graph --expand` does, and "all" opens every one."""
    import netspec
    from netspec.backends.graph import ALL
    from netspec.ground.errors import did_you_mean

    graph = spec if isinstance(spec, Graph) else netspec.load(spec, **overrides)
    if expand == ALL:
        return Drawing(graph, ALL)
    names = [expand] if isinstance(expand, str) else list(expand)
    for name in names:
        if name not in graph.scopes:
            hint = did_you_mean(name, graph.scopes) or "blocks and groups: " + ", ".join(
                s for s in graph.scopes if "." not in s)
            raise ValueError(f"expand {name!r}: no block or group of that name; {hint}")
    return Drawing(graph, set(names))


# -- the %%netspec cell magic ---------------------------------------------------------------------------------------


class Errors:
    """A spec's diagnostics, shown as `netspec check` prints them: located, with the line, a caret and a hint."""

    def __init__(self, diagnostics: list[Diagnostic], sources: Sources):
        self.diagnostics = diagnostics
        self.text = render_all(diagnostics, sources)

    def _repr_html_(self) -> str:
        return f"{STYLE}<div class='netspec'><pre class='errors'>{escape(self.text)}</pre></div>"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(self.text)

    def __repr__(self) -> str:
        return self.text


def check_cell(text: str, network: str | None = None, overrides: dict[str, Any] | None = None,
               folder: str | Path | None = None) -> Graph | Errors:
    """Check a cell's text as a spec: the graph (shown as its table) or its errors, located in the cell.

    The text is written to a temporary file in `folder` (by default the working directory: the notebook's
    folder) so that its imports are found relative to the notebook, as a file's would be.
    """
    import netspec
    from netspec.ground.limits import limits_from_environment

    limits = limits_from_environment()  # NETSPEC_PATH, as `netspec check` reads it
    descriptor, path = tempfile.mkstemp(suffix=".net", prefix=".netspec-cell-", dir=folder or os.getcwd())
    name = os.path.relpath(path)
    sources = Sources()
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        graph = netspec.load(f"{name}:{network}" if network else name, sources, limits, **(overrides or {}))
        return _renamed(graph, name)
    except NetspecError as err:
        renamed = [replace(d, span=replace(d.span, file=CELL)) if d.span and d.span.file == name else d
                   for d in err.diagnostics]
        texts = {CELL if file == name else file: body for file, body in sources.texts.items()}
        return Errors(renamed, Sources(texts))
    finally:
        os.unlink(path)


def _renamed(graph: Graph, name: str) -> Graph:
    """The graph with the temporary file's name replaced by CELL, as its table and later errors show it."""
    def span(item) -> None:
        if item.span is not None and item.span.file == name:
            item.span = replace(item.span, file=CELL)

    for item in [*graph.nodes, *graph.scopes.values()]:
        span(item)
    graph.file = CELL if graph.file == name else graph.file
    return graph


MAGIC_USAGE = "%%netspec [Network] [name=value ...]: check the cell as a spec, with the network's arguments set"


def netspec_magic(line: str, cell: str) -> Graph | Errors:
    """%%netspec [Network] [name=value ...]: check the cell as a spec and show its table or its errors.

    Network picks one of the cell's networks; name=value sets its arguments (spec expressions, as
    `netspec check --set`). The cell's value is the graph, so `graph = _` keeps it.
    """
    from IPython.core.error import UsageError

    network, overrides = None, {}
    for word in line.split():
        if "=" in word:
            try:
                key, value = parse_override(word)
            except OverrideError as err:
                raise UsageError(f"{err}\n{MAGIC_USAGE}") from None
            overrides[key] = value
        elif network is None and word.isidentifier():
            network = word
        else:
            raise UsageError(f"cannot read {word!r}\n{MAGIC_USAGE}")
    return check_cell("\n" + cell, network, overrides)  # the %%netspec line is line 1: errors name the cell's lines


def register(ipython) -> None:
    """Add the %%netspec cell magic to an IPython shell and show graphs as tables (`%load_ext netspec`)."""
    ipython.register_magic_function(netspec_magic, magic_kind="cell", magic_name="netspec")
    show_tables(ipython)  # also done by `import netspec` in a shell; again in case it ran outside one
