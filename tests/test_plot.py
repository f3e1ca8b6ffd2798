"""`netspec plot`: loss and accuracy curves of run folders, from hand-written metrics.jsonl files."""

import json
import re
import subprocess
import sys

import pytest

from netspec.cli import main

pytest.importorskip("matplotlib")


def epoch_line(epoch, validation=True, ema=False, old=False):
    line = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": 1 - 0.3 / epoch}
    if old:  # runs written before issue 17: the test set on every epoch line
        line.update(test_loss=1.2 / epoch, test_accuracy=1 - 0.35 / epoch)
    if validation:
        line.update(val_loss=1.1 / epoch, val_accuracy=1 - 0.32 / epoch)
    if ema:
        line.update(ema_val_loss=1.05 / epoch, ema_val_accuracy=1 - 0.31 / epoch)
    line.update(lr=0.1, images_per_second=1000.0, epoch_seconds=2.0, train_seconds=2.0 * epoch, skipped_images=0)
    return line


def write_run(folder, lines, network=None):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if network:
        (folder / "config.json").write_text(json.dumps({"network": network}))
    return folder


def new_run(folder, epochs=4, ema=False, chosen=3, selected="model", accuracy=0.9875, network="LeNet5"):
    final = {"split": "test", "weights": "best.pt", "selected": selected, "epoch": chosen, "test_loss": 0.0421,
             "test_accuracy": accuracy, "test_images": 10000}
    return write_run(folder, [epoch_line(e, ema=ema) for e in range(1, epochs + 1)] + [final], network)


def old_run(folder, epochs=5):
    return write_run(folder, [epoch_line(e, validation=False, old=True) for e in range(1, epochs + 1)], "LeNet5")


def plot(capsys, *args):
    status = main(["plot", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def gids(svg, prefix):
    return sorted(re.findall(rf'<g id="({prefix}[^"]*)"', svg))


def texts(svg):
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_png_is_written_at_the_figure_size(tmp_path, capsys):
    from matplotlib.image import imread

    new_run(tmp_path / "a", epochs=4)
    old_run(tmp_path / "b", epochs=5)
    output = tmp_path / "curves.png"
    status, out, err = plot(capsys, tmp_path / "a", tmp_path / "b", "-o", output)
    assert (status, err) == (0, "")
    assert out == f"wrote {output} (a 4 epochs, b 5 epochs)\n"
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(output).shape[:2] == (450, 1200)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_svg_draws_each_curve_and_labels_each_run(tmp_path, capsys):
    new_run(tmp_path / "lenet-ema", epochs=4, ema=True, chosen=3, selected="ema", accuracy=0.9875)
    old_run(tmp_path / "lenet-old", epochs=5)
    output = tmp_path / "curves.svg"
    assert plot(capsys, tmp_path / "lenet-ema", tmp_path / "lenet-old", "-o", output)[0] == 0
    svg = output.read_text()
    # Per panel: the new run's train, validation and EMA curves and its test star; the old run's train and
    # per-epoch test curves and its last epoch's test star.
    assert gids(svg, "curve-") == sorted(f"curve-{run}-{curve}-{section}" for section in ("loss", "accuracy")
                                         for run, curve in ((0, "train"), (0, "val"), (0, "ema_val"),
                                                            (1, "train"), (1, "test")))
    assert gids(svg, "test-") == ["test-0-accuracy", "test-0-loss", "test-1-accuracy", "test-1-loss"]
    labels = texts(svg)
    assert labels.count("epoch") == 2 and "loss" in labels and "accuracy" in labels
    assert "lenet-ema: test 98.75% (epoch 3, EMA weights)" in labels
    assert "lenet-old: test 93.00% (epoch 5)" in labels  # 1 - 0.35 / 5
    assert "LeNet5" in labels  # both runs' config.json name it: the title
    styles = ["train", "validation", "test, every epoch (older runs)", "EMA validation", "test, reported weights"]
    assert [label for label in labels if label in styles] == styles
    assert gids(svg, "legend-") == ["legend-runs", "legend-styles"]


def test_a_run_without_validation_or_final_line_draws_train_curves_only(tmp_path, capsys):
    write_run(tmp_path / "running", [epoch_line(1, validation=False), epoch_line(2, validation=False)])
    output = tmp_path / "curves.svg"
    assert plot(capsys, tmp_path / "running", "-o", output, "--title", "still training")[0] == 0
    svg = output.read_text()
    assert gids(svg, "curve-") == ["curve-0-train-accuracy", "curve-0-train-loss"]
    assert gids(svg, "test-") == []
    labels = texts(svg)
    assert "running" in labels and "still training" in labels
    assert "validation" not in labels and "test, reported weights" not in labels


def test_runs_sharing_a_folder_name_are_labelled_by_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    new_run(tmp_path / "x" / "lenet")
    new_run(tmp_path / "y" / "lenet")
    new_run(tmp_path / "other")
    status, out, _ = plot(capsys, "x/lenet", "y/lenet", "other", "-o", "curves.svg")
    assert status == 0 and out == "wrote curves.svg (x/lenet 4 epochs, y/lenet 4 epochs, other 4 epochs)\n"
    labels = texts((tmp_path / "curves.svg").read_text())
    assert [label.split(":")[0] for label in labels if ": test " in label] == ["x/lenet", "y/lenet", "other"]


def test_svg_is_the_same_bytes_each_time(tmp_path, capsys):
    new_run(tmp_path / "a", ema=True)
    plot(capsys, tmp_path / "a", "-o", tmp_path / "first.svg")
    plot(capsys, tmp_path / "a", "-o", tmp_path / "second.svg")
    assert (tmp_path / "first.svg").read_bytes() == (tmp_path / "second.svg").read_bytes()


def test_pdf(tmp_path, capsys):
    new_run(tmp_path / "a")
    assert plot(capsys, tmp_path / "a", "-o", tmp_path / "curves.pdf")[0] == 0
    assert (tmp_path / "curves.pdf").read_bytes()[:5] == b"%PDF-"


def errors(tmp_path):
    """(run folder, the message after `netspec plot: `, exit status) for each broken input."""
    (tmp_path / "no-metrics").mkdir()
    write_run(tmp_path / "empty", [])
    write_run(tmp_path / "final-only", [{"split": "test", "epoch": 1, "test_loss": 0.1, "test_accuracy": 0.9}])
    bad = write_run(tmp_path / "bad-json", [epoch_line(1)])
    with open(bad / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_loss": 0.5,, }\n')
    write_run(tmp_path / "not-object", [epoch_line(1), [1, 2]])
    write_run(tmp_path / "no-epoch", [epoch_line(1), {"train_loss": 0.5}])
    write_run(tmp_path / "text-value", [epoch_line(1), {**epoch_line(2), "val_accuracy": "high"}])
    write_run(tmp_path / "other-split", [epoch_line(1), {"split": "val", "epoch": 1}])
    (tmp_path / "a-file").write_text("")
    def m(name):
        return tmp_path / name / "metrics.jsonl"

    return [
        ("missing", f"not a run folder: {tmp_path / 'missing'} does not exist", 2),
        ("a-file", f"not a run folder: {tmp_path / 'a-file'} is not a folder", 2),
        ("no-metrics", f"not a run folder: {tmp_path / 'no-metrics'} has no metrics.jsonl", 2),
        ("empty", f"{m('empty')} is empty: the run has not finished an epoch yet", 1),
        ("final-only", f"{m('final-only')} has no epoch lines: the run has not finished an epoch yet", 1),
        ("bad-json", (f"{m('bad-json')}:2: not a JSON line (Expecting property name enclosed in double quotes, "
                      "column 32)"), 1),
        ("not-object", f"{m('not-object')}:2: expected a JSON object, got list", 1),
        ("no-epoch", f"{m('no-epoch')}:2: no epoch in this line", 1),
        ("text-value", f'{m("text-value")}:2: val_accuracy is "high", not a number', 1),
        ("other-split", f'{m("other-split")}:2: split is "val"; only the final "test" line has one', 1),
    ]


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    new_run(tmp_path / "good")
    output = tmp_path / "out" / "curves.png"
    output.parent.mkdir()
    for folder, message, expected in errors(tmp_path):
        status, out, err = plot(capsys, tmp_path / "good", tmp_path / folder, "-o", output)
        assert (folder, status, out, err) == (folder, expected, "", f"netspec plot: {message}\n")
        assert list(output.parent.iterdir()) == []


def test_unknown_output_suffix_writes_nothing(tmp_path, capsys):
    new_run(tmp_path / "a")
    status, out, err = plot(capsys, tmp_path / "a", "-o", tmp_path / "curves.jpg")
    assert (status, out) == (2, "")
    assert err == f"netspec plot: cannot tell the format of {tmp_path / 'curves.jpg'}; name it .png, .svg or .pdf\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_unwritable_output_is_reported(tmp_path, capsys):
    new_run(tmp_path / "a")
    output = tmp_path / "missing-folder" / "curves.svg"
    status, out, err = plot(capsys, tmp_path / "a", "-o", output)
    assert (status, out) == (2, "")
    assert err == f"netspec plot: cannot write {output}: No such file or directory\n"


def test_check_and_importing_plot_load_no_matplotlib(in_repo):
    code = ("import sys, netspec.train.plot; from netspec.cli import main; rc = main(['check', 'specs/lenet5.net']); "
            "print('HEAVY', sorted(m for m in ('matplotlib', 'torch') if m in sys.modules)); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "HEAVY []" in result.stdout
