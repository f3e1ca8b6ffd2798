"""VGG, ResNet-18 and CapsNet on MNIST, and the ensembles VGG + ResNet-18 and VGG + CapsNet.

    python examples/mnist-ensembles/run.py --data-dir ../shared/data                  # all of MNIST
    python examples/mnist-ensembles/run.py --data-dir ../shared/data --train-images 6000 --epochs 2

Each member is trained on its own with the recipe in its spec (epochs from --epochs), then evaluated on the
test set; each ensemble loads its members' best weights (`--weights vgg=... --weights resnet=...`) and is
evaluated on the same test set. The results table replaces the block in this example's README.
"""

from __future__ import annotations

import argparse
import gzip
import re
import struct
import tempfile
import time
from pathlib import Path

import netspec
from netspec.train.datasets import IDX_FILES, load
from netspec.ground.files import write_atomic
from netspec.semantics.recipe import Recipe
from netspec.train import evaluate_weights, run

HERE = Path(__file__).resolve().parent
SPECS = HERE.parent.parent / "specs"
MEMBERS = {"vgg": "vgg_mnist.net", "resnet": "resnet18_mnist.net", "capsnet": "capsnet.net"}
ENSEMBLES = {"ensemble_vgg_resnet.net": ("vgg", "resnet"), "ensemble_vgg_capsnet.net": ("vgg", "capsnet")}


def write_subset(data_dir: str, out: Path, train: int | None, test: int | None) -> Path:
    """The first `train` training and `test` test images of MNIST, as IDX files netspec reads."""
    dataset = load("mnist", data_dir, (1, 28, 28), 10)
    folder = out / "mnist"
    folder.mkdir(parents=True)
    for split, (images, labels) in {"train": (dataset.train_x, dataset.train_y),
                                    "test": (dataset.test_x, dataset.test_y)}.items():
        count = {"train": train, "test": test}[split] or len(images)
        pixels = images[:count, 0].numpy()  # uint8, as read
        image_file, label_file = IDX_FILES[split]
        with gzip.open(folder / f"{image_file}.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, count, 28, 28) + pixels.tobytes())
        with gzip.open(folder / f"{label_file}.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, count) + labels[:count].numpy().astype("uint8").tobytes())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, help="default: each spec's recipe")
    parser.add_argument("--train-images", type=int, help="train on the first N images (default: all 60,000)")
    parser.add_argument("--test-images", type=int, help="test on the first N images (default: all 10,000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--table", type=Path, default=HERE / "README.md",
                        help="file whose results block is replaced (default: this example's README)")
    options = parser.parse_args()
    rows, best, seconds = [], {}, {}
    with tempfile.TemporaryDirectory() as work:
        data_dir = options.data_dir
        if options.train_images or options.test_images:
            data_dir = str(write_subset(data_dir, Path(work) / "data", options.train_images, options.test_images))
        for member, spec in MEMBERS.items():
            graph = netspec.load(SPECS / spec)
            recipe = Recipe(**{**graph.recipe, **({"epochs": options.epochs} if options.epochs else {})})
            started = time.perf_counter()
            run(graph, recipe, Path(work) / member, data_dir, options.device, progress=False,
                log=lambda message: None)
            seconds[member] = time.perf_counter() - started
            best[member] = Path(work) / member / "best.pt"
            evaluated = evaluate_weights(graph, best[member], recipe, data_dir, options.device)
            rows.append((graph.name, sum(n.params for n in graph.nodes), evaluated["test_accuracy"],
                         seconds[member], f"{recipe.epochs} epochs"))
            print(rows[-1], flush=True)
        for spec, members in ENSEMBLES.items():
            graph = netspec.load(SPECS / spec)
            evaluated = evaluate_weights(graph, [f"{m}={best[m]}" for m in members], Recipe(), data_dir,
                                         options.device)
            rows.append((graph.name, sum(n.params for n in graph.nodes), evaluated["test_accuracy"],
                         sum(seconds[m] for m in members), "its members' best weights"))
            print(rows[-1], flush=True)
        test_images = evaluated["test_images"]
    table = "\n".join(["| model | parameters | test accuracy | training time | trained |", "|---|---:|---:|---:|---|",
                       *(f"| {name} | {params:,} | {accuracy:.2%} | {secs:.0f} s | {how} |"
                         for name, params, accuracy, secs, how in rows)])
    table += (f"\n\nTrained on {options.train_images or 60_000:,} images, tested on {test_images:,}; "
              "an ensemble's time is its members' together.")
    text = options.table.read_text() if options.table.exists() else "<!-- results -->\n<!-- /results -->\n"
    block = f"<!-- results -->\n{table}\n<!-- /results -->"
    write_atomic(options.table, re.sub(r"<!-- results -->.*<!-- /results -->", lambda _: block, text, flags=re.S))


if __name__ == "__main__":
    main()
