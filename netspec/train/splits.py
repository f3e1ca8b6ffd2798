"""A run's data as splits: the training, validation and test sets (`TrainingData`), the validation images held
out of the training set, and what every split gives the loop, this process's batches of an epoch (`Split`).
Which images a process takes is decided by torch's DistributedSampler on either path, in memory or streamed: the
epoch's permutation is drawn from (seed, epoch) alone, and process r of N takes every N-th index from position r.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data.distributed import DistributedSampler

from netspec.semantics.recipe import Recipe

# The validation images are drawn with this seed whatever the run's seed, so that runs differing only in their
# seed are compared on the same validation set.
VALIDATION_SEED = 0


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


def train_val_test(splits: dict[str, list], recipe: Recipe, limit_eval: int | None) -> tuple[
        list, list, list, str]:
    """A collection's training, validation and test items, and where the validation items came from in words:
    its val/ folder (val.csv), else the recipe's fraction held out of the training items; `limit_eval` cuts the
    two evaluated sets (a smoke run)."""
    train = splits["train"]
    if "val" in splits:
        val, validation_from = splits["val"], "val/ folder" if recipe.data == "imagefolder" else "val.csv"
    else:
        kept, held, validation_from = validation_indices(recipe, len(train))
        train, val = [train[i] for i in kept.tolist()], [train[i] for i in held.tolist()]
    return train, val[:limit_eval], splits.get("test", [])[:limit_eval], validation_from


def validation_indices(recipe: Recipe, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """hold_out() of the recipe's validation fraction, and where the validation images came from, in words."""
    train, val = hold_out(count, recipe.validation)
    return train, val, f"{recipe.validation:.0%} held out of the training set, seed {VALIDATION_SEED}"


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
    class_names: list[str] = field(default_factory=list)  # what each output means, by index
    # How evaluation brings an image to the network's size: None, the images are that size (less the recipe's
    # padding) and are padded; else the shorter side is resized to this and the centre cropped.
    eval_resize: int | None = None
    task: str = "classification"  # or "segmentation": a class score per pixel, masks as labels

    def skipped(self) -> list[str]:
        return [s for split in (self.train, self.val, self.test) if split is not None for s in split.skipped]

    def describe(self) -> str:
        sizes = [f"{self.train.images:,} train"]
        if self.val is not None:
            sizes.append(f"{self.val.images:,} validation ({self.validation_from})")
        sizes.append(f"{self.test.images:,} test" if self.test is not None else "no test set")
        return f"{self.name} {'in memory' if self.mode == 'memory' else 'streamed'}: {', '.join(sizes)}"
