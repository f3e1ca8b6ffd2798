"""Training on the shipped MNIST subset (tests/data/mnist: 2,000 training and 500 test images), on the CPU."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.train.datasets import DataError, load  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from netspec.train import TrainError, run  # noqa: E402

DATA = "tests/data"


def train(tmp_path, spec="specs/lenet.net", overrides=None, **recipe):
    settings = {"epochs": 2, "batch_size": 64, "lr": 0.003, **recipe}
    graph = netspec.load(spec, **(overrides or {}))
    return run(graph, Recipe(**{**graph.recipe, **settings}), tmp_path / "run", DATA, "cpu", progress=False,
               log=lambda message: None)


def lines_of(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def metrics(folder):
    """The epoch lines of a run's metrics.jsonl."""
    return [m for m in lines_of(folder) if "split" not in m]


def final_line(folder):
    """The last line of a finished run: the test of the chosen weights."""
    return lines_of(folder)[-1]


def test_the_subset_is_real_mnist(in_repo):
    d = load("mnist", DATA, (1, 28, 28), 10)
    assert (tuple(d.train_x.shape), tuple(d.test_x.shape)) == ((2000, 1, 28, 28), (500, 1, 28, 28))
    assert d.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first ten training labels
    assert d.train_y.bincount().tolist() == [191, 220, 198, 191, 214, 180, 200, 224, 172, 210]


def test_lenet_learns_and_writes_the_run_folder(in_repo, tmp_path):
    result = train(tmp_path, epochs=3)
    assert result["test_accuracy"] > 0.7  # chance is 0.1
    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]
    lines = metrics(folder)
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    assert set(lines[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                             "images_per_second", "epoch_seconds", "train_seconds", "skipped_images"}
    assert lines[2]["train_loss"] < lines[0]["train_loss"]
    config = json.loads((folder / "config.json").read_text())
    assert config["network"] == "LeNet" and config["recipe"]["epochs"] == 3
    # 10 % of the 2,000 training images held out for validation; the test set apart
    assert (config["train_images"], config["val_images"], config["test_images"]) == (1800, 200, 500)
    best = torch.load(folder / "best.pt", weights_only=True)
    chosen = max(lines, key=lambda m: m["val_accuracy"])
    assert best["val_accuracy"] == chosen["val_accuracy"] and best["epoch"] == chosen["epoch"]
    test = final_line(folder)
    assert test == {"split": "test", "weights": "best.pt", "selected": "model", "epoch": chosen["epoch"],
                    "test_loss": result["test_loss"], "test_accuracy": result["test_accuracy"], "test_images": 500,
                    "test_top5_accuracy": test["test_top5_accuracy"]}
    assert result["test_accuracy"] < test["test_top5_accuracy"] <= 1.0


def test_lenet5_trains_with_its_recipe_padding(in_repo, tmp_path):
    graph = netspec.load("specs/lenet5.net")
    assert graph.recipe["pad"] == 2  # the spec's train section pads 28x28 digits to 32x32
    result = train(tmp_path, "specs/lenet5.net", epochs=2)
    assert result["test_accuracy"] > 0.6


def test_cpu_runs_are_bit_reproducible(in_repo, tmp_path):
    a = train(tmp_path / "a", seed=5)
    b = train(tmp_path / "b", seed=5)
    assert a["train_loss"] == b["train_loss"] and a["val_accuracy"] == b["val_accuracy"]
    assert a["test_accuracy"] == b["test_accuracy"]
    wa = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_sigkill_loses_nothing(in_repo, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "netspec.cli", "train", "specs/lenet.net", "--data-dir",
               DATA, "--epochs", "6", "--batch-size", "16", "--lr", "0.002", "--device", "cpu", "--no-progress",
               "--seed", "3", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and metrics(out)):
        time.sleep(0.05)
    time.sleep(0.3)  # into the middle of a later epoch
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(metrics(out))
    assert 1 <= done_before < 6, "the run should have been killed part-way"
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    lines = metrics(out)
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4, 5, 6]
    # The same run uninterrupted ends with the same weights: the resume restored optimiser, schedule and RNG.
    straight = tmp_path / "straight"
    assert subprocess.run(command[:-1] + [str(straight)], capture_output=True).returncode == 0
    a = torch.load(out / "last.pt", weights_only=True)["model"]
    b = torch.load(straight / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["val_accuracy"] for m in metrics(straight)] == [m["val_accuracy"] for m in lines]
    assert final_line(straight)["test_accuracy"] == final_line(out)["test_accuracy"]


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    spec = tmp_path / "blowup.net"
    spec.write_text("network Blowup { input x: [1, 28, 28]  flatten() linear(10) scale(1e30) scale(1e30) }")
    with pytest.raises(TrainError, match=r"the loss became (nan|inf) at epoch 1, step 1; stopping"):
        run(netspec.load(spec), Recipe(epochs=2), tmp_path / "run", "tests/data", "cpu", progress=False,
            log=lambda m: None)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_inputs_are_clear_errors(in_repo, tmp_path, capsys):
    assert main(["train", "specs/lenet5.net", "--data-dir", DATA, "--pad", "0", "--out", str(tmp_path / "a")]) == 1
    assert "LeNet5 takes input [1, 32, 32] but mnist images are [1, 28, 28]; pad them with --pad 2" in \
        capsys.readouterr().err
    assert main(["train", "specs/resnet18.net", "--data-dir", DATA, "--out", str(tmp_path / "b")]) == 1
    assert "change the spec's input to [1, 224, 224] (1 channel, not 3) and pad the images with --pad 98" in \
        capsys.readouterr().err
    assert main(["train", "specs/lenet.net", "--data", "cifar10", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"cifar10 not found; looked in {tmp_path}/cifar-10-batches-py" in err and "--download" in err
    with pytest.raises(SystemExit) as usage:  # argparse: not a dataset netspec knows
        main(["train", "specs/lenet.net", "--data", "imagenet"])
    assert usage.value.code == 2
    assert main(["train", "specs/lenet.net", "--data-dir", DATA, "--out", "/proc/netspec-run"]) == 1
    assert "cannot write the run folder /proc/netspec-run" in capsys.readouterr().err


def test_resume_refuses_a_damaged_checkpoint_and_changes_nothing(in_repo, tmp_path, capsys):
    train(tmp_path, epochs=1)
    folder = tmp_path / "run"
    (folder / "last.pt").write_bytes(b"not a checkpoint")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["train", "specs/lenet.net", "--data-dir", DATA, "--epochs", "1",
                 "--out", str(folder), "--resume"]) == 1
    assert f"{folder / 'last.pt'} is truncated or not a PyTorch checkpoint; nothing was changed" in \
        capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert main(["train", "specs/lenet.net", "--data-dir", DATA, "--out", str(folder)]) == 1
    assert "holds a run checkpointed after epoch 1; pass --resume to continue it, --overwrite to start it again" \
        in capsys.readouterr().err


def test_eval_reports_the_saved_weights_accuracy(in_repo, tmp_path, capsys):
    result = train(tmp_path, epochs=1)
    assert main(["eval", "specs/lenet.net", "--weights", str(tmp_path / "run" / "best.pt"),
                 "--data-dir", DATA]) == 0
    assert f"LeNet on mnist test set (500 images): accuracy {result['test_accuracy']:.2%}" in capsys.readouterr().out


def test_datasets_refuse_files_that_are_not_theirs(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\0\0\x08\x03" + (10).to_bytes(4, "big"))
    with pytest.raises(DataError, match="is truncated"):
        load("mnist", str(tmp_path), (1, 28, 28), 10)
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    import pickle

    evil = pickle.dumps(os.system)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / name).write_bytes(evil)
    with pytest.raises(DataError, match="refusing to load"):
        load("cifar10", str(tmp_path), (3, 32, 32), 10)


def test_synthetic_data_has_the_networks_shape():
    d = load("synthetic", None, (3, 32, 32), 4)
    assert tuple(d.train_x.shape) == (4096, 3, 32, 32) and tuple(d.test_x.shape) == (1024, 3, 32, 32)
    assert sorted(d.train_y.unique().tolist()) == [0, 1, 2, 3]


def test_capsnet_learns_with_the_margin_loss(in_repo, tmp_path):
    """A narrow CapsNet (8 conv channels, 2 primary maps) with its recipe's margin loss, on the subset."""
    from netspec.train import criterion

    lengths = torch.tensor([[0.95, 0.05, 0.5]])
    recipe = Recipe(loss="margin")
    # the true class above m+ and the others below m- cost nothing; 0.5 on a wrong class costs 0.5 * 0.4^2
    assert float(criterion(recipe, lengths, torch.tensor([0]))) == pytest.approx(0.5 * 0.4 ** 2)
    assert float(criterion(recipe, lengths, torch.tensor([1]))) == pytest.approx(
        0.85 ** 2 + 0.5 * 0.85 ** 2 + 0.5 * 0.4 ** 2)
    result = train(tmp_path, "specs/capsnet.net", {"channels": 8, "maps": 2, "decoder": False}, epochs=2, lr=0.003,
                   augment="none")
    assert netspec.load("specs/capsnet.net").recipe["loss"] == "margin"
    assert result["test_accuracy"] > 0.6  # chance is 0.1
    losses = [m["train_loss"] for m in metrics(tmp_path / "run")]
    assert losses[-1] < losses[0] / 2


def test_reconstruction_loss_is_the_weighted_sum_of_squared_errors_per_sample():
    from netspec.train import reconstruction_loss

    x = torch.zeros(2, 1, 2, 2)
    reconstruction = torch.stack([torch.full((4,), 0.5), torch.ones(4)])  # flat: shapes may differ, sizes not
    # per sample: 4 * 0.25 = 1 and 4 * 1 = 4; their mean 2.5, times the paper's weight 0.0005
    assert float(reconstruction_loss(Recipe(), (reconstruction,), x)) == pytest.approx(0.0005 * 2.5)
    assert float(reconstruction_loss(Recipe(reconstruction_weight=0.1), (reconstruction,), x, "sum")) == \
        pytest.approx(0.1 * 5.0)
    assert reconstruction_loss(Recipe(), (), x) == 0.0


def test_training_masks_by_the_label_and_inference_by_the_longest_capsule(in_repo):
    from netspec.train import forward

    graph = netspec.load("specs/capsnet.net", channels=8, maps=2)
    model = to_module(graph, seed=0).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        scores, (predicted,) = forward(model, x)
        wrong = (scores.argmax(1) + 1) % 10
        same_scores, (told,) = forward(model, x, wrong)
        _, (told_right,) = forward(model, x, scores.argmax(1))
    assert torch.equal(scores, same_scores)  # the label changes what is reconstructed, not the prediction
    assert torch.equal(told_right, predicted) and not torch.equal(told, predicted)
    assert told.shape == (4, 1, 28, 28)


def test_capsnet_decoder_learns_to_reconstruct(in_repo, tmp_path, monkeypatch):
    """Margin loss plus 0.0005 x the decoder's squared error (the spec's recipe), on a narrow CapsNet."""
    from netspec.backends.torch.layers import CapsuleMask
    from netspec.train import forward, make_preprocess

    graph = netspec.load("specs/capsnet.net", channels=8, maps=2)
    assert graph.recipe["reconstruction_weight"] == 0.0005 and "normalize" not in graph.recipe
    masked = set()
    original = CapsuleMask.forward

    def spy(self, capsules, labels=None):
        masked.add((self.training, labels is not None))
        return original(self, capsules, labels)

    monkeypatch.setattr(CapsuleMask, "forward", spy)
    result = train(tmp_path, "specs/capsnet.net", {"channels": 8, "maps": 2}, epochs=2, lr=0.003, augment="none")
    assert result["test_accuracy"] > 0.6
    assert masked == {(True, True), (False, False)}  # by the label while training, by the prediction in tests
    dataset = load("mnist", DATA, (1, 28, 28), 10)
    preprocess = make_preprocess(dataset, Recipe(), torch.device("cpu"))
    x = preprocess.fixed(dataset.test_x[:200])  # normalised, as the network was trained
    pixels = dataset.test_x[:200].float() / 255
    torch.testing.assert_close(preprocess.pixels(x), pixels)  # the target: the normalisation undone

    def squared_error(model):
        with torch.no_grad():
            _, (reconstruction,) = forward(model.eval(), x)
        return float(((reconstruction - pixels) ** 2).sum() / len(x))

    untrained = squared_error(to_module(graph, seed=0))
    trained_model = to_module(graph)
    trained_model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"])
    assert squared_error(trained_model) < 0.5 * untrained  # an untrained sigmoid decoder outputs about 0.5


def test_eval_loads_each_ensemble_member_from_its_own_weights(in_repo, tmp_path, capsys):
    for name, spec in (("vgg", "specs/vgg_mnist.net"), ("capsnet", "specs/capsnet.net")):
        torch.save(netspec.compile(spec, seed=0).state_dict(), tmp_path / f"{name}.pt")
    args = ["eval", "specs/ensemble_vgg_capsnet.net", "--data-dir", DATA, "--device", "cpu",
            "--weights", f"vgg={tmp_path / 'vgg.pt'}", "--weights", f"capsnet={tmp_path / 'capsnet.pt'}"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("VggCapsNet on mnist test set (500 images): accuracy ")
    args[-1] = f"capsule={tmp_path / 'capsnet.pt'}"
    assert main(args) == 1
    assert "the network has no member 'capsule'; its top-level parts are vgg, capsnet" in capsys.readouterr().err
