"""Training recipes: the `train Network { ... }` section of a spec, validated without torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netspec import ast
from netspec.errors import Diagnostic, did_you_mean
from netspec.evaluate import Symbol, evaluate, show

DATASETS = ("mnist", "fashion-mnist", "cifar10", "imagefolder", "synthetic")


class Recipe(BaseModel):
    """Everything `netspec train` needs besides the network; flags override the spec, which overrides these."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    data: Literal[DATASETS] = "mnist"
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 128
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["none", "onecycle", "cosine", "step"] = "onecycle"
    step_size: Annotated[int, Field(ge=1)] = 10  # epochs between decays, for schedule="step"
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # "margin": Sabour et al.'s capsule loss on output lengths (m+ = 0.9, m- = 0.1, lambda = 0.5)
    loss: Literal["cross_entropy", "margin"] = "cross_entropy"
    # Added to the loss for each reconstruction() output: weight x the per-sample sum of squared errors
    # against the network's input (Sabour et al.: 0.0005, so the decoder does not dominate the margin loss).
    reconstruction_weight: Annotated[float, Field(ge=0)] = 0.0005
    # Each auxiliary output's loss (a network's `output main, aux...`) is added times this: GoogLeNet's 0.3.
    aux_weight: Annotated[float, Field(ge=0)] = 0.3
    pad: Annotated[int, Field(ge=0, le=1024)] = 0  # zero padding around each image, e.g. 2 for 28 -> 32
    normalize: bool = True  # subtract the training set's mean, divide by its standard deviation
    augment: Literal["none", "flip", "crop", "flip+crop"] = "none"
    permute_pixels: int | None = None  # a seed: one fixed shuffle of pixel positions for every image
    compile: bool = False  # torch.compile, falling back to eager if it fails
    seed: int = 0


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
