"""Training: `netspec train` and `netspec eval`, on one process or many (torchrun, DistributedDataParallel).

Read in this order, as torchvision's references/classification/train.py reads top to bottom:

    runner.py       run(): a whole training run; evaluate_weights(): `netspec eval`
    sources.py      the run's data: the dataset checked and split (train, validation, test), which path it takes
    splits.py       the splits, the validation hold-out, and each process's shard of an epoch
    memory.py       the in-memory path: the dataset on the device, batches preprocessed and augmented there
    streamed.py     the streamed path: a DataLoader's batches moved to the device
    files.py        image files as a run's data: ImageFolder and CSV collections, streamed or decoded up front
    datasets.py     MNIST, Fashion-MNIST, CIFAR-10 and synthetic data as uint8 tensors
    images.py       streamed image files: scanning, decoding, skipping unreadable ones, the DataLoader
    transforms.py   the training and evaluation transforms (torchvision's presets.py) and the crop padding
    segmentation.py image and mask pairs, their joint transforms (tv_tensors.Mask), mask PNGs
    loop.py         the loss, train_one_epoch() (accumulation, clipping, mixed precision, mixup) and evaluate()
                    (top-5, the confusion matrix, mean IoU)
    optim.py        the optimiser with its weight-decay and learning-rate groups, warmup and schedule, the EMA
    finetune.py     --init (pretrained weights by key, the head re-initialised), freezing, the head's rate
    checkpoints.py  the run folder: config.json, metrics.jsonl, last.pt, best.pt, resuming and extending
    preprocessing.py the evaluation's preprocessing, recorded in checkpoints and repeated by predict
    predict.py      `netspec predict`: top-k classes by name, or mask PNGs
    distributed.py  torchrun's environment, the process group, DDP and SyncBatchNorm, `--nproc`
    progress.py     the progress bar, and the interface any other progress reporter implements
    live.py         the live progress display in a Jupyter kernel
    plot.py         `netspec plot`: the loss and accuracy curves of finished runs; the confusion matrix

`netspec check` never imports this package (it imports torch); `netspec plot` imports only plot.py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netspec.train.checkpoints import read_checkpoint
    from netspec.train.distributed import pick_device
    from netspec.train.errors import TrainError
    from netspec.train.loop import criterion, evaluate, forward, logits_of, reconstruction_loss
    from netspec.train.memory import PREPARED_BYTES, Preprocess, fit_input, make_preprocess
    from netspec.train.optim import make_optimiser
    from netspec.train.runner import RunOptions, evaluate_weights, run
    from netspec.train.splits import DataOptions

# Each name is imported from its module when first asked for, so that importing a module of this package that
# needs no torch (plot.py, which `netspec plot` imports) does not import torch through this file.
HOMES = {
    "read_checkpoint": "checkpoints", "pick_device": "distributed", "TrainError": "errors", "criterion": "loop",
    "evaluate": "loop", "forward": "loop", "logits_of": "loop", "reconstruction_loss": "loop",
    "PREPARED_BYTES": "memory", "Preprocess": "memory", "fit_input": "memory", "make_preprocess": "memory",
    "make_optimiser": "optim", "RunOptions": "runner", "evaluate_weights": "runner", "run": "runner",
    "DataOptions": "splits",
}

__all__ = ["PREPARED_BYTES", "DataOptions", "Preprocess", "RunOptions", "TrainError", "criterion", "evaluate",
           "evaluate_weights", "fit_input", "forward", "logits_of", "make_optimiser", "make_preprocess", "pick_device",
           "read_checkpoint", "reconstruction_loss", "run"]


def __getattr__(name: str):
    if name not in HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{HOMES[name]}"), name)
    globals()[name] = value  # asked for once
    return value
