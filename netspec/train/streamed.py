"""Streamed data: images decoded and transformed one by one by DataLoader worker processes (netspec.train.images)
and moved to the device in pinned memory, for image files and for recipes asking for per-image transforms that
only torchvision's transforms v2 have (RandomResizedCrop, auto-augment, random erasing). `StreamedSplit` serves
either kind; `from_tensors` streams an in-memory dataset (MNIST, CIFAR-10) through the same loader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data.distributed import DistributedSampler
from torchvision.transforms.v2.functional import rgb_to_grayscale

from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import datasets, images
from netspec.train.distributed import Context
from netspec.train.errors import TrainError
from netspec.train.memory import fit_classes, pixel_statistics
from netspec.train.splits import DataOptions, Split, TrainingData, evaluation_shard
from netspec.train.transforms import eval_resize, fits_once_padded, network_transform


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
        sampler = DistributedSampler(self.dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                     shuffle=True, seed=self.run_seed)
        sampler.set_epoch(epoch)
        loader = images.make_loader(self.dataset, batch_size, sampler, self.workers, self.ctx.device.type == "cuda",
                                    torch.Generator().manual_seed(seed))
        return self._batches(loader)

    def evaluation_batches(self, batch_size):
        # len(dataset), not self.images: an evaluation that skipped unreadable images lowers self.images to the
        # number it read (netspec.train.loop.evaluate), and every file is still tried the next time.
        shard = evaluation_shard(len(self.dataset), self.ctx.rank, self.ctx.world_size, "cpu").tolist()
        loader = images.make_loader(self.dataset, batch_size, shard, self.workers, self.ctx.device.type == "cuda",
                                    torch.Generator().manual_seed(0))
        return self._batches(loader)


def from_tensors(graph: Graph, recipe: Recipe, dataset: datasets.Dataset, train: torch.Tensor, val: torch.Tensor,
                 test: tuple[torch.Tensor, torch.Tensor], ctx: Context, options: DataOptions, mode: str,
                 validation_from: str) -> TrainingData:
    """An in-memory dataset streamed: `train` and `val` index its training images, `test` is (images, labels).
    The images are given the network's channel count and normalised by the training images' statistics (or
    options.statistics)."""
    if len(graph.input_shape) != 3:
        raise TrainError(f"{graph.name} takes input {list(graph.input_shape)}; the network must take images "
                         "[C, H, W]")
    fit_classes(graph, dataset.name, dataset.classes)
    if recipe.permute_pixels is not None:
        raise TrainError("permute_pixels shuffles pixels on the in-memory path only; leave out --data-mode stream")
    channels = graph.input_shape[0]
    train_x = _to_channels(dataset.train_x, channels)
    mean, std = options.statistics or [t.flatten().tolist() for t in pixel_statistics(train_x[train])]

    def split(x, y, training):
        same_size = fits_once_padded(graph, recipe, *x.shape[-2:])
        transform = network_transform(graph, recipe, same_size, mean, std, training)
        return StreamedSplit(images.TensorImages(_to_channels(x, channels), y, transform), ctx, recipe.seed,
                             loader_workers(options))

    test_x, test_y = test
    same_size = fits_once_padded(graph, recipe, *dataset.shape[-2:])
    return TrainingData(dataset.name, mode, dataset.classes, split(train_x[train], dataset.train_y[train], True),
                        split(train_x[val], dataset.train_y[val], False) if len(val) else None,
                        split(test_x, test_y, False), make_pixels(recipe, mean, std, ctx), validation_from,
                        {"mean": mean, "std": std}, datasets.class_names(dataset.name, dataset.classes),
                        None if same_size else eval_resize(recipe, tuple(graph.input_shape[1:])))


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 images [N, C, H, W] with the network's channel count: grey repeated, colour to luminance."""
    if x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and x.shape[1] == 3:
        return rgb_to_grayscale(x)
    raise TrainError(f"images with {x.shape[1]} channels cannot be given to a network taking {channels}")


def make_pixels(recipe: Recipe, mean: list[float], std: list[float], ctx: Context):
    """The function that undoes a streamed batch's normalisation (TrainingData.pixels)."""
    mean_t = torch.tensor(mean, device=ctx.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=ctx.device).view(1, -1, 1, 1)
    return (lambda x: x * std_t + mean_t) if recipe.normalize else (lambda x: x)


def loader_workers(options: DataOptions) -> int:
    """DataLoader worker processes: options.workers, else a share of this machine's CPUs."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine
    return images.default_workers(local_processes) if options.workers is None else options.workers
