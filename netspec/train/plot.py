"""`netspec plot`: loss and accuracy per epoch of training runs, drawn with matplotlib.

A run folder's metrics.jsonl holds one line per epoch, then (since issue 17) one final line with the test
accuracy of the chosen weights; runs written earlier have `test_*` on every epoch line instead. Importing this
module imports neither matplotlib nor torch: matplotlib is imported by `draw`, when a picture is made.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from netspec.ground.errors import ToolError

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
FIGURE_SIZE, DPI = (12.0, 4.5), 100  # a PNG of 1200 x 450 pixels
# The per-epoch curves a run may have: (metrics.jsonl key prefix, line style, style legend text).
CURVES = (("train", "--", "train"), ("val", "-", "validation"), ("test", "-", "test, every epoch (older runs)"),
          ("ema_val", ":", "EMA validation"))
SECTIONS = ("loss", "accuracy")
# Segmentation runs' mean IoU per epoch, drawn on the accuracy panel: (metrics.jsonl key, line style, legend text).
MIOU_CURVES = (("val_miou", "-.", "validation mIoU"), ("ema_val_miou", (0, (1, 3)), "EMA validation mIoU"))


class PlotError(ToolError):
    """A run that cannot be drawn, in one line. `usage`: the command was pointed at the wrong thing (exit 2)
    rather than at a run whose metrics are broken (exit 1)."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage
        self.exit_code = 2 if usage else 1


@dataclass
class Run:
    """One run folder's metrics: `epochs` maps a curve's key (`train_loss`, `val_accuracy`, ...) to its
    (epoch, value) points; `test` is the final line's (epoch, loss, accuracy, selected) when there is one."""

    path: Path
    network: str | None
    epochs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    test: tuple[int, float, float, str | None] | None = None
    epoch_count: int = 0
    test_miou: float | None = None  # a segmentation run's test mean IoU


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlotError(f"{where}: {key} is {json.dumps(value)}, not a number")
    return float(value)


def _epoch(line: dict, where: str) -> int:
    epoch = line.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise PlotError(f"{where}: " + ("no epoch in this line" if epoch is None else
                                        f"epoch is {json.dumps(epoch)}, not a whole number"))
    return epoch


def _network(folder: Path) -> str | None:
    # Only for the title; a run without a readable config.json is still drawn.
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    network = config.get("network") if isinstance(config, dict) else None
    return network if isinstance(network, str) else None


def read_run(folder: str | Path) -> Run:
    """The metrics of the run in `folder`; PlotError names the file and line of anything it cannot read."""
    folder = Path(folder)
    metrics = folder / "metrics.jsonl"
    if not folder.exists():
        raise PlotError(f"not a run folder: {folder} does not exist", usage=True)
    if not folder.is_dir():
        raise PlotError(f"not a run folder: {folder} is not a folder", usage=True)
    if not metrics.is_file():
        raise PlotError(f"not a run folder: {folder} has no metrics.jsonl", usage=True)
    try:
        text = metrics.read_text(encoding="utf-8")
    except OSError as err:
        raise PlotError(f"cannot read {metrics}: {err.strerror}", usage=True) from None
    except UnicodeDecodeError:
        raise PlotError(f"{metrics} is not UTF-8 text") from None
    run = Run(folder, _network(folder))
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{metrics}:{number}"
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as err:
            raise PlotError(f"{where}: not a JSON line ({getattr(err, 'msg', err)}, column "
                            f"{getattr(err, 'colno', '?')})") from None
        if not isinstance(line, dict):
            raise PlotError(f"{where}: expected a JSON object, got {type(line).__name__}")
        if "split" in line:
            if line["split"] != "test":
                raise PlotError(f"{where}: split is {json.dumps(line['split'])}; only the final \"test\" line "
                                "has one")
            selected = line.get("selected")
            run.test = (_epoch(line, where), _number(line.get("test_loss"), "test_loss", where),
                        _number(line.get("test_accuracy"), "test_accuracy", where),
                        selected if isinstance(selected, str) else None)
            if "test_miou" in line:
                run.test_miou = _number(line["test_miou"], "test_miou", where)
            continue
        epoch = _epoch(line, where)
        run.epoch_count += 1
        keys = [f"{prefix}_{section}" for prefix, _, _ in CURVES for section in SECTIONS]
        for key in keys + [key for key, _, _ in MIOU_CURVES]:
            if key in line:
                run.epochs.setdefault(key, []).append((epoch, _number(line[key], key, where)))
    if run.epoch_count == 0:
        state = "is empty" if not text.strip() else "has no epoch lines"
        raise PlotError(f"{metrics} {state}: the run has not finished an epoch yet")
    return run


def labels(folders: list[Path]) -> list[str]:
    """Each run's folder name; the paths as given where two folders share a name."""
    names = [folder.name or folder.resolve().name for folder in folders]
    shared = Counter(names)
    return [str(folder) if shared[name] > 1 else name for folder, name in zip(folders, names)]


def final_test(run: Run) -> tuple[int, float, float, str | None] | None:
    """(epoch, loss, accuracy, selected) of the test result the run reports: the final line, or, for runs
    written before issue 17, the last epoch's test metrics."""
    if run.test is not None:
        return run.test
    loss, accuracy = run.epochs.get("test_loss"), run.epochs.get("test_accuracy")
    if loss and accuracy and loss[-1][0] == accuracy[-1][0]:
        return loss[-1][0], loss[-1][1], accuracy[-1][1], None
    return None


def draw(runs: list[Run], names: list[str], fmt: str, title: str | None = None) -> bytes:
    """The two panels (loss, accuracy against epoch) as PNG, SVG or PDF bytes; the same runs give the same
    bytes. Each run has one colour; train dashed, validation (older runs: test) solid, EMA dotted, the
    reported test result a star."""
    import matplotlib
    import matplotlib.style
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    # matplotlib's defaults, not the user's matplotlibrc, so the picture (and a test's bytes) is the same anywhere.
    with matplotlib.style.context("default"), matplotlib.rc_context(
            {"svg.fonttype": "none", "svg.hashsalt": "netspec", "axes.grid": True, "grid.alpha": 0.3}):
        figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        panels = dict(zip(SECTIONS, figure.subplots(1, 2)))
        networks = {run.network for run in runs}
        if title or (len(networks) == 1 and None not in networks):
            figure.suptitle(title or networks.pop())
        run_handles, styles_used = [], set()
        for index, (run, name) in enumerate(zip(runs, names)):
            colour = f"C{index % 10}"
            for prefix, style, _ in CURVES:
                for section, axes in panels.items():
                    points = run.epochs.get(f"{prefix}_{section}")
                    if points:
                        styles_used.add(prefix)
                        axes.plot(*zip(*points), linestyle=style, color=colour, marker="o", markersize=2.5,
                                  gid=f"curve-{index}-{prefix}-{section}")
            for key, style, _ in MIOU_CURVES:
                points = run.epochs.get(key)
                if points:
                    styles_used.add(key)
                    panels["accuracy"].plot(*zip(*points), linestyle=style, color=colour, marker="s",
                                            markersize=2.5, gid=f"curve-{index}-{key}")
            test = final_test(run)
            label = name
            if test is not None:
                epoch, loss, accuracy, selected = test
                for section, value in (("loss", loss), ("accuracy", accuracy)):
                    panels[section].plot([epoch], [value], marker="*", markersize=11, color=colour,
                                         markeredgecolor="black", markeredgewidth=0.6, linestyle="none",
                                         gid=f"test-{index}-{section}")
                shown = f"test {accuracy:.2%}" if run.test_miou is None else \
                    f"test mIoU {run.test_miou:.2%}, pixels {accuracy:.2%}"
                label += f": {shown} (epoch {epoch}{', EMA weights' if selected == 'ema' else ''})"
            run_handles.append(Line2D([], [], color=colour, linewidth=2, label=label))
        for section, axes in panels.items():
            axes.set_xlabel("epoch")
            if not axes.get_ylabel():
                axes.set_ylabel(section)
            axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        panels["accuracy"].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        style_handles = [Line2D([], [], color="0.3", linestyle=style, label=text)
                         for prefix, style, text in CURVES + MIOU_CURVES if prefix in styles_used]
        if any(key in styles_used for key, _, _ in MIOU_CURVES):
            panels["accuracy"].set_ylabel("accuracy (pixels), mIoU")
        if any(final_test(run) for run in runs):
            style_handles.append(Line2D([], [], color="0.3", marker="*", markersize=11, markeredgecolor="black",
                                        markeredgewidth=0.6, linestyle="none", label="test, reported weights"))
        panels["loss"].legend(handles=style_handles, loc="upper right").set_gid("legend-styles")
        panels["accuracy"].legend(handles=run_handles, loc="lower right").set_gid("legend-runs")
        buffer = io.BytesIO()
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
        figure.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def plot(folders: list[str], output: str, title: str | None = None) -> tuple[bytes, list[Run], list[str]]:
    """The picture of the runs in `folders` for the file `output` (its suffix picks PNG, SVG or PDF), with the
    runs read and their labels; nothing is written."""
    fmt = FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise PlotError(f"cannot tell the format of {output}; name it .png, .svg or .pdf", usage=True)
    runs = [read_run(folder) for folder in folders]
    try:
        import matplotlib  # noqa: F401  (only to say what is missing before drawing)
    except ImportError:
        raise PlotError("matplotlib is needed; install the project's `train` extra "
                        '(pip install -e ".[train]")', usage=True) from None
    names = labels([run.path for run in runs])
    return draw(runs, names, fmt, title), runs, names


def draw_confusion(matrix: list[list[int]], names: list[str], output: str, title: str | None = None) -> bytes:
    """A confusion matrix (rows: the true class, columns: the predicted one) as a heat map of each row's shares,
    with the counts written in the cells when there are few classes: PNG, SVG or PDF by the output's suffix, or
    CSV (the counts, with the class names as header and first column). Nothing is written here."""
    suffix = Path(output).suffix.lower()
    if suffix == ".csv":
        rows = [",".join(["true \\ predicted", *(_csv_field(n) for n in names)])]
        rows += [",".join([_csv_field(name), *map(str, row)]) for name, row in zip(names, matrix)]
        return ("\n".join(rows) + "\n").encode()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise PlotError(f"cannot tell the format of {output}; name it .png, .svg, .pdf or .csv", usage=True)
    try:
        import matplotlib.style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("matplotlib is needed; install the project's `train` extra "
                        '(pip install -e ".[train]")', usage=True) from None
    classes = len(names)
    shares = [[count / max(1, sum(row)) for count in row] for row in matrix]
    side = min(14.0, max(4.5, 0.45 * classes + 2.5))
    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.fonttype": "none",
                                                                     "svg.hashsalt": "netspec"}):
        figure = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        figure.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
        if classes <= 40:
            axes.set_xticks(range(classes), names, rotation=90 if classes > 8 else 0)
            axes.set_yticks(range(classes), names)
        if classes <= 20:
            for row in range(classes):
                for column in range(classes):
                    axes.text(column, row, f"{matrix[row][column]:,}", ha="center", va="center", fontsize=8,
                              color="white" if shares[row][column] > 0.5 else "black")
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        if title:
            axes.set_title(title)
        buffer = io.BytesIO()
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
        figure.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
