"""The run folder: `config.json` (everything resolved), `metrics.jsonl` (one line per epoch, then the test of
the chosen weights), `last.pt` (weights, EMA, optimiser, schedule and metrics: enough to resume exactly) and
`best.pt` (the weights of the epoch with the best validation accuracy). Every file is written atomically, and
by rank 0 alone; the weights are always the plain module's state_dict, never a DistributedDataParallel
wrapper's, so that any number of processes reads them.

Life cycle (docs/training.md): a folder is created only once every check has passed, so a refused run leaves
nothing; a run that never checkpointed is simply started again; a checkpointed one goes on with --resume or
starts over with --overwrite.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from netspec.ground.version import __version__
from netspec.language.evaluate import show
from netspec.backends.torch.module import WeightsError, read_weights_file
from netspec.ground.files import write_atomic
from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train.distributed import Context, restarted
from netspec.train.errors import TrainError
from netspec.train.finetune import FineTune
from netspec.train.loop import Diverged, Trainer
from netspec.train.preprocessing import record

NEEDED = {"model", "optimizer", "scheduler", "epoch", "metrics", "config"}


def read_checkpoint(path: Path, needed: set[str] = NEEDED) -> dict:
    """A checkpoint's contents, read as `netspec eval` reads weights (tensors only); a file that is missing,
    refused, truncated or not netspec's is a TrainError (exit 1) that says so."""
    if not path.exists():
        raise TrainError(f"nothing to resume: {path} does not exist")
    try:
        checkpoint = read_weights_file(path)
    except WeightsError as err:
        raise TrainError(f"{err}; nothing was changed") from None
    if not isinstance(checkpoint, dict) or not needed <= set(checkpoint):
        raise TrainError(f"{path} is not a netspec training checkpoint; nothing was changed")
    return checkpoint


def saved_config(weights: str | Path | list) -> dict | None:
    """The run's config that a netspec checkpoint carries (config.json as it was when saved), for weights given as
    one file; None for several files (ensemble members), a plain state_dict or a file that cannot be read (loading
    it says why)."""
    entries = [weights] if isinstance(weights, (str, Path)) else list(weights or [])
    if len(entries) != 1 or not Path(entries[0]).is_file():
        return None
    try:
        checkpoint = read_weights_file(entries[0])
    except WeightsError:
        return None
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    return config if isinstance(config, dict) else None


def write_run_file(path: Path, data: bytes | str, kept: str) -> None:
    """Write one file of the run folder atomically; a full disk or a folder that became read-only stops the run
    with a TrainError that says what is kept (`kept`). write_atomic leaves no temporary file behind."""
    try:
        write_atomic(path, data)
    except OSError as err:
        raise TrainError(f"cannot write {path}: {err.strerror or err}; stopping. {kept}. Free some space or make "
                         "the folder writable, then pass --resume to go on") from None


def _save(path: Path, payload: dict, kept: str) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_run_file(path, buffer.getvalue(), kept)


def selection(m: dict) -> tuple[float, str]:
    """How an epoch ranks for best.pt, and which of its weights would be chosen: the validation accuracy (mean
    IoU for segmentation) of the model or of its EMA, whichever is higher; without validation, later epochs rank
    higher (the last is best)."""
    if "val_accuracy" not in m:
        return float(m["epoch"]), "model"
    key = "miou" if "val_miou" in m else "accuracy"  # segmentation is ranked by its mean IoU
    if m.get(f"ema_val_{key}", -1.0) > m[f"val_{key}"]:
        return m[f"ema_val_{key}"], "ema"
    return m[f"val_{key}"], "model"


class RunFolder:
    RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.last, self.best = self.path / "last.pt", self.path / "best.pt"
        self.metrics, self.config = self.path / "metrics.jsonl", self.path / "config.json"
        self.best_state: dict | None = None  # the chosen weights so far, kept in every process

    def checkpoint_to_resume(self, resume: bool, overwrite: bool = False, log=print) -> dict | None:
        """last.pt when the run goes on (--resume, or torchrun restarting the group after a process died), else
        None; refuses to start a new run over a checkpointed one unless `overwrite`. Only reads: every process
        calls it."""
        if resume and overwrite:
            raise TrainError("--resume continues the run in the folder and --overwrite starts it again: pass one")
        if restarted():
            return self._resumed() if self.last.exists() else None
        if resume:
            if self.last.exists():
                return self._resumed()
            log(f"nothing to resume in {self.path}: no epoch was checkpointed, so the run starts from the beginning")
            return None
        if self.last.exists() and not overwrite:
            raise TrainError(f"{self.path} holds a run checkpointed after epoch {self.epochs_done()}; pass "
                             "--resume to continue it, --overwrite to start it again, or --out another folder")
        if self.config.exists() and not self.last.exists():
            log(f"{self.path} holds a run that never checkpointed: starting it again")
        return None

    def _resumed(self) -> dict:
        checkpoint = read_checkpoint(self.last)
        if self.best.exists():
            self.best_state = read_checkpoint(self.best, needed={"model"})["model"]
        return checkpoint

    def epochs_done(self) -> int:
        try:
            return sum(1 for line in self.metrics.read_text().splitlines() if '"epoch"' in line and
                       '"split"' not in line)
        except OSError:
            return 0

    def writable(self) -> str | None:
        """The reason the folder cannot be written, or None. Leaves nothing behind: folders made for the test
        are removed again, since the run may yet be refused (start() makes the folder for good)."""
        made = []
        try:
            for folder in reversed([self.path, *self.path.parents]):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            write_atomic(self.path / ".write-test", b"")
            (self.path / ".write-test").unlink()
        except OSError as err:
            return f"cannot write the run folder {self.path}: {err.strerror}"
        finally:
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    pass
        return None

    def start(self, config: dict, history: list[dict]) -> None:
        """Make the folder and write config.json; a new run (not a resumed one) first removes an earlier run's
        checkpoints (--overwrite, or a run that never checkpointed). Either way the temporary files that a run
        killed mid-write left are removed."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries()
        if not history:
            for name in self.RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
        write_run_file(self.config, json.dumps(config, indent=2) + "\n", self.kept(history))
        self.write_metrics(history)

    def record(self, config: dict, history: list[dict]) -> None:
        """Rewrite config.json (what the run found out by its end: the test images it could read)."""
        write_run_file(self.config, json.dumps(config, indent=2) + "\n", self.kept(history))

    def stale_temporaries(self) -> list[Path]:
        """The half-written files of an earlier process (write_atomic's `.NAME.*.tmp`, named after the run's
        files or the write test): only a process killed while writing leaves one."""
        names = (*self.RUN_FILES, ".write-test")
        return sorted(p for name in names for p in self.path.glob(f".{name}.*.tmp") if p.is_file())

    def remove_stale_temporaries(self) -> None:
        for path in self.stale_temporaries():
            path.unlink(missing_ok=True)

    def kept(self, history: list[dict]) -> str:
        """What a run stopped now leaves to resume from."""
        if not history or not self.last.exists():
            return "No epoch had been checkpointed"
        return f"{self.last} (after epoch {history[-1]['epoch']}) is kept"

    def write_metrics(self, history: list[dict], test: dict | None = None) -> None:
        lines = history + ([test] if test else [])
        write_run_file(self.metrics, "".join(json.dumps(m) + "\n" for m in lines), self.kept(history))

    def best_of(self, history: list[dict]) -> dict:
        """The epoch best.pt holds: its number, its validation accuracy and which weights were chosen."""
        best = max(history, key=lambda m: selection(m)[0])  # the first of equals
        score, selected = selection(best)
        return {"best_epoch": best["epoch"], "selected": selected,
                "best_val_accuracy": score if "val_accuracy" in best else None}

    def keep_if_best(self, trainer: Trainer, history: list[dict]) -> bool:
        """Whether the last epoch ranks best so far; if so its chosen weights are kept in memory. Every process
        calls it, so that each can test the chosen weights at the end without reading best.pt."""
        chosen = self.best_of(history)
        if chosen["best_epoch"] != history[-1]["epoch"]:
            return False
        weights = trainer.ema.module if chosen["selected"] == "ema" else trainer.module
        self.best_state = {k: v.detach().clone() for k, v in weights.state_dict().items()}
        return True

    def save_epoch(self, trainer: Trainer, history: list[dict], config: dict, best: bool) -> None:
        """best.pt when the epoch ranks best so far, then last.pt, then metrics.jsonl (rank 0)."""
        epoch = history[-1]["epoch"]
        model = trainer.module.state_dict()
        ema = trainer.ema.module.state_dict() if trainer.ema is not None else None
        kept = self.kept(history[:-1])
        if best:
            chosen = self.best_of(history)
            _save(self.best, {"model": self.best_state, "selected": chosen["selected"], "epoch": epoch,
                              "val_accuracy": chosen["best_val_accuracy"], "config": config,
                              **({"model_ema": ema, "model_trained": model} if ema is not None else {})}, kept)
        _save(self.last, {"model": model, "optimizer": trainer.optimiser.state_dict(),
                          "scheduler": trainer.schedule.state_dict(), "epoch": epoch, "metrics": history,
                          "config": config, **({"model_ema": ema} if ema is not None else {}),
                          **({"scaler": trainer.scaler.state_dict()} if trainer.scaler is not None else {})},
              kept)
        self.write_metrics(history)

    def diverged(self, stop: Diverged, recipe: Recipe) -> str:
        kept = f"{self.last} (after epoch {stop.epoch - 1}) is kept" if stop.epoch > 1 and self.last.exists() else \
            "no checkpoint had been written yet"
        return (f"{stop}; stopping. {kept}. Lower the learning rate (now {recipe.lr:g}), or look for a layer that "
                "overflows")


def run_config(graph: Graph, recipe: Recipe, data, ctx: Context, options) -> dict:
    """What config.json records, as plain JSON types (checkpoints load with weights_only=True)."""
    config = {"spec": graph.file, "network": graph.name, "arguments": graph.arguments,
              # each argument as the spec would write it, read back by eval, predict and export (argument_overrides)
              "argument_texts": {name: show(value, limit=1 << 20) for name, value in graph.arguments.items()},
              "recipe": recipe.model_dump(), "task": data.task, "classes": list(data.class_names),
              "preprocessing": record(graph, recipe, data),
              "device": str(ctx.device), "world_size": ctx.world_size,
              "batch_size_per_process": recipe.batch_size // ctx.world_size,
              **({"backend": ctx.backend, "sync_bn": options.sync_bn} if ctx.distributed else {}),
              "dataset": data.name, "data_mode": data.mode, "train_images": data.train.images,
              "val_images": data.val.images if data.val is not None else 0, "validation_from": data.validation_from,
              "test_images": data.test.images if data.test is not None else 0, "normalization": data.statistics,
              **({"finetune": options.finetune.settings()} if options.finetune.any else {}),
              **({"max_steps": options.max_steps} if options.max_steps is not None else {}),
              **({"limit_eval": options.data.limit_eval} if options.data.limit_eval is not None else {}),
              "netspec": __version__, "torch": str(torch.__version__)}
    return json.loads(json.dumps(config, default=show))  # a block is saved by name


def restore(checkpoint: dict, graph: Graph, config: dict, last: Path, trainer: Trainer, steps_per_epoch: int,
            log=print) -> list[dict]:
    """Load a checkpoint of the same network and recipe (any number of processes may have written it) into the
    model, its EMA, the optimiser, schedule and gradient scaler; returns the metrics so far. `config` (this run's,
    to be written) takes over the checkpoint's record of the run's history (its --init report, its extensions).

    Only `epochs` may change, and only upwards: the run is extended. Its schedule is then the one planned for
    the new number of epochs, advanced to the optimiser step the run has reached (extend_schedule)."""
    saved_config = checkpoint["config"]
    if saved_config.get("network") != graph.name:
        raise TrainError(f"{last} was saved from network {saved_config.get('network')}, not {graph.name}")
    # a setting added to recipes after the checkpoint was written counts as its default there
    saved = {key: field.default for key, field in Recipe.model_fields.items()} | saved_config.get("recipe", {})
    changed = [f"{key} {saved.get(key)!r} in {last.name}, {value!r} now" for key, value in config["recipe"].items()
               if saved.get(key) != value and key != "epochs"]
    default = FineTune().settings()
    tuning, saved_tuning = ({**default, **settings.get("finetune", {})} for settings in (config, saved_config))
    changed += [f"{key} {saved_tuning.get(key)!r} in {last.name}, {tuning.get(key)!r} now"
                for key in sorted(set(tuning) | set(saved_tuning)) if tuning.get(key) != saved_tuning.get(key)]
    if changed:
        raise TrainError("--resume continues a run as it was set up, but " + "; ".join(changed) +
                         ". Use the same settings, or start a new run with another --out")
    done, epochs, planned = int(checkpoint["epoch"]), config["recipe"]["epochs"], saved.get("epochs")
    if epochs != planned and epochs <= done:
        raise TrainError(f"--epochs {epochs}: the run in {last.parent} has trained {done} epochs already; give more "
                         "to extend it")
    # finished: its test written (or it has none); a run stopped between its last epoch and its test goes on
    finished = not saved_config.get("test_images") or tested(last.parent / "metrics.jsonl")
    if epochs == planned and done >= epochs and finished and not restarted():
        raise TrainError(f"the run in {last.parent} has finished its {done} epochs; pass --epochs N (more than "
                         f"{done}) with --resume to extend it, or --init {last.parent / 'best.pt'} with another --out "
                         "to fork it")
    for key in ("init", "extensions"):
        if key in saved_config:
            config[key] = saved_config[key]
    trainer.module.load_state_dict(checkpoint["model"])
    if epochs != planned:
        extend_schedule(trainer, checkpoint["optimizer"], done * steps_per_epoch)
        config["extensions"] = config.get("extensions", []) + [{"after_epoch": done, "epochs_before": planned,
                                                                 "epochs": epochs}]
        log(f"extending the run from {planned} to {epochs} epochs: the {config['recipe']['schedule']} schedule "
            f"is planned for {epochs} epochs and continues from optimiser step {done * steps_per_epoch:,}")
    else:
        trainer.optimiser.load_state_dict(checkpoint["optimizer"])
        trainer.schedule.load_state_dict(checkpoint["scheduler"])
    if trainer.ema is not None and "model_ema" in checkpoint:
        trainer.ema.module.load_state_dict(checkpoint["model_ema"])
    if trainer.scaler is not None and "scaler" in checkpoint:
        trainer.scaler.load_state_dict(checkpoint["scaler"])
    return list(checkpoint["metrics"])


def tested(metrics: Path) -> bool:
    """Whether a run folder's metrics.jsonl ends with the test of the chosen weights: the run has finished (one
    stopped after its last epoch but before its test is resumed to test it)."""
    try:
        lines = [line for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and '"split"' in lines[-1]


def extend_schedule(trainer: Trainer, optimiser_state: dict, steps: int) -> None:
    """For a run extended to more epochs: the new schedule (built for them) advanced `steps` optimiser steps, as
    training them would have advanced it, then the saved optimiser's state (momenta, Adam's averages) with the
    learning rates (and one-cycle's momenta) of the new schedule at that step. Where the schedule's rate at a step
    does not depend on the number of epochs (none, step, their warmups), the extended run is the run trained for
    all its epochs at once; cosine and one-cycle go on along the longer curve from the same step."""
    import warnings

    with warnings.catch_warnings():  # stepping a schedule with no optimiser step: what is wanted here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps):
            trainer.schedule.step()
    planned = [{key: value for key, value in group.items() if key != "params"}
               for group in trainer.optimiser.param_groups]
    trainer.optimiser.load_state_dict(optimiser_state)
    for group, values in zip(trainer.optimiser.param_groups, planned):
        group.update(values)
