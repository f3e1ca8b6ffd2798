"""A training run from start to end, and the evaluation of saved weights: `netspec train` and `netspec eval`.

Under torchrun every process runs run() with the same arguments: each trains on its shard of every epoch
inside DistributedDataParallel and evaluates its shard of the test set, and rank 0 alone prints and writes the
run folder. With one process (no torchrun) the same code runs without a process group.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from netspec import data as datasets
from netspec.backends.torch import to_module
from netspec.ir import Graph
from netspec.recipe import Recipe
from netspec.train import distributed
from netspec.train.checkpoints import RunFolder, restore, run_config
from netspec.train.errors import TrainError
from netspec.train.loop import CompiledOrEager, Diverged, evaluate, make_optimiser, seed_epoch, train_one_epoch
from netspec.train.progress import reporter
from netspec.train.sources import epoch_shard, fit_input, make_preprocess, to_device


def _silent(message: str) -> None:
    pass


def run(graph: Graph, recipe: Recipe, out: Path | str, data_dir: str | None = None, device: str = "auto",
        resume: bool = False, download: bool = False, progress=True, log=print, sync_bn: bool = False,
        dist_backend: str = "auto", dist_timeout: float = distributed.DEFAULT_TIMEOUT) -> dict:
    """Train an analysed spec; returns the last epoch's metrics. Raises TrainError or data.DataError.

    `progress`: True for a bar on a terminal, False, or a reporter (netspec.train.progress.Progress). `log`
    gets a line per epoch. `recipe.batch_size` is the global batch, split evenly over the processes."""
    with distributed.process_group(device, dist_backend, dist_timeout) as ctx:
        # In a function of its own, so that the model and its DDP wrapper are gone when the group is left.
        return training_run(ctx, graph, recipe, RunFolder(out), data_dir, resume, download, sync_bn, progress,
                            log if ctx.main else _silent)


def training_run(ctx: distributed.Context, graph: Graph, recipe: Recipe, folder: RunFolder, data_dir: str | None,
                 resume: bool, download: bool, sync_bn: bool, progress, log) -> dict:
    """The run in this process, from the run folder's checks to the last epoch's checkpoint."""
    batch_size = distributed.per_process_batch(recipe.batch_size, ctx.world_size)
    checkpoint = folder.checkpoint_to_resume(resume)
    distributed.raise_on_every_process(folder.create() if ctx.main else None, ctx)

    dataset = datasets.load(recipe.data, data_dir, graph.input_shape, graph.node(graph.output).shape[0], download)
    fit_input(graph, dataset, recipe)
    data = to_device(dataset, recipe, ctx.device)
    model = to_module(graph, seed=recipe.seed).to(ctx.device)
    if ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    trained = distributed.wrap(model, ctx, sync_bn)  # DDP around the model, or the model itself
    model = distributed.unwrapped(trained)
    # The same number of steps per epoch for any number of processes, so that one schedule fits them all.
    steps_per_epoch = math.ceil(len(data.train_x) / recipe.batch_size)
    optimiser, schedule = make_optimiser(recipe, model, recipe.epochs * steps_per_epoch)
    config = run_config(graph, recipe, dataset, ctx, sync_bn)
    history = restore(checkpoint, graph, config, folder.last, model, optimiser, schedule) if checkpoint else []
    if checkpoint:
        log(f"resuming {graph.name} from {folder.last} after epoch {checkpoint['epoch']}")
    if ctx.main:
        folder.start(config, history)
    if ctx.distributed:
        log(f"{ctx.world_size} processes ({ctx.backend}): batch {recipe.batch_size} = {ctx.world_size} x "
            f"{batch_size} per process, lr {recipe.lr:g} for that batch of {recipe.batch_size}")

    step_model = CompiledOrEager(trained, recipe.compile, log)
    best_accuracy = max((m["test_accuracy"] for m in history), default=-1.0)
    progress = reporter(progress, ctx.main)
    try:
        for epoch in range(len(history) + 1, recipe.epochs + 1):
            generator = seed_epoch(recipe.seed, epoch, ctx)
            order = epoch_shard(len(data.train_x), recipe.seed, epoch, ctx.rank, ctx.world_size, ctx.device)
            try:
                trained_metrics = train_one_epoch(trained, step_model, graph, recipe, optimiser, schedule, data,
                                                  order, batch_size, generator, ctx, epoch, progress)
            except Diverged as stop:
                raise TrainError(folder.diverged(stop, recipe)) from None
            distributed.share_buffers(model, ctx)
            test_loss, test_accuracy = evaluate(model, graph, recipe, data.batches, data.pixels, data.test_x,
                                                data.test_y, max(batch_size, 256), ctx)
            m = {"epoch": epoch, "train_loss": trained_metrics["train_loss"],
                 "train_accuracy": trained_metrics["train_accuracy"], "test_loss": test_loss,
                 "test_accuracy": test_accuracy, "lr": optimiser.param_groups[0]["lr"],
                 "images_per_second": trained_metrics["images_per_second"],
                 "epoch_seconds": trained_metrics["epoch_seconds"],
                 "train_seconds": (history[-1]["train_seconds"] if history else 0.0)
                 + trained_metrics["epoch_seconds"]}
            history.append(m)
            if ctx.main:
                folder.save_epoch(model, optimiser, schedule, history, config, best=test_accuracy > best_accuracy)
            best_accuracy = max(best_accuracy, test_accuracy)
            log(f"epoch {epoch}/{recipe.epochs}: train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.2%}"
                f" | test loss {test_loss:.4f} acc {test_accuracy:.2%} | {m['images_per_second']:,.0f} img/s")
    finally:
        progress.close()
    return {**history[-1], "best_test_accuracy": best_accuracy, "run": str(folder.path)}


def evaluate_weights(graph: Graph, weights: Path | list[str], recipe: Recipe, data_dir: str | None,
                     device: str = "auto", download: bool = False) -> dict:
    """Test loss and accuracy of saved weights (a best.pt/last.pt, or a plain state_dict), in one process."""
    from netspec.backends.torch import WeightsError, load_weights

    ctx = distributed.Context(distributed.pick_device(device))
    dataset = datasets.load(recipe.data, data_dir, graph.input_shape, graph.node(graph.output).shape[0], download)
    fit_input(graph, dataset, recipe)
    model = to_module(graph)
    try:
        load_weights(model, weights)
    except WeightsError as err:
        raise TrainError(str(err)) from None
    model = model.to(ctx.device)
    preprocess = make_preprocess(dataset, recipe, ctx.device)
    loss, accuracy = evaluate(model, graph, recipe, preprocess, preprocess.pixels, dataset.test_x.to(ctx.device),
                              dataset.test_y.to(ctx.device), 512, ctx)
    return {"network": graph.name, "dataset": dataset.name, "test_images": len(dataset.test_x), "test_loss": loss,
            "test_accuracy": accuracy}
