"""The run folder: `config.json` (everything resolved), `metrics.jsonl` (one line per epoch), `last.pt`
(weights, optimiser, schedule and metrics: enough to resume exactly) and `best.pt` (the weights with the best
test accuracy). Every file is written atomically, and by rank 0 alone; the weights are always the plain
module's state_dict, never a DistributedDataParallel wrapper's, so that any number of processes reads them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

import netspec
from netspec.data import Dataset
from netspec.errors import first_line
from netspec.evaluate import show
from netspec.files import write_atomic
from netspec.ir import Graph
from netspec.recipe import Recipe
from netspec.train.distributed import Context, restarted
from netspec.train.errors import TrainError
from netspec.train.loop import Diverged

NEEDED = {"model", "optimizer", "scheduler", "epoch", "metrics", "config"}


def read_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"nothing to resume: {path} does not exist") from None
    except Exception as err:
        raise TrainError(f"{path} is damaged or not a checkpoint ({type(err).__name__}: {first_line(err)}); "
                         "nothing was changed") from None
    if not isinstance(checkpoint, dict) or not NEEDED <= set(checkpoint):
        raise TrainError(f"{path} is not a netspec training checkpoint; nothing was changed")
    return checkpoint


def _save(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


class RunFolder:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.metrics, self.config = self.path / "metrics.jsonl", self.path / "config.json"

    def checkpoint_to_resume(self, resume: bool) -> dict | None:
        """last.pt when the run goes on (--resume, or torchrun restarting the group after a process died), else
        None; refuses to start a new run over an old one. Only reads: every process calls it."""
        if restarted():
            return read_checkpoint(self.last) if self.last.exists() else None
        if resume:
            return read_checkpoint(self.last)
        if self.last.exists() or self.metrics.exists():
            raise TrainError(f"{self.path} already holds a run; pass --resume to continue it, or --out another "
                             "folder")
        return None

    def create(self) -> str | None:
        """Make the folder (rank 0); the reason when it cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path / ".write-test", b"")
            (self.path / ".write-test").unlink()
        except OSError as err:
            return f"cannot write the run folder {self.path}: {err.strerror}"
        return None

    def start(self, config: dict, history: list[dict]) -> None:
        write_atomic(self.config, json.dumps(config, indent=2) + "\n")
        self.write_metrics(history)

    def write_metrics(self, history: list[dict]) -> None:
        write_atomic(self.metrics, "".join(json.dumps(m) + "\n" for m in history))

    def save_epoch(self, model: torch.nn.Module, optimiser, schedule, history: list[dict], config: dict,
                   best: bool) -> None:
        """best.pt when the epoch's test accuracy is the best so far, then last.pt, then metrics.jsonl."""
        epoch = history[-1]["epoch"]
        if best:
            _save(self.best, {"model": model.state_dict(), "epoch": epoch,
                              "test_accuracy": history[-1]["test_accuracy"], "config": config})
        _save(self.last, {"model": model.state_dict(), "optimizer": optimiser.state_dict(),
                          "scheduler": schedule.state_dict(), "epoch": epoch, "metrics": history, "config": config})
        self.write_metrics(history)

    def diverged(self, stop: Diverged, recipe: Recipe) -> str:
        kept = f"{self.last} (after epoch {stop.epoch - 1}) is kept" if stop.epoch > 1 and self.last.exists() else \
            "no checkpoint had been written yet"
        return (f"{stop}; stopping. {kept}. Lower the learning rate (now {recipe.lr:g}), or look for a layer that "
                "overflows")


def run_config(graph: Graph, recipe: Recipe, dataset: Dataset, ctx: Context, sync_bn: bool) -> dict:
    """What config.json records, as plain JSON types (checkpoints load with weights_only=True)."""
    config = {"spec": graph.file, "network": graph.name, "arguments": graph.arguments, "recipe": recipe.model_dump(),
              "device": str(ctx.device), "world_size": ctx.world_size,
              "batch_size_per_process": recipe.batch_size // ctx.world_size,
              **({"backend": ctx.backend, "sync_bn": sync_bn} if ctx.distributed else {}),
              "dataset": dataset.name, "train_images": len(dataset.train_x), "test_images": len(dataset.test_x),
              "netspec": netspec.__version__, "torch": str(torch.__version__)}
    return json.loads(json.dumps(config, default=show))  # a block is saved by name


def restore(checkpoint: dict, graph: Graph, config: dict, last: Path, model: torch.nn.Module, optimiser,
            schedule) -> list[dict]:
    """Load a checkpoint of the same network and recipe (any number of processes may have written it) into the
    model, optimiser and schedule; returns the metrics so far."""
    if checkpoint["config"].get("network") != graph.name:
        raise TrainError(f"{last} was saved from network {checkpoint['config'].get('network')}, not {graph.name}")
    saved = checkpoint["config"].get("recipe", {})
    changed = [f"{key} {saved.get(key)!r} in {last.name}, {value!r} now" for key, value in config["recipe"].items()
               if saved.get(key) != value]
    if changed:
        raise TrainError("--resume continues a run as it was set up, but " + "; ".join(changed) +
                         ". Use the same settings, or start a new run with another --out")
    model.load_state_dict(checkpoint["model"])
    optimiser.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["scheduler"])
    return list(checkpoint["metrics"])
