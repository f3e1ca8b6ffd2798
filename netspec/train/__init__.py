"""Training: `netspec train` and `netspec eval`, on one process or many (torchrun, DistributedDataParallel).

Read in this order, as torchvision's references/classification/train.py reads top to bottom:

    runner.py       run(): a whole training run; evaluate_weights(): `netspec eval`
    sources.py      the dataset checked and split (train, validation, test), in memory or streamed
    images.py       streamed image files: ImageFolder and CSV lists, decoding, transforms v2, the DataLoader
    loop.py         the loss, train_one_epoch() (accumulation, clipping, mixed precision, mixup) and evaluate()
    optim.py        the optimiser with its weight-decay groups, warmup and schedule, and the model EMA
    checkpoints.py  the run folder: config.json, metrics.jsonl, last.pt, best.pt, resuming, the chosen weights
    distributed.py  torchrun's environment, the process group, DDP and SyncBatchNorm, `--nproc`
    progress.py     the progress bar, and the interface any other progress reporter implements

`netspec check` never imports this package (it imports torch).
"""

from netspec.train.checkpoints import read_checkpoint
from netspec.train.distributed import pick_device
from netspec.train.errors import TrainError
from netspec.train.loop import criterion, evaluate, forward, logits_of, reconstruction_loss
from netspec.train.optim import make_optimiser
from netspec.train.runner import RunOptions, evaluate_weights, run
from netspec.train.sources import PREPARED_BYTES, DataOptions, Preprocess, fit_input, make_preprocess

__all__ = ["PREPARED_BYTES", "DataOptions", "Preprocess", "RunOptions", "TrainError", "criterion", "evaluate",
           "evaluate_weights", "fit_input", "forward", "logits_of", "make_optimiser", "make_preprocess", "pick_device",
           "read_checkpoint", "reconstruction_loss", "run"]
