"""The machine, data files and checkpoints turning hostile (issue 27): a full disk, a read-only run folder, memory
that runs out, a killed launcher, bad weights files and bad IDX files. Each is one line and exit 1 or 2, never
"a bug in netspec" (exit 3), and nothing that was written before is lost."""

import errno
import gzip
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.train.datasets import DataError, load  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = "tests/data"
# A smoke run: two short epochs of LeNet on the shipped MNIST subset.
SMOKE = ["--data-dir", DATA, "--device", "cpu", "--no-progress", "--epochs", "2", "--batch-size", "16",
         "--max-steps", "2", "--limit-eval", "32"]
TIMEOUT = 300  # seconds a subprocess may take on a loaded 2-core machine before the test fails


def train(out: Path, *extra: str) -> int:
    return main(["train", "specs/lenet.net", *SMOKE, "--out", str(out), *extra])


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def epoch_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def fail_second_write_of(name: str, monkeypatch, error: OSError) -> None:
    """os.replace (write_atomic's last step, after the temporary file is whole) raises `error` when it would
    put `name` in place for the second time: the first epoch is saved, the second meets a full disk."""
    real = os.replace
    seen = []

    def replace(source, target, *args, **kwargs):
        if Path(target).name == name:
            seen.append(target)
            if len(seen) == 2:
                raise error
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


# A full disk, a read-only folder -------------------------------------------------------------------------------

def test_a_full_disk_mid_run_stops_in_one_line_and_keeps_the_last_checkpoint(in_repo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    fail_second_write_of("last.pt", monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert train(out) == 1
    err = capsys.readouterr().err
    assert err == (f"netspec train: cannot write {out}/last.pt: No space left on device; stopping. {out}/last.pt "
                   "(after epoch 1) is kept. Free some space or make the folder writable, then pass --resume to "
                   "go on\n")
    assert epoch_of(out / "last.pt") == 1
    assert temporaries(out) == []
    monkeypatch.undo()
    assert train(out, "--resume") == 0  # and the run goes on from there
    assert epoch_of(out / "last.pt") == 2


def test_a_run_folder_that_turns_read_only_stops_in_one_line(in_repo, tmp_path, monkeypatch, capsys):
    """The folder becomes read-only after epoch 1: creating the temporary file beside last.pt fails (EROFS)."""
    out = tmp_path / "run"
    real = tempfile.mkstemp
    calls = []

    def mkstemp(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(".last.pt."):
            calls.append(1)
        if len(calls) >= 2 and Path(kwargs.get("dir", "")) == out:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert train(out) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(rf"netspec train: cannot write {out}/(best|last)\.pt: Read-only file system; stopping\. "
                        rf"{out}/last\.pt \(after epoch 1\) is kept\. .*\n", err), err
    assert epoch_of(out / "last.pt") == 1
    assert temporaries(out) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0o555")
def test_a_read_only_run_folder_is_refused_before_the_run(in_repo, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert train(out) == 1
    finally:
        out.chmod(0o755)
    assert f"netspec train: cannot write the run folder {out}: Permission denied" in capsys.readouterr().err


def test_stale_temporaries_are_removed_when_a_run_resumes(in_repo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    fail_second_write_of("last.pt", monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert train(out) == 1  # stopped after epoch 1
    monkeypatch.undo()
    # what a process killed while writing leaves behind (write_atomic's names)
    for name in (".last.pt.k1l2ed.tmp", ".best.pt.x9y8z7.tmp", ".metrics.jsonl.abc.tmp", "..write-test.q.tmp"):
        (out / name).write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("someone else's")  # not netspec's: left alone
    assert train(out, "--resume") == 0
    assert temporaries(out) == ["notes.tmp"]
    assert epoch_of(out / "last.pt") == 2


def test_export_on_a_full_disk_says_so_and_leaves_nothing(in_repo, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    out = tmp_path / "lenet.onnx"
    assert main(["export", "specs/lenet.net", "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"netspec export: cannot write {out}: No space left on device; nothing was "
                                       "written\n")
    assert list(tmp_path.iterdir()) == []


# Memory --------------------------------------------------------------------------------------------------------

CPU_ALLOCATOR_FAILURE = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                         "tried to allocate 40000400000 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError(CPU_ALLOCATOR_FAILURE)],
                         ids=["MemoryError", "DefaultCPUAllocator"])
def test_a_network_too_large_for_memory_is_one_line_with_its_size(tmp_path, monkeypatch, capsys, failure):
    spec = tmp_path / "huge.net"
    spec.write_text("network Huge { input x: [1, 100, 100]  flatten()  linear(1000000) }")
    assert main(["check", str(spec)]) == 0  # check accepts any size
    capsys.readouterr()

    def allocate(*args, **kwargs):
        raise failure

    monkeypatch.setattr("netspec.backends.torch.module.build_layer", allocate)
    assert main(["train", str(spec), "--data", "synthetic", "--device", "cpu", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("netspec train: Huge has 10,001,000,000 parameters, about 40.0 GB as float32, and they do "
                          "not fit in memory (")
    assert err.endswith("make the network smaller (netspec check shows where its parameters are)\n")
    assert "\n" not in err[:-1]
    assert not (tmp_path / "run").exists()
    with pytest.raises(netspec.backends.torch.module.ModuleTooLarge, match="10,001,000,000 parameters"):
        netspec.compile(spec)


# Weights files -------------------------------------------------------------------------------------------------

class RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def bad_weights(folder: Path) -> dict[str, tuple[Path, str]]:
    """Three bad files and what each is called."""
    good = folder / "good.pt"
    torch.save({"model": netspec.compile(str(ROOT / "specs/lenet.net")).state_dict()}, good)
    data = good.read_bytes()
    truncated, junk, code = folder / "truncated.pt", folder / "junk.pt", folder / "code.pt"
    truncated.write_bytes(data[:len(data) // 2])
    junk.write_bytes(b"not a checkpoint")
    code.write_bytes(pickle.dumps({"model": RunsCode()}, protocol=2))
    return {"truncated": (truncated, f"{truncated} is truncated or not a PyTorch checkpoint"),
            "junk": (junk, f"{junk} is truncated or not a PyTorch checkpoint"),
            "code": (code, f"{code} was refused: it asks to run code or build objects other than tensors (torch: "
                           "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.); netspec "
                           "reads weights only, so save the state_dict (torch.save(model.state_dict(), path))")}


def test_a_bad_weights_file_is_exit_1_with_the_same_message_in_eval_and_export(in_repo, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    for path, message in bad_weights(tmp_path).values():
        assert main(["eval", "specs/lenet.net", "--weights", str(path), "--data-dir", DATA, "--device", "cpu"]) == 1
        assert capsys.readouterr().err == f"netspec eval: {message}\n"
        assert main(["export", "specs/lenet.net", "--weights", str(path), "-o", str(tmp_path / "x.onnx")]) == 1
        assert capsys.readouterr().err == f"netspec export: {message}\n"
    assert not (tmp_path / "x.onnx").exists()
    missing = tmp_path / "missing.pt"
    assert main(["export", "specs/lenet.net", "--weights", str(missing), "-o", str(tmp_path / "x.onnx")]) == 1
    assert capsys.readouterr().err == f"netspec export: weights file not found: {missing}\n"


@pytest.mark.parametrize("kind", ["truncated", "junk", "code"])
def test_resume_from_a_bad_checkpoint_is_exit_1_and_changes_nothing(in_repo, tmp_path, capsys, kind):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    path, message = bad_weights(tmp_path)[kind]
    (out / "last.pt").write_bytes(path.read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert train(out, "--resume") == 1
    assert capsys.readouterr().err == f"netspec train: {message.replace(str(path), str(out / 'last.pt'))}; " \
                                      "nothing was changed\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# IDX data files ------------------------------------------------------------------------------------------------

def idx(dims: list[int], data: bytes | None = None, magic: bytes | None = None) -> bytes:
    header = (magic or bytes([0, 0, 8, len(dims)])) + struct.pack(f">{len(dims)}I", *dims)
    count = 1
    for d in dims:
        count *= d
    return header + (bytes(count) if data is None else data)


def mnist_folder(root: Path, train_images: bytes | None = None, train_labels: bytes | None = None,
                 suffix: str = "") -> Path:
    """An MNIST folder of ten 28x28 images a split (labels 0 to 9), with the training files replaced as given."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    labels = bytes(range(10))
    files = {"train-images-idx3-ubyte": train_images or idx([10, 28, 28]),
             "train-labels-idx1-ubyte": train_labels or idx([10], labels),
             "t10k-images-idx3-ubyte": idx([10, 28, 28]), "t10k-labels-idx1-ubyte": idx([10], labels)}
    for name, data in files.items():
        if name.startswith("train-images") and suffix == ".gz":
            (folder / f"{name}.gz").write_bytes(data)
        else:
            (folder / name).write_bytes(data)
    return folder


def test_a_well_formed_idx_folder_loads(tmp_path):
    mnist_folder(tmp_path)
    data = load("mnist", str(tmp_path), (1, 28, 28), 10)
    assert tuple(data.train_x.shape) == (10, 1, 28, 28) and data.train_y.tolist() == list(range(10))


@pytest.mark.parametrize("case, files, message", [
    ("counts", {"train_labels": idx([9], bytes(9))},
     r"train-images-idx3-ubyte holds 10 images but .*train-labels-idx1-ubyte holds 9 labels; they must be the "
     r"same count"),
    ("label", {"train_labels": idx([10], bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 200]))},
     r"train-labels-idx1-ubyte has label 200 at position 9; mnist has 10 classes, labelled 0 to 9"),
    ("magic", {"train_images": idx([10, 28, 28], magic=b"\x00\x00\x0d\x03")},
     r"train-images-idx3-ubyte is not an IDX file of unsigned bytes \(its magic number is 00000d03, not "
     r"00000803\)"),
    ("dimensions", {"train_labels": idx([10, 1], bytes(10))},
     r"train-labels-idx1-ubyte has 2 dimensions where 1 were expected \(labels\)"),
    ("truncated", {"train_images": idx([10, 28, 28])[:-100]},
     r"train-images-idx3-ubyte is truncated: its header promises 7,840 bytes of data but it holds 7,740"),
    ("header", {"train_images": b"\x00\x00\x08\x03\x00\x00"},
     r"train-images-idx3-ubyte is truncated: its header names 3 dimensions but ends first"),
    ("longer", {"train_images": idx([10, 28, 28]) + b"\x00"},
     r"train-images-idx3-ubyte holds more data than the 7,840 bytes its header promises"),
])
def test_a_bad_idx_file_is_a_data_error_naming_it(tmp_path, capsys, case, files, message):
    mnist_folder(tmp_path, **files)
    with pytest.raises(DataError, match=message):
        load("mnist", str(tmp_path), (1, 28, 28), 10)
    spec = ROOT / "specs/lenet.net"
    assert main(["train", str(spec), "--data-dir", str(tmp_path), "--device", "cpu",
                 "--out", str(tmp_path / "run")]) == 1
    assert re.fullmatch(r"netspec train: \S+" + message + r".*\n", capsys.readouterr().err)


def test_a_gzip_bomb_is_refused_after_reading_what_its_header_promises(tmp_path, monkeypatch):
    """20 MB of zeros behind a header that promises ten images: about 20 KB on disk."""
    bomb = gzip.compress(idx([10, 28, 28]) + bytes(20_000_000), compresslevel=9)
    assert len(bomb) < 100_000
    mnist_folder(tmp_path, train_images=bomb, suffix=".gz")
    inflated = []
    real_read = gzip.GzipFile.read

    def counted(self, size=-1):
        data = real_read(self, size)
        inflated.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counted)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz holds more data than the 7,840 bytes its header "
                                        r"promises \(the .gz inflates to more\)"):
        load("mnist", str(tmp_path), (1, 28, 28), 10)
    assert sum(inflated) <= 16 + 7_840 + 1


def test_a_truncated_gzip_is_a_data_error(tmp_path):
    whole = gzip.compress(idx([10, 28, 28], os.urandom(7_840)))
    mnist_folder(tmp_path, train_images=whole[:len(whole) // 2], suffix=".gz")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is truncated"):
        load("mnist", str(tmp_path), (1, 28, 28), 10)


# The --nproc launcher ------------------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_the_workers_end_with_a_killed_launcher(tmp_path, how):
    """`netspec train --nproc 2` on CPU processes (gloo); the launcher is signalled once both processes train."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "netspec", "train", "specs/lenet.net", "--data-dir", DATA, "--device", "cpu",
               "--no-progress", "--epochs", "100", "--batch-size", "32", "--nproc", "2", "--out", str(out)]
    launcher = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "config.json").exists():  # rank 0 has joined the group and started the run
            assert launcher.poll() is None, launcher.stderr.read()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        workers = children(launcher.pid)
        assert len(workers) == 2
        launcher.send_signal(how)
        launcher.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if running(pid)], "a worker outlived the launcher"
    finally:
        for pid in [launcher.pid, *workers]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()
        launcher.stderr.close()
