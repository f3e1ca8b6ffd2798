"""What a run's weights carry and what uses them (issue 26): class names, preprocessing and the network's arguments
in checkpoints and ONNX metadata; `netspec predict`; `netspec eval`, `predict` and `export --weights` with the
run's own arguments; unreadable test images named and not counted; Ctrl-C saying where to resume from."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.language.evaluate import Symbol  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import DataOptions, RunOptions, run  # noqa: E402
from netspec.train.datasets import load  # noqa: E402

DATA = "tests/data"


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """LeNet with tanh (a non-default argument) after one epoch on the MNIST subset, and 24 test digits as PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("lenet")
    here = os.getcwd()
    os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        graph = netspec.load("specs/lenet.net", act=Symbol("tanh"))
        result = run(graph, Recipe(**{**graph.recipe, "epochs": 1, "batch_size": 64, "lr": 0.003}), root / "run",
                     DATA, "cpu", progress=False, log=lambda m: None)
        dataset = load("mnist", DATA, (1, 28, 28), 10)
    finally:
        os.chdir(here)
    digits = root / "digits"
    digits.mkdir()
    for i in range(24):
        Image.fromarray(dataset.test_x[i, 0].numpy()).save(digits / f"{i:02d}.png")
    return root, result, dataset


def test_checkpoints_carry_class_names_preprocessing_and_arguments(lenet_run):
    root, _, _ = lenet_run
    config = torch.load(root / "run" / "best.pt", weights_only=True)["config"]
    assert config["classes"] == [str(d) for d in range(10)] and config["task"] == "classification"
    assert config["argument_texts"] == {"classes": "10", "act": "tanh"}
    record = config["preprocessing"]
    assert {k: record[k] for k in ("channels", "input_size", "resize", "pad", "normalize", "color")} == {
        "channels": 1, "input_size": [28, 28], "resize": None, "pad": 0, "normalize": True, "color": "grey"}
    assert record["mean"] == config["normalization"]["mean"] and record["std"] == config["normalization"]["std"]
    assert json.loads((root / "run" / "config.json").read_text())["classes"] == config["classes"]


def test_predict_names_the_classes_as_the_run_evaluated(in_repo, lenet_run, capsys):
    root, _, dataset = lenet_run
    out = root / "predictions.csv"
    assert main(["predict", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"), str(root / "digits"),
                 "--top-k", "3", "-o", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "using the run's arguments act=tanh" in captured.err  # not "saved from another network"
    printed = captured.out.splitlines()
    assert len(printed) == 24 and printed[0].startswith(f"{root / 'digits' / '00.png'}: ")
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2", "class_3", "probability_3"]
    assert len(rows) == 25 and all(float(r[2]) >= float(r[4]) >= float(r[6]) for r in rows[1:])
    # the same top-1 as the trained weights on the in-memory evaluation path (its normalisation, no PNG)
    from netspec.train import make_preprocess

    config = torch.load(root / "run" / "best.pt", weights_only=True)["config"]
    model = netspec.compile("specs/lenet.net", act=Symbol("tanh")).eval()
    model.load_state_dict(torch.load(root / "run" / "best.pt", weights_only=True)["model"])
    statistics = (config["normalization"]["mean"], config["normalization"]["std"])
    x = make_preprocess(dataset, Recipe(), torch.device("cpu"), statistics=statistics).fixed(dataset.test_x[:24])
    with torch.no_grad():
        expected = model(x).argmax(1).tolist()
    assert [int(r[1]) for r in rows[1:]] == expected
    assert sum(e == int(y) for e, y in zip(expected, dataset.test_y[:24])) >= 12  # a trained LeNet, not chance
    assert main(["predict", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"),
                 str(root / "digits" / "05.png"), "-o", str(root / "one.json"), "--top-k", "2"]) == 0
    written = json.loads((root / "one.json").read_text())
    assert written["predictions"][0]["path"].endswith("05.png") and len(written["predictions"][0]["top"]) == 2
    assert written["predictions"][0]["top"][0]["class"] == str(expected[5])


def test_predict_names_an_unreadable_image_and_refuses_bad_arguments(in_repo, lenet_run, tmp_path, capsys):
    root, _, _ = lenet_run
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["predict", "specs/lenet.net", "--weights", str(root / "run" / "best.pt")]
    assert main(args + [str(root / "digits" / "00.png"), str(tmp_path / "broken.png")]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and f"skipped an unreadable image: {tmp_path / 'broken.png'}: " in \
        captured.err
    assert main(args + [str(tmp_path / "nothing.png")]) == 2
    assert f"{tmp_path / 'nothing.png'} does not exist" in capsys.readouterr().err
    assert main(args + [str(root / "digits"), "-o", str(tmp_path / "p.txt")]) == 2
    assert "name it .csv or .json" in capsys.readouterr().err


def test_eval_and_export_use_the_runs_arguments(in_repo, lenet_run, tmp_path, capsys):
    import onnx

    root, result, _ = lenet_run
    assert main(["eval", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"), "--data-dir", DATA,
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"accuracy {result['test_accuracy']:.2%}, top-5 " in captured.out
    assert f"loss {result['test_loss']:.4f}\n" in captured.out
    assert "using the run's arguments act=tanh (recorded in" in captured.err
    # --set still overrides: relu LeNet has the same shapes, so these weights load, and score differently
    assert main(["eval", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"), "--data-dir", DATA,
                 "--device", "cpu", "--set", "act=relu"]) == 0
    assert "using the run's arguments" not in capsys.readouterr().err
    out = tmp_path / "lenet.onnx"
    assert main(["export", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"), "-o", str(out)]) == 0
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["netspec_classes"]) == [str(d) for d in range(10)]
    assert metadata["netspec_arguments"] == "classes=10, act=tanh" and metadata["netspec_task"] == "classification"
    config = torch.load(root / "run" / "best.pt", weights_only=True)["config"]
    assert json.loads(metadata["netspec_normalization"]) == config["normalization"]
    assert json.loads(metadata["netspec_preprocessing"]) == config["preprocessing"]
    assert metadata["netspec_input"].startswith("[batch, 1, 28, 28] float: grey pixels / 255, minus mean")


def test_unreadable_test_images_are_named_and_not_counted(tmp_path, capsys):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("test", 5)):
        for label, name in enumerate(("dark", "light")):
            folder = tmp_path / "tree" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 60, (8, 8), dtype=torch.uint8, generator=generator) + 190 * label
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    broken = tmp_path / "tree" / "test" / "dark" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    spec = tmp_path / "tiny.net"
    spec.write_text("network Tiny(classes=2) { input x: [1, 8, 8]  flatten()  linear(classes) }")
    messages = []
    result = run(netspec.load(spec), Recipe(data="imagefolder", epochs=2, batch_size=8, lr=0.05), tmp_path / "run",
                 str(tmp_path / "tree"), "cpu", progress=False, log=messages.append,
                 options=RunOptions(data=DataOptions(workers=0)))
    assert result["test_images"] == 10  # 11 files, 10 evaluated
    assert [m for m in messages if "broken.png" in m] == [f"skipped an unreadable image: {broken}: "
                                                          "Truncated File Read"]  # Pillow's reason
    assert any(m.startswith("test: ") and "10 images" in m for m in messages)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["test_images"] == 10 and config["test_skipped"] == [f"{broken}: Truncated File Read"]
    assert main(["eval", str(spec), "--weights", str(tmp_path / "run" / "best.pt"), "--data-dir",
                 str(tmp_path / "tree"), "--device", "cpu", "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert "Tiny on tree test set (10 images): accuracy " in captured.out
    assert f"skipped an unreadable image: {broken}: " in captured.err


def test_ctrl_c_says_where_the_run_can_be_resumed(in_repo, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "netspec.cli", "train", "specs/lenet.net", "--data-dir", DATA, "--epochs", "50",
               "--batch-size", "32", "--device", "cpu", "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "last.pt").exists():
        time.sleep(0.05)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    last = err.strip().splitlines()[-1]
    epochs = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert last == (f"netspec train: interrupted; the last checkpoint is {out / 'last.pt'} (after epoch {epochs}); "
                    f"resume with: netspec train specs/lenet.net --data-dir {DATA} --epochs 50 --batch-size 32 "
                    f"--device cpu --no-progress --out {out} --resume")


def test_eval_reports_top5_per_class_accuracy_and_the_confusion_matrix(in_repo, lenet_run, tmp_path, capsys):
    root, result, _ = lenet_run
    args = ["eval", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"), "--data-dir", DATA, "--device",
            "cpu"]
    assert main(args + ["--confusion", str(tmp_path / "confusion.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    final = json.loads((root / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert out[0] == (f"LeNet on mnist test set (500 images): accuracy {result['test_accuracy']:.2%}, top-5 "
                      f"{final['test_top5_accuracy']:.2%}, loss {result['test_loss']:.4f}")
    assert out[1].split() == ["class", "accuracy", "images"] and len(out) == 2 + 1 + 10 + 1 + 1
    rows = list(csv.reader((tmp_path / "confusion.csv").open()))
    assert rows[0] == ["true \\ predicted"] + [str(d) for d in range(10)]
    counts = [[int(v) for v in row[1:]] for row in rows[1:]]
    assert sum(map(sum, counts)) == 500
    assert sum(counts[d][d] for d in range(10)) == round(result["test_accuracy"] * 500)
    # each class's line: its diagonal over its row
    zero = counts[0][0] / sum(counts[0])
    assert out[3].split() == ["0", f"{zero:.2%}", str(sum(counts[0]))]
    assert main(args + ["--confusion", str(tmp_path / "confusion.png")]) == 0
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args + ["--confusion", str(tmp_path / "confusion.txt")]) == 2
    assert "name it .png, .svg, .pdf or .csv" in capsys.readouterr().err


def onnx_top(path, images):
    """Each image's (top-1 index, softmax probabilities) from an ONNX file with embedded preprocessing, fed the
    decoded uint8 pixels as they are."""
    import onnxruntime

    from netspec.train.images import decode

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    channels = session.get_inputs()[0].shape[1]
    results = []
    for image in images:
        (logits,) = session.run(None, {"image": decode(image, channels)[None].numpy()})
        probabilities = torch.softmax(torch.from_numpy(logits[0]), 0)
        results.append((int(probabilities.argmax()), probabilities))
    return results


def test_onnx_with_embedded_preprocessing_predicts_as_netspec_predict(in_repo, lenet_run, tmp_path, capsys):
    """Raw decoded pixels into the ONNX graph give predict's top-1 and probabilities: for a run whose images were the
    input size (padded, normalised by the training set's statistics), and for one on images of mixed sizes
    (resized and centre-cropped inside the graph, any height and width)."""
    import onnx
    from PIL import Image

    from shapes import shapes_dataset

    root, _, _ = lenet_run
    assert main(["export", "specs/lenet.net", "--weights", str(root / "run" / "best.pt"), "-o",
                 str(tmp_path / "lenet.onnx"), "--embed-preprocessing"]) == 0
    graph_input = onnx.load(str(tmp_path / "lenet.onnx")).graph.input[0]
    assert graph_input.name == "image" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    tree = tmp_path / "tree"
    for split, count, seed in (("train", 300, 1), ("test", 40, 2)):
        images, shapes, _ = shapes_dataset(count, seed)
        for i, (image, kind) in enumerate(zip(images, shapes.tolist())):
            folder = tree / split / str(kind)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).resize((24 + i % 13, 20 + (i * 7) % 17)).save(
                folder / f"{i}.png")
    spec = tmp_path / "shapes.net"
    spec.write_text("network Shapes(classes=10) { input x: [3, 20, 20]  conv(8, kernel=3, padding=1) -> relu()  "
                    "maxpool(2)  conv(16, kernel=3, padding=1) -> relu()  global_avgpool()  flatten()  "
                    "linear(classes) }")
    run(netspec.load(spec), Recipe(data="imagefolder", epochs=2, batch_size=32, lr=0.01), tmp_path / "shapes",
        str(tree), "cpu", progress=False, log=lambda m: None, options=RunOptions(data=DataOptions(workers=0)))
    assert torch.load(tmp_path / "shapes" / "best.pt", weights_only=True)["config"]["preprocessing"]["resize"] == 23
    assert main(["export", str(spec), "--weights", str(tmp_path / "shapes" / "best.pt"), "-o",
                 str(tmp_path / "shapes.onnx"), "--embed-preprocessing"]) == 0
    assert "torch.export-based (embedded preprocessing resizes images of any size)" in capsys.readouterr().out
    for model, weights, folder in ((tmp_path / "lenet.onnx", root / "run" / "best.pt", root / "digits"),
                                   (tmp_path / "shapes.onnx", tmp_path / "shapes" / "best.pt", tree / "test")):
        spec_file = "specs/lenet.net" if "lenet" in model.name else str(spec)
        assert main(["predict", spec_file, "--weights", str(weights), str(folder), "--top-k", "10", "-o",
                     str(tmp_path / "p.json")]) == 0
        predicted = json.loads((tmp_path / "p.json").read_text())["predictions"]
        exported = onnx_top(model, [p["path"] for p in predicted])
        assert [top for top, _ in exported] == [p["top"][0]["index"] for p in predicted]
        for (_, probabilities), p in zip(exported, predicted):
            for entry in p["top"]:
                assert abs(float(probabilities[entry["index"]]) - entry["probability"]) < 1e-3
    capsys.readouterr()
    assert main(["export", "specs/lenet.net", "-o", str(tmp_path / "x.onnx"), "--embed-preprocessing"]) == 2
    assert "--embed-preprocessing goes with --weights" in capsys.readouterr().err
