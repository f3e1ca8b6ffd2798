"""LeNet against a fully connected net on MNIST, and both on pixel-permuted MNIST.

    python examples/mnist-cnn-vs-mlp/run.py --data-dir ../shared/data          # the table in README.md
    python examples/mnist-cnn-vs-mlp/run.py --data-dir tests/data --epochs 1 --table /tmp/table.md

Permuting pixels with one fixed shuffle keeps every image's information but destroys locality. The fully
connected net does not care (its first layer sees the pixels in any order); the CNN loses its advantage.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import netspec
from netspec.semantics.recipe import Recipe
from netspec.train import run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NETWORKS = {"LeNet (CNN)": (ROOT / "specs/lenet.net", {}), "MLP": (HERE / "mlp.net", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--table", type=Path, default=HERE / "README.md",
                        help="file whose results block is replaced (default: this example's README)")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for permuted in (False, True):
            for label, (spec, overrides) in NETWORKS.items():
                graph = netspec.load(spec, **overrides)
                recipe = Recipe(epochs=options.epochs, batch_size=128, lr=0.003, optimizer="adam",
                                schedule="onecycle", permute_pixels=1 if permuted else None, seed=0)
                result = run(graph, recipe, Path(runs) / f"{label}-{permuted}", options.data_dir, options.device,
                             progress=False, log=lambda message: None)
                params = sum(n.params for n in graph.nodes)
                rows.append(f"| {label} | {'permuted' if permuted else 'original'} | {params:,} | "
                            f"{result['test_accuracy']:.2%} | {result['train_seconds']:.1f} s |")
                print(rows[-1], flush=True)
    table = "\n".join(["| network | pixels | parameters | test accuracy | training time |",
                       "|---|---|---:|---:|---:|", *rows])
    text = options.table.read_text() if options.table.exists() else "<!-- results -->\n<!-- /results -->\n"
    block = f"<!-- results -->\n{table}\n<!-- /results -->"
    options.table.write_text(re.sub(r"<!-- results -->.*<!-- /results -->", lambda _: block, text, flags=re.S))


if __name__ == "__main__":
    main()
