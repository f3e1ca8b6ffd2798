"""Training: `netspec train` and `netspec eval`, on one process or many (torchrun, DistributedDataParallel).

Read in this order, as torchvision's references/classification/train.py reads top to bottom:

    runner.py       run(): a whole training run; evaluate_weights(): `netspec eval`
    sources.py      the dataset checked, prepared on the device, and each process's shard of every epoch
    loop.py         the loss, the optimiser, train_one_epoch() and evaluate()
    checkpoints.py  the run folder: config.json, metrics.jsonl, last.pt, best.pt, resuming
    distributed.py  torchrun's environment, the process group, DDP and SyncBatchNorm, `--nproc`
    progress.py     the progress bar, and the interface any other progress reporter implements

`netspec check` never imports this package (it imports torch).
"""

from netspec.train.checkpoints import read_checkpoint
from netspec.train.distributed import pick_device
from netspec.train.errors import TrainError
from netspec.train.loop import criterion, evaluate, forward, logits_of, make_optimiser, reconstruction_loss
from netspec.train.runner import evaluate_weights, run
from netspec.train.sources import PREPARED_BYTES, Preprocess, fit_input, make_preprocess

__all__ = ["PREPARED_BYTES", "Preprocess", "TrainError", "criterion", "evaluate", "evaluate_weights", "fit_input",
           "forward", "logits_of", "make_optimiser", "make_preprocess", "pick_device", "read_checkpoint",
           "reconstruction_loss", "run"]
