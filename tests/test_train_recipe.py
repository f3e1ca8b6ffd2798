"""Training features of issues 17 and 18 on the shipped MNIST subset, on the CPU: validation kept apart from the
test set, the recipe's features (EMA, accumulation, clipping, mixed precision, mixup), per-image crops, the
run folder's life cycle, progress lines, smoke runs and input mismatches."""

import io
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import DataOptions, RunOptions, TrainError, run  # noqa: E402
from netspec.train.progress import Lines, duration  # noqa: E402
from netspec.train.splits import hold_out  # noqa: E402
from netspec.train.transforms import random_crops  # noqa: E402

DATA = "tests/data"
QUICK = {"epochs": 1, "batch_size": 64, "lr": 0.003}


def train(folder, spec="specs/lenet.net", options=None, progress=False, log=None, **recipe):
    graph = netspec.load(spec)
    return run(graph, Recipe(**{**graph.recipe, **QUICK, **recipe}), folder, DATA, "cpu", progress=progress,
               log=log or (lambda message: None), options=options)


def lines_of(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_validation_is_held_out_of_the_training_set_with_a_fixed_seed():
    train_index, val_index = hold_out(2000, 0.1)
    assert len(train_index) == 1800 and len(val_index) == 200
    assert set(train_index.tolist()).isdisjoint(val_index.tolist())
    assert sorted(train_index.tolist() + val_index.tolist()) == list(range(2000))
    assert torch.equal(hold_out(2000, 0.1)[1], val_index)  # the same draw, whatever the run's seed
    assert len(hold_out(2000, 0.0)[1]) == 0


def test_best_is_chosen_on_validation_and_the_test_set_is_evaluated_once(in_repo, tmp_path, capsys):
    result = train(tmp_path / "run", epochs=3, seed=1)
    lines = lines_of(tmp_path / "run")
    epochs, test = lines[:-1], lines[-1]
    assert all("test_accuracy" not in m for m in epochs)  # the test set is not looked at while training
    chosen = max(epochs, key=lambda m: m["val_accuracy"])
    assert test["epoch"] == chosen["epoch"] == result["best_epoch"]
    assert main(["eval", "specs/lenet.net", "--weights", str(tmp_path / "run" / "best.pt"), "--data-dir", DATA,
                 "--device", "cpu"]) == 0
    assert f"accuracy {test['test_accuracy']:.2%}" in capsys.readouterr().out


def test_without_validation_best_is_the_last_epoch(in_repo, tmp_path):
    result = train(tmp_path / "run", epochs=2, validation=0.0)
    lines = lines_of(tmp_path / "run")
    assert "val_accuracy" not in lines[0] and lines[-1]["epoch"] == 2 and result["best_val_accuracy"] is None
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["train_images"], config["val_images"]) == (2000, 0)


def test_a_run_with_ema_checkpoints_both_weights(in_repo, tmp_path):
    train(tmp_path / "run", epochs=2, ema=True, ema_steps=2, ema_decay=0.99)
    folder = tmp_path / "run"
    last = torch.load(folder / "last.pt", weights_only=True)
    best = torch.load(folder / "best.pt", weights_only=True)
    assert set(last["model_ema"]) == set(last["model"])  # the EMA's state_dict has the model's keys
    assert set(best) >= {"model", "model_ema", "model_trained", "selected"}
    epochs = lines_of(folder)[:-1]
    assert all({"ema_val_loss", "ema_val_accuracy"} <= set(m) for m in epochs)
    chosen = epochs[best["epoch"] - 1]
    expected = "ema" if chosen["ema_val_accuracy"] > chosen["val_accuracy"] else "model"
    assert best["selected"] == expected == lines_of(folder)[-1]["selected"]
    source = best["model_ema"] if expected == "ema" else best["model_trained"]
    assert all(torch.equal(best["model"][k], source[k]) for k in source)
    assert not all(torch.equal(last["model_ema"][k], last["model"][k]) for k in last["model"])


def test_gradient_accumulation_of_two_half_batches_equals_one_whole_batch(in_repo, tmp_path):
    """LeNet has no batch norm or dropout, so two accumulated halves make exactly the whole batch's gradient."""
    settings = {"optimizer": "sgd", "schedule": "none", "lr": 0.05, "seed": 2}
    train(tmp_path / "whole", batch_size=64, options=RunOptions(max_steps=12), **settings)
    train(tmp_path / "halves", batch_size=32, grad_accumulation=2, options=RunOptions(max_steps=24), **settings)
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    halves = torch.load(tmp_path / "halves" / "last.pt", weights_only=True)["model"]
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-5)


def test_clipping_bounds_each_step(in_repo, tmp_path):
    settings = {"optimizer": "sgd", "momentum": 0.0, "schedule": "none", "lr": 1.0}
    options = RunOptions(max_steps=1)
    train(tmp_path / "run", options=options, clip_grad_norm=0.001, **settings)
    after = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    before = netspec.compile("specs/lenet.net", seed=0).state_dict()
    moved = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    assert 0.0009 < float(moved) <= 0.001 + 1e-6  # one SGD step of lr 1 on a gradient clipped to norm 0.001


def test_fp16_trains_with_a_gradient_scaler(in_repo, tmp_path):
    result = train(tmp_path / "run", epochs=2, precision="fp16")
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["scaler"]["scale"] > 0 and result["val_accuracy"] > 0.5  # chance is 0.1


def test_mixup_and_cutmix_mix_images_and_labels(in_repo, tmp_path):
    from netspec.train.loop import make_mixing

    mixing = make_mixing(Recipe(mixup_alpha=0.2, cutmix_alpha=1.0), 10)
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    mixed, target = mixing(x, y)
    assert mixed.shape == x.shape and target.shape == (8, 10)
    torch.testing.assert_close(target.sum(1), torch.ones(8))
    assert (target > 0).sum(1).max() == 2  # each image is two images' mixture
    assert make_mixing(Recipe(), 10) is None
    result = train(tmp_path / "run", epochs=2, mixup_alpha=0.2, cutmix_alpha=1.0)
    assert result["val_accuracy"] > 0.5


def test_each_image_is_cropped_at_its_own_offset():
    x = torch.arange(64 * 25, dtype=torch.float).reshape(64, 1, 5, 5)
    crops = random_crops(x, 2, torch.Generator().manual_seed(0), fill=-1.0)
    offsets = set()
    for image, crop in zip(x, crops):
        padded = torch.nn.functional.pad(image + 1, (2,) * 4) - 1
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[:, dy:dy + 5, dx:dx + 5], crop)]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 10  # not one offset for the whole batch


def test_warmup_reaches_the_learning_rate_after_its_epochs(in_repo, tmp_path):
    train(tmp_path / "run", epochs=2, schedule="none", warmup_epochs=1, warmup_decay=0.1, lr=0.002)
    lines = lines_of(tmp_path / "run")
    assert lines[0]["lr"] == pytest.approx(0.002) and lines[1]["lr"] == pytest.approx(0.002)


def test_a_refused_run_leaves_nothing_behind(in_repo, tmp_path, capsys):
    out = tmp_path / "deep" / "run"
    assert main(["train", "specs/lenet5.net", "--data-dir", DATA, "--pad", "0", "--out", str(out)]) == 1
    assert "pad them with --pad 2" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


def test_a_run_that_never_checkpointed_can_be_started_again(in_repo, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # killed before its first checkpoint
    (folder / "metrics.jsonl").write_text("")
    messages = []
    train(folder, log=messages.append)
    assert f"{folder} holds a run that never checkpointed: starting it again" in messages
    assert [m["epoch"] for m in lines_of(folder)] == [1, 1]  # the epoch, then the test of best.pt


def test_resume_of_a_run_that_never_checkpointed_starts_it(in_repo, tmp_path):
    folder = tmp_path / "run"
    messages = []
    train(folder, options=RunOptions(resume=True), log=messages.append)
    assert any("nothing to resume" in m and "starts from the beginning" in m for m in messages)
    assert (folder / "last.pt").exists()


def test_a_checkpointed_run_is_resumed_or_overwritten_never_replaced_silently(in_repo, tmp_path, capsys):
    folder = tmp_path / "run"
    args = ["train", "specs/lenet.net", "--data-dir", DATA, "--epochs", "1", "--batch-size", "64", "--device",
            "cpu", "--no-progress", "--out", str(folder)]
    assert main(args) == 0
    first = (folder / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(args) == 1
    assert (f"{folder} holds a run checkpointed after epoch 1; pass --resume to continue it, --overwrite to start "
            "it again, or --out another folder") in capsys.readouterr().err
    assert main(args + ["--resume", "--overwrite"]) == 1
    assert "pass one" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--seed", "7"]) == 0
    assert (folder / "last.pt").read_bytes() != first
    assert json.loads((folder / "config.json").read_text())["recipe"]["seed"] == 7


def test_progress_lines_come_at_the_first_step_then_every_interval_with_an_eta():
    clock = iter([0.0,  # epoch starts
                  1.0, 2.0, 12.0, 13.0]).__next__
    out = io.StringIO()
    lines = Lines(epochs=2, every=10.0, stream=out, clock=clock)
    lines.epoch_started(1, 4)
    for _ in range(4):
        lines.step(0.5, 0.75, 100.0)
    printed = out.getvalue().splitlines()
    # step 1 (first), step 3 (10 s after the last line), step 4 (the epoch's last); step 2 is too soon
    assert [line.split(":")[0] for line in printed] == ["epoch 1/2 step 1/4", "epoch 1/2 step 3/4",
                                                       "epoch 1/2 step 4/4"]
    # after step 1 at 1 s: 3 steps of 1 s left in the epoch, then one more epoch at 4 s an epoch
    assert printed[0] == "epoch 1/2 step 1/4: loss 0.5000 acc 75.00% | 100 img/s | ETA 7s"
    assert printed[2].endswith("ETA 13s")  # the epoch took 13 s; one more like it
    assert [duration(s) for s in (42, 185, 3720)] == ["42s", "3m05s", "1h02m"]


def test_training_off_a_terminal_prints_a_startup_line_and_progress_lines(in_repo, tmp_path):
    done = subprocess.run([sys.executable, "-m", "netspec.cli", "train", "specs/lenet.net", "--data-dir", DATA,
                           "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--log-every", "0",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    startup = done.stdout.splitlines()[0]
    assert startup.startswith("LeNet: 61,706 parameters | cpu, batch 64 | mnist in memory: 1,800 train, 200 "
                              "validation (10% held out of the training set, seed 0), 500 test | run folder ")
    assert " | ready in " in startup
    steps = [line for line in done.stderr.splitlines() if line.startswith("epoch 1/1 step ")]
    assert len(steps) == 29 and steps[-1].startswith("epoch 1/1 step 29/29: loss ")  # ceil(1,800 / 64)


def test_a_smoke_run_takes_a_few_steps_and_a_few_evaluation_images(in_repo, tmp_path):
    steps = []

    class Count:
        per_step = True

        def epoch_started(self, epoch, total):
            steps.append(total)

        def step(self, loss, accuracy, speed):
            pass

        def epoch_ended(self):
            pass

        def close(self):
            pass

    options = RunOptions(max_steps=3, data=DataOptions(limit_eval=50))
    result = train(tmp_path / "run", epochs=2, options=options, progress=Count())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert steps == [3, 3] and (config["val_images"], config["test_images"], config["max_steps"]) == (50, 50, 3)
    assert result["test_images"] == 50


def test_an_input_mismatch_gets_the_whole_fix_in_one_message(in_repo, tmp_path):
    spec = tmp_path / "rgb.net"
    spec.write_text("network Rgb { input x: [3, 32, 32]  conv(6, kernel=5) -> relu()  flatten()  linear(10) }")
    with pytest.raises(TrainError) as refused:
        run(netspec.load(spec), Recipe(epochs=1), tmp_path / "run", DATA, "cpu", progress=False, log=print)
    assert str(refused.value) == (
        "Rgb takes input [3, 32, 32] but mnist images are [1, 28, 28]; change the spec's input to [1, 32, 32] "
        "(1 channel, not 3) and pad the images with --pad 2 (or `pad = 2` in the spec's train section); or pass "
        "--data-mode stream, which converts channels and resizes")
    # the streamed path does that conversion: grey digits repeated into 3 channels, 28 resized to 32
    result = run(netspec.load(spec), Recipe(epochs=1, batch_size=64), tmp_path / "run", DATA, "cpu", progress=False,
                 log=lambda m: None, options=RunOptions(data=DataOptions(mode="stream", workers=0)))
    assert result["test_images"] == 500


def test_training_at_another_size_is_checked_before_the_first_step(in_repo, tmp_path):
    with pytest.raises(TrainError, match=r"train_crop_size = 20: LeNet takes \[1, 28, 28\] and cannot take "
                                         r"\[1, 20, 20\] \(.*\); train at its input size"):
        train(tmp_path / "run", train_crop_size=20)
    assert not (tmp_path / "run").exists()


def test_resnet50_carries_torchvisions_published_recipe(in_repo):
    recipe = Recipe(**netspec.load("specs/resnet50.net").recipe)
    assert (recipe.optimizer, recipe.lr, recipe.batch_size, recipe.epochs) == ("sgd", 0.5, 1024, 600)
    assert (recipe.schedule, recipe.warmup_epochs, recipe.warmup_method) == ("cosine", 5, "linear")
    assert (recipe.weight_decay, recipe.norm_weight_decay, recipe.label_smoothing) == (0.00002, 0.0, 0.1)
    assert (recipe.mixup_alpha, recipe.cutmix_alpha, recipe.auto_augment, recipe.random_erase) == (
        0.2, 1.0, "ta_wide", 0.1)
    assert (recipe.train_crop_size, recipe.val_resize_size, recipe.ema, recipe.ema_steps, recipe.ema_decay) == (
        176, 232, True, 32, 0.99998)


def image_tree(root, sizes=((20, 60), (20, 60))):
    """train/ and test/ with two classes of mixed-size JPEG and PNG images (grey, RGB and RGBA), one corrupt."""
    from PIL import Image
    from torchvision.io import encode_jpeg, write_file

    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 30), ("test", 10)):
        for label, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = (int(torch.randint(*sizes[k], (), generator=generator)) for k in range(2))
                channels = (1, 3, 4)[i % 3]
                image = torch.randint(0, 100, (channels, h, w), dtype=torch.uint8, generator=generator) + 155 * label
                if channels == 4:
                    image[3] = 255
                    Image.fromarray(image.permute(1, 2, 0).numpy(), "RGBA").save(folder / f"{i}.png")
                else:
                    write_file(str(folder / f"{i}.jpg"), encode_jpeg(image))
    (root / "train" / "dark" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_a_mixed_size_image_folder_trains_streamed_and_skips_a_corrupt_file(tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text("network Tiny(classes=2) { input x: [3, 32, 32]  conv(4, kernel=3) -> relu()  "
                    "global_avgpool()  flatten()  linear(classes) }")
    root = image_tree(tmp_path / "tree")
    messages = []
    result = run(netspec.load(spec), Recipe(data="imagefolder", epochs=2, batch_size=16, lr=0.01, ema=True,
                                            ema_steps=1), tmp_path / "run", str(root), "cpu", progress=False,
                 log=messages.append, options=RunOptions(data=DataOptions(workers=0)))
    # 61 training files: 1 corrupt, 6 held out for validation (10 %), 54 read
    assert messages[0].startswith("Tiny: 122 parameters | cpu, batch 16 | tree streamed: 55 train, 6 validation "
                                  "(10% held out of the training set, seed 0), 20 test | ")
    corrupt = f"skipped an unreadable image: {root / 'train' / 'dark' / 'corrupt.jpg'}: "
    assert [m for m in messages if m.startswith("skipped")] == [corrupt + "no marker found"]  # Pillow's header check
    lines = lines_of(tmp_path / "run")
    assert [m.get("skipped_images") for m in lines[:2]] == [1, 1]  # every epoch meets it, names it once
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["data_mode"], config["train_images"], config["val_images"], config["test_images"]) == (
        "stream", 55, 6, 20)
    assert config["normalization"]["mean"] == [0.485, 0.456, 0.406]  # ImageNet's, as torchvision's recipes
    assert result["test_images"] == 20 and result["test_accuracy"] > 0.9  # dark against light
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert {"model_ema", "model_trained"} <= set(best)


def test_a_val_folder_is_the_validation_set(tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text("network Tiny(classes=2) { input x: [1, 32, 32]  flatten()  linear(classes) }")
    root = image_tree(tmp_path / "tree")
    (root / "test").rename(root / "val")  # ImageNet's layout: train/ and val/, no test set
    messages = []
    result = run(netspec.load(spec), Recipe(data="imagefolder", epochs=1, batch_size=16), tmp_path / "run",
                 str(root), "cpu", progress=False, log=messages.append,
                 options=RunOptions(data=DataOptions(workers=0)))
    assert "tree streamed: 61 train, 20 validation (val/ folder), no test set" in messages[0]
    assert "no test set: the validation accuracy is the run's figure" in messages
    assert "test_accuracy" not in result and "split" not in lines_of(tmp_path / "run")[-1]


def test_pixel_statistics_from_histograms_equal_torchs_mean_and_std():
    from netspec.train.memory import pixel_statistics

    images = torch.randint(0, 256, (300, 3, 7, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = pixel_statistics(images)
    pixels = images.double() / 255
    torch.testing.assert_close(mean.flatten().double(), pixels.mean(dim=(0, 2, 3)), rtol=0, atol=1e-7)
    torch.testing.assert_close(std.flatten().double(), pixels.std(dim=(0, 2, 3)), rtol=0, atol=1e-7)


def test_a_training_set_of_unreadable_images_is_a_clear_error(tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text("network Tiny(classes=2) { input x: [1, 8, 8]  flatten()  linear(classes) }")
    for name in ("a", "b"):
        (tmp_path / "tree" / "train" / name).mkdir(parents=True)
        (tmp_path / "tree" / "train" / name / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(TrainError, match=r"no training image of epoch 1 could be read \(2 skipped\): .*broken\.png"):
        run(netspec.load(spec), Recipe(data="imagefolder", epochs=1, validation=0.0), tmp_path / "run",
            str(tmp_path / "tree"), "cpu", progress=False, log=lambda m: None,
            options=RunOptions(data=DataOptions(workers=0)))


def test_every_recipe_setting_has_a_typed_flag(in_repo):
    from netspec.cli import build_parser
    from netspec.cli.arguments import recipe_from_options

    options = build_parser().parse_args(
        ["train", "specs/lenet.net", "--warmup-epochs", "2", "--schedule", "cosine", "--ema", "--no-normalize",
         "--precision", "bf16", "--clip-grad-norm", "0.5", "--norm-weight-decay", "0", "--mixup-alpha", "0.2",
         "--auto-augment", "ta_wide", "--train-crop-size", "24", "--validation", "0.2"])
    recipe = recipe_from_options(options, netspec.load("specs/lenet.net"))
    assert (recipe.warmup_epochs, recipe.schedule, recipe.ema, recipe.normalize, recipe.precision) == (
        2, "cosine", True, False, "bf16")
    assert (recipe.clip_grad_norm, recipe.norm_weight_decay, recipe.mixup_alpha, recipe.auto_augment) == (
        0.5, 0.0, 0.2, "ta_wide")
    assert (recipe.train_crop_size, recipe.validation, recipe.epochs) == (24, 0.2, 12)  # epochs: the spec's
    flags = {action.dest for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert set(Recipe.model_fields) <= flags


def test_a_contradictory_recipe_is_one_line_without_a_flag_name(in_repo, capsys):
    assert main(["train", "specs/lenet.net", "--warmup-epochs", "2"]) == 2  # lenet.net's schedule is one-cycle
    assert capsys.readouterr().err == ("netspec train: warmup_epochs goes with schedule \"cosine\", \"step\" or "
                                       "\"none\": one-cycle warms up by itself\n")


def test_eval_normalises_as_the_run_did_whatever_the_split_now(in_repo, tmp_path, capsys):
    result = train(tmp_path / "run", epochs=1, validation=0.3)  # statistics of 1,400 training images
    assert main(["eval", "specs/lenet.net", "--weights", str(tmp_path / "run" / "best.pt"), "--data-dir", DATA,
                 "--device", "cpu"]) == 0  # the spec's recipe holds out 10 %: other images, other statistics
    out = capsys.readouterr().out
    assert f"accuracy {result['test_accuracy']:.2%}, top-5 " in out and f"loss {result['test_loss']:.4f}\n" in out
