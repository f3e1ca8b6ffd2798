"""Time to accuracy on MNIST, netspec's trainer against a hand-written PyTorch loop, in the same run.

    python bench/train_speed.py --data-dir ../shared/data             # on the GPU machine
    python bench/train_speed.py --data-dir ../shared/data --lenet5    # also LeNet-5 (1998), 20 epochs

For `specs/lenet.net` the trainer runs the recipe below; each epoch's validation accuracy (the 6,000 images
netspec holds out of the 60,000) and the training time before it (evaluation excluded) are read from
metrics.jsonl, giving the time from the first step to the first evaluation at >= 99.0 %; the test accuracy is
that of best.pt, evaluated once. The hand-written loop trains the same module with the same recipe on the
same 54,000 images, data on the device, and is timed the same way. Medians of --repeats runs. Results go in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import netspec
from netspec.train import datasets
from netspec.semantics.recipe import Recipe
from netspec.train import run
from netspec.train.splits import hold_out

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.99


def netspec_run(recipe: Recipe, data_dir: str, overrides: dict, spec: str) -> tuple[float | None, float, float, int]:
    graph = netspec.load(ROOT / spec, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run(graph, recipe, Path(tmp) / "run", data_dir, "auto", progress=False, log=lambda m: None)
        lines = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs, test = lines[:-1], lines[-1]
    reached = next((m["train_seconds"] for m in epochs if m["val_accuracy"] >= TARGET), None)
    return reached, test["test_accuracy"], statistics.median(m["epoch_seconds"] for m in epochs), len(epochs)


def hand_written(recipe: Recipe, data_dir: str) -> tuple[float | None, float, float]:
    """The anchor: a plain loop over the same module, data resident on the device; (time to 99.0 % on the
    validation images, their final accuracy, median epoch)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = datasets.load("mnist", data_dir, (1, 28, 28), 10)
    kept, held = hold_out(len(d.train_x), recipe.validation)  # netspec's validation images, evaluated each epoch
    x = d.train_x[kept].to(device).float().div_(255)
    mean, std = x.mean(), x.std()
    x = (x - mean) / std
    tx = (d.train_x[held].to(device).float().div_(255) - mean) / std
    y, ty = d.train_y[kept].to(device), d.train_y[held].to(device)
    torch.manual_seed(recipe.seed)
    model = netspec.compile(ROOT / "specs/lenet.net", seed=recipe.seed).to(device)
    steps = (len(x) + recipe.batch_size - 1) // recipe.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps)
    trained, reached, accuracy, epoch_times = 0.0, None, 0.0, []
    for _ in range(recipe.epochs):
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for i in range(steps):
            index = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x[index]).float(), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_times.append(time.perf_counter() - start)
        trained += epoch_times[-1]
        model.eval()
        with torch.no_grad():
            accuracy = float((model(tx).argmax(1) == ty).float().mean())
        if reached is None and accuracy >= TARGET:
            reached = trained
    return reached, accuracy, statistics.median(epoch_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--lenet5", action="store_true", help="also train specs/lenet5.net with its recipe")
    options = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {device}, torch {torch.__version__}")
    recipe = Recipe(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr, optimizer="adam",
                    schedule="onecycle", compile=options.compile)
    ours = [netspec_run(recipe, options.data_dir, {}, "specs/lenet.net") for _ in range(options.repeats)]
    anchor = [hand_written(recipe, options.data_dir) for _ in range(options.repeats)]

    def summary(results, final: str):
        times = [r[0] for r in results if r[0] is not None]
        reached = f"median {statistics.median(times):.2f} s ({len(times)}/{len(results)} runs reached 99.0%)" \
            if times else "never reached 99.0%"
        return (f"{reached} (validation); {final} median {statistics.median(r[1] for r in results):.2%}; "
                f"median epoch {statistics.median(r[2] for r in results):.3f} s")

    print(f"LeNet (ReLU), batch {options.batch_size}, Adam + one-cycle lr {options.lr}, {options.epochs} epochs")
    print(f"  netspec train:   {summary(ours, 'test accuracy of best.pt')}")
    print(f"  hand-written:    {summary(anchor, 'validation accuracy after the last epoch')}")
    if options.lenet5:
        graph = netspec.load(ROOT / "specs/lenet5.net")
        reached, accuracy, _, epochs = netspec_run(Recipe(**graph.recipe), options.data_dir, {}, "specs/lenet5.net")
        # test accuracy of best.pt, chosen on the validation images
        print(f"LeNet-5 (1998), its spec's recipe, {epochs} epochs: test accuracy {accuracy:.2%} "
              f"(error {1 - accuracy:.2%}; the paper reports 0.95%)")


if __name__ == "__main__":
    main()
