"""A training run from start to end, and the evaluation of saved weights: `netspec train` and `netspec eval`.

Under torchrun every process runs run() with the same arguments: each trains on its shard of every epoch
inside DistributedDataParallel and evaluates its shard of the validation set, and rank 0 alone prints and
writes the run folder. With one process (no torchrun) the same code runs without a process group.

Model selection is honest: best.pt is the epoch whose validation accuracy is highest (the EMA's weights when
they do better), and the test set is evaluated once, at the end, for those weights.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from netspec.backends.torch import to_module
from netspec.backends.torch.module import is_out_of_memory, too_large
from netspec.ir import Graph
from netspec.semantics.recipe import Recipe
from netspec.train import distributed
from netspec.train.checkpoints import RunFolder, restore, run_config, saved_config
from netspec.train.errors import TrainError
from netspec.train.finetune import FineTune, freeze, head_layers, held_norms, in_layers, learning_rates, load_init
from netspec.train.loop import (CompiledOrEager, Diverged, Trainer, evaluate_split, make_mixing,
                                optimiser_steps_per_epoch, seed_epoch, train_one_epoch, uses_channels_last)
from netspec.train.optim import make_ema, make_optimiser
from netspec.train.progress import reporter
from netspec.train.sources import prepare
from netspec.train.splits import DataOptions, TrainingData


@dataclass
class RunOptions:
    """How a run goes, apart from the recipe: `overwrite` replaces a finished or checkpointed run in the folder;
    `max_steps` caps every epoch's steps and, with data.limit_eval, makes a smoke run; `log_every` is the
    seconds between progress lines when stderr is not a terminal."""

    resume: bool = False
    overwrite: bool = False
    download: bool = False
    sync_bn: bool = False
    max_steps: int | None = None
    log_every: float = 30.0
    data: DataOptions = field(default_factory=DataOptions)
    finetune: FineTune = field(default_factory=FineTune)  # --init, freezing, the head's learning rate


def _silent(message: str) -> None:
    pass


def run(graph: Graph, recipe: Recipe, out: Path | str, data_dir: str | None = None, device: str = "auto",
        resume: bool = False, download: bool = False, progress=True, log=print, sync_bn: bool = False,
        dist_backend: str = "auto", dist_timeout: float = distributed.DEFAULT_TIMEOUT,
        options: RunOptions | None = None) -> dict:
    """Train an analysed spec; returns the last epoch's metrics and the test result. Raises TrainError or
    data.DataError.

    `progress`: True for a bar on a terminal (progress lines elsewhere), False, or a reporter
    (netspec.train.progress.Progress). `log` gets the start-up line and a line per epoch. `recipe.batch_size`
    is the global batch, split evenly over the processes. `options` (RunOptions) overrides `resume`,
    `download` and `sync_bn`."""
    began = time.perf_counter()
    options = options or RunOptions(resume=resume, download=download, sync_bn=sync_bn)
    with distributed.process_group(device, dist_backend, dist_timeout) as ctx:
        # In a function of its own, so that the model and its DDP wrapper are gone when the group is left.
        return training_run(ctx, graph, recipe, RunFolder(out), data_dir, options, progress,
                            log if ctx.main else _silent, began)


def training_run(ctx: distributed.Context, graph: Graph, recipe: Recipe, folder: RunFolder, data_dir: str | None,
                 options: RunOptions, progress, log, began: float) -> dict:
    """The run in this process, from the run folder's checks to the test of the chosen weights."""
    batch_size = distributed.per_process_batch(recipe.batch_size, ctx.world_size)
    checkpoint = folder.checkpoint_to_resume(options.resume, options.overwrite, log)
    distributed.raise_on_every_process(folder.writable() if ctx.main else None, ctx)

    data = prepare(graph, recipe, data_dir, options.download, ctx, options.data)
    model = on_device(to_module(graph, seed=recipe.seed), graph, ctx.device)
    check_training_size(model, graph, recipe, ctx.device)
    tuning = options.finetune
    # pretrained weights (a resumed run has its own), then what is frozen: before DDP, which trains what requires
    # a gradient when it wraps the model
    init = load_init(model, graph, tuning.init) if tuning.init and not checkpoint else None
    frozen, frozen_names = freeze(model, graph, tuning)
    if uses_channels_last(recipe, ctx.device):
        model = model.to(memory_format=torch.channels_last)
    trained = distributed.wrap(model, ctx, sync_bn=options.sync_bn)  # DDP around the model, or the model itself
    model = distributed.unwrapped(trained)
    # The same number of steps per epoch for any number of processes, so that one schedule fits them all.
    steps = data.train.steps(batch_size, ctx.world_size)
    if options.max_steps is not None:
        steps = min(steps, options.max_steps)
    rates = learning_rates(model, graph, tuning, recipe.lr)
    try:
        optimiser, schedule = make_optimiser(recipe, model, optimiser_steps_per_epoch(steps, recipe), rates)
    except ValueError:  # no parameter left to train
        raise TrainError(f"every parameter of {graph.name} is frozen; leave some to train (--freeze, "
                         "--freeze-backbone, frozen=true in the spec)") from None
    trainer = Trainer(trained, CompiledOrEager(trained, recipe.compile, log), graph, recipe, optimiser, schedule, ctx,
                      scaler=torch.amp.GradScaler(ctx.device.type) if recipe.precision == "fp16" else None,
                      ema=make_ema(recipe, model, ctx.world_size, batch_size),
                      mixing=make_mixing(recipe, data.classes), held_norms=held_norms(model, frozen_names))
    config = run_config(graph, recipe, data, ctx, options)
    if init is not None:
        config["init"] = init.as_json()
    history = restore(checkpoint, graph, config, folder.last, trainer, optimiser_steps_per_epoch(steps, recipe),
                      log) if checkpoint else []
    trainer.optimiser_steps = len(history) * optimiser_steps_per_epoch(steps, recipe)
    if ctx.main:
        folder.start(config, history)
    log(startup_line(graph, model, ctx, data, recipe, batch_size, folder, time.perf_counter() - began))
    if init is not None:
        log(init.line())
    for line in tuning_lines(model, graph, tuning, frozen, trainer.held_norms, rates, recipe):
        log(line)
    if checkpoint:
        log(f"resuming {graph.name} from {folder.last} after epoch {checkpoint['epoch']}")

    progress = reporter(progress, ctx.main, recipe.epochs, options.log_every)
    named: set[str] = set()  # the unreadable images reported so far
    try:
        for epoch in range(len(history) + 1, recipe.epochs + 1):
            seed = seed_epoch(recipe.seed, epoch, ctx)
            skipped_before = len(data.skipped())
            try:
                metrics = train_one_epoch(trainer, data.train, data.pixels, batch_size, epoch, seed, progress,
                                          options.max_steps)
            except Diverged as stop:
                raise TrainError(folder.diverged(stop, recipe)) from None
            distributed.share_buffers(model, ctx)
            metrics = {"epoch": epoch, **metrics, **validate(trainer, data, batch_size)}
            # the images of the training and validation sets that this epoch could not read, in every process
            skipped = distributed.gathered(data.skipped()[skipped_before:], ctx)
            metrics = {**metrics, **learning_rate_metrics(optimiser, model, graph, rates),
                       "train_seconds": (history[-1]["train_seconds"] if history else 0.0) + metrics["epoch_seconds"],
                       "skipped_images": len(set(skipped))}
            for image in [s for s in dict.fromkeys(skipped) if s not in named]:  # each named once, in order
                named.add(image)
                log(f"skipped an unreadable image: {image}")
            history.append(metrics)
            best = folder.keep_if_best(trainer, history)
            if ctx.main:
                folder.save_epoch(trainer, history, config, best)
            log(epoch_line(metrics, recipe.epochs))
    finally:
        progress.close()
    result = {**history[-1], **folder.best_of(history)}
    test = test_chosen(trainer, data, folder, result, batch_size, log)
    if ctx.main and test:
        folder.write_metrics(history, test)
        unreadable = getattr(data.test, "unreadable", [])
        if unreadable:  # config.json counted the files; the test figures count the images evaluated
            folder.record({**config, "test_images": data.test.images, "test_skipped": unreadable}, history)
    outcome = {key: test[key] for key in ("test_loss", "test_accuracy", "test_images", "test_top5_accuracy",
                                          "test_miou") if key in test} if test else {}
    return {**result, **outcome, "run": str(folder.path), "skipped_images": len(set(data.skipped()))}


def learning_rate_metrics(optimiser, model: torch.nn.Module, graph: Graph, rates) -> dict:
    """The epoch's last learning rate: `lr`, the rest of the network's, and `lr_head` when the head has its
    own."""
    if rates is None:
        return {"lr": optimiser.param_groups[0]["lr"]}
    heads = head_layers(graph)
    head = {id(p) for name, p in model.named_parameters() if in_layers(name, heads)}
    found = {}
    for group in optimiser.param_groups:
        key = "lr_head" if id(group["params"][0]) in head else "lr"
        found.setdefault(key, group["lr"])
    return {"lr": found.get("lr", found.get("lr_head")), **({"lr_head": found["lr_head"]} if "lr_head" in found
                                                               else {})}


def tuning_lines(model: torch.nn.Module, graph: Graph, tuning: FineTune, frozen: int, norms: list, rates,
                 recipe: Recipe) -> list[str]:
    """What the fine-tuning settings did, in words, after the start-up line."""
    lines = []
    if frozen:
        total = sum(p.numel() for p in model.parameters())
        how = [f"--freeze {' '.join(tuning.freeze)}"] if tuning.freeze else []
        how += ["--freeze-backbone"] if tuning.freeze_backbone else []
        held = (f"; {len(norms)} batch norm{'s keep their' if len(norms) != 1 else ' keeps its'} running "
                "statistics") if norms else ""
        lines.append(f"frozen: {frozen:,} of {total:,} parameters ({', '.join(how)}){held}")
    if rates is not None:
        heads = head_layers(graph)
        head_lr = tuning.lr_head if tuning.lr_head is not None else recipe.lr
        rest = recipe.lr * (tuning.backbone_lr_factor if tuning.backbone_lr_factor is not None else 1.0)
        lines.append(f"learning rates: the head ({', '.join(heads)}) {head_lr:g}, the rest {rest:g}; the "
                     f"schedule ({recipe.schedule}) scales each")
    return lines


def on_device(model: torch.nn.Module, graph: Graph, device: torch.device) -> torch.nn.Module:
    """`model` moved to `device`; weights that do not fit there are ModuleTooLarge (exit 1), not a bug."""
    try:
        return model.to(device)
    except (MemoryError, RuntimeError) as err:
        if is_out_of_memory(err):
            raise too_large(graph, err, f"the memory of {device}") from None
        raise


def check_training_size(model: torch.nn.Module, graph: Graph, recipe: Recipe, device: torch.device) -> None:
    """A network trained at another size than its input (train_crop_size) must take that size: one image through
    it before the run starts says so, rather than a failure at the first step."""
    size = recipe.train_crop_size
    if size is None or (size, size) == tuple(graph.input_shape[1:]):
        return
    shape = [graph.input_shape[0], size, size]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape, device=device))
    except RuntimeError as err:
        raise TrainError(f"train_crop_size = {size}: {graph.name} takes {list(graph.input_shape)} and cannot take "
                         f"{shape} ({str(err).splitlines()[0]}); train at its input size") from None


def validate(trainer: Trainer, data: TrainingData, batch_size: int) -> dict:
    """The epoch's validation loss and accuracy, and the EMA's when there is one; nothing without validation."""
    if data.val is None:
        return {}
    size = max(batch_size, 256)
    metrics = {}
    ema = trainer.ema.module if trainer.ema is not None else None
    for prefix, module in (("val", trainer.module), ("ema_val", ema)):
        if module is None:
            continue
        result = evaluate_split(module, trainer.graph, trainer.recipe, data.val, data.pixels, size, trainer.ctx)
        metrics |= {f"{prefix}_loss": result.loss, f"{prefix}_accuracy": result.accuracy}
        if result.task == "segmentation":
            metrics[f"{prefix}_miou"] = result.miou
    return metrics


def test_chosen(trainer: Trainer, data: TrainingData, folder: RunFolder, chosen: dict, batch_size: int, log
                ) -> dict | None:
    """Evaluate the weights best.pt holds on the test set, once; None (and a line saying so) without one."""
    if data.test is None:
        log("no test set: the validation accuracy is the run's figure")
        return None
    model = on_device(to_module(trainer.graph), trainer.graph, trainer.ctx.device)
    model.load_state_dict(folder.best_state)
    if uses_channels_last(trainer.recipe, trainer.ctx.device):
        model = model.to(memory_format=torch.channels_last)
    result = evaluate_split(model, trainer.graph, trainer.recipe, data.test, data.pixels, max(batch_size, 256),
                            trainer.ctx, log=log)  # each unreadable test image named once
    loss, accuracy = result.loss, result.accuracy
    test = {"split": "test", "weights": "best.pt", "selected": chosen["selected"], "epoch": chosen["best_epoch"],
            "test_loss": loss, "test_accuracy": accuracy, "test_images": data.test.images,
            **({"test_top5_accuracy": result.top5} if result.top5 is not None else {}),
            **({"test_miou": result.miou} if result.task == "segmentation" else {})}
    figure = f"mIoU {result.miou:.2%}, pixel accuracy {accuracy:.2%}" if result.task == "segmentation" else \
        f"{accuracy:.2%}" + (f" (top-5 {result.top5:.2%})" if result.top5 is not None else "")
    log(f"test: {figure} (loss {loss:.4f}, {data.test.images:,} images) with best.pt, the "
        f"{'EMA weights' if chosen['selected'] == 'ema' else 'weights'} of epoch {chosen['best_epoch']}"
        f"{' (chosen on validation)' if data.val is not None else ' (the last epoch: no validation set)'}")
    return test


def startup_line(graph: Graph, model: torch.nn.Module, ctx: distributed.Context, data: TrainingData,
                 recipe: Recipe, batch_size: int, folder: RunFolder, seconds: float) -> str:
    params = sum(p.numel() for p in model.parameters())
    processes = (f" x {ctx.world_size} processes ({ctx.backend}), batch {recipe.batch_size} = {ctx.world_size} x "
                 f"{batch_size}" if ctx.distributed else f", batch {recipe.batch_size}")
    return (f"{graph.name}: {params:,} parameters | {ctx.device}{processes} | {data.describe()} | run folder "
            f"{folder.path} | ready in {seconds:.1f} s")


def epoch_line(m: dict, epochs: int) -> str:
    held_out = f" | val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.2%}" if "val_accuracy" in m else ""
    if "val_miou" in m:
        held_out += f" mIoU {m['val_miou']:.2%}"
    if "ema_val_accuracy" in m:
        held_out += f" (EMA {m['ema_val_accuracy']:.2%})"
    return (f"epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.2%}"
            f"{held_out} | {m['images_per_second']:,.0f} img/s")


def evaluate_weights(graph: Graph, weights: Path | list[str], recipe: Recipe, data_dir: str | None,
                     device: str = "auto", download: bool = False, data_options: DataOptions | None = None,
                     log=None) -> dict:
    """Test loss and accuracy of saved weights (a best.pt/last.pt, or a plain state_dict), in one process. Each
    test image that cannot be read is named to `log` and left out of the figures and the count."""
    from netspec.backends.torch import WeightsError, load_weights

    ctx = distributed.Context(distributed.pick_device(device))
    options = data_options or DataOptions()
    saved = saved_normalization(weights)
    if saved is not None and options.statistics is None:
        options = dataclasses.replace(options, statistics=saved)
    data = prepare(graph, recipe, data_dir, download, ctx, options)
    if data.test is None:
        raise TrainError(f"{data.name} has no test set to evaluate on (a test/ folder or test.csv)")
    model = to_module(graph)
    try:
        load_weights(model, weights)
    except WeightsError as err:
        raise TrainError(str(err)) from None
    model = on_device(model, graph, ctx.device)
    result = evaluate_split(model, graph, recipe, data.test, data.pixels, 512, ctx, log=log)
    return {"network": graph.name, "dataset": data.name, "test_images": data.test.images, "test_loss": result.loss,
            "test_accuracy": result.accuracy, "test_top5_accuracy": result.top5, "task": result.task,
            "classes": list(data.class_names), "per_class": result.per_class(),
            "confusion": result.confusion.tolist(),
            **({"iou": result.iou(), "miou": result.miou} if result.task == "segmentation" else {})}


def saved_normalization(weights: Path | str | list) -> tuple[list[float], list[float]] | None:
    """The normalisation a netspec checkpoint's run used (its config.json's), for weights given as one file."""
    config = saved_config(weights)
    normalization = config.get("normalization") if config else None
    if not isinstance(normalization, dict) or not {"mean", "std"} <= set(normalization):
        return None
    return list(normalization["mean"]), list(normalization["std"])
