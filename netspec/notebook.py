"""Jupyter: graphs and summaries as HTML tables, diagrams as inline SVG, the `%%netspec` cell magic, and a live
progress bar with loss and accuracy curves for training runs started from a notebook (docs/notebooks.md).

Importing this module imports neither IPython nor matplotlib nor torch; each is imported where it is used.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from functools import cached_property
from html import escape
from pathlib import Path
from typing import Any

from netspec.cli import _human, _parse_override
from netspec.errors import Diagnostic, NetspecError, Sources, render_all
from netspec.evaluate import show
from netspec.ir import Graph
from netspec.summary import Summary, summarize

CELL = "<cell>"  # how errors in a %%netspec cell name their file

# Selectors specific enough to win over JupyterLab's own table style, which right-aligns every cell.
_STYLE = """<style>
div.netspec table.rows { border-collapse: collapse; font-size: 0.9em; margin: 0; }
div.netspec table.rows th, div.netspec table.rows td { padding: 1px 10px; text-align: left; font-family: monospace; }
div.netspec table.rows td.n, div.netspec table.rows th.n { text-align: right; }
div.netspec table.rows tfoot tr:first-child td { border-top: 1px solid #999; }
div.netspec pre.errors { color: #9b1c1c; background: #fdf2f2; padding: 8px; font-family: monospace; }
</style>"""


def title(summary: Summary) -> str:
    args = ", ".join(f"{k}={show(v)}" for k, v in summary.arguments.items())
    return f"{summary.network}({args})"


def summary_html(summary: Summary) -> str:
    """The table `netspec check` prints, as HTML: one row per layer (or scope), then the totals."""
    rows = []
    for row in summary.rows:
        params = f"{row.params:,}" if row.params else "-"
        if row.params and row.trainable != row.params:
            params += " (frozen)" if row.trainable == 0 else f" ({row.params - row.trainable:,} frozen)"
        indent = "&nbsp;&nbsp;" * row.depth
        rows.append(f"<tr><td>{indent}{escape(row.name)}</td><td>{escape(row.op)}</td>"
                    f"<td>[{', '.join(map(str, row.shape))}]</td><td class='n'>{params}</td>"
                    f"<td class='n'>{f'{row.macs:,}' if row.macs else '-'}</td></tr>")
    t = summary.totals
    totals = [("Params", f"{t.params:,} (trainable {t.trainable:,}, non-trainable {t.non_trainable:,})"),
              ("Buffers", f"{t.buffers:,}"),
              ("MACs", f"{t.macs:,} ({_human(t.macs)}) per sample"),
              ("FLOPs", f"{t.flops:,} ({_human(t.flops)})"),
              ("Activations", f"{t.activation_bytes:,} bytes ({_human(t.activation_bytes, 'B')}), float32, batch 1")]
    if len(summary.outputs) > 1:
        totals.append(("Outputs", ", ".join(summary.outputs)))
    foot = "".join(f"<tr><td>{name}</td><td colspan='4'>{escape(value)}</td></tr>" for name, value in totals)
    return (f"{_STYLE}<div class='netspec'><p><b>{escape(title(summary))}</b> &nbsp;<code>{escape(summary.file)}</code>"
            "</p><table class='rows'><thead><tr><th>layer</th><th>op</th><th>output shape</th><th class='n'>params</th>"
            f"<th class='n'>MACs</th></tr></thead><tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table></div>")


def summary_text(summary: Summary) -> str:
    """One line for a notebook's plain-text view (the HTML table is the rich one)."""
    t = summary.totals
    return (f"{title(summary)}: {len(summary.rows)} rows, {t.params:,} params, {t.macs:,} MACs, "
            f"output {t.output_shape}")


def graph_html(graph: Graph) -> str:
    return summary_html(summarize(graph))


def graph_text(graph: Graph) -> str:
    return summary_text(summarize(graph))


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
    from netspec.errors import did_you_mean

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
        return f"{_STYLE}<div class='netspec'><pre class='errors'>{escape(self.text)}</pre></div>"

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
    from netspec.limits import Limits, search_path_from_environment

    search = search_path_from_environment()  # NETSPEC_PATH, as `netspec check` reads it
    limits = Limits(import_roots=search, import_search=search)
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

    for item in [*graph.nodes, *graph.scopes.values(), *graph.checks]:
        span(item)
    graph.file = CELL if graph.file == name else graph.file
    return graph


MAGIC_USAGE = "%%netspec [Network] [name=value ...]: check the cell as a spec, with the network's arguments set"


def netspec_magic(line: str, cell: str) -> Graph | Errors:
    """%%netspec [Network] [name=value ...]: check the cell as a spec and show its table or its errors.

    Network picks one of the cell's networks; name=value sets its arguments (spec expressions, as
    `netspec check --set`). The cell's value is the graph, so `graph = _` keeps it.
    """
    import argparse

    from IPython.core.error import UsageError

    network, overrides = None, {}
    for word in line.split():
        if "=" in word:
            try:
                key, value = _parse_override(word)
            except argparse.ArgumentTypeError as err:
                raise UsageError(f"{err}\n{MAGIC_USAGE}") from None
            overrides[key] = value
        elif network is None and word.isidentifier():
            network = word
        else:
            raise UsageError(f"cannot read {word!r}\n{MAGIC_USAGE}")
    return check_cell("\n" + cell, network, overrides)  # the %%netspec line is line 1: errors name the cell's lines


def register(ipython) -> None:
    """Add the %%netspec cell magic to an IPython shell (`%load_ext netspec` calls this)."""
    ipython.register_magic_function(netspec_magic, magic_kind="cell", magic_name="netspec")


# -- training progress ----------------------------------------------------------------------------------------------


def in_kernel() -> bool:
    """Whether this is a Jupyter kernel, where a terminal progress bar would show nothing."""
    ipython = sys.modules.get("IPython")  # never imported here: a script that has not loaded it is not a kernel
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class LiveProgress:
    """netspec.train's progress reporter in a Jupyter kernel, where the terminal's bar shows nothing: one display,
    updated in place, with the epoch's bar (running loss, accuracy, speed), the running train loss and accuracy
    drawn as curves over the whole run, and a row per finished epoch. The test metrics come in run()'s log lines.
    """

    per_step = True
    REFRESH_SECONDS = 0.5  # between redraws of the bar: each update sends the whole display to the browser
    CURVES_SECONDS = 2.0  # between redraws of the curves within an epoch (matplotlib takes tens of milliseconds)

    def __init__(self):
        self.epoch, self.steps, self.done = 0, 0, 0
        self.loss = self.accuracy = self.speed = 0.0
        self.points: list[tuple[float, float, float]] = []  # (position in epochs, running loss, running accuracy)
        self.finished: list[dict] = []  # one row per finished epoch
        self.began = time.monotonic()
        self.handle = None
        self.drawn = -math.inf
        self.curves, self.curves_drawn = "", -math.inf

    def epoch_started(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps, self.done = epoch, steps, 0
        self.began = time.monotonic()
        self._draw()

    def step(self, loss: float, accuracy: float, images_per_second: float) -> None:
        self.done += 1
        self.loss, self.accuracy, self.speed = loss, accuracy, images_per_second
        self.points.append((self.epoch - 1 + self.done / self.steps, loss, accuracy))
        if time.monotonic() - self.drawn >= self.REFRESH_SECONDS:
            self._draw()

    def epoch_ended(self) -> None:
        self.finished.append({"epoch": self.epoch, "loss": self.loss, "accuracy": self.accuracy,
                              "images_per_second": self.speed, "seconds": time.monotonic() - self.began})
        self.steps = 0
        self._draw(curves=True)

    def close(self) -> None:
        self.steps = 0
        self._draw(curves=True)

    def _draw(self, curves: bool = False) -> None:
        from IPython.display import HTML, display

        if self.points and (curves or time.monotonic() - self.curves_drawn >= self.CURVES_SECONDS):
            self.curves, self.curves_drawn = curves_svg(self.points), time.monotonic()
        page = HTML(self.html())
        if self.handle is None:
            self.handle = display(page, display_id=True)
        else:
            self.handle.update(page)
        self.drawn = time.monotonic()

    def html(self) -> str:
        parts = [_STYLE, "<div class='netspec'>"]
        if self.steps:
            parts.append(f"<p>epoch {self.epoch} &nbsp;<progress value='{self.done}' max='{self.steps}' "
                         f"style='width: 24em'></progress> {self.done}/{self.steps} &nbsp; loss {self.loss:.4f} "
                         f"&nbsp; acc {self.accuracy:.2%} &nbsp; {self.speed:,.0f} img/s</p>")
        else:
            parts.append(f"<p>{len(self.finished)} epoch{'s' if len(self.finished) != 1 else ''} trained</p>")
        parts.append(self.curves)
        if self.finished:
            rows = "".join(f"<tr><td class='n'>{m['epoch']}</td><td class='n'>{m['loss']:.4f}</td>"
                           f"<td class='n'>{m['accuracy']:.2%}</td><td class='n'>{m['images_per_second']:,.0f}</td>"
                           f"<td class='n'>{m['seconds']:.1f}</td></tr>" for m in self.finished)
            parts.append("<table class='rows'><thead><tr><th class='n'>epoch</th><th class='n'>train loss</th>"
                         "<th class='n'>train acc</th><th class='n'>img/s</th><th class='n'>seconds</th></tr></thead>"
                         f"<tbody>{rows}</tbody></table>")
        parts.append("</div>")
        return "".join(parts)


def curves_svg(points: list[tuple[float, float, float]]) -> str:
    """The running train loss and accuracy against epochs, as an SVG drawn by matplotlib (a note where it is
    missing). Each epoch's curve restarts: the running values are means over the epoch so far."""
    try:
        import matplotlib
        import matplotlib.ticker
        from matplotlib.figure import Figure
    except ImportError:
        return "<p><i>pip install matplotlib (the notebook extra) to see the curves</i></p>"

    figure = Figure(figsize=(8, 2.6))
    loss, accuracy = figure.subplots(1, 2)
    position = [p[0] for p in points]
    for axes, values, label in ((loss, [p[1] for p in points], "train loss"),
                                (accuracy, [p[2] for p in points], "train accuracy")):
        axes.plot(position, values, ".-", markersize=3)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_xlim(0, max(1, math.ceil(position[-1])))
        axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    accuracy.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    figure.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: a few kB instead of glyph outlines
        figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
