"""Streamed image data: collections read from disk image by image, for data that does not fit (or should not sit)
in device memory.

    scan_image_folder / scan_csv   a collection's classes and (path, label) lists, checked before any step
    ImageFiles / TensorImages      torch Datasets: files decoded (decode: JPEG, GIF, WebP by torchvision.io, PNG
                                   and the rest by Pillow), or an in-memory uint8 tensor, transformed as
                                   netspec.train.transforms says
    make_loader                    a DataLoader with worker processes, pinned memory and prefetching

An image that cannot be decoded (corrupt, truncated, over MAX_PIXELS by its header, a FIFO or a device rather than
a file) does not stop a run, and no byte sequence crashes the decoding (bench/image_fuzz.py): the dataset returns
a `Skipped` marker in its place and `collate` leaves it out of the batch, reporting "<path>: <reason>".

Each image's random augmentation is drawn from a seed of its own, taken from the loader's generator: an epoch's
batches then depend only on that generator and the order of the images, not on how many worker processes
decoded them (so a run repeats on a machine with a different number of CPUs).
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from netspec.ground.files import open_regular, read_bytes, walk_once
from netspec.train.datasets import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
MAX_WORKERS = 16  # torchvision's reference training script's default (-j 16)


@dataclass
class Collection:
    """A collection of image files: class names, and (path, class index) pairs for each split it has."""

    name: str
    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]  # keys among "train", "val", "test"


# ---------------------------------------------------------------------------------------------------------------
# Scanning: every mistake in the collection's layout is found here, before the first training step.

def _shown(classes: Sequence[str], limit: int = 12) -> str:
    names = ", ".join(classes[:limit])
    return names + (f", ... ({len(classes)} classes)" if len(classes) > limit else "")


def image_files(folder: Path) -> list[Path]:
    """The images under a class folder, in torchvision ImageFolder's order (sorted walk, sorted names); hidden
    files (such as macOS's ._name.jpg copies) are not images. Each real folder is entered once (walk_once), so
    a link back up (`a -> .`) adds nothing. A FIFO or a device with an image's name is listed, and skipped with
    its reason when it is met (decode reads regular files only)."""
    found = []
    for parent, _, names in sorted(walk_once(folder), key=lambda entry: str(entry[0])):  # as os.walk's strings
        found += [Path(parent) / n for n in sorted(names)
                  if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return found


def scan_image_folder(root: str | Path) -> Collection:
    """root/train/<class>/<images>, and optionally root/val/<class>/... and root/test/<class>/... with classes
    among train's. Classes are train's subfolders, sorted; their index is their position."""
    root = Path(root).expanduser()
    train = root / "train"
    if not train.is_dir():
        what = "does not exist" if not root.exists() else "has no train/ folder"
        raise DataError(f"{root} {what}; an image folder holds train/<class>/<images>, one folder per class, and "
                        "optionally val/ and test/ with the same class folders")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{train} has no class folders; put each class's images in train/<class>/")
    splits = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        items = []
        for class_folder in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_folder.name not in classes:
                raise DataError(f"{class_folder}: '{class_folder.name}' is not a class of {train} "
                                f"({_shown(classes)})")
            files = image_files(class_folder)
            if not files:
                raise DataError(f"{class_folder}: class folder '{class_folder.name}' holds no images "
                                f"(files ending {' '.join(IMAGE_SUFFIXES)})")
            items += [(file, classes.index(class_folder.name)) for file in files]
        if not items:
            raise DataError(f"{folder} holds no images: it needs one folder per class, as train/ has")
        splits[split] = items
    return Collection(root.name, classes, splits)


def csv_rows(file: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row; a header row `path,label` is skipped."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as stream:  # -sig: spreadsheets write a BOM
            reader = csv.reader(stream)
            first = True
            for row in reader:
                fields = [field.strip() for field in row]
                if not any(fields):
                    continue
                if first and [f.lower() for f in fields] == ["path", "label"]:
                    first = False
                    continue
                first = False
                yield reader.line_num, fields
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{file} cannot be read as CSV: {err}") from None


def _read_csv(file: Path) -> list[tuple[int, Path, str]]:
    """(line, image path, label) of each row, every path checked to be a file."""
    rows = []
    for line, fields in csv_rows(file):
        where = f"{file}:{line}"
        if len(fields) != 2:
            raise DataError(f"{where}: expected two fields, path,label; found {len(fields)}: {','.join(fields)}")
        name, label = fields
        if not name or not label:
            raise DataError(f"{where}: the {'path' if not name else 'label'} is empty; each row is path,label")
        path = file.parent / name
        if not path.exists() or path.is_dir():  # a FIFO or a device is kept: skipped, with its reason, when met
            raise DataError(f"{where}: {name} points at nothing ({path} is not a file); paths are relative to "
                            f"the CSV's folder")
        rows.append((line, path, label))
    if not rows:
        raise DataError(f"{file} has no rows; each line is path,label (after an optional header path,label)")
    return rows


def _sorted_labels(labels: set[str]) -> list[str]:
    """Class names sorted; numerically when every one is an integer (so "10" comes after "9")."""
    if all(re.fullmatch(r"[+-]?\d+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def scan_csv(root: str | Path) -> Collection:
    """A folder with train.csv (and optionally val.csv, test.csv), or one .csv file (the train split). Each row
    is `path,label`, the path relative to the CSV's folder; the classes are train's labels, sorted."""
    root = Path(root).expanduser()
    if root.is_file():
        files, name = {"train": root}, root.stem
    elif root.is_dir():
        if not (root / "train.csv").is_file():
            raise DataError(f"{root} has no train.csv; a CSV collection is a folder with train.csv (and optionally "
                            "val.csv and test.csv) of path,label rows, or a single .csv file")
        files = {split: root / f"{split}.csv" for split in SPLITS if (root / f"{split}.csv").is_file()}
        name = root.name
    else:
        raise DataError(f"{root} does not exist; give a .csv file of path,label rows or a folder with train.csv")
    rows = {split: _read_csv(file) for split, file in files.items()}
    classes = _sorted_labels({label for _, _, label in rows["train"]})
    index = {label: i for i, label in enumerate(classes)}
    splits = {}
    for split, split_rows in rows.items():
        for line, _, label in split_rows:
            if label not in index:
                raise DataError(f"{files[split]}:{line}: label '{label}' is not among the classes of "
                                f"{files['train'].name} ({_shown(classes)})")
        splits[split] = [(path, index[label]) for _, path, label in split_rows]
    return Collection(name, classes, splits)


# ---------------------------------------------------------------------------------------------------------------
# Decoding

@dataclass(frozen=True)
class Skipped:
    """Returned by a dataset in place of an image it could not decode; `collate` drops it and reports why."""

    reason: str  # "<path>: <reason>"


# Pillow's own default ceiling (PIL.Image.MAX_IMAGE_PIXELS): a quarter of a gigabyte of RGBA pixels. Checked on
# the header, before a pixel is decoded, so a small file claiming 50,000 x 50,000 pixels costs nothing.
MAX_PIXELS = 89_478_485
# A file larger than this is not read at all (an uncompressed image at MAX_PIXELS is under 400 MB).
MAX_IMAGE_BYTES = 1 << 30


class ImageTooLarge(ValueError):
    """An image whose header gives more pixels than the ceiling allows."""


def _torchvision_format(head: bytes) -> str | None:
    """The format torchvision.io decodes that these first bytes begin, if any (the signatures it checks)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# Formats torchvision.io decodes without crashing on any bytes (bench/image_fuzz.py). Its PNG decoder is not
# among them: corrupt PNG data kills the process with SIGSEGV (libpng's error jump through torchvision's C++), and
# validating with Pillow first does not help, since Pillow accepts files that libpng then fails on. PNGs are
# decoded by Pillow, which raises on corrupt data.
TORCHVISION_SAFE = ("jpeg", "gif", "webp")


def _pillow_header(stream: BinaryIO, kind: str | None):
    """The image opened by Pillow on its header alone (no pixels decoded). The formats netspec recognises are
    opened by their Pillow plugin class, without Image.open's decompression-bomb check, which would refuse a huge
    image before its size could be reported."""
    from PIL import GifImagePlugin, Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError, WebPImagePlugin

    plugin = {"png": PngImagePlugin.PngImageFile, "jpeg": JpegImagePlugin.JpegImageFile,
              "gif": GifImagePlugin.GifImageFile, "webp": WebPImagePlugin.WebPImageFile}.get(kind)
    if plugin is not None:
        return plugin(stream)
    try:
        with warnings.catch_warnings():  # over MAX_IMAGE_PIXELS: refused below, with the size in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except UnidentifiedImageError:
        raise ValueError("not an image in a format torchvision.io or Pillow reads") from None
    except Image.DecompressionBombError as err:  # over twice Pillow's ceiling: Pillow gives the count alone
        raise _too_large(err) from None


def _too_large(err: Exception) -> ImageTooLarge:
    """Pillow's DecompressionBombError (which gives the pixel count alone) in netspec's words."""
    pixels = re.search(r"\((\d+) pixels\)", str(err))
    shown = f"{int(pixels[1]):,} pixels" if pixels else "too many pixels"
    return ImageTooLarge(f"{shown}, over the limit of {MAX_PIXELS:,}")


def check_pixels(size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageTooLarge when a (width, height) from a header is over `max_pixels`."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width:,} x {height:,} pixels, over the limit of {max_pixels:,}")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from a file's header, read as decode reads it (regular files only), without reading
    the rest of the file."""
    with open_regular(path) as handle:
        kind = _torchvision_format(handle.read(12))
        handle.seek(0)
        with _pillow_header(handle, kind) as header:
            return header.size


def _to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey, grey + alpha, RGB or RGBA uint8 [c, H, W] to `channels` (1 or 3); alpha is dropped."""
    have = image.shape[0]
    if have in (2, 4):
        image, have = image[:have - 1], have - 1
    if have == channels:
        return image
    if channels == 3:
        return TF.grayscale_to_rgb(image)
    if torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]):
        return image[:1]  # a grey image decoded as RGB (GIF, WebP): rgb_to_grayscale would darken it by one level
    return TF.rgb_to_grayscale(image)


def _pillow_pixels(opened, apply_orientation: bool) -> torch.Tensor:
    """uint8 [1 or 3, H, W] of an image Pillow opened: grey stays grey, anything else becomes RGB (alpha dropped,
    palettes looked up); 16-bit grey keeps its high byte, as torchvision's to_dtype(scale=True) does."""
    from PIL import ImageOps

    if apply_orientation:
        opened = ImageOps.exif_transpose(opened)
    if opened.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        import numpy

        wide = torch.from_numpy(numpy.asarray(opened).astype(numpy.int32))  # asarray decodes, raising on bad data
        return (wide >> 8).to(torch.uint8)[None]
    grey = opened.mode in ("1", "L", "LA", "La", "I", "F") or opened.mode.startswith("I;")
    return TF.pil_to_tensor(opened.convert("L" if grey else "RGB"))  # convert() decodes, raising on bad data


def decode(path: Path, channels: int, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A file's image as uint8 [channels, H, W]. Only a regular file is read (a FIFO or a device raises
    NotARegularFile, never blocks); its header's size must be within `max_pixels` (ImageTooLarge) before any
    pixel is decoded. JPEG, GIF and WebP by torchvision.io (JPEG turned to the channel count by the decoder, EXIF
    orientation applied); PNG, BMP, TIFF and PPM/PGM by Pillow (PNG's EXIF orientation applied); others turned
    grey or RGB by torchvision's rgb_to_grayscale / grayscale_to_rgb. Animated GIFs give their first frame,
    16-bit images are scaled to 8 bits. Raises on a file that cannot be decoded; no byte sequence crashes it
    (bench/image_fuzz.py, tests/test_fuzz_images.py)."""
    from PIL import Image

    data = read_bytes(path, MAX_IMAGE_BYTES)
    kind = _torchvision_format(data[:12])
    try:
        with _pillow_header(io.BytesIO(data), kind) as header:
            check_pixels(header.size, max_pixels)
            if kind not in TORCHVISION_SAFE:
                return _to_channels(_pillow_pixels(header, apply_orientation=kind == "png"), channels)
    except Image.DecompressionBombError as err:  # a later frame's size (GIF, WebP) checked by Pillow itself
        raise _too_large(err) from None
    # WebP and GIF decoders ignore GRAY (WebP warns for each image): decode those as RGB, then convert.
    mode = ImageReadMode.GRAY if channels == 1 and kind == "jpeg" else ImageReadMode.RGB
    image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode,
                         apply_exif_orientation=True)
    if image.ndim == 4:
        image = image[0]
    if image.dtype != torch.uint8:
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return _to_channels(image, channels)


def failure_reason(err: Exception) -> str:
    """An error message without the C++ source location torchvision's decoders put in front."""
    if isinstance(err, OSError) and err.strerror:  # "No such file or directory", "a FIFO (named pipe), ..."
        return err.strerror
    lines = str(err).strip().splitlines()
    message = re.sub(r"^.*?\.cpp:\d+,\s*", "", lines[0]) if lines else ""
    return message or type(err).__name__


# ---------------------------------------------------------------------------------------------------------------
# Datasets. An item key is an index, or (index, seed) from make_loader's SeededOrder: the seed then drives the
# transform's randomness for that image alone.

def transformed(transform, image: torch.Tensor, seed: int | None) -> torch.Tensor:
    if transform is None:
        return image
    if seed is None:
        return transform(image)
    # Seed the default CPU generator (which v2 transforms draw from) for this image, then put its state back,
    # so that loading in the main process (workers=0) leaves the training's own random stream untouched.
    # torch.manual_seed would also seed every accelerator: 90 us an image against 2 us for this.
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return transform(image)
    finally:
        generator.set_state(state)


def split_key(key) -> tuple[int, int | None]:
    return (key[0], key[1]) if isinstance(key, tuple) else (key, None)


class ImageFiles(Dataset):
    """Image files decoded on demand to `channels` (1 or 3) and transformed; an undecodable file gives
    `Skipped("<path>: <reason>")` instead of raising."""

    def __init__(self, items: Sequence[tuple[Path, int]], channels: int, transform=None):
        if channels not in (1, 3):
            raise ValueError(f"images are read with 1 or 3 channels, not {channels}")
        self.items, self.channels, self.transform = list(items), channels, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> tuple[torch.Tensor, int] | Skipped:
        index, seed = split_key(key)
        path, label = self.items[index]
        try:
            image = decode(path, self.channels)
        except Exception as err:  # decoders raise RuntimeError, OSError, ValueError, SyntaxError...: all bad data
            return Skipped(f"{path}: {failure_reason(err)}")
        return transformed(self.transform, image, seed), label


class TensorImages(Dataset):
    """An in-memory uint8 [N, C, H, W] tensor (MNIST, CIFAR-10) streamed through the same loader and transforms
    as image files."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images [N, C, H, W] and N labels, got {images.dtype} "
                             f"{list(images.shape)} and {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, seed = split_key(key)
        return transformed(self.transform, self.images[index], seed), int(self.labels[index])


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images stacked, int64 labels, "<path>: <reason>" of each image skipped). A batch whose images were all
    skipped gives empty tensors."""
    kept = [item for item in batch if not isinstance(item, Skipped)]
    skipped = [item.reason for item in batch if isinstance(item, Skipped)]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    # default_collate stacks a worker's batch straight into shared memory; a plain torch.stack would be copied
    # there again on its way to the training process (a fifth of the throughput at 224 x 224 on 2 workers).
    images, labels = default_collate(kept)
    return images, labels, skipped


# ---------------------------------------------------------------------------------------------------------------
# Loading

class SeededOrder(Sampler):
    """An epoch's order of item indices, each paired with a seed for its random transforms. The seeds are
    base + position, base drawn from `generator` when a pass starts (as DataLoader seeds its workers base +
    worker id), so they follow the generator and the order alone."""

    def __init__(self, order: Sequence[int] | Sampler, generator: torch.Generator):
        self.order, self.generator = order, generator

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = int(torch.randint(0, 2**62, (), generator=self.generator))
        for position, index in enumerate(self.order):
            yield int(index), base + position


def default_workers(processes: int = 1) -> int:
    """Loader worker processes for each of `processes` training processes on this machine: the CPUs this process
    may use (its affinity, which containers and taskset narrow), shared out, less one for the training process
    itself, at most MAX_WORKERS. 0 (load in the training process) on a single CPU, where a worker would only
    take turns with it."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(MAX_WORKERS, cpus // max(1, processes) - 1))


def make_loader(dataset: Dataset, batch_size: int, indices: Sequence[int] | Sampler, workers: int,
                pin_memory: bool, generator: torch.Generator | None, prefetch_factor: int = 2,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader of (images, labels, skipped) batches over `indices`, read in the order given (a list, or a
    Sampler such as DistributedSampler). With a generator, each image's augmentation is seeded from it (see
    SeededOrder); without one (evaluation) the transforms' randomness, if any, is unseeded. Workers are started
    afresh for each pass (not persistent), seeded from the same generator. Memory is pinned only where CUDA is."""
    order = SeededOrder(indices, generator) if generator is not None else indices
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory and torch.cuda.is_available(), drop_last=drop_last,
                      generator=generator, prefetch_factor=prefetch_factor if workers > 0 else None,
                      persistent_workers=False)
