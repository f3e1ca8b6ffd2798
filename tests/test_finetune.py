"""Fine-tuning and extending runs (issue 26): --init from a saved torchvision-layout state_dict, a .safetensors
file, torchvision's weights enum (through its cache) or another run's best.pt; the head re-initialised and named;
freezing and the head's learning rate; `--resume --epochs N`.

The transfer-learning figures (CPU, one thread, seed 0; printed with `pytest -s`): a 14,714-parameter CNN pretrained
for 4 epochs on 3,000 generated shapes in 20 classes (shape x size), then trained 4 epochs on 200 images of a new
10-class task (the shape alone), the same recipe, seed and epochs (Adam, lr 0.003, the head 0.02, no schedule): from
the pretrained weights 82.0 % test accuracy, from scratch 34.5 % (200 test images)."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import DataOptions, RunOptions, TrainError, run  # noqa: E402
from netspec.train.finetune import FineTune, head_layers, load_init  # noqa: E402

from shapes import SHAPES, shapes_dataset, write_image_folder  # noqa: E402

DATA = "tests/data"
SMALL = """network Small(classes=20) {
  input x: [3, 24, 24]
  conv1: conv(16, kernel=3, padding=1, bias=false)
  bn1: batchnorm()
  relu()
  maxpool(2)
  conv2: conv(32, kernel=3, padding=1, bias=false)
  bn2: batchnorm()
  relu()
  maxpool(2)
  conv3: conv(32, kernel=3, padding=1)
  relu()
  avgpool: adaptive_avgpool(1)
  flatten()
  fc: linear(classes)
}
"""
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: on a machine shared with other jobs, two threads of small convolutions wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Small pretrained on 3,000 shapes in 20 classes (shape x size), saved as a plain state_dict (torchvision's
    layout: keys as torchvision's modules name them, no wrapper), and a 10-class image folder of the shapes alone."""
    root = tmp_path_factory.mktemp("finetune")
    spec = root / "small.net"
    spec.write_text(SMALL)
    images, shapes, large = shapes_dataset(3000, seed=1)
    x = (images.float() / 255 - IMAGENET[0]) / IMAGENET[1]  # normalised as an image folder run normalises
    y = shapes * 2 + large
    model = netspec.compile(str(spec), seed=0)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    torch.save(model.state_dict(), root / "pretrained.pth")
    write_image_folder(root / "target", {"train": shapes_dataset(200, seed=2), "test": shapes_dataset(200, seed=3)})
    return root


def fit(root, out, init=None, **settings):
    recipe = Recipe(data="imagefolder", epochs=4, batch_size=16, lr=0.003, schedule="none", validation=0.0,
                    **settings)
    return run(netspec.load(str(root / "small.net"), classes=10), recipe, root / out, str(root / "target"), "cpu",
               progress=False, log=lambda m: None,
               options=RunOptions(data=DataOptions(workers=0), finetune=FineTune(init=init, lr_head=0.02)))


def test_transfer_learning_beats_training_from_scratch(pretrained, capsys):
    scratch = fit(pretrained, "scratch")
    tuned = fit(pretrained, "tuned", init=str(pretrained / "pretrained.pth"))
    print(f"\n10 shapes, 200 training images, 4 epochs: from scratch {scratch['test_accuracy']:.1%}, fine-tuned "
          f"{tuned['test_accuracy']:.1%}")
    assert tuned["test_accuracy"] >= 0.7 and scratch["test_accuracy"] <= 0.5  # measured: 82.0 % and 34.5 %
    config = json.loads((pretrained / "tuned" / "config.json").read_text())
    assert config["finetune"] == {"init": str(pretrained / "pretrained.pth"), "freeze": [], "freeze_backbone": False,
                                  "lr_head": 0.02, "backbone_lr_factor": None}
    assert config["init"]["reinitialised"] == [{"key": "fc.weight", "shape": [10, 32], "file_shape": [20, 32]},
                                               {"key": "fc.bias", "shape": [10], "file_shape": [20]}]
    lines = [json.loads(line) for line in (pretrained / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert (lines[0]["lr"], lines[0]["lr_head"]) == (0.003, 0.02)
    # the spec says classes=20; eval takes the run's classes=10 (and its data settings) from best.pt
    capsys.readouterr()
    assert main(["eval", str(pretrained / "small.net"), "--weights", str(pretrained / "tuned" / "best.pt"),
                 "--data-dir", str(pretrained / "target"), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert "using the run's arguments classes=10 (recorded in" in captured.err
    assert captured.out.startswith(f"Small on target test set (200 images): accuracy {tuned['test_accuracy']:.2%}, "
                                   "top-5 ")
    assert "circle" in captured.out  # per-class accuracy, by the folder's class names
    # predict names the folder's classes
    assert main(["predict", str(pretrained / "small.net"), "--weights", str(pretrained / "tuned" / "best.pt"),
                 str(pretrained / "target" / "test" / "square"), "--top-k", "1"]) == 0
    answers = [line.rsplit(": ", 1)[1].split()[0] for line in capsys.readouterr().out.splitlines()]
    assert len(answers) == len(list((pretrained / "target" / "test" / "square").iterdir()))
    assert set(answers) <= set(SHAPES) and answers.count("square") >= len(answers) // 2


def test_init_loads_by_key_and_reinitialises_a_head_of_another_shape(pretrained, tmp_path):
    from safetensors.torch import save_file

    graph = netspec.load(str(pretrained / "small.net"), classes=10)
    assert head_layers(graph) == ["fc"]
    saved = torch.load(pretrained / "pretrained.pth", weights_only=True)
    fresh = netspec.compile(str(pretrained / "small.net"), seed=0, classes=10).state_dict()
    save_file(saved, tmp_path / "pretrained.safetensors")
    for source in (pretrained / "pretrained.pth", tmp_path / "pretrained.safetensors"):
        model = netspec.compile(str(pretrained / "small.net"), seed=0, classes=10)
        report = load_init(model, graph, str(source))
        assert report.line() == (f"init: 14 of 16 tensors (14,384 parameters) from {source}; re-initialised (the "
                                 "file's shape differs): fc.weight [10, 32] (the file's [20, 32]), fc.bias [10] (the "
                                 "file's [20])")
        state = model.state_dict()
        assert all(torch.equal(state[k], saved[k]) for k in saved if not k.startswith("fc."))
        assert torch.equal(state["fc.weight"], fresh["fc.weight"])  # the seed's initial head
    # strictly: a missing entry, an entry the network lacks, a shape that differs outside the head
    model = netspec.compile(str(pretrained / "small.net"), seed=0, classes=10)
    for name, change, message in (
            ("missing", lambda s: s.pop("conv2.weight"), "has no 'conv2.weight' (1 of the network's 16 entries "
                                                         "missing)"),
            ("extra", lambda s: s.update({"aux.weight": torch.zeros(1)}), "has entries the network does not: "
                                                                           "'aux.weight'"),
            ("shape", lambda s: s.update({"conv3.bias": torch.zeros(7)}), "'conv3.bias' has shape [7] in")):
        state = dict(saved)
        change(state)
        torch.save(state, tmp_path / f"{name}.pt")
        with pytest.raises(TrainError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                           .replace(")", r"\)")):
            load_init(model, graph, str(tmp_path / f"{name}.pt"))
    with pytest.raises(TrainError, match=r"only the head \(fc\) may differ, and is re-initialised"):
        load_init(model, graph, str(tmp_path / "shape.pt"))


def test_init_from_torchvision_weights_goes_through_torchvisions_cache(in_repo, tmp_path, monkeypatch):
    """torchvision:ENUM is fetched by torchvision's loader; a file already in torch's cache is what it loads (no
    network here: the test puts a squeezenet1_1 state_dict, torchvision's own module's, where the download goes)."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1().state_dict()
    torch.save(reference, cache / Path(weights.url).name)
    graph = netspec.load("specs/torchvision/squeezenet.net:squeezenet1_1", classes=10)
    model = netspec.compile("specs/torchvision/squeezenet.net:squeezenet1_1", seed=0, classes=10)
    report = load_init(model, graph, "torchvision:SqueezeNet1_1_Weights.IMAGENET1K_V1")
    assert (report.loaded, report.total, [key for key, _, _ in report.reinitialised]) == (
        50, 52, ["classifier.1.weight", "classifier.1.bias"])
    state = model.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference if not k.startswith("classifier.1."))
    with pytest.raises(TrainError, match=r"--init torchvision:ResNet18_Weights.NOPE: not torchvision weights"):
        load_init(model, graph, "torchvision:ResNet18_Weights.NOPE")


def lenet(folder, *args):
    return ["train", "specs/lenet.net", "--data-dir", DATA, "--batch-size", "64", "--device", "cpu",
            "--no-progress", "--out", str(folder), *args]


def test_freezing_keeps_weights_and_batch_norm_statistics(pretrained, capsys):
    messages = []
    graph = netspec.load(str(pretrained / "small.net"), classes=10)
    run(graph, Recipe(data="imagefolder", epochs=1, batch_size=16, validation=0.0), pretrained / "frozen",
        str(pretrained / "target"), "cpu", progress=False, log=messages.append,
        options=RunOptions(data=DataOptions(workers=0), finetune=FineTune(
            init=str(pretrained / "pretrained.pth"), freeze=("conv1", "bn1", "conv2.*"))))
    assert "frozen: 5,072 of 14,714 parameters (--freeze conv1 bn1 conv2.*); 1 batch norm keeps its running " \
           "statistics" in messages, messages
    saved = torch.load(pretrained / "pretrained.pth", weights_only=True)
    trained = torch.load(pretrained / "frozen" / "last.pt", weights_only=True)["model"]
    for key in ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "conv2.weight"):
        assert torch.equal(trained[key], saved[key]), key
    assert not torch.equal(trained["conv3.weight"], saved["conv3.weight"])
    assert not torch.equal(trained["bn2.running_mean"], saved["bn2.running_mean"])  # bn2 was not frozen
    assert main(["train", str(pretrained / "small.net"), "--set", "classes=10", "--data", "imagefolder",
                 "--data-dir", str(pretrained / "target"), "--freeze", "layer9", "--out",
                 str(pretrained / "nothing")]) == 1
    assert "--freeze layer9: no parameter of Small matches it; its top-level layers are conv1, bn1, conv2, bn2, " \
           "conv3, fc" in capsys.readouterr().err


def test_a_run_forks_from_another_runs_best_and_resume_keeps_the_fine_tuning(in_repo, tmp_path, capsys):
    assert main(lenet(tmp_path / "a", "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(lenet(tmp_path / "b", "--epochs", "1", "--init", str(tmp_path / "a" / "best.pt"))) == 0
    out = capsys.readouterr().out
    assert f"init: 10 of 10 tensors (61,706 parameters) from {tmp_path / 'a' / 'best.pt'} (LeNet, epoch 1)" in out
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["init"]["run"] == {"network": "LeNet", "epoch": 1} and config["init"]["reinitialised"] == []
    assert main(lenet(tmp_path / "b", "--epochs", "2", "--resume")) == 1  # without --init: another setup
    assert "--resume continues a run as it was set up, but init " in capsys.readouterr().err


def test_extending_a_run_equals_training_it_for_all_its_epochs(in_repo, tmp_path, capsys):
    """schedule "step" (and "none"): the learning rate at a step does not depend on the number of epochs, so two
    epochs extended to three are the three-epoch run, weight for weight."""
    common = ["--optimizer", "sgd", "--lr", "0.05", "--schedule", "step", "--step-size", "1", "--gamma", "0.5",
              "--seed", "4"]
    assert main(lenet(tmp_path / "straight", "--epochs", "3", *common)) == 0
    assert main(lenet(tmp_path / "extended", "--epochs", "2", *common)) == 0
    capsys.readouterr()
    assert main(lenet(tmp_path / "extended", "--epochs", "2", "--resume", *common)) == 1
    assert (f"the run in {tmp_path / 'extended'} has finished its 2 epochs; pass --epochs N (more than 2) with "
            "--resume to extend it") in capsys.readouterr().err
    assert main(lenet(tmp_path / "extended", "--epochs", "3", "--resume", *common)) == 0
    assert "extending the run from 2 to 3 epochs: the step schedule is planned for 3 epochs and continues from " \
           "optimiser step 58" in capsys.readouterr().out
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "extended" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    lines = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
             for run in ("straight", "extended")]
    assert [(m.get("val_accuracy"), m.get("lr")) for m in lines[0]] == [(m.get("val_accuracy"), m.get("lr"))
                                                                       for m in lines[1]]
    config = json.loads((tmp_path / "extended" / "config.json").read_text())
    assert config["recipe"]["epochs"] == 3 and config["extensions"] == [{"after_epoch": 2, "epochs_before": 2,
                                                                         "epochs": 3}]
    assert main(lenet(tmp_path / "extended", "--epochs", "2", "--resume", *common)) == 1
    assert "--epochs 2: the run in" in capsys.readouterr().err


def test_extending_a_one_cycle_run_follows_the_longer_curve(in_repo, tmp_path, capsys):
    """one-cycle's rate at a step depends on the total: the extension goes on along the curve planned for the
    new total, from the step reached."""
    from netspec.train.optim import make_optimiser

    assert main(lenet(tmp_path / "run", "--epochs", "1", "--lr", "0.003")) == 0
    assert main(lenet(tmp_path / "run", "--epochs", "2", "--lr", "0.003", "--resume")) == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    model = netspec.compile("specs/lenet.net")
    _, schedule = make_optimiser(Recipe(**{**netspec.load("specs/lenet.net").recipe, "epochs": 2, "lr": 0.003,
                                           "batch_size": 64}), model, 29)
    for _ in range(58):
        schedule.optimizer.step()
        schedule.step()
    assert lines[1]["lr"] == pytest.approx(schedule.get_last_lr()[0], rel=1e-9)


def test_the_spec_train_section_sets_the_learning_rate_split_and_flags_override_it(tmp_path):
    from netspec.cli.arguments import recipe_from_options
    from netspec.cli.main import build_parser

    spec = tmp_path / "tuned.net"
    spec.write_text("network Tuned {\n  input x: [1, 8, 8]\n  flatten() -> fc: linear(3)\n}\n"
                    "train Tuned {\n  lr_head = 0.02\n  backbone_lr_factor = 0.1\n  freeze_backbone = true\n}\n")
    graph = netspec.load(spec)
    recipe = recipe_from_options(build_parser().parse_args(["train", str(spec)]), graph)
    assert (recipe.lr_head, recipe.backbone_lr_factor, recipe.freeze_backbone) == (0.02, 0.1, True)
    flags = build_parser().parse_args(["train", str(spec), "--lr-head", "0.5", "--no-freeze-backbone"])
    recipe = recipe_from_options(flags, graph)
    assert (recipe.lr_head, recipe.backbone_lr_factor, recipe.freeze_backbone) == (0.5, 0.1, False)
    spec.write_text(spec.read_text().replace("lr_head = 0.02", "lr_head = 0"))
    with pytest.raises(netspec.NetspecError) as caught:
        netspec.load(spec)
    [d] = caught.value.diagnostics
    assert (d.code, d.span.line) == ("NS203", 6) and d.message.startswith("invalid training setting 'lr_head'")
