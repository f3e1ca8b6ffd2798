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
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from netspec.ground.errors import ToolError, first_line
from netspec.ground.files import open_regular

IDX_CLASSES = 10  # MNIST's digits, Fashion-MNIST's garments
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


# What each class index means, for checkpoints and `netspec predict` (torchvision's names for the same datasets).
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def class_names(name: str, classes: int) -> list[str]:
    """The names of a dataset's classes by index; a dataset without names (synthetic) numbers them."""
    names = CLASS_NAMES.get(name)
    return list(names) if names is not None and len(names) == classes else [str(i) for i in range(classes)]


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


IDX_UNSIGNED_BYTES = 0x08  # the third byte of an IDX file's magic number: its values are unsigned bytes
READ_CHUNK = 1 << 20


def _read_exactly(stream, wanted: int, path: Path) -> bytes:
    """`wanted` bytes of `stream`, read a chunk at a time (memory grows with what the file holds, not with what a
    header claims); a stream that ends first is truncated, one with bytes left over is longer than its header
    says. At most one byte past `wanted` is read, so a gzip bomb is never inflated."""
    data = bytearray()
    while len(data) <= wanted:
        chunk = stream.read(min(READ_CHUNK, wanted + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) < wanted:
        raise DataError(f"{path} is truncated: its header promises {wanted:,} bytes of data but it holds "
                        f"{len(data):,}")
    if len(data) > wanted:
        raise DataError(f"{path} holds more data than the {wanted:,} bytes its header promises"
                        f"{' (the .gz inflates to more)' if path.suffix == '.gz' else ''}; it is not an IDX file "
                        "netspec can trust")
    return bytes(data)


def _read_idx(path: Path, dimensions: int) -> torch.Tensor:
    """An IDX file (MNIST's format), plain or gzipped, of unsigned bytes with `dimensions` dimensions (3 for
    images, 1 for labels). Only what its header promises is read, one byte more at most; anything else is a
    DataError naming the file and what is wrong with it."""
    try:
        with open_regular(path) as handle:
            stream = gzip.GzipFile(fileobj=handle, mode="rb") if path.suffix == ".gz" else handle
            header = stream.read(4)
            if len(header) < 4 or header[:2] != b"\0\0" or header[2] != IDX_UNSIGNED_BYTES:
                raise DataError(f"{path} is not an IDX file of unsigned bytes (its magic number is "
                                f"{header.hex() or 'missing'}, not 0000080{dimensions})")
            if header[3] != dimensions:
                raise DataError(f"{path} has {header[3]} dimensions where {dimensions} were expected "
                                f"({'images' if dimensions == 3 else 'labels'})")
            shape_bytes = stream.read(4 * dimensions)
            if len(shape_bytes) < 4 * dimensions:
                raise DataError(f"{path} is truncated: its header names {dimensions} dimensions but ends first")
            dims = struct.unpack(f">{dimensions}I", shape_bytes)
            count = 1
            for d in dims:
                count *= d
            raw = _read_exactly(stream, count, path)
    except EOFError as err:  # a .gz cut short
        raise DataError(f"{path} is truncated: {first_line(err)}") from None
    except (OSError, zlib.error) as err:  # unreadable, not a regular file, or not gzip (gzip.BadGzipFile)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else first_line(err)
        raise DataError(f"{path} cannot be read: {reason}") from None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(dims) if count else \
        torch.zeros(dims, dtype=torch.uint8)


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

    def path_of(stem: str) -> Path:
        path = folder / f"{stem}.gz"
        return path if path.exists() else folder / stem

    tensors = {}
    for split, (image_stem, label_stem) in IDX_FILES.items():
        image_path, label_path = path_of(image_stem), path_of(label_stem)
        images, labels = _read_idx(image_path, 3), _read_idx(label_path, 1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{image_path} holds {images.shape[0]:,} images but {label_path} holds "
                            f"{labels.shape[0]:,} labels; they must be the same count")
        if labels.numel() and int(labels.max()) >= IDX_CLASSES:
            position = int((labels >= IDX_CLASSES).nonzero()[0])
            raise DataError(f"{label_path} has label {int(labels[position])} at position {position}; {name} has "
                            f"{IDX_CLASSES} classes, labelled 0 to {IDX_CLASSES - 1}")
        tensors[split] = (images.unsqueeze(1), labels.long())
    return Dataset(name, *tensors["train"], *tensors["test"], classes=IDX_CLASSES)


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
