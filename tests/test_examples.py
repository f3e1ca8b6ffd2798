"""Every example runs through `netspec check`, and its totals are the ones worked out by hand here."""

from pathlib import Path

import pytest

import netspec
from netspec.cli import main


def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


BY_HAND = {
    "examples/01-first-network.net": 784 * 128 + 128 + 128 * 10 + 10,
    "examples/02-blocks-and-repeats.net": (conv(3, 32, 3, False) + bn(32) + conv(32, 32, 3, False) + bn(32)
                                           + conv(32, 64, 3, False) + bn(64) + conv(64, 64, 3, False) + bn(64)
                                           + 64 * 10 + 10),
    "examples/03-skip-connections.net": (conv(3, 16, 3)
                                         + 2 * (conv(16, 16, 3, False) + bn(16))
                                         + conv(16, 32, 3, False) + bn(32) + conv(32, 32, 3, False) + bn(32)
                                         + 16 * 32 + bn(32)  # the projected shortcut
                                         + sum(bn(c) + conv(c, 12, 3, False) for c in (32, 44, 56))
                                         + 68 * 10 + 10),
    "examples/mnist-cnn-vs-mlp/mlp.net": 784 * 76 + 76 + 76 * 10 + 10,
    "examples/04-imports/network.net:Wide": conv(3, 64, 3) + conv(64, 128, 3) + 128 * 10 + 10,
    "examples/04-imports/network.net:Narrow": (conv(3, 8, 1) + conv(8, 32, 3) + conv(32, 16, 1) + conv(16, 64, 3)
                                               + 64 * 10 + 10),
    # Worked out block by block (and the blocks checked against torch) in tests/test_ops_activations.py.
    "examples/attention/se.net": 85_690,
    "examples/attention/cbam.net": 330_690,
}


def test_every_example_is_covered(in_repo):
    files = {str(p) for p in Path("examples").rglob("*.net") if "lib" not in p.parts}
    assert files == {spec.split(":")[0] for spec in BY_HAND}


@pytest.mark.parametrize("spec", sorted(BY_HAND))
def test_example_checks_with_hand_computed_params(spec, in_repo, capsys):
    assert main(["check", spec]) == 0
    out = capsys.readouterr().out
    params = BY_HAND[spec]
    assert f"Params:      {params:,} (trainable {params:,}, non-trainable 0)" in out


def test_the_cnn_versus_mlp_experiment_runs(in_repo, tmp_path):
    pytest.importorskip("torch")
    import subprocess
    import sys

    table = tmp_path / "table.md"
    result = subprocess.run([sys.executable, "examples/mnist-cnn-vs-mlp/run.py", "--data-dir", "tests/data",
                             "--epochs", "1", "--device", "cpu", "--table", str(table)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and "%" in line]
    assert [row.split(" | ")[:3] for row in rows] == [["| LeNet (CNN)", "original", "61,706"],
                                                      ["| MLP", "original", "60,430"],
                                                      ["| LeNet (CNN)", "permuted", "61,706"],
                                                      ["| MLP", "permuted", "60,430"]]


def test_the_ensemble_example_trains_on_a_faithful_subset(in_repo, tmp_path):
    """examples/mnist-ensembles/run.py --train-images N writes the first N images as IDX files netspec reads."""
    torch = pytest.importorskip("torch")
    import importlib.util

    from netspec.train.datasets import load

    spec = importlib.util.spec_from_file_location("ensembles_example", "examples/mnist-ensembles/run.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.write_subset("tests/data", tmp_path, 300, 50)
    full, subset = load("mnist", "tests/data", (1, 28, 28), 10), load("mnist", str(tmp_path), (1, 28, 28), 10)
    assert (len(subset.train_x), len(subset.test_x)) == (300, 50)
    assert torch.equal(subset.train_x, full.train_x[:300]) and torch.equal(subset.test_y, full.test_y[:50])
    assert set(example.MEMBERS) == {"vgg", "resnet", "capsnet"}
    for ensemble, members in example.ENSEMBLES.items():  # each ensemble's members are the labels in its spec
        graph = netspec.load(f"specs/{ensemble}")
        assert {n.scope[0] for n in graph.nodes if n.scope} >= set(members)
