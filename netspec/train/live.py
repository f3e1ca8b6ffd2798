"""Live training progress in a Jupyter kernel, where the terminal's bar shows nothing: `in_kernel()` tells
progress.reporter() where it runs, and `LiveProgress` keeps one display updated in place with the epoch's bar, the
running train loss and accuracy as curves (matplotlib, imported when drawn) and a row per finished epoch.
Importing this module imports neither IPython nor matplotlib.
"""

from __future__ import annotations

import io
import math
import sys
import time

from netspec.analysis.tables import STYLE


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
        parts = [STYLE, "<div class='netspec'>"]
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
