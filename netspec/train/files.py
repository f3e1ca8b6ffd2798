"""Image files as a run's data: an ImageFolder tree or CSV lists (netspec.train.images scans them), split into
training, validation and test sets, checked against the network, and then streamed through a DataLoader, or,
with --data-mode memory, decoded up front and held on the device like MNIST. Streamed files are normalised with
ImageNet's statistics, as torchvision's reference recipes do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import datasets, images
from netspec.train.distributed import Context
from netspec.train.errors import TrainError
from netspec.train.memory import fit_classes, in_memory
from netspec.train.splits import DataOptions, TrainingData, train_val_test
from netspec.train.streamed import StreamedSplit, loader_workers, make_pixels
from netspec.train.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize, network_transform

# Up to this many training images have their sizes read (from their headers) to learn whether they all have
# the network's input size; a larger collection is taken to be of mixed sizes (random-resized crops).
SIZE_SCAN_LIMIT = 20_000


def from_files(graph: Graph, recipe: Recipe, data_dir: str | None, ctx: Context, options: DataOptions,
               mode: str) -> TrainingData:
    """An ImageFolder tree or CSV lists: streamed through a DataLoader, or decoded into memory when asked."""
    if not data_dir:
        raise datasets.DataError(f"--data {recipe.data} needs --data-dir: " + (
            "a folder with train/ (and val/, test/) holding one folder of images per class"
            if recipe.data == "imagefolder" else "a folder with train.csv (and val.csv, test.csv), or one .csv file"))
    scan = images.scan_image_folder if recipe.data == "imagefolder" else images.scan_csv
    collection = scan(Path(data_dir).expanduser())
    if len(graph.input_shape) != 3 or graph.input_shape[0] not in (1, 3):
        raise TrainError(f"{graph.name} takes input {list(graph.input_shape)}; image files are read as [1, H, W] "
                         "or [3, H, W]")
    fit_classes(graph, collection.name, len(collection.classes))
    train, val, test, validation_from = train_val_test(collection.splits, recipe, options.limit_eval)
    channels = graph.input_shape[0]
    if mode == "memory":
        data = files_in_memory(graph, recipe, collection, (train, val, test), ctx, validation_from)
        data.class_names = list(collection.classes)
        return data
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))
    same_size = all_of_size(train, graph, recipe)

    def split(items, training):
        if not items:
            return None
        transform = network_transform(graph, recipe, same_size, mean, std, training)
        return StreamedSplit(images.ImageFiles(items, channels, transform), ctx, recipe.seed, loader_workers(options))

    return TrainingData(collection.name, mode, len(collection.classes), split(train, True), split(val, False),
                        split(test, False), make_pixels(recipe, list(mean), list(std), ctx), validation_from,
                        {"mean": list(mean), "std": list(std)}, list(collection.classes),
                        None if same_size else eval_resize(recipe, graph.input_shape[1:]))


def files_in_memory(graph: Graph, recipe: Recipe, collection: images.Collection, splits: tuple[list, list, list],
                    ctx: Context, validation_from: str) -> TrainingData:
    """Every image decoded now, in this process, and held on the device (--data-mode memory): they must share
    one size. An unreadable image is skipped and reported, as when streaming."""
    skipped, decoded = [], []
    for items in splits:
        pictures, labels = [], []
        for path, label in items:
            try:
                pictures.append(images.decode(path, graph.input_shape[0]))
                labels.append(label)
            except Exception as err:  # every decoder failure is bad data, as ImageFiles treats it
                skipped.append(f"{path}: {images.failure_reason(err)}")
        decoded.append((pictures, labels))
    shapes = sorted({tuple(x.shape) for pictures, _ in decoded for x in pictures})
    if len(shapes) != 1:
        raise TrainError(f"the images of {collection.name} differ in size ({', '.join(map(str, shapes[:4]))}"
                         f"{', ...' if len(shapes) > 4 else ''}); in memory they must be one size: leave out "
                         "--data-mode memory to stream them")
    tensors = [(torch.stack(pictures) if pictures else torch.empty(0, *shapes[0], dtype=torch.uint8),
                torch.tensor(labels, dtype=torch.long)) for pictures, labels in decoded]
    whole = datasets.Dataset(collection.name, *tensors[0], *tensors[2], len(collection.classes))
    data = in_memory(graph, recipe, whole, *tensors, ctx, validation_from)
    data.train.skipped = skipped
    return data


def all_of_size(items: list, graph: Graph, recipe: Recipe) -> bool:
    """Whether every training image is the network's input size less the recipe's padding, read from the
    files' headers; False for more than SIZE_SCAN_LIMIT images."""
    if len(items) > SIZE_SCAN_LIMIT:
        return False
    want = (graph.input_shape[2] - 2 * recipe.pad, graph.input_shape[1] - 2 * recipe.pad)  # PIL: (width, height)
    for path, _ in items:
        try:
            if images.image_size(path) != want:
                return False
        except Exception:  # unreadable (corrupt, a FIFO, too large): skipped, with its reason, when it is met
            continue
    return True
