"""Datasets for `netspec train` that are read into memory as uint8 tensors (small enough to live on the GPU).

MNIST and Fashion-MNIST from their IDX files, CIFAR-10 from its python batches (through an unpickler
that admits only numpy arrays), and synthetic data. Image files (ImageFolder trees, CSV lists) are streamed:
netspec.train.images.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from netspec.ground.errors import ToolError

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# Folders tried under each data directory, by dataset; "" is the directory itself.
LAYOUTS = {"mnist": ["mnist", "MNIST/raw", ""], "fashion-mnist": ["fashion-mnist", "FashionMNIST/raw", ""],
           "cifar10": ["cifar-10-batches-py", "cifar10/cifar-10-batches-py", ""]}
HOW_TO_GET = {
    "mnist": "pass --download to fetch it with torchvision, or put the four *-ubyte.gz files from "
             "http://yann.lecun.com/exdb/mnist/ in --data-dir",
    "fashion-mnist": "pass --download to fetch it with torchvision, or put the four *-ubyte.gz files from "
                     "https://github.com/zalandoresearch/fashion-mnist in --data-dir",
    "cifar10": "pass --download to fetch it with torchvision, or unpack cifar-10-python.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html in --data-dir",
}


class DataError(ToolError):
    """A dataset that cannot be had or does not fit; the message says where netspec looked and what to do."""


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def data_dirs(data_dir: str | None) -> list[Path]:
    """Where datasets are looked for: --data-dir, then $NETSPEC_DATA, then ./data and ~/data."""
    found = [Path(d).expanduser() for d in (data_dir, os.environ.get("NETSPEC_DATA")) if d]
    return found + [Path("data"), Path.home() / "data"]


def _read_idx(path: Path) -> torch.Tensor:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read: {err}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header names {ndim} dimensions but ends first")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    if len(raw) != 4 + 4 * ndim + count:
        raise DataError(f"{path} is truncated: {len(raw):,} bytes for shape {list(dims)}")
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def _find(name: str, dirs: list[Path], wanted: list[str]) -> tuple[Path | None, list[Path]]:
    looked = []
    for base in dirs:
        for layout in LAYOUTS[name]:
            folder = base / layout if layout else base
            looked.append(folder)
            if all((folder / w).exists() or (folder / f"{w}.gz").exists() for w in wanted):
                return folder, looked
    return None, looked


def _missing(name: str, looked: list[Path]) -> DataError:
    where = ", ".join(str(p) for p in dict.fromkeys(looked))
    return DataError(f"{name} not found; looked in {where}. {HOW_TO_GET[name]}; or set NETSPEC_DATA")


def _idx_dataset(name: str, dirs: list[Path]) -> Dataset:
    wanted = [f for pair in IDX_FILES.values() for f in pair]
    folder, looked = _find(name, dirs, wanted)
    if folder is None:
        raise _missing(name, looked)

    def read(stem: str) -> torch.Tensor:
        path = folder / f"{stem}.gz"
        return _read_idx(path if path.exists() else folder / stem)

    tensors = {split: (read(images).unsqueeze(1), read(labels).long()) for split, (images, labels) in
               IDX_FILES.items()}
    return Dataset(name, *tensors["train"], *tensors["test"], classes=10)


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's batches are pickles; this admits the numpy array reconstruction they need and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        batch = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except Exception as err:
        raise DataError(f"{path} is not a CIFAR-10 batch: {err}") from None
    return torch.as_tensor(data).reshape(-1, 3, 32, 32), torch.as_tensor(labels, dtype=torch.long)


def _cifar10(dirs: list[Path]) -> Dataset:
    wanted = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder, looked = _find("cifar10", dirs, wanted)
    if folder is None:
        raise _missing("cifar10", looked)
    train = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _cifar_batch(folder / "test_batch")
    return Dataset("cifar10", torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y, 10)


def synthetic(shape: tuple[int, ...], classes: int, train: int = 4096, test: int = 1024, seed: int = 0) -> Dataset:
    """Random images and labels of the network's input shape, for speed tests."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (train + test, *shape), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, classes, (train + test,), generator=generator)
    return Dataset("synthetic", x[:train], y[:train], x[train:], y[train:], classes)


def _download(name: str, data_dir: str | None) -> None:
    import torchvision.datasets as tvd

    root = Path(data_dir or os.environ.get("NETSPEC_DATA") or "data").expanduser()
    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    for train in (True, False):
        try:
            cls(str(root), train=train, download=True)
        except Exception as err:  # no network, most often
            raise DataError(f"downloading {name} into {root} failed: {err}") from None


def load(name: str, data_dir: str | None, input_shape: tuple[int, ...], classes: int,
         download: bool = False) -> Dataset:
    if name == "synthetic":
        return synthetic(input_shape, classes)
    dirs = data_dirs(data_dir)
    try:
        return _cifar10(dirs) if name == "cifar10" else _idx_dataset(name, dirs)
    except DataError:
        if not download:
            raise
    _download(name, data_dir)
    dirs = data_dirs(data_dir or os.environ.get("NETSPEC_DATA") or "data")
    return _cifar10(dirs) if name == "cifar10" else _idx_dataset(name, dirs)
