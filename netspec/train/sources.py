"""The data a run trains on: the dataset checked against the network, split into training, validation and test
sets, and each process's batches of every epoch, on the device.

Two ways to the device, chosen per run and printed:

- in memory: a dataset that sits in memory as one uint8 tensor (MNIST, CIFAR-10) is moved to the device once;
  batches are cut, scaled, padded, normalised and augmented there (a random crop and a flip per image), so no
  data loader stands between the GPU and its work;
- streamed: image files (an ImageFolder tree, a CSV list) or a recipe asking for per-image transforms that only
  torchvision's transforms v2 have (RandomResizedCrop, auto-augment, random erasing) go through a DataLoader
  with worker processes and pinned memory (netspec.train.images).

Which images a process takes in an epoch is decided by torch's DistributedSampler either way: the epoch's
permutation is drawn from (seed, epoch) alone, and process r of N takes every N-th index from position r.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler

from netspec import data as datasets
from netspec.ir import Graph
from netspec.recipe import Recipe
from netspec.train.distributed import Context
from netspec.train.errors import TrainError

PREPARED_BYTES = 4 * 2**30
# The validation images are drawn with this seed whatever the run's seed, so that runs differing only in their
# seed are compared on the same validation set.
VALIDATION_SEED = 0
# torchvision's reference recipes normalise with ImageNet's statistics; a grey image takes their mean.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FILE_DATA = ("imagefolder", "csv")


@dataclass
class Preprocess:
    """uint8 images -> the network's input: scale, permute pixels, pad, normalise, augment. Runs on the device."""

    mean: torch.Tensor  # [1, C, 1, 1], after scaling to [0, 1]
    std: torch.Tensor
    pad: int
    normalize: bool
    permutation: torch.Tensor | None
    augment: str
    shift: int = 2  # how far augment="crop" moves an image: crop_padding() of its width before `pad`

    def __call__(self, images: torch.Tensor, training: bool, generator: torch.Generator | None = None):
        return self.augmented(self.fixed(images), training, generator)

    def fixed(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic part: permute, pad (black), scale and normalise. Permuting and padding the uint8
        images and normalising in place as one multiply-add makes a single float copy of them."""
        x = images
        if self.permutation is not None:
            n, c, h, w = x.shape
            x = x.reshape(n, c, h * w)[:, :, self.permutation].reshape(n, c, h, w)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if not self.normalize:
            return x.float().div_(255)
        return x.float().mul_(1 / (255 * self.std)).sub_(self.mean / self.std)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A prepared batch with the normalisation undone, pixels in [0, 1]: what a reconstruction reproduces."""
        return x * self.std + self.mean if self.normalize else x

    def augmented(self, x: torch.Tensor, training: bool, generator: torch.Generator | None = None):
        if training and "crop" in self.augment:
            # Padded with black (0 before normalisation), as torchvision's RandomCrop pads a picture.
            black = -self.mean / self.std if self.normalize else 0.0
            x = random_crops(x, self.shift, generator, black)
        if training and "flip" in self.augment:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x


def crop_padding(width: int) -> int:
    """How far augment="crop" shifts an image of this width (before the recipe's `pad`): 4 pixels from 32 up
    (CIFAR's recipe), 2 below (MNIST's 28: LeNet-5 learns worse with 4)."""
    return 4 if width >= 32 else 2


def random_crops(x: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                 fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Each image of the batch padded by `padding` with `fill` (a [1, C, 1, 1] tensor or a number) and cropped
    back to its size at its own random offset: torchvision's RandomCrop(size, padding), batched on the device."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [n, w]
    padded = (F.pad(x - fill, (padding,) * 4) + fill).permute(0, 2, 3, 1)  # [n, H, W, c]
    picked = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)


def fit_input(graph: Graph, dataset: datasets.Dataset, recipe: Recipe) -> None:
    """Refuse in-memory images or classes that do not fit the network, with the whole fix in one message."""
    c, h, w = dataset.shape
    want = graph.input_shape
    where = f"{graph.name} takes input {list(want)} but {dataset.name} images are {[c, h, w]}"
    if len(want) != 3:
        raise TrainError(f"{where}; the network must take images [C, H, W]")
    got = (c, h + 2 * recipe.pad, w + 2 * recipe.pad)
    if got != want:
        if recipe.pad:
            where += f" ({list(got)} with pad={recipe.pad})"
        gap_h, gap_w = want[1] - h, want[2] - w
        can_pad = gap_h == gap_w and gap_h >= 0 and gap_h % 2 == 0
        if can_pad and want[0] == c:
            fix = f"pad them with --pad {gap_h // 2} (or `pad = {gap_h // 2}` in the spec's train section)"
        elif can_pad:
            fix = (f"change the spec's input to [{c}, {want[1]}, {want[2]}] ({c} channel{'s' * (c != 1)}, not "
                   f"{want[0]})" +
                   (f" and pad the images with --pad {gap_h // 2} (or `pad = {gap_h // 2}` in the spec's train "
                    "section)" if gap_h != 2 * recipe.pad else ""))
        else:
            fix = f"change the spec's input to {[c, h + 2 * recipe.pad, w + 2 * recipe.pad]}"
        raise TrainError(f"{where}; {fix}; or pass --data-mode stream, which converts channels and resizes")
    _fit_classes(graph, dataset.name, dataset.classes)


def _fit_classes(graph: Graph, name: str, classes: int) -> None:
    output = graph.node(graph.output).shape
    if output != (classes,):
        hint = f" (e.g. --set classes={classes})" if "classes" in graph.arguments else ""
        raise TrainError(f"{graph.name} outputs {list(output)} but {name} has {classes} classes; "
                         f"give the network {classes} outputs{hint}")


def make_preprocess(dataset: datasets.Dataset, recipe: Recipe, device, images: torch.Tensor | None = None,
                    statistics: tuple[list[float], list[float]] | None = None) -> Preprocess:
    """The preprocessing of an in-memory dataset, normalised by `statistics` (per-channel mean and std) when
    given, else by those of `images` (default: its training images)."""
    if statistics is not None:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in statistics)
    else:
        mean, std = pixel_statistics(dataset.train_x if images is None else images)
    permutation = None
    if recipe.permute_pixels is not None:
        h, w = dataset.shape[1:]
        permutation = torch.randperm(h * w, generator=torch.Generator().manual_seed(recipe.permute_pixels))
        permutation = permutation.to(device)
    return Preprocess(mean.to(device), std.to(device), recipe.pad, recipe.normalize, permutation, recipe.augment,
                      crop_padding(dataset.shape[-1]))


def pixel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ([1, C, 1, 1]) of uint8 images as pixels in [0, 1], from each
    channel's histogram of byte values: exact, and without a float copy of the images."""
    counts = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256) for c in range(images.shape[1])])
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1, dtype=torch.float64)
    mean = (counts * values).sum(1) / total
    variance = (counts * (values - mean[:, None]) ** 2).sum(1) / (total - 1).clamp_min(1)  # as Tensor.std()
    return (mean.float().view(1, -1, 1, 1), variance.sqrt().float().clamp_min(1e-6).view(1, -1, 1, 1))


def hold_out(count: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices): round(fraction x count) images drawn with VALIDATION_SEED, the
    rest kept in their order."""
    held = round(fraction * count)
    if not held:
        return torch.arange(count), torch.arange(0)
    chosen = torch.randperm(count, generator=torch.Generator().manual_seed(VALIDATION_SEED))[:held]
    keep = torch.ones(count, dtype=torch.bool)
    keep[chosen] = False
    return keep.nonzero().flatten(), chosen.sort().values


class Split(ABC):
    """One split's images as batches on the device, this process's share of them. `skipped` collects the
    images that could not be read ("path: reason"), as they are met."""

    images: int
    skipped: list[str]

    def steps(self, batch_size: int, world_size: int) -> int:
        """Training steps per epoch for each process: DistributedSampler gives each ceil(images / N)."""
        return math.ceil(math.ceil(self.images / world_size) / batch_size)

    @abstractmethod
    def training_batches(self, batch_size: int, epoch: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's shard of the epoch's shuffle, augmented; `seed` draws the augmentation."""

    @abstractmethod
    def evaluation_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's shard, in order, as evaluated."""


class MemorySplit(Split):
    """Images held on the device as one tensor: prepared (scaled, padded, normalised) once when it fits."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, preprocess: Preprocess, ctx: Context, run_seed: int,
                 prepare: bool):
        self.ctx, self.run_seed, self.images, self.skipped = ctx, run_seed, len(x), []
        self.x, self.y = x.to(ctx.device), y.to(ctx.device)
        self.batch = preprocess
        if prepare:
            self.x, self.batch = preprocess.fixed(self.x), preprocess.augmented

    def training_batches(self, batch_size, epoch, seed):
        order = epoch_shard(self.images, self.run_seed, epoch, self.ctx.rank, self.ctx.world_size,
                            self.ctx.device)
        generator = torch.Generator(device=self.ctx.device).manual_seed(seed)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield self.batch(self.x[index], training=True, generator=generator), self.y[index]

    def evaluation_batches(self, batch_size):
        shard = evaluation_shard(self.images, self.ctx.rank, self.ctx.world_size, self.ctx.device)
        for start in range(0, len(shard), batch_size):
            index = shard[start:start + batch_size]
            yield self.batch(self.x[index], training=False), self.y[index]


class StreamedSplit(Split):
    """Images decoded and transformed by DataLoader workers (netspec.train.images), moved to the device."""

    def __init__(self, dataset, ctx: Context, run_seed: int, workers: int):
        self.dataset, self.ctx, self.run_seed, self.workers = dataset, ctx, run_seed, workers
        self.images, self.skipped = len(dataset), []

    def _batches(self, loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.ctx.device.type == "cuda"
        for x, y, skipped in loader:
            self.skipped += skipped
            if len(y):
                yield x.to(self.ctx.device, non_blocking=non_blocking), y.to(self.ctx.device, non_blocking=non_blocking)

    def training_batches(self, batch_size, epoch, seed):
        from netspec.train import images

        sampler = DistributedSampler(self.dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                     shuffle=True, seed=self.run_seed)
        sampler.set_epoch(epoch)
        loader = images.make_loader(self.dataset, batch_size, sampler, self.workers, self.ctx.device.type == "cuda",
                                    torch.Generator().manual_seed(seed))
        return self._batches(loader)

    def evaluation_batches(self, batch_size):
        from netspec.train import images

        shard = evaluation_shard(self.images, self.ctx.rank, self.ctx.world_size, "cpu").tolist()
        loader = images.make_loader(self.dataset, batch_size, shard, self.workers, self.ctx.device.type == "cuda",
                                    torch.Generator().manual_seed(0))
        return self._batches(loader)


def epoch_shard(count: int, seed: int, epoch: int, rank: int, world_size: int, device) -> torch.Tensor:
    """This process's indices for one epoch, in order: its DistributedSampler shard of the epoch's shuffle.
    When `world_size` does not divide `count`, the sampler repeats the first few indices of the shuffle so that
    every process takes as many images (and steps) as the others."""
    sampler = DistributedSampler(range(count), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long, device=device)


def evaluation_shard(count: int, rank: int, world_size: int, device) -> torch.Tensor:
    """This process's share of an evaluation set: the unshuffled DistributedSampler shard without the padding it
    adds to even out the shards, so that the shards together hold every image exactly once."""
    sampler = DistributedSampler(range(count), num_replicas=world_size, rank=rank, shuffle=False)
    own = len(range(rank, count, world_size))
    return torch.tensor(list(sampler)[:own], dtype=torch.long, device=device)


@dataclass
class DataOptions:
    """How the data reaches the device: `mode` "auto", "memory" or "stream"; DataLoader `workers` (None: a
    default for this machine); `limit_eval` caps the validation and test images (a smoke run)."""

    mode: str = "auto"
    workers: int | None = None
    limit_eval: int | None = None
    # The normalisation (per-channel mean, std) to apply instead of the training images': a checkpoint's, so
    # that `netspec eval` normalises as the run did whatever validation split its settings give.
    statistics: tuple[list[float], list[float]] | None = None


@dataclass
class TrainingData:
    """The splits of a run, on their way to the device. `pixels` undoes the normalisation of a batch."""

    name: str
    mode: str
    classes: int
    train: Split
    val: Split | None
    test: Split | None
    pixels: Callable[[torch.Tensor], torch.Tensor]
    validation_from: str  # where the validation images came from, in words
    statistics: dict = field(default_factory=dict)  # the normalisation's mean and std, for config.json

    def skipped(self) -> list[str]:
        return [s for split in (self.train, self.val, self.test) if split is not None for s in split.skipped]

    def describe(self) -> str:
        sizes = [f"{self.train.images:,} train"]
        if self.val is not None:
            sizes.append(f"{self.val.images:,} validation ({self.validation_from})")
        sizes.append(f"{self.test.images:,} test" if self.test is not None else "no test set")
        return f"{self.name} {'in memory' if self.mode == 'memory' else 'streamed'}: {', '.join(sizes)}"


def needs_streaming(recipe: Recipe) -> str | None:
    """The recipe's setting that only the streamed path's per-image transforms carry out, if any."""
    if recipe.auto_augment != "none":
        return f"auto_augment = {recipe.auto_augment!r}"
    if recipe.random_erase:
        return "random_erase"
    if recipe.train_crop != "auto":
        return f"train_crop = {recipe.train_crop!r}"
    if recipe.train_crop_size is not None:
        return "train_crop_size"
    return None


def choose_mode(recipe: Recipe, requested: str) -> str:
    wanted = needs_streaming(recipe)
    if requested == "memory" and wanted:
        raise TrainError(f"{wanted} transforms each image as torchvision's transforms v2 do, which the in-memory "
                         "path does not; leave out --data-mode memory")
    if requested != "auto":
        return requested
    if recipe.data in FILE_DATA:
        return "stream"
    return "stream" if wanted else "memory"


def prepare(graph: Graph, recipe: Recipe, data_dir: str | None, download: bool, ctx: Context,
            options: DataOptions) -> TrainingData:
    """The run's data, checked against the network, split, and ready to be batched on `ctx.device`."""
    mode = choose_mode(recipe, options.mode)
    if recipe.data in FILE_DATA:
        return _from_files(graph, recipe, data_dir, ctx, options, mode)
    dataset = datasets.load(recipe.data, data_dir, graph.input_shape, graph.node(graph.output).shape[0], download)
    return _from_tensors(graph, recipe, dataset, ctx, options, mode)


def _validation_indices(recipe: Recipe, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    train, val = hold_out(count, recipe.validation)
    return train, val, f"{recipe.validation:.0%} held out of the training set, seed {VALIDATION_SEED}"


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 images [N, C, H, W] with the network's channel count: grey repeated, colour to luminance."""
    if x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and x.shape[1] == 3:
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        return rgb_to_grayscale(x)
    raise TrainError(f"images with {x.shape[1]} channels cannot be given to a network taking {channels}")


def _from_tensors(graph: Graph, recipe: Recipe, dataset: datasets.Dataset, ctx: Context, options: DataOptions,
                  mode: str) -> TrainingData:
    train, val, validation_from = _validation_indices(recipe, len(dataset.train_x))
    limit = options.limit_eval
    test_x, test_y = dataset.test_x[:limit], dataset.test_y[:limit]
    val = val[:limit]
    if mode == "memory":
        return _in_memory(graph, recipe, dataset, (dataset.train_x[train], dataset.train_y[train]),
                          (dataset.train_x[val], dataset.train_y[val]), (test_x, test_y), ctx, validation_from,
                          options.statistics)
    if len(graph.input_shape) != 3:
        raise TrainError(f"{graph.name} takes input {list(graph.input_shape)}; the network must take images "
                         "[C, H, W]")
    _fit_classes(graph, dataset.name, dataset.classes)
    if recipe.permute_pixels is not None:
        raise TrainError("permute_pixels shuffles pixels on the in-memory path only; leave out --data-mode stream")
    channels = graph.input_shape[0]
    train_x = _to_channels(dataset.train_x, channels)
    mean, std = options.statistics or [t.flatten().tolist() for t in pixel_statistics(train_x[train])]

    def split(x, y, training):
        return _streamed_tensors(graph, recipe, _to_channels(x, channels), y, mean, std, training, ctx, options)

    pixels = _pixels(recipe, mean, std, ctx)
    return TrainingData(dataset.name, mode, dataset.classes, split(train_x[train], dataset.train_y[train], True),
                        split(train_x[val], dataset.train_y[val], False) if len(val) else None,
                        split(test_x, test_y, False), pixels, validation_from, {"mean": mean, "std": std})


def _in_memory(graph: Graph, recipe: Recipe, dataset: datasets.Dataset, train, val, test, ctx: Context,
               validation_from: str, statistics=None) -> TrainingData:
    """Splits held on the device; `dataset` (its shape, name and classes) is what the network is checked
    against, each split an (images, labels) pair, `test` possibly empty."""
    fit_input(graph, dataset, recipe)
    preprocess = make_preprocess(dataset, recipe, ctx.device, train[0], statistics)
    c, h, w = graph.input_shape
    prepare = (len(train[0]) + len(val[0]) + len(test[0])) * c * h * w * 4 <= PREPARED_BYTES

    def split(pair):
        return MemorySplit(*pair, preprocess, ctx, recipe.seed, prepare) if len(pair[0]) else None

    return TrainingData(dataset.name, "memory", dataset.classes, split(train), split(val), split(test),
                        preprocess.pixels, validation_from, _statistics(preprocess.mean, preprocess.std))


def _from_files(graph: Graph, recipe: Recipe, data_dir: str | None, ctx: Context, options: DataOptions,
                mode: str) -> TrainingData:
    """An ImageFolder tree or CSV lists: streamed through a DataLoader, or decoded into memory when asked."""
    from netspec.train import images

    if not data_dir:
        raise datasets.DataError(f"--data {recipe.data} needs --data-dir: " + (
            "a folder with train/ (and val/, test/) holding one folder of images per class"
            if recipe.data == "imagefolder" else "a folder with train.csv (and val.csv, test.csv), or one .csv file"))
    scan = images.scan_image_folder if recipe.data == "imagefolder" else images.scan_csv
    collection = scan(Path(data_dir).expanduser())
    if len(graph.input_shape) != 3 or graph.input_shape[0] not in (1, 3):
        raise TrainError(f"{graph.name} takes input {list(graph.input_shape)}; image files are read as [1, H, W] "
                         "or [3, H, W]")
    _fit_classes(graph, collection.name, len(collection.classes))
    train = collection.splits["train"]
    if "val" in collection.splits:
        val = collection.splits["val"]
        validation_from = "val/ folder" if recipe.data == "imagefolder" else "val.csv"
    else:
        kept, held, validation_from = _validation_indices(recipe, len(train))
        train, val = [train[i] for i in kept.tolist()], [train[i] for i in held.tolist()]
    test = collection.splits.get("test", [])
    val, test = val[:options.limit_eval], test[:options.limit_eval]
    channels = graph.input_shape[0]
    if mode == "memory":
        return _files_in_memory(graph, recipe, collection, (train, val, test), ctx, validation_from)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))
    same_size = _all_of_size(train, graph, recipe)

    def split(items, training):
        if not items:
            return None
        transform = _transform(graph, recipe, same_size, mean, std, training)
        return StreamedSplit(images.ImageFiles(items, channels, transform), ctx, recipe.seed, _workers(options))

    return TrainingData(collection.name, mode, len(collection.classes), split(train, True), split(val, False),
                        split(test, False), _pixels(recipe, list(mean), list(std), ctx), validation_from,
                        {"mean": list(mean), "std": list(std)})


def _files_in_memory(graph: Graph, recipe: Recipe, collection, splits: tuple[list, list, list], ctx: Context,
                     validation_from: str) -> TrainingData:
    """Every image decoded now, in this process, and held on the device (--data-mode memory): they must share
    one size. An unreadable image is skipped and reported, as when streaming."""
    from netspec.train import images

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
    data = _in_memory(graph, recipe, whole, *tensors, ctx, validation_from)
    data.train.skipped = skipped
    return data


# Up to this many training images have their sizes read (from their headers) to learn whether they all have
# the network's input size; a larger collection is taken to be of mixed sizes (random-resized crops).
SIZE_SCAN_LIMIT = 20_000


def _all_of_size(items: list, graph: Graph, recipe: Recipe) -> bool:
    from PIL import Image

    if len(items) > SIZE_SCAN_LIMIT:
        return False
    want = (graph.input_shape[2] - 2 * recipe.pad, graph.input_shape[1] - 2 * recipe.pad)  # PIL: (width, height)
    for path, _ in items:
        try:
            with Image.open(path) as image:
                if image.size != want:
                    return False
        except OSError:
            continue  # unreadable: skipped when it is met
    return True


def _statistics(mean: torch.Tensor, std: torch.Tensor) -> dict:
    return {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}


def _pixels(recipe: Recipe, mean: list[float], std: list[float], ctx: Context):
    mean_t = torch.tensor(mean, device=ctx.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=ctx.device).view(1, -1, 1, 1)
    return (lambda x: x * std_t + mean_t) if recipe.normalize else (lambda x: x)


def _same_size(graph: Graph, recipe: Recipe, height: int, width: int) -> bool:
    return (height + 2 * recipe.pad, width + 2 * recipe.pad) == tuple(graph.input_shape[1:])


def _transform(graph: Graph, recipe: Recipe, same_size: bool, mean, std, training: bool):
    from netspec.train import images

    size = tuple(graph.input_shape[1:])
    make = images.train_transform if training else images.eval_transform
    return make(recipe, size, same_size, mean, std)


def _streamed_tensors(graph, recipe, x, y, mean, std, training, ctx, options) -> StreamedSplit:
    from netspec.train import images

    same_size = _same_size(graph, recipe, *x.shape[-2:])
    transform = _transform(graph, recipe, same_size, mean, std, training)
    return StreamedSplit(images.TensorImages(x, y, transform), ctx, recipe.seed, _workers(options))


def _workers(options: DataOptions) -> int:
    from netspec.train import images

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine
    return images.default_workers(local_processes) if options.workers is None else options.workers
