"""Training recipes: the `train Network { ... }` section of a spec, validated without torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from netspec.language import ast
from netspec.ground.errors import Diagnostic, did_you_mean
from netspec.language.evaluate import Symbol, evaluate, show

DATASETS = ("mnist", "fashion-mnist", "cifar10", "imagefolder", "csv", "synthetic")
AUTO_AUGMENT = ("none", "ta_wide", "ra", "augmix", "imagenet", "cifar10", "svhn")


class Recipe(BaseModel):
    """Everything `netspec train` needs besides the network; flags override the spec, which overrides these."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    data: Literal[DATASETS] = "mnist"
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 128  # the global batch, over all processes
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    # Weight decay of normalisation layers' weights and of every bias; None: weight_decay (torchvision's
    # reference script: --norm-weight-decay, --bias-weight-decay).
    norm_weight_decay: Annotated[float, Field(ge=0)] | None = None
    bias_weight_decay: Annotated[float, Field(ge=0)] | None = None
    schedule: Literal["none", "onecycle", "cosine", "step"] = "onecycle"
    step_size: Annotated[int, Field(ge=1)] = 10  # epochs between decays, for schedule="step"
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    lr_min: Annotated[float, Field(ge=0)] = 0.0  # where schedule="cosine" ends
    # Warmup before the schedule: the learning rate starts at lr x warmup_decay and rises linearly to lr
    # ("linear"), or stays there ("constant"), for warmup_epochs; then the schedule runs the remaining epochs.
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    warmup_method: Literal["linear", "constant"] = "linear"
    warmup_decay: Annotated[float, Field(gt=0, le=1)] = 0.01
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # "margin": Sabour et al.'s capsule loss on output lengths (m+ = 0.9, m- = 0.1, lambda = 0.5)
    loss: Literal["cross_entropy", "margin"] = "cross_entropy"
    # Added to the loss for each reconstruction() output: weight x the per-sample sum of squared errors
    # against the network's input (Sabour et al.: 0.0005, so the decoder does not dominate the margin loss).
    reconstruction_weight: Annotated[float, Field(ge=0)] = 0.0005
    # Each auxiliary output's loss (a network's `output main, aux...`) is added times this: GoogLeNet's 0.3.
    aux_weight: Annotated[float, Field(ge=0)] = 0.3
    grad_accumulation: Annotated[int, Field(ge=1, le=1024)] = 1  # batches whose gradients make one step
    clip_grad_norm: Annotated[float, Field(gt=0)] | None = None
    # Model EMA as in torchvision's reference script: every ema_steps steps, ema = d x ema + (1 - d) x model,
    # with d = 1 - (1 - ema_decay) x (batch_size x ema_steps / epochs), capped at 1 - d <= 1.
    ema: bool = False
    ema_steps: Annotated[int, Field(ge=1)] = 32
    ema_decay: Annotated[float, Field(gt=0, lt=1)] = 0.99998
    # "auto": bf16 autocast on CUDA, fp32 on the CPU; "fp16" adds a gradient scaler.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"  # "auto": on CUDA
    compile: bool = False  # torch.compile, falling back to eager if it fails
    # Held out of the training set (a fixed, seeded draw) to choose best.pt; a val/ folder or val.csv is used
    # instead when the data has one. The test set is evaluated once, for the chosen weights. 0: no validation,
    # best.pt is the last epoch's.
    validation: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    pad: Annotated[int, Field(ge=0, le=1024)] = 0  # zero padding around each image, e.g. 2 for 28 -> 32
    normalize: bool = True  # subtract the training set's mean, divide by its standard deviation
    # "crop": a random crop of each image padded by 4 pixels (2 below 32x32); "flip": a horizontal flip with
    # probability 0.5. Images of other sizes than the network's input are random-resized-cropped to it.
    augment: Literal["none", "flip", "crop", "flip+crop"] = "none"
    # "auto": RandomResizedCrop when the images are not all of the network's input size, else the images as
    # they are; "random_resized": always RandomResizedCrop; "center": resize and centre-crop as evaluated.
    train_crop: Literal["auto", "random_resized", "center"] = "auto"
    train_crop_size: Annotated[int, Field(ge=1)] | None = None  # None: the network's input size
    val_resize_size: Annotated[int, Field(ge=1)] | None = None  # None: the crop size x 256/224 (256 for 224)
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    auto_augment: Literal[AUTO_AUGMENT] = "none"
    ra_magnitude: Annotated[int, Field(ge=0, le=30)] = 9
    random_erase: Annotated[float, Field(ge=0, le=1)] = 0.0
    mixup_alpha: Annotated[float, Field(ge=0)] = 0.0
    cutmix_alpha: Annotated[float, Field(ge=0)] = 0.0
    permute_pixels: int | None = None  # a seed: one fixed shuffle of pixel positions for every image
    # Fine-tuning (docs/training.md): the head's own learning rate (None: lr), the rest of the network's factor on
    # lr (None: 1), and training the head alone. Where the weights start is `--init`, a flag of the run.
    lr_head: Annotated[float, Field(gt=0)] | None = None
    backbone_lr_factor: Annotated[float, Field(gt=0)] | None = None
    freeze_backbone: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self):
        if self.warmup_epochs and self.schedule == "onecycle":
            raise ValueError("warmup_epochs goes with schedule \"cosine\", \"step\" or \"none\": one-cycle "
                             "warms up by itself")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        if (self.mixup_alpha or self.cutmix_alpha) and self.loss == "margin":
            raise ValueError("mixup and cutmix mix the labels, which the margin loss cannot take")
        return self


def recipe_from_section(section: ast.Train | None, lets: dict) -> tuple[dict, list[Diagnostic]]:
    """The section's settings as plain values (validated against Recipe), and any mistakes found."""
    if section is None:
        return {}, []
    values, spans, errors = {}, {}, []
    fields = Recipe.model_fields
    for setting in section.settings:
        if setting.name not in fields:
            errors.append(Diagnostic("NS202", f"training recipes have no setting '{setting.name}'", setting.span,
                                     did_you_mean(setting.name, fields) or "settings: " + ", ".join(fields)))
            continue
        if setting.name in values:
            errors.append(Diagnostic("NS206", f"setting '{setting.name}' given twice", setting.span))
            continue
        try:
            value = evaluate(setting.value, lets.__getitem__, lambda: list(lets), allow_symbol=True)
        except Exception as err:  # a NetspecError from evaluation
            errors.extend(getattr(err, "diagnostics", []))
            continue
        values[setting.name] = value.name if isinstance(value, Symbol) else value
        spans[setting.name] = setting.value.span
    try:
        Recipe.model_validate(values)
    except ValidationError as err:
        for e in err.errors():
            key = e["loc"][0] if e["loc"] else None
            message = e["msg"].removeprefix("Value error, ")
            errors.append(Diagnostic("NS203", f"invalid training setting '{key}': {message[:1].lower()}"
                                              f"{message[1:]}, got {show(values.get(key))}",
                                     spans.get(key, section.span)))
    return values, errors
