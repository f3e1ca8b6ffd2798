"""Training on several processes (torchrun, DistributedDataParallel), on the CPU with gloo and 2 processes.

The runs are shared by the tests (module fixtures) to fit a 2-core CI: LeNet with tanh, 3 epochs of the
shipped MNIST subset (2,000 training and 500 test images), a global batch of 32, SGD. Every process runs one
thread (OMP_NUM_THREADS=1, torchrun's default), so that runs of the same world size are bit-identical.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.language.evaluate import Symbol  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import evaluate_weights, run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = str(ROOT / "tests" / "data")
SETTINGS = {"epochs": 3, "batch_size": 32, "lr": 0.05, "optimizer": "sgd", "schedule": "onecycle", "seed": 7}
FLAGS = ["--set", "act=tanh", "--data-dir", DATA, "--device", "cpu", "--no-progress", "--epochs", "3",
         "--batch-size", "32", "--lr", "0.05", "--optimizer", "sgd", "--schedule", "onecycle", "--seed", "7"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMEOUT = 300  # seconds any one launch may take on a loaded 2-core machine before the test fails
# The same arithmetic summed in another order (per-process means averaged by DDP, against one mean): 1e-6
# apart after 189 steps. A different sample, or a missing or doubled step, is far outside this. (tanh, not
# ReLU, whose kinks turn round-off into differences of 1e-5: one process on 1 and 2 threads ends that far apart.)
CLOSE = {"atol": 1e-5, "rtol": 1e-4}

# tanh and average pooling: ReLU's and max pooling's kinks would turn round-off differences into larger ones
# (two thread counts of one process then end 1e-3 apart), which would blur the comparison.
BN_SPEC = """
network SmallBN {
  input x: [1, 28, 28]
  conv(8, kernel=3, padding=1) -> batchnorm() -> tanh() -> avgpool(2)
  conv(16, kernel=3, padding=1) -> batchnorm() -> tanh() -> avgpool(2)
  flatten()
  linear(10)
}
"""


def lenet():
    return netspec.load(ROOT / "specs/lenet.net", act=Symbol("tanh"))


def netspec_command(*args) -> list[str]:
    return [sys.executable, "-m", "netspec", *args]


def torchrun_command(*args, max_restarts=0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", str(max_restarts), "-m", "netspec", *args]


def launch(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


def lines_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def metrics(folder: Path) -> list[dict]:
    """The epoch lines; the last line of a finished run is the test of the chosen weights."""
    return [m for m in lines_of(folder) if "split" not in m]


def weights(folder: Path, name: str = "last.pt") -> dict:
    return torch.load(folder / name, weights_only=True)["model"]


def learned(folder: Path) -> list[tuple]:
    """Each epoch's numbers that depend only on the computation (not on timing)."""
    return [(m["epoch"], m["train_loss"], m["train_accuracy"], m["val_loss"], m["val_accuracy"], m["lr"])
            for m in metrics(folder)] + [(m["test_loss"], m["test_accuracy"]) for m in lines_of(folder) if "split" in m]


def assert_close_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], **CLOSE, msg=lambda message, key=key: f"{key}: {message}")


def wait_for_epochs(folder: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.time() + TIMEOUT
    while not ((folder / "metrics.jsonl").exists() and len(metrics(folder)) >= count):
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, f"no epoch {count} within {TIMEOUT} s"
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rank_of(pid: int) -> int | None:
    environ = dict(entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0")
                   if "=" in entry)
    return int(environ["RANK"]) if "RANK" in environ else None


@contextmanager
def one_thread():
    """One thread, as each subprocess: the references then differ from the runs only in how DDP sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, global batch 32, in this process; a copy of its folder after epoch 1."""
    base = tmp_path_factory.mktemp("one")
    graph = lenet()
    recipe = Recipe(**{**graph.recipe, **SETTINGS})

    def keep_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/"):
            shutil.copytree(base / "run", base / "after-epoch-1")

    with one_thread():
        result = run(graph, recipe, base / "run", DATA, "cpu", progress=False, log=keep_epoch_1)
    return base, result


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """`netspec train --nproc 2 --max-restarts 1`: two gloo processes, each with batch 16, uninterrupted."""
    out = tmp_path_factory.mktemp("two") / "run"
    done = launch(netspec_command("train", "specs/lenet.net", *FLAGS, "--nproc", "2", "--max-restarts", "1",
                                  "--out", str(out)))
    assert done.returncode == 0, done.stderr
    return out, done


def test_two_processes_with_half_the_batch_each_train_as_one_with_the_whole(one_process, two_processes):
    (base, _), (out, done) = one_process, two_processes
    assert_close_weights(weights(out), weights(base / "run"))
    ours, reference = metrics(out), metrics(base / "run")
    assert [m["epoch"] for m in ours] == [1, 2, 3]
    for a, b in zip(ours, reference, strict=True):
        assert a["val_accuracy"] == b["val_accuracy"]  # 200 images: one flipped prediction is 0.005
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)  # the same schedule: same steps per epoch
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["batch_size_per_process"], config["backend"]) == (2, 16, "gloo")
    assert config["recipe"]["batch_size"] == 32
    # rank 0 alone prints: one line per epoch, and the split of the batch
    assert done.stdout.count("epoch 1/3:") == 1
    assert "cpu x 2 processes (gloo), batch 32 = 2 x 16 |" in done.stdout
    assert lines_of(out)[-1]["test_accuracy"] == lines_of(base / "run")[-1]["test_accuracy"]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]


def test_logged_accuracy_is_the_whole_test_sets_as_one_process_evaluates_it(two_processes, capsys):
    out, _ = two_processes
    best = torch.load(out / "best.pt", weights_only=True)
    assert set(best["model"]) == set(netspec.compile(ROOT / "specs/lenet.net").state_dict())  # no "module." prefix
    graph = lenet()
    evaluated = evaluate_weights(graph, out / "best.pt", Recipe(**graph.recipe), DATA, "cpu")
    chosen = max(metrics(out), key=lambda m: m["val_accuracy"])
    assert best["val_accuracy"] == chosen["val_accuracy"] and best["epoch"] == chosen["epoch"]
    logged = lines_of(out)[-1]  # the test of best.pt, sharded over the two processes
    assert logged["epoch"] == chosen["epoch"] and evaluated["test_accuracy"] == logged["test_accuracy"]
    assert evaluated["test_loss"] == pytest.approx(logged["test_loss"], rel=1e-5)
    assert main(["eval", str(ROOT / "specs/lenet.net"), "--set", "act=tanh", "--weights", str(out / "best.pt"),
                 "--data-dir", DATA, "--device", "cpu"]) == 0
    assert f"accuracy {logged['test_accuracy']:.2%}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def killed_worker(tmp_path_factory):
    """torchrun --max-restarts=1, rank 1 SIGKILLed in epoch 2; a copy of the run folder as it was then."""
    base = tmp_path_factory.mktemp("fault")
    out = base / "run"
    process = subprocess.Popen(torchrun_command("train", "specs/lenet.net", *FLAGS, "--out", str(out),
                                                max_restarts=1),
                               cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_epochs(out, 1, process)
        snapshot = base / "after-epoch-1"
        snapshot.mkdir()
        for name in ("config.json", "metrics.jsonl", "last.pt"):  # each written atomically: whole, old or new
            shutil.copy(out / name, snapshot / name)
        rank_1 = next(pid for pid in children(process.pid) if rank_of(pid) == 1)
        os.kill(rank_1, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    return out, snapshot, process.returncode, stdout, stderr


def test_a_killed_worker_restarts_the_group_from_the_last_checkpoint(killed_worker, two_processes):
    out, _, returncode, stdout, stderr = killed_worker
    assert returncode == 0, stderr
    assert "resuming LeNet from" in stdout  # the group was restarted and read last.pt
    resumed_after = int(stdout.split("resuming LeNet from")[1].split("after epoch ")[1].split()[0])
    assert 1 <= resumed_after < 3
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]  # no epoch lost or counted twice
    uninterrupted, _ = two_processes
    assert learned(out) == learned(uninterrupted)
    a, b = weights(out), weights(uninterrupted)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_two_process_checkpoint_resumes_in_one_process(killed_worker, one_process):
    _, snapshot, *_ = killed_worker
    base, _ = one_process
    checkpoint = torch.load(snapshot / "last.pt", weights_only=True)
    assert checkpoint["config"]["world_size"] == 2 and 1 <= checkpoint["epoch"] < 3
    before = metrics(snapshot)[:checkpoint["epoch"]]
    graph = lenet()
    with one_thread():
        run(graph, Recipe(**{**graph.recipe, **SETTINGS}), snapshot, DATA, "cpu", resume=True, progress=False,
            log=lambda line: None)
    assert [m["epoch"] for m in metrics(snapshot)] == [1, 2, 3]
    assert metrics(snapshot)[:len(before)] == before  # the two-process epochs kept as they were logged
    assert json.loads((snapshot / "config.json").read_text())["world_size"] == 1
    assert_close_weights(weights(snapshot), weights(base / "run"))
    assert [m["val_accuracy"] for m in metrics(snapshot)] == [m["val_accuracy"] for m in metrics(base / "run")]


def test_a_one_process_checkpoint_resumes_in_two_processes(one_process):
    base, _ = one_process
    folder = base / "after-epoch-1"
    done = launch(netspec_command("train", "specs/lenet.net", *FLAGS, "--nproc", "2", "--resume",
                                  "--out", str(folder)))
    assert done.returncode == 0, done.stderr
    assert "resuming LeNet from" in done.stdout and "after epoch 1" in done.stdout
    assert [m["epoch"] for m in metrics(folder)] == [1, 2, 3]
    assert json.loads((folder / "config.json").read_text())["world_size"] == 2
    assert_close_weights(weights(folder), weights(base / "run"))
    assert [m["val_accuracy"] for m in metrics(folder)] == [m["val_accuracy"] for m in metrics(base / "run")]


def test_sync_bn_gives_two_processes_the_batch_statistics_of_one(tmp_path):
    spec = tmp_path / "bn.net"
    spec.write_text(BN_SPEC)
    flags = ["--data-dir", DATA, "--device", "cpu", "--no-progress", "--epochs", "1", "--batch-size", "64",
             "--lr", "0.05", "--optimizer", "sgd", "--schedule", "none", "--seed", "3"]
    done = launch(netspec_command("train", str(spec), *flags, "--nproc", "2", "--sync-bn",
                                  "--out", str(tmp_path / "two")))
    assert done.returncode == 0, done.stderr
    with one_thread():
        run(netspec.load(spec), Recipe(epochs=1, batch_size=64, lr=0.05, optimizer="sgd", schedule="none", seed=3),
            tmp_path / "one", DATA, "cpu", progress=False, log=lambda line: None)
    two, one = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert any("running_var" in key for key in one)
    # Running means and variances included: statistics over the global batch. (Without --sync-bn, each process
    # normalising by its own half of the batch, the weights end 4e-2 apart; with it, 2e-6.)
    assert_close_weights(two, one)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["sync_bn"] is True
    assert [m["val_accuracy"] for m in metrics(tmp_path / "two")] == [
        m["val_accuracy"] for m in metrics(tmp_path / "one")]


def test_launch_mistakes_are_one_line_errors_before_any_process_starts(in_repo, tmp_path, capsys, monkeypatch):
    base = ["train", "specs/lenet.net", "--data-dir", DATA, "--out", str(tmp_path / "run")]
    assert main(base + ["--nproc", "3", "--batch-size", "64", "--device", "cpu"]) == 1
    assert capsys.readouterr().err == ("netspec train: batch_size 64 is the global batch, split evenly over 3 "
                                       "processes, which it is not; use --batch-size 63 or 66, or another process "
                                       "count\n")
    assert main(base + ["--nproc", "2", "--device", "cpu", "--dist-backend", "nccl"]) == 1
    assert capsys.readouterr().err == ("netspec train: --dist-backend nccl needs CUDA GPUs but this run is on the "
                                       "CPU; use --dist-backend gloo (the default off a GPU)\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(base + ["--nproc", "2", "--device", "cuda"]) == 1
    assert capsys.readouterr().err == ("netspec train: --nproc 2 but this machine has 1 GPU: use --nproc 1 or fewer "
                                       "(one process per GPU), or --device cpu for CPU processes\n")
    assert main(base + ["--max-restarts", "1"]) == 1
    assert capsys.readouterr().err == ("netspec train: --max-restarts goes with --nproc (under torchrun, give "
                                       "torchrun --max-restarts)\n")
    monkeypatch.setenv("LOCAL_RANK", "0")  # as under torchrun --nproc-per-node 4
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main(base + ["--nproc", "2"]) == 1
    assert capsys.readouterr().err == ("netspec train: --nproc starts processes itself; under torchrun leave it out "
                                       "(torchrun has --nproc-per-node)\n")
    assert not (tmp_path / "run").exists()


def test_an_unreachable_rendezvous_is_one_line_after_the_timeout(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**ENV, "RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    done = subprocess.run(netspec_command("train", "specs/lenet.net", "--data-dir", DATA, "--device", "cpu",
                                          "--dist-timeout", "2", "--out", str(tmp_path / "run")),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1
    assert done.stderr == (f"netspec train: rank 1 cannot reach the rendezvous at 127.0.0.1:{port} within 2 s; "
                           "check the address and port (torchrun --rdzv-endpoint, or MASTER_ADDR and MASTER_PORT) "
                           "and that rank 0's machine is up; --dist-timeout sets the wait\n")


def test_two_processes_stream_an_image_folder_and_report_a_corrupt_file_once(tmp_path):
    """Streamed data under DDP: each process reads its DistributedSampler shard through its own DataLoader; the
    test set of best.pt is evaluated in two shards, summed, and equals one process's evaluation of it."""
    from test_train_recipe import image_tree

    spec = tmp_path / "tiny.net"
    spec.write_text("network Tiny(classes=2) { input x: [3, 32, 32]  conv(4, kernel=3) -> relu()  "
                    "global_avgpool()  flatten()  linear(classes) }")
    root = image_tree(tmp_path / "tree")
    out = tmp_path / "run"
    done = launch(netspec_command("train", str(spec), "--data", "imagefolder", "--data-dir", str(root), "--device",
                                  "cpu", "--no-progress", "--epochs", "2", "--batch-size", "16", "--lr", "0.01",
                                  "--workers", "0", "--validation", "0", "--nproc", "2", "--out", str(out)))
    assert done.returncode == 0, done.stderr
    assert "tree streamed: 61 train, 20 test | " in done.stdout
    assert done.stdout.count("skipped an unreadable image: ") == 1  # rank 0 reports every process's, once
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_images"] for m in lines[:2]] == [1, 1]  # met each epoch, by whichever process read it
    test = lines[-1]
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["data_mode"], test["test_images"]) == (2, "stream", 20)
    recipe = Recipe(data="imagefolder", epochs=2, batch_size=16, lr=0.01, validation=0.0)
    evaluated = evaluate_weights(netspec.load(spec), out / "best.pt", recipe, str(root), "cpu")
    assert evaluated["test_accuracy"] == test["test_accuracy"]
    assert evaluated["test_loss"] == pytest.approx(test["test_loss"], rel=1e-5)
