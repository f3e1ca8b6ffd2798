"""The optimiser, its learning-rate schedule and the model EMA of a recipe, as torchvision's reference
classification script builds them (references/classification/train.py and utils.py), with the schedule
counted in optimiser steps rather than epochs so that warmup and decay move smoothly within an epoch."""

from __future__ import annotations

import torch
from torch import nn

from netspec.semantics.recipe import Recipe

# torchvision's set_weight_decay: the layers whose parameters norm_weight_decay applies to. netspec's own
# LayerNorm2d subclasses nn.LayerNorm and is covered; its other modules hold no normalisation parameters.
NORM_CLASSES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
                nn.LocalResponseNorm)


def parameter_groups(model: nn.Module, weight_decay: float, norm_weight_decay: float | None = None,
                     bias_weight_decay: float | None = None, rates: dict[int, float] | None = None) -> list[dict]:
    """The trainable parameters of `model` in optimiser groups ("params", "weight_decay"): every parameter
    named `bias` gets bias_weight_decay (checked first, as torchvision's custom key "bias" is, so a norm
    layer's bias is a bias), the other parameters of normalisation layers norm_weight_decay, the rest
    weight_decay. A setting of None folds its parameters into the weight_decay group, so with neither set
    there is one group in model.parameters() order. Groups keep the order weight_decay, norm, bias; empty
    groups are left out; a parameter shared by several modules is placed once, where it is first met. `rates`
    (fine-tuning's learning rates, by parameter identity) splits each group by learning rate, set as its "lr"."""
    decays = {"other": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
    groups: dict[tuple[str, float | None], list] = {}
    seen = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if name == "bias" and bias_weight_decay is not None:
                kind = "bias"
            elif isinstance(module, NORM_CLASSES) and norm_weight_decay is not None:
                kind = "norm"
            else:
                kind = "other"
            groups.setdefault((kind, rates[id(parameter)] if rates else None), []).append(parameter)
    order = sorted(groups, key=lambda key: list(decays).index(key[0]))  # stable: rates in the order first met
    return [{"params": groups[key], "weight_decay": decays[key[0]], **({"lr": key[1]} if rates else {})}
            for key in order]


def make_optimiser(recipe: Recipe, model: nn.Module, steps_per_epoch: int, rates: dict[int, float] | None = None):
    """(optimizer, schedule) for `recipe`; the schedule is stepped once per optimiser step, of which an epoch
    has `steps_per_epoch`. Warmup (warmup_epochs > 0) runs lr x warmup_decay up to lr ("linear") or holds it
    ("constant") for its steps, then the recipe's schedule runs the remaining steps from lr, joined by
    SequentialLR as the reference script joins them. `rates`: a learning rate per parameter (fine-tuning's head
    and backbone), each group scheduled from its own as the recipe's lr would be."""
    if steps_per_epoch < 1:
        raise ValueError(f"an epoch needs at least one optimiser step, got steps_per_epoch={steps_per_epoch}")
    groups = parameter_groups(model, recipe.weight_decay, recipe.norm_weight_decay, recipe.bias_weight_decay, rates)
    if recipe.optimizer == "sgd":
        optimiser = torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                    weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "adam":
        optimiser = torch.optim.Adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        optimiser = torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)

    warmup_steps = recipe.warmup_epochs * steps_per_epoch
    main_steps = recipe.epochs * steps_per_epoch - warmup_steps
    # The main schedule is built first: each scheduler sets the lr when built, and SequentialLR then starts
    # the warmup's (the reference script's order).
    if recipe.schedule == "onecycle":  # Recipe refuses it with warmup: one-cycle warms up by itself
        peaks = [group["lr"] for group in optimiser.param_groups] if rates else recipe.lr
        main = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=peaks, total_steps=main_steps)
    elif recipe.schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=main_steps, eta_min=recipe.lr_min)
    elif recipe.schedule == "step":
        main = torch.optim.lr_scheduler.StepLR(optimiser, step_size=recipe.step_size * steps_per_epoch,
                                               gamma=recipe.gamma)
    else:
        main = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)
    if not warmup_steps:
        return optimiser, main
    if recipe.warmup_method == "linear":
        warmup = torch.optim.lr_scheduler.LinearLR(optimiser, start_factor=recipe.warmup_decay,
                                                   total_iters=warmup_steps)
    else:
        warmup = torch.optim.lr_scheduler.ConstantLR(optimiser, factor=recipe.warmup_decay, total_iters=warmup_steps)
    return optimiser, torch.optim.lr_scheduler.SequentialLR(optimiser, [warmup, main], milestones=[warmup_steps])


class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
    """torchvision's model EMA: each update makes every parameter and buffer
    ema = decay x ema + (1 - decay) x model (integer buffers rounded down), the first update (n_averaged = 0)
    copies the model. `ema.module` is a copy of the model, so its state_dict has the model's keys."""

    def __init__(self, model: nn.Module, decay: float, device: torch.device | str | None = "cpu"):
        def ema_average(averaged: torch.Tensor, current: torch.Tensor, count) -> torch.Tensor:
            return decay * averaged + (1 - decay) * current

        super().__init__(model, device, ema_average, use_buffers=True)
        self.decay = decay


def ema_decay(recipe: Recipe, world_size: int, batch_size_per_process: int) -> float:
    """The reference script's decay adjustment (from pycls), which keeps the EMA's horizon a fixed share of
    the run whatever the batch, processes, ema_steps and epochs: adjust = images per EMA update / epochs,
    alpha = min(1, (1 - ema_decay) x adjust), decay = 1 - alpha. Images per update count every batch an
    optimiser step accumulates: world_size x batch_size_per_process x grad_accumulation x ema_steps."""
    images_per_update = world_size * batch_size_per_process * recipe.grad_accumulation * recipe.ema_steps
    alpha = min(1.0, (1.0 - recipe.ema_decay) * images_per_update / recipe.epochs)
    return 1.0 - alpha


def make_ema(recipe: Recipe, model: nn.Module, world_size: int,
             batch_size_per_process: int) -> ExponentialMovingAverage | None:
    """The recipe's model EMA (None without `ema`), on the model's device. Pass the model unwrapped from
    DDP; `batch_size_per_process` is what each process computes at once (one of the grad_accumulation
    batches of an optimiser step). Update it with ema_step after every optimiser step."""
    if not recipe.ema:
        return None
    return ExponentialMovingAverage(model, ema_decay(recipe, world_size, batch_size_per_process), device=None)


def ema_step(ema: ExponentialMovingAverage | None, model: nn.Module, step: int, recipe: Recipe, epoch: int) -> None:
    """Called after each optimiser step with a count of optimiser steps (the reference script counts the
    epoch's batches from 0; a count since the run began, kept across resumes, serves as well) and the epoch,
    from 0. As the reference script: every ema_steps steps (step % ema_steps == 0) the EMA takes in `model`,
    and during the warmup epochs its count is reset, so that it copies the model until warmup ends and its
    first update after warmup copies too. No-op when `ema` is None."""
    if ema is None or step % recipe.ema_steps:
        return
    ema.update_parameters(model)
    if epoch < recipe.warmup_epochs:
        ema.n_averaged.fill_(0)
