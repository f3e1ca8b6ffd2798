"""The training loop: the recipe's loss and optimiser, one epoch of training, and the evaluation.

Both halves work on one process's share of the data and sum their counts over all processes at the end, so
that the numbers logged are the whole epoch's and the whole test set's, whatever the number of processes.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from netspec.ir import Graph
from netspec.recipe import Recipe
from netspec.train.distributed import Context, any_process, sum_over_processes
from netspec.train.progress import Progress
from netspec.train.sources import DeviceData, evaluation_shard


class Diverged(Exception):
    """The loss stopped being finite at `epoch`, `step` (0-based); the run folder says what was kept."""

    def __init__(self, loss, epoch: int, step: int):
        super().__init__(f"the loss became {loss} at epoch {epoch}, step {step + 1}")
        self.loss, self.epoch, self.step = loss, epoch, step


def logits_of(graph: Graph, output: torch.Tensor) -> torch.Tensor:
    # LeNet-5's RBF units output distances (small = likely); their negatives serve as logits for
    # cross-entropy, our documented substitute for the paper's MAP criterion. An ensemble's mean of
    # probabilities gives its logits as their logarithm.
    last = graph.node(graph.output)
    if last.op == "rbf":
        return -output
    if last.op == "ensemble" and last.args.merge == "softmax_mean":
        return output.clamp_min(1e-12).log()
    return output


def forward(model, x: torch.Tensor, labels: torch.Tensor | None = None):
    """(class scores, further outputs) of a batch; `labels`, for a graph that takes_labels(), reach the layers
    that read them while training. While training, auxiliary classifiers' scores come first among the further
    outputs, then reconstructions."""
    output = model(x) if labels is None else model(x, labels)
    if isinstance(output, tuple):
        return output[0], output[1:]
    return output, ()


def reconstruction_loss(recipe: Recipe, reconstructions, x: torch.Tensor, reduction: str = "mean"):
    """weight x the per-sample sum of squared errors of each reconstruction against `x`: the input the network
    was given, without its normalisation (Preprocess.pixels)."""
    if not reconstructions:
        return 0.0
    target = x.float().flatten(1)
    per_sample = sum(((r.float().flatten(1) - target) ** 2).sum(dim=1) for r in reconstructions)
    return recipe.reconstruction_weight * (per_sample.sum() if reduction == "sum" else per_sample.mean())


def criterion(recipe: Recipe, scores: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The recipe's loss: cross-entropy on logits, or the capsule margin loss on lengths in [0, 1]."""
    if recipe.loss == "margin":
        present = F.one_hot(labels, scores.shape[1]).to(scores.dtype)
        per_class = (present * F.relu(0.9 - scores) ** 2
                     + 0.5 * (1 - present) * F.relu(scores - 0.1) ** 2)
        per_sample = per_class.sum(dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    return F.cross_entropy(scores, labels, reduction=reduction,
                           label_smoothing=recipe.label_smoothing if reduction == "mean" else 0.0)


def make_optimiser(recipe: Recipe, model: torch.nn.Module, steps: int):
    """The recipe's optimiser and its schedule over `steps` steps, stepped once per batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                              weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    elif recipe.schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif recipe.schedule == "step":
        per_epoch = max(1, steps // recipe.epochs)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size * per_epoch, gamma=recipe.gamma)
    else:
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return opt, schedule


class CompiledOrEager:
    """Calls torch.compile's version of `model` when compiling is asked for and works, else `model` itself;
    a failure, when compiling or at a step, is reported once and training goes on eager."""

    def __init__(self, model: torch.nn.Module, compile: bool, log):
        self.eager, self.compiled, self.log = model, None, log
        if compile:
            try:
                self.compiled = torch.compile(model)
            except Exception as err:
                log(f"torch.compile failed ({type(err).__name__}: {err}); training eager")

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:
                self.log(f"torch.compile failed at a step ({type(err).__name__}); training eager")
                self.compiled = None
        return self.eager(*args)


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)


def layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.dim() == 4 else x


def training_loss(step_model, graph: Graph, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, pixels,
                  takes_labels: bool):
    """(loss, main logits) of a training batch: the recipe's loss on the main scores, plus aux_weight x the loss
    of each auxiliary output (a network's `output main, aux...`), plus the weighted reconstruction error.
    `takes_labels`: graph.takes_labels(), which layers reading the labels while training need."""
    scores, further = forward(step_model, x, y if takes_labels else None)
    aux_scores, reconstructions = further[:len(graph.aux_outputs)], further[len(graph.aux_outputs):]
    logits = logits_of(graph, scores)
    loss = criterion(recipe, logits.float(), y) + reconstruction_loss(
        recipe, reconstructions, pixels(x) if reconstructions else x)
    for aux in aux_scores:
        loss = loss + recipe.aux_weight * criterion(recipe, aux.float(), y)
    return loss, logits


def seed_epoch(seed: int, epoch: int, ctx: Context) -> torch.Generator:
    """An epoch's randomness from (seed, epoch, rank) alone: torch's global generator (dropout) is seeded, and
    the returned one draws the augmentation. A resumed or restarted epoch thus draws what it drew the first
    time, and no random state needs saving."""
    value = ((seed * 1_000_003 + epoch) * 65_537 + ctx.rank) % 2**63
    torch.manual_seed(value)
    return torch.Generator(device=ctx.device).manual_seed(value)


def train_one_epoch(model, step_model, graph: Graph, recipe: Recipe, optimiser, schedule, data: DeviceData,
                    order: torch.Tensor, batch_size: int, generator: torch.Generator, ctx: Context, epoch: int,
                    progress: Progress) -> dict:
    """One pass over this process's `order` in batches of `batch_size`; DDP (when `model` is wrapped) averages
    the gradients. Returns the epoch's train loss, accuracy and speed over all processes. Raises Diverged."""
    device, takes_labels = ctx.device, graph.takes_labels()
    model.train()
    steps = math.ceil(len(order) / batch_size)
    seen = 0
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no host sync per step
    correct = torch.zeros((), device=device, dtype=torch.long)
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    progress.epoch_started(epoch, steps)
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        x = layout(data.batches(data.train_x[index], training=True, generator=generator), device)
        y = data.train_y[index]
        with autocast(device):
            loss, logits = training_loss(step_model, graph, recipe, x, y, data.pixels, takes_labels)
        # On the CPU a check costs nothing; on a GPU it would stall every step, so it waits for the epoch end.
        if device.type == "cpu" and any_process(not torch.isfinite(loss), ctx):
            raise Diverged(float(loss.detach()) if not torch.isfinite(loss) else "not finite in another process",
                           epoch, step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if progress.per_step:
            progress.step(float(loss_sum) / seen, int(correct) / seen,
                          seen * ctx.world_size / (time.perf_counter() - began))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    progress.epoch_ended()
    total_loss, total_correct, total_seen = sum_over_processes([loss_sum, correct, seen], ctx)
    if not math.isfinite(total_loss):
        raise Diverged(total_loss, epoch, steps - 1)
    return {"train_loss": total_loss / total_seen, "train_accuracy": total_correct / total_seen,
            "images_per_second": total_seen / seconds, "epoch_seconds": seconds}


def evaluate(model, graph: Graph, recipe: Recipe, batches, pixels, x: torch.Tensor, y: torch.Tensor,
             batch_size: int, ctx: Context) -> tuple[float, float]:
    """Mean loss (the recipe's, without label smoothing) and accuracy over all of (x, y): each process takes its
    shard, and the sums are added up over the processes. `batches(batch, training=False)` readies a batch,
    `pixels` undoes its normalisation."""
    model.eval()
    shard = evaluation_shard(len(x), ctx.rank, ctx.world_size, x.device)
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with torch.no_grad(), autocast(ctx.device):
        for start in range(0, len(shard), batch_size):
            index = shard[start:start + batch_size]
            xb = layout(batches(x[index], training=False), ctx.device)
            yb = y[index]
            scores, reconstructions = forward(model, xb)
            logits = logits_of(graph, scores).float()
            total_loss += (criterion(recipe, logits, yb, reduction="sum")
                           + reconstruction_loss(recipe, reconstructions, pixels(xb), reduction="sum"))
            correct += (logits.argmax(1) == yb).sum()
    total_loss, correct = sum_over_processes([total_loss, correct], ctx)
    return total_loss / len(x), correct / len(x)
