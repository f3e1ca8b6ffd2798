"""In-memory data: a dataset that sits in memory as one uint8 tensor (MNIST, CIFAR-10, or image files decoded
up front) is checked against the network and moved to the device once; batches are cut, scaled, padded,
normalised and augmented there (a random crop and a flip per image: `Preprocess`), so no data loader stands
between the GPU and its work. A set small enough (PREPARED_BYTES as floats) is scaled, padded and normalised
once, leaving only the augmentation to each batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import datasets
from netspec.train.distributed import Context
from netspec.train.errors import TrainError
from netspec.train.splits import Split, TrainingData, epoch_shard, evaluation_shard
from netspec.train.transforms import crop_padding, random_crops

PREPARED_BYTES = 4 * 2**30


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
    fit_classes(graph, dataset.name, dataset.classes)


def fit_classes(graph: Graph, name: str, classes: int) -> None:
    """Refuse a dataset whose class count is not the network's output size."""
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


def in_memory(graph: Graph, recipe: Recipe, dataset: datasets.Dataset, train, val, test, ctx: Context,
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


def _statistics(mean: torch.Tensor, std: torch.Tensor) -> dict:
    return {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
