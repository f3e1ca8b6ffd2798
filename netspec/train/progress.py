"""Progress while training: what run(progress=...) reports to, step by step.

A progress reporter is any object with the four methods of `Progress`; run() takes one (or True for the
terminal's bar, False for none). Only rank 0 reports. The epoch's metrics go to run()'s `log` as a line.
"""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    # Whether step() is called: reading the running loss each step makes a GPU wait, so a silent reporter says no.
    per_step: bool

    def epoch_started(self, epoch: int, steps: int) -> None: ...

    def step(self, loss: float, accuracy: float, images_per_second: float) -> None:
        """After each step: the epoch's running train loss and accuracy (this process's), and the speed."""

    def epoch_ended(self) -> None: ...

    def close(self) -> None:
        """At the end of the run, and when it stops on an error."""


class Silent:
    per_step = False

    def epoch_started(self, epoch: int, steps: int) -> None:
        pass

    def step(self, loss: float, accuracy: float, images_per_second: float) -> None:
        pass

    def epoch_ended(self) -> None:
        pass

    def close(self) -> None:
        pass


class Bar:
    """rich's progress bar on the terminal, one line per epoch, removed when the epoch ends."""

    per_step = True

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.2%}  "
                                       "{task.fields[speed]:,.0f} img/s"),
                            TimeRemainingColumn(), transient=True)
        self.task, self.started = None, False

    def epoch_started(self, epoch: int, steps: int) -> None:
        self.task = self.bar.add_task("", total=steps, epoch=epoch, loss=0.0, acc=0.0, speed=0.0)
        if not self.started:
            self.bar.start()
            self.started = True

    def step(self, loss: float, accuracy: float, images_per_second: float) -> None:
        self.bar.update(self.task, advance=1, loss=loss, acc=accuracy, speed=images_per_second)

    def epoch_ended(self) -> None:
        self.bar.remove_task(self.task)

    def close(self) -> None:
        self.bar.stop()


def reporter(progress, main: bool) -> Progress:
    """run()'s `progress` argument as a reporter: the bar when True on a terminal, silence off rank 0."""
    if not main or progress is False or progress is None:
        return Silent()
    if progress is True:
        from netspec import notebook

        if notebook.in_kernel():  # Jupyter: a live bar with curves (netspec.notebook)
            return notebook.LiveProgress()
        return Bar() if sys.stderr.isatty() else Silent()
    return progress
