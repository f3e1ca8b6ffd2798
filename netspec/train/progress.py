"""Progress while training: what run(progress=...) reports to, step by step.

A progress reporter is any object with the four methods of `Progress`; run() takes one (or True for the
terminal's bar, plain lines when stderr is not a terminal, a live display in Jupyter (netspec.train.live); False
for none). Only rank 0 reports. The epoch's metrics go to run()'s `log` as a line.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from netspec.train.live import LiveProgress, in_kernel


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


class Lines:
    """A plain line on stderr after the first step and then every `every` seconds (or `every_steps` steps), for
    logs and CI where a bar cannot redraw: where the run is, the epoch's running loss and accuracy, the speed,
    and the time the whole run still needs."""

    per_step = True

    def __init__(self, epochs: int, every: float = 30.0, every_steps: int | None = None, stream: TextIO | None = None,
                 clock=time.monotonic):
        self.epochs, self.every, self.every_steps = epochs, every, every_steps
        self.stream, self.clock = stream or sys.stderr, clock
        self.epoch = self.steps = self.done = 0
        self.last_line = self.started = None
        self.epoch_began = 0.0

    def epoch_started(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps, self.done = epoch, steps, 0
        self.epoch_began = self.clock()
        if self.started is None:
            self.started, self.first_epoch = self.epoch_began, epoch

    def step(self, loss: float, accuracy: float, images_per_second: float) -> None:
        self.done += 1
        now = self.clock()
        due = (self.last_line is None or now - self.last_line >= self.every or
               (self.every_steps is not None and self.done % self.every_steps == 0))
        if due or self.done == self.steps:
            self.last_line = now
            print(f"epoch {self.epoch}/{self.epochs} step {self.done}/{self.steps}: loss {loss:.4f} acc "
                  f"{accuracy:.2%} | {images_per_second:,.0f} img/s | ETA {duration(self.eta(now))}",
                  file=self.stream, flush=True)

    def eta(self, now: float) -> float:
        """The rest of this epoch at its pace so far, and the epochs after it at the pace of the run so far."""
        epoch_pace = (now - self.epoch_began) / self.done
        rest_of_epoch = epoch_pace * (self.steps - self.done)
        epochs_done = self.epoch - self.first_epoch + self.done / self.steps
        per_epoch = (now - self.started) / epochs_done
        return rest_of_epoch + per_epoch * (self.epochs - self.epoch)

    def epoch_ended(self) -> None:
        pass

    def close(self) -> None:
        pass


def duration(seconds: float) -> str:
    """1h02m, 3m05s or 42s."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def reporter(progress, main: bool, epochs: int = 1, every: float = 30.0) -> Progress:
    """run()'s `progress` argument as a reporter: the bar when True on a terminal, lines every `every` seconds
    when stderr is not one, silence off rank 0."""
    if not main or progress is False or progress is None:
        return Silent()
    if progress is True:
        if in_kernel():  # Jupyter: a live bar with curves
            return LiveProgress()
        return Bar() if sys.stderr.isatty() else Lines(epochs, every)
    return progress
