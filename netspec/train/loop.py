"""The training loop: the recipe's loss and optimiser, one epoch of training, and the evaluation.

Both halves work on one process's share of the data and sum their counts over all processes at the end, so
that the numbers logged are the whole epoch's and the whole test set's, whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from netspec.ir import Graph
from netspec.ops import OPS
from netspec.semantics.recipe import Recipe
from netspec.train.distributed import Context, any_process, gathered, sum_over_processes
from netspec.train.errors import TrainError
from netspec.train.optim import ema_step
from netspec.train.progress import Progress
from netspec.train.splits import Split


class Diverged(Exception):
    """The loss stopped being finite at `epoch`, `step` (0-based); the run folder says what was kept."""

    def __init__(self, loss, epoch: int, step: int):
        super().__init__(f"the loss became {loss} at epoch {epoch}, step {step + 1}")
        self.loss, self.epoch, self.step = loss, epoch, step


def logits_of(graph: Graph, output: torch.Tensor) -> torch.Tensor:
    """The network's class scores as logits, by what its last op says they hold (Op.class_scores)."""
    last = graph.node(graph.output)
    scores = OPS[last.op].class_scores(last.args)
    if scores == "distances":
        # LeNet-5's RBF units: their negatives serve as logits for cross-entropy, our documented substitute
        # for the paper's MAP criterion.
        return -output
    if scores == "probabilities":  # an ensemble's mean of probabilities: its logits are their logarithm
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


# The mask value of pixels that count for nothing (a border, an unlabelled region), as Pascal VOC's masks mark them.
IGNORE_INDEX = 255


def criterion(recipe: Recipe, scores: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The recipe's loss: cross-entropy on logits (per pixel for segmentation, pixels marked IGNORE_INDEX left
    out), or the capsule margin loss on lengths in [0, 1]."""
    if recipe.loss == "margin":
        present = F.one_hot(labels, scores.shape[1]).to(scores.dtype)
        per_class = (present * F.relu(0.9 - scores) ** 2
                     + 0.5 * (1 - present) * F.relu(scores - 0.1) ** 2)
        per_sample = per_class.sum(dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    # masks' ignored pixels; a class label of 255 (ImageNet has 1,000 classes) counts as any other
    ignore = {"ignore_index": IGNORE_INDEX} if scores.dim() > 2 else {}
    return F.cross_entropy(scores, labels, reduction=reduction, **ignore,
                           label_smoothing=recipe.label_smoothing if reduction == "mean" else 0.0)


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


def autocast(recipe: Recipe, device: torch.device):
    """The recipe's mixed precision: bf16 on CUDA by default, fp32 on the CPU; fp16 goes with a GradScaler."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
             "auto": torch.bfloat16 if device.type == "cuda" else None}[recipe.precision]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def uses_channels_last(recipe: Recipe, device: torch.device) -> bool:
    return recipe.channels_last == "on" or (recipe.channels_last == "auto" and device.type == "cuda")


def make_mixing(recipe: Recipe, classes: int):
    """torchvision's MixUp and CutMix, one of the two picked per batch as the reference script does; None when
    the recipe has neither."""
    from torchvision.transforms import v2

    choices = ([v2.MixUp(alpha=recipe.mixup_alpha, num_classes=classes)] if recipe.mixup_alpha else []) + \
        ([v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=classes)] if recipe.cutmix_alpha else [])
    return v2.RandomChoice(choices) if choices else None


def training_loss(step_model, graph: Graph, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, pixels,
                  takes_labels: bool, target: torch.Tensor | None = None):
    """(loss, main logits) of a training batch: the recipe's loss on the main scores, plus aux_weight x the loss
    of each auxiliary output (a network's `output main, aux...`), plus the weighted reconstruction error.
    `takes_labels`: graph.takes_labels(), which layers reading the labels while training need. `target`: the
    mixed class probabilities of mixup/cutmix, else the labels `y`."""
    target = y if target is None else target
    scores, further = forward(step_model, x, y if takes_labels else None)
    aux_scores, reconstructions = further[:len(graph.aux_outputs)], further[len(graph.aux_outputs):]
    logits = logits_of(graph, scores)
    if logits.dim() == 4:  # segmentation: the masks cropped to what the network predicts
        target = segmentation_target(logits, target)
    loss = criterion(recipe, logits.float(), target) + reconstruction_loss(
        recipe, reconstructions, pixels(x) if reconstructions else x)
    for aux in aux_scores:
        loss = loss + recipe.aux_weight * criterion(recipe, aux.float(), target)
    return loss, logits


def seed_epoch(seed: int, epoch: int, ctx: Context) -> int:
    """An epoch's randomness from (seed, epoch, rank) alone: torch's global generator (dropout, mixup) is seeded,
    and the returned seed draws the augmentation. A resumed or restarted epoch thus draws what it drew the
    first time, and no random state needs saving."""
    value = ((seed * 1_000_003 + epoch) * 65_537 + ctx.rank) % 2**63
    torch.manual_seed(value)
    return value


@dataclass
class Trainer:
    """What a training step works with. `model` is what the step differentiates (DDP around the module when
    distributed); `step_model` calls it compiled or eager; `ema` (optional) follows the module's weights."""

    model: torch.nn.Module
    step_model: CompiledOrEager
    graph: Graph
    recipe: Recipe
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    ctx: Context
    scaler: torch.amp.GradScaler | None = None
    ema: torch.nn.Module | None = None
    mixing: object = None
    optimiser_steps: int = 0  # since the run began, for the EMA's period
    held_norms: list = field(default_factory=list)  # frozen batch norms, kept in evaluation mode while training

    @property
    def module(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)


def optimiser_steps_per_epoch(steps: int, recipe: Recipe) -> int:
    return math.ceil(steps / recipe.grad_accumulation)


def train_one_epoch(trainer: Trainer, split: Split, pixels, batch_size: int, epoch: int, seed: int,
                    progress: Progress, max_steps: int | None = None) -> dict:
    """One pass over this process's shard of `split` in batches of `batch_size` (at most `max_steps` of them);
    DDP (when the model is wrapped) averages the gradients, every grad_accumulation batches make one optimiser
    step. Returns the epoch's train loss, accuracy and speed over all processes. Raises Diverged."""
    recipe, ctx, device = trainer.recipe, trainer.ctx, trainer.ctx.device
    takes_labels, channels_last = trainer.graph.takes_labels(), uses_channels_last(recipe, device)
    trainer.model.train()
    for norm in trainer.held_norms:
        norm.eval()
    steps = split.steps(batch_size, ctx.world_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    accumulate = recipe.grad_accumulation
    seen, pending = 0, False
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no host sync per step
    correct = torch.zeros((), device=device, dtype=torch.long)
    counts = torch.zeros((), device=device, dtype=torch.long)  # images, or pixels for segmentation
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    progress.epoch_started(epoch, steps)
    batches = split.training_batches(batch_size, epoch, seed)
    for step, (x, y) in zip(range(steps), batches):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x, target = trainer.mixing(x, y) if trainer.mixing is not None else (x, None)
        steps_now = (step + 1) % accumulate == 0 or step == steps - 1
        # Gradients of a batch that makes no step stay in this process: DDP all-reduces on the stepping one.
        syncing = trainer.model.no_sync() if ctx.distributed and not steps_now else contextlib.nullcontext()
        with syncing:
            with autocast(recipe, device):
                loss, logits = training_loss(trainer.step_model, trainer.graph, recipe, x, y, pixels, takes_labels,
                                             target)
            # On the CPU a check costs nothing; on a GPU it would stall every step, so it waits for the epoch end.
            if device.type == "cpu" and any_process(not torch.isfinite(loss), ctx):
                raise Diverged(float(loss.detach()) if not torch.isfinite(loss) else "not finite in another process",
                               epoch, step)
            # The mean over the batches of this step's group (the last group of an epoch may be short).
            scaled = loss / min(accumulate, steps - step // accumulate * accumulate)
            (trainer.scaler.scale(scaled) if trainer.scaler else scaled).backward()
        if steps_now:
            optimiser_step(trainer, epoch)
        pending = not steps_now
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        hits, count = counted(logits, segmentation_target(logits, y) if logits.dim() == 4 else y)
        correct += hits
        counts += count
        if progress.per_step:
            progress.step(float(loss_sum) / seen, int(correct) / max(1, int(counts)),
                          seen * ctx.world_size / (time.perf_counter() - began))
    if pending:  # the batches ran out mid-group (unreadable images left some out): the group still steps
        optimiser_step(trainer, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    progress.epoch_ended()
    total_loss, total_correct, total_seen, total_counted = sum_over_processes([loss_sum, correct, seen, counts], ctx)
    if not total_seen:
        raise TrainError(f"no training image of epoch {epoch} could be read ({len(split.skipped)} skipped): "
                         f"{split.skipped[0] if split.skipped else 'the training set is empty'}")
    if not math.isfinite(total_loss):
        raise Diverged(total_loss, epoch, steps - 1)
    return {"train_loss": total_loss / total_seen, "train_accuracy": total_correct / max(1.0, total_counted),
            "images_per_second": total_seen / seconds, "epoch_seconds": seconds}


def optimiser_step(trainer: Trainer, epoch: int) -> None:
    """Clip (after unscaling fp16 gradients), step, advance the schedule, update the EMA, clear the gradients."""
    optimiser, scaler, recipe = trainer.optimiser, trainer.scaler, trainer.recipe
    if recipe.clip_grad_norm is not None:
        if scaler:
            scaler.unscale_(optimiser)
        torch.nn.utils.clip_grad_norm_(trainer.module.parameters(), recipe.clip_grad_norm)
    if scaler:
        scaler.step(optimiser)
        scaler.update()
    else:
        optimiser.step()
    trainer.schedule.step()
    optimiser.zero_grad(set_to_none=True)
    trainer.optimiser_steps += 1
    if trainer.ema is not None:
        ema_step(trainer.ema, trainer.module, trainer.optimiser_steps, recipe, epoch)


@dataclass
class Evaluation:
    """A split evaluated: the mean loss, the accuracy (of images, or of pixels for segmentation), top-5 accuracy
    (more than 5 classes), and the confusion matrix (rows: the true class, columns: the predicted one; counts of
    images, or of pixels)."""

    loss: float
    accuracy: float
    images: int
    confusion: torch.Tensor
    top5: float | None = None
    task: str = "classification"

    def per_class(self) -> list[float | None]:
        """Each class's accuracy (recall): the share of its images (pixels) predicted as it; None for a class
        the split does not hold."""
        totals = self.confusion.sum(1)
        return [float(self.confusion[c, c] / totals[c]) if totals[c] else None for c in range(len(totals))]

    def iou(self) -> list[float | None]:
        """Each class's intersection over union; None for a class neither present nor predicted."""
        union = self.confusion.sum(0) + self.confusion.sum(1) - self.confusion.diag()
        return [float(self.confusion[c, c] / union[c]) if union[c] else None for c in range(len(union))]

    @property
    def miou(self) -> float:
        """The mean IoU over the classes present or predicted (torchmetrics' and the VOC benchmark's mIoU)."""
        values = [v for v in self.iou() if v is not None]
        return sum(values) / len(values) if values else math.nan


def segmentation_target(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masks [N, H, W] centre-cropped to the logits' [h, w]: a network of valid convolutions (U-Net) predicts the
    centre of its input (the paper's overlap-tile)."""
    h, w = logits.shape[-2:]
    top, left = (masks.shape[-2] - h) // 2, (masks.shape[-1] - w) // 2
    return masks[..., top:top + h, left:left + w]


def counted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, counted) of a batch: images, or for segmentation (logits [N, C, h, w]) the pixels that are not
    IGNORE_INDEX."""
    if logits.dim() == 4:
        valid = labels != IGNORE_INDEX
        return ((logits.argmax(1) == labels) & valid).sum(), valid.sum()
    return (logits.argmax(1) == labels).sum(), torch.tensor(len(labels), device=labels.device)


def evaluate_split(model, graph: Graph, recipe: Recipe, split: Split, pixels, batch_size: int, ctx: Context,
                   log=None) -> Evaluation:
    """The loss (the recipe's, without label smoothing), accuracy, top-5 accuracy and confusion matrix over every
    image of `split` that could be read: each process takes its shard, and the sums are added up over the
    processes. `pixels` undoes a batch's normalisation. An image that could not be read is left out of the
    figures and of the count: `split.images` becomes the number evaluated, so that a test reported as N images is
    N images evaluated; with `log`, each one is named there, once ("skipped an unreadable image: <path>:
    <reason>")."""
    model.eval()
    device = ctx.device
    classes = graph.node(graph.output).shape[0]
    skipped_before = len(split.skipped)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    seen = torch.zeros((), dtype=torch.long, device=device)
    images = torch.zeros((), dtype=torch.long, device=device)
    confusion = torch.zeros(classes * classes, dtype=torch.long, device=device)
    segmenting = len(graph.node(graph.output).shape) == 3
    with torch.no_grad(), autocast(recipe, device):
        for xb, yb in split.evaluation_batches(batch_size):
            if uses_channels_last(recipe, device) and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            scores, reconstructions = forward(model, xb)
            logits = logits_of(graph, scores).float()
            if segmenting:
                yb = segmentation_target(logits, yb)
            total_loss += (criterion(recipe, logits, yb, reduction="sum")
                           + reconstruction_loss(recipe, reconstructions, pixels(xb), reduction="sum"))
            hits, count = counted(logits, yb)
            correct += hits
            seen += count
            images += len(yb)
            predicted, truth = logits.argmax(1), yb
            if segmenting:
                keep = truth != IGNORE_INDEX
                predicted, truth = predicted[keep], truth[keep]
            elif classes > 5:
                top5 += (logits.topk(5, dim=1).indices == yb[:, None]).any(1).sum()
            confusion += torch.bincount(truth.flatten() * classes + predicted.flatten(), minlength=classes ** 2)
    total_loss, correct, seen, images, top5 = sum_over_processes([total_loss, correct, seen, images, top5], ctx)
    if ctx.distributed:
        from torch import distributed as dist

        dist.all_reduce(confusion)
    # What each process skipped, in every process (a collective: all of them call it, log or not).
    skipped = gathered(split.skipped[skipped_before:], ctx)
    if skipped:
        split.images = int(images)
        split.unreadable = list(dict.fromkeys(skipped))
        if log is not None:
            for image in dict.fromkeys(skipped):
                log(f"skipped an unreadable image: {image}")
    matrix = confusion.view(classes, classes).cpu()
    if not seen:
        return Evaluation(math.nan, math.nan, 0, matrix, None, "segmentation" if segmenting else "classification")
    return Evaluation(total_loss / (seen if segmenting else images), correct / seen, int(images), matrix,
                      top5 / seen if classes > 5 and not segmenting else None,
                      "segmentation" if segmenting else "classification")


def evaluate(model, graph: Graph, recipe: Recipe, split: Split, pixels, batch_size: int, ctx: Context,
             log=None) -> tuple[float, float]:
    """Mean loss and accuracy over every image of `split` that could be read (evaluate_split)."""
    result = evaluate_split(model, graph, recipe, split, pixels, batch_size, ctx, log)
    return result.loss, result.accuracy
