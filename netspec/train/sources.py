"""The data a run trains on: the dataset checked against the network, prepared on the device, and each
process's share of every epoch.

A dataset is held in (GPU) memory as uint8 tensors; batches are cut, scaled, padded, normalised and augmented
on the device, so no data loader stands between the GPU and its work. Which images a process takes in an
epoch is decided by torch's DistributedSampler, exactly as a DataLoader over a streamed dataset would take
them: the epoch's permutation is drawn from (seed, epoch) alone, and process r of N takes every N-th index
from position r. One process (N = 1) takes the whole permutation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data.distributed import DistributedSampler

from netspec import data as datasets
from netspec.ir import Graph
from netspec.recipe import Recipe
from netspec.train.errors import TrainError

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

    def __call__(self, images: torch.Tensor, training: bool, generator: torch.Generator | None = None):
        return self.augmented(self.fixed(images), training, generator)

    def fixed(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic part: scale, permute, pad, normalise."""
        x = images.float().div_(255)
        if self.permutation is not None:
            n, c, h, w = x.shape
            x = x.reshape(n, c, h * w)[:, :, self.permutation].reshape(n, c, h, w)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A prepared batch with the normalisation undone, pixels in [0, 1]: what a reconstruction reproduces."""
        return x * self.std + self.mean if self.normalize else x

    def augmented(self, x: torch.Tensor, training: bool, generator: torch.Generator | None = None):
        if training and "crop" in self.augment:
            x = _random_shift(x, 4 if x.shape[-1] >= 32 else 2, generator)
        if training and "flip" in self.augment:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x


def _random_shift(x: torch.Tensor, limit: int, generator) -> torch.Tensor:
    """Random translation by up to `limit` pixels (pad-and-crop), one offset per batch to stay cheap."""
    dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=generator,
                                            device=generator.device if generator is not None else None))
    padded = F.pad(x, (limit,) * 4)
    h, w = x.shape[-2:]
    return padded[..., limit + dy:limit + dy + h, limit + dx:limit + dx + w]


def fit_input(graph: Graph, dataset: datasets.Dataset, recipe: Recipe) -> None:
    """Refuse a dataset whose images or classes do not fit the network, saying which and how to fix it."""
    c, h, w = dataset.shape
    want = graph.input_shape
    got = (c, h + 2 * recipe.pad, w + 2 * recipe.pad)
    where = f"{graph.name} takes input {list(want)} but {dataset.name} images are {[c, h, w]}"
    if len(want) != 3:
        raise TrainError(f"{where}; the network must take images [C, H, W]")
    if want[0] != c:
        raise TrainError(f"{where}: {want[0]} channels against {c}; change the spec's input to "
                         f"[{c}, {want[1]}, {want[2]}]")
    if got != want:
        gap_h, gap_w = want[1] - h, want[2] - w
        if recipe.pad:
            where += f" ({list(got)} with pad={recipe.pad})"
        if gap_h == gap_w and gap_h > 0 and gap_h % 2 == 0:
            raise TrainError(f"{where}; pad them with --pad {gap_h // 2} (or `pad = {gap_h // 2}` in the spec's "
                             f"train section)")
        raise TrainError(f"{where}; change the spec's input to {[c, h, w]}")
    output = graph.node(graph.output).shape
    if output != (dataset.classes,):
        hint = f" (e.g. --set classes={dataset.classes})" if "classes" in graph.arguments else ""
        raise TrainError(f"{graph.name} outputs {list(output)} but {dataset.name} has {dataset.classes} classes; "
                         f"give the network {dataset.classes} outputs{hint}")


def make_preprocess(dataset: datasets.Dataset, recipe: Recipe, device) -> Preprocess:
    x = dataset.train_x.float().div_(255)
    mean = x.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1)
    permutation = None
    if recipe.permute_pixels is not None:
        h, w = dataset.shape[1:]
        permutation = torch.randperm(h * w, generator=torch.Generator().manual_seed(recipe.permute_pixels))
        permutation = permutation.to(device)
    return Preprocess(mean.to(device), std.to(device), recipe.pad, recipe.normalize, permutation, recipe.augment)


@dataclass
class DeviceData:
    """A dataset on the device. `batches(x[index], training, generator)` readies a batch cut from train_x or
    test_x; `pixels` undoes its normalisation (the target of a reconstruction)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    batches: Callable[..., torch.Tensor]
    pixels: Callable[[torch.Tensor], torch.Tensor]


def to_device(dataset: datasets.Dataset, recipe: Recipe, device: torch.device) -> DeviceData:
    """Move the dataset to the device. Scale, pad and normalise the whole set once when it fits (MNIST: 190 MB
    as float), so that a step does only its own work, as a hand-written loop over a prepared tensor would;
    else per batch."""
    preprocess = make_preprocess(dataset, recipe, device)
    train_x, test_x = dataset.train_x.to(device), dataset.test_x.to(device)
    c, h, w = dataset.shape
    prepared_bytes = (len(train_x) + len(test_x)) * c * (h + 2 * recipe.pad) * (w + 2 * recipe.pad) * 4
    batches = preprocess
    if prepared_bytes <= PREPARED_BYTES:
        train_x, test_x = preprocess.fixed(train_x), preprocess.fixed(test_x)
        batches = preprocess.augmented
    return DeviceData(train_x, dataset.train_y.to(device), test_x, dataset.test_y.to(device), batches,
                      preprocess.pixels)


def epoch_shard(count: int, seed: int, epoch: int, rank: int, world_size: int, device) -> torch.Tensor:
    """This process's indices for one epoch, in order: its DistributedSampler shard of the epoch's shuffle.
    When `world_size` does not divide `count`, the sampler repeats the first few indices of the shuffle so that
    every process takes as many images (and steps) as the others."""
    sampler = DistributedSampler(range(count), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long, device=device)


def evaluation_shard(count: int, rank: int, world_size: int, device) -> torch.Tensor:
    """This process's share of the test set: the unshuffled DistributedSampler shard without the padding it adds
    to even out the shards, so that the shards together hold every test image exactly once."""
    sampler = DistributedSampler(range(count), num_replicas=world_size, rank=rank, shuffle=False)
    own = len(range(rank, count, world_size))
    return torch.tensor(list(sampler)[:own], dtype=torch.long, device=device)
