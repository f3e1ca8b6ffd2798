"""Jupyter: one real notebook executed in an ipykernel (tables, diagrams, the %%netspec magic, training progress),
and the pieces it shows, checked in-process."""

import json
import shutil
from pathlib import Path

import pytest

import netspec
from netspec import notebook
from netspec.backends import graph as diagrams

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "specs" / "lenet.net"
HAS_DOT = shutil.which("dot") is not None

# A cell that imports a block from a file beside the notebook, and one with a shape error on its line 4.
GOOD_CELL = """%%netspec Tiny width=8
import "blocks.net"

network Tiny(width=4) {
  input x: [1, 12, 12]
  ConvRelu(width)
  flatten()
  linear(10)
}
"""
BROKEN_CELL = """%%netspec
network Broken {
  input x: [1, 8, 8]
  conv(4, 3) -> maxpool(2)
  conv(8, 5)
}
"""
BLOCKS = "block ConvRelu(c) {\n  input x\n  conv(c, 3, padding=1) -> relu()\n}\n"


def outputs_of(cell) -> dict[str, str]:
    """Every output of a cell merged into one mime type -> text mapping (streams under "stream")."""
    merged: dict[str, str] = {}
    for output in cell.outputs:
        if output.output_type == "stream":
            merged["stream"] = merged.get("stream", "") + output.text
        elif output.output_type == "error":
            merged["error"] = "\n".join(output.traceback)
        else:
            for mime, data in output.data.items():
                merged[mime] = merged.get(mime, "") + (data if isinstance(data, str) else json.dumps(data))
    return merged


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook, run once in a fresh kernel started in its own folder (as Jupyter starts one)."""
    pytest.importorskip("torch")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder = tmp_path_factory.mktemp("notebook")
    (folder / "blocks.net").write_text(BLOCKS)
    cells = [
        f"import netspec\n%load_ext netspec\ngraph = netspec.load({str(LENET)!r})\ngraph",
        "netspec.summarize(graph, depth=1)",
        "from netspec.notebook import draw\ndraw(graph)",
        GOOD_CELL,
        BROKEN_CELL,
        "tiny = _4\nprint(sum(n.params for n in tiny.nodes))",
        "import json\nfrom netspec.semantics.recipe import Recipe\nfrom netspec.train import run\n"
        f"result = run(graph, Recipe(epochs=1, batch_size=256, lr=0.003), 'run', {str(ROOT / 'tests' / 'data')!r}, "
        "'cpu', log=lambda line: None)\nprint(json.dumps(result))",
    ]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells],
                                    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}})
    client = nbclient.NotebookClient(book, timeout=600, startup_timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    client.execute()
    nbformat.write(book, folder / "executed.ipynb")
    return [outputs_of(cell) for cell in book.cells], folder


def test_a_graph_and_a_summary_display_as_tables(executed):
    cells, _ = executed
    table = cells[0]["text/html"]
    assert "<b>LeNet(classes=10, act=&quot;relu&quot;)</b>" in table
    # The conv row with its exact parameters and MACs, and the totals.
    assert ("<tr><td>0</td><td>conv</td><td>[6, 28, 28]</td><td class='n'>156</td><td class='n'>117,600</td></tr>"
            in table)
    assert "<td>Params</td><td colspan='4'>61,706 (trainable 61,706, non-trainable 0)</td>" in table
    assert "<td>MACs</td><td colspan='4'>416,734 (416.734 k) per sample</td>" in table
    assert cells[0]["text/plain"] == 'LeNet(classes=10, act="relu"): 13 rows, 61,706 params, 416,734 MACs, output [10]'
    assert "<td>Params</td><td colspan='4'>61,706 (trainable" in cells[1]["text/html"]


def test_a_diagram_displays_inline(executed):
    cells, _ = executed
    if HAS_DOT:
        svg = cells[2]["image/svg+xml"]
        assert "<svg" in svg and "48,120 params" in svg  # the first linear layer's box
        assert "text/markdown" not in cells[2]
    else:
        assert "```mermaid\nflowchart TB" in cells[2]["text/markdown"]
    assert cells[2]["text/plain"] == "<netspec diagram LeNet(classes=10, act=relu): 9 boxes, 8 edges>"


def test_the_cell_magic_checks_a_cell_with_imports_beside_the_notebook(executed):
    cells, folder = executed
    table = cells[3]["text/html"]
    assert "<b>Tiny(width=8)</b> &nbsp;<code>&lt;cell&gt;</code>" in table  # not the temporary file's name
    # conv(8, 3) on one channel: 8 * 9 + 8 = 80; linear(10) on 8 * 12 * 12: 11,530 + 10
    assert "<td>Params</td><td colspan='4'>11,610 (trainable 11,610, non-trainable 0)</td>" in table
    assert cells[5]["stream"] == "11610\n"  # the cell's value is the graph
    assert not list(folder.glob(".netspec-cell-*"))  # the temporary spec files are gone


def test_the_cell_magic_shows_located_errors(executed):
    cells, _ = executed
    shown = cells[4]["text/html"]
    assert "&lt;cell&gt;:5:3: error[NS302]: conv kernel 5 is larger than its input height 3" in shown
    assert "5 |   conv(8, 5)" in shown and "= hint:" in shown
    assert cells[4]["text/plain"].startswith("<cell>:5:3: error[NS302]")
    assert "error" not in cells[4]  # shown, not raised


def test_training_shows_progress_and_curves(executed):
    cells, folder = executed
    result = json.loads(cells[6]["stream"].strip().splitlines()[-1])
    live = cells[6]["text/html"]
    # The display ends as the finished run: the curves, and the epoch's row with the run's own train metrics.
    assert "<p>1 epoch trained</p>" in live
    assert (f"<tr><td class='n'>1</td><td class='n'>{result['train_loss']:.4f}</td>"
            f"<td class='n'>{result['train_accuracy']:.2%}</td>") in live
    assert "<svg" in live and "train accuracy" in live
    lines = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(m.get("split"), m["epoch"]) for m in lines] == [(None, 1), ("test", 1)]  # the epoch, then the test


# -- in-process ----------------------------------------------------------------------------------------------------


def test_a_diagram_without_dot_shows_mermaid_and_says_why(monkeypatch):
    def missing(dot, fmt):
        raise diagrams.DotNotFound

    monkeypatch.setattr(diagrams, "render", missing)
    drawing = notebook.draw(LENET)
    assert drawing._repr_svg_() is None
    text = drawing._repr_markdown_()
    assert text.startswith("*Graphviz's `dot` program is not installed")
    assert text.endswith(f"```mermaid\n{diagrams.to_mermaid(diagrams.layout(netspec.load(LENET)))}```\n")


def test_draw_opens_blocks_and_names_a_wrong_one():
    graph = netspec.load(ROOT / "specs" / "resnet18.net")
    closed = [box.name for box in notebook.draw(graph).diagram.boxes()]
    assert closed == ["x", "conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "9", "fc"]
    opened = [box.name for box in notebook.draw(graph, expand="layer1").diagram.boxes()]
    assert opened[4:7] == ["layer1.0", "layer1.1", "layer2"]
    with pytest.raises(ValueError, match=r"expand 'layer9': no block or group of that name; did you mean 'layer4'\?"):
        notebook.draw(graph, expand=["layer9"])


def test_outside_a_kernel_training_keeps_the_terminal_bar():
    pytest.importorskip("torch")
    from netspec.train.live import in_kernel
    from netspec.train.progress import Lines, Silent, reporter

    assert not in_kernel()
    assert type(reporter(True, main=True)) is Lines  # the terminal's choice: pytest's stderr is not a terminal
    assert type(reporter(True, main=False)) is Silent  # only rank 0 reports


def test_live_progress_draws_the_running_epoch(monkeypatch):
    pytest.importorskip("torch")  # netspec.train, which holds the live progress, needs torch
    from netspec.train.live import LiveProgress

    shown = []
    progress = LiveProgress()
    monkeypatch.setattr(progress, "_draw", lambda curves=False: shown.append(progress.html()))
    progress.epoch_started(1, 8)
    for step in range(8):
        progress.step(0.5, 0.875, 1234.0)
    assert ("<p>epoch 1 &nbsp;<progress value='8' max='8' style='width: 24em'></progress> 8/8 &nbsp; loss 0.5000 "
            "&nbsp; acc 87.50% &nbsp; 1,234 img/s</p>") in shown[-1]
    progress.epoch_ended()
    assert "<p>1 epoch trained</p>" in shown[-1]
    assert "<td class='n'>1</td><td class='n'>0.5000</td><td class='n'>87.50%</td><td class='n'>1,234</td>" in shown[-1]
    assert progress.points[-1] == (1.0, 0.5, 0.875)


def test_an_ipython_shell_shows_graphs_and_summaries_as_tables_once_netspec_registers_them():
    """The IR and the summary know nothing of Jupyter (tests/test_layers.py): the tables are IPython formatters
    registered from above, by `import netspec` in a running shell and by `%load_ext netspec`."""
    from IPython.core.interactiveshell import InteractiveShell

    from netspec.analysis.tables import show_tables

    shell = InteractiveShell.instance()
    graph = netspec.load(LENET)
    assert not hasattr(graph, "_repr_html_")
    show_tables(shell)
    shown, _ = shell.display_formatter.format(graph)
    assert "<td>Params</td><td colspan='4'>61,706 (trainable" in shown["text/html"]
    assert shown["text/plain"] == 'LeNet(classes=10, act="relu"): 13 rows, 61,706 params, 416,734 MACs, output [10]'
    summary, _ = shell.display_formatter.format(netspec.summarize(graph, depth=1))
    assert summary["text/html"].startswith("<style>")


def test_a_graph_with_warnings_shows_them_above_its_table(in_repo):
    from IPython.core.interactiveshell import InteractiveShell

    from netspec.analysis.tables import show_tables

    shell = InteractiveShell.instance()
    show_tables(shell)
    graph = netspec.load("tests/errors/unused_value.net:DeadBranch")
    shown, _ = shell.display_formatter.format(graph)
    assert shown["text/html"].startswith("<pre class='netspec-warnings'>tests/errors/unused_value.net:4:19: "
                                         "warning[NS401]: the result of &#x27;0.2&#x27; (conv) is never used")
    assert "1 warning found</pre><style>" in shown["text/html"]
