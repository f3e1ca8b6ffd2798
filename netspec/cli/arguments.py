"""The command line's arguments: a spec and its limits, the data, a flag per recipe setting, and what each
becomes (Limits, a Recipe, a network argument)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from netspec.ground.errors import ToolError
from netspec.ground.limits import DEFAULT, Limits, search_path_from_environment
from netspec.language.overrides import OverrideError, parse_override



class RecipeError(ToolError):
    """Settings (the spec's train section with the flags) that make no valid recipe."""

    exit_code = 2


def override(text: str) -> tuple[str, Any]:
    """`--set classes=10` -> ("classes", 10); the value is a spec expression, never Python."""
    try:
        return parse_override(text)
    except OverrideError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def count(text: str) -> int:
    """A positive count; underscores and powers of ten allowed: 1_000_000, 1e12."""
    try:
        value = float(text.replace("_", "")) if "e" in text.lower() else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(value)


def batch_size(text: str) -> str | int:
    if text == "dynamic":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")


def spec_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("spec", help="a .net file, or file.net:Network to pick one of several networks")
    command.add_argument("--set", action="append", type=override, default=[], metavar="NAME=VALUE",
                         help="override a network parameter, e.g. --set classes=10 (repeatable)")
    limits = command.add_argument_group("limits (docs/reliability.md)")
    limits.add_argument("--max-params", type=count, default=DEFAULT.params, metavar="N",
                        help=f"refuse networks with more parameters (default {DEFAULT.params:.0e})")
    limits.add_argument("--max-layers", type=count, default=DEFAULT.instances, metavar="N",
                        help=f"refuse networks instantiating more layers, blocks and groups "
                             f"(default {DEFAULT.instances:,})")
    limits.add_argument("--max-tokens", type=count, default=DEFAULT.tokens, metavar="N",
                        help=f"refuse specs (with their imports) of more tokens (default {DEFAULT.tokens:,})")
    limits.add_argument("--import-path", action="append", default=[], metavar="DIR",
                        help="a folder imports are looked for in after the importing file's own, and may read "
                             "(repeatable; also the NETSPEC_PATH environment variable, separated by ':')")
    limits.add_argument("--allow-any-import", action="store_true",
                        help="let imports read any file (only for specs you trust)")


def data_arguments(command: argparse.ArgumentParser) -> None:
    from netspec.semantics.recipe import DATASETS

    command.add_argument("--data", choices=DATASETS, help="dataset (default: the spec's, else mnist)")
    command.add_argument("--data-dir", help="where datasets live (also $NETSPEC_DATA; then ./data, ~/data)")
    command.add_argument("--download", action="store_true", help="fetch a missing dataset with torchvision")
    command.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    command.add_argument("--pad", type=int, help="zero padding around each image, e.g. 2 for 28x28 -> 32x32")
    command.add_argument("--permute-pixels", type=int, metavar="SEED",
                         help="shuffle pixel positions with one fixed permutation (the seed)")
    command.add_argument("--data-mode", choices=("auto", "memory", "stream"), default="auto",
                         help="memory: the dataset on the device as one tensor; stream: a DataLoader with workers "
                              "(auto: memory for MNIST/CIFAR-10, stream for image files; printed at the start)")
    command.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes when streaming")


# Flags with their own help or choices in _data_arguments; every other recipe setting gets a flag of its own
# from the Recipe schema (recipe_arguments), so a new setting is settable from the command line at once.
DATA_FLAGS = ("data", "pad", "permute_pixels")
RECIPE_HELP = {
    "batch_size": "the global batch, split over the processes",
    "loss": "margin: the capsule loss on output lengths (CapsNet)",
    "compile": "torch.compile (falls back to eager)",
    "seed": "makes CPU runs bit-reproducible",
    "validation": "fraction of the training set held out to choose best.pt (0: none; a val/ folder wins)",
    "augment": "crop: a random crop of each image padded by 4 pixels (2 below 32x32); flip: horizontal",
    "train_crop": "auto: RandomResizedCrop when images are not the input size",
    "ema": "keep an exponential moving average of the weights, evaluated and checkpointed alongside",
    "precision": "auto: bf16 autocast on CUDA, fp32 on the CPU; fp16 adds a gradient scaler",
    "freeze_backbone": "fine-tuning: train only the head (the layers making the outputs)",
    "lr_head": "fine-tuning: the head's learning rate (default: --lr)",
    "backbone_lr_factor": "fine-tuning: the rest of the network learns at --lr times F (e.g. 0.1)",
}


def recipe_arguments(command: argparse.ArgumentParser) -> None:
    """A flag per recipe setting, typed and with the choices the schema allows (docs/training.md)."""
    import types
    import typing

    from netspec.semantics.recipe import Recipe

    group = command.add_argument_group("recipe (the spec's train section; these flags override it)")
    for name, info in Recipe.model_fields.items():
        if name in DATA_FLAGS:
            continue
        kind = info.annotation
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType)  # `X | None`
        options = [a for a in typing.get_args(kind) if a is not type(None)] if optional else [kind]
        base = typing.get_args(options[0])[0] if typing.get_origin(options[0]) is typing.Annotated else options[0]
        flag = "--" + name.replace("_", "-")
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=RECIPE_HELP.get(name))
        elif typing.get_origin(base) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(base), help=RECIPE_HELP.get(name))
        else:
            group.add_argument(flag, type=base, help=RECIPE_HELP.get(name))


def recipe_from_options(options: argparse.Namespace, graph, recorded: dict | None = None):
    """Defaults, then the spec's `train` section, then the flags given. `recorded`: a checkpoint's run config,
    whose resolved recipe stands in for the spec's section (eval, predict: the run's own settings)."""
    from pydantic import ValidationError

    from netspec.semantics.recipe import Recipe

    flags = {key: getattr(options, key) for key in Recipe.model_fields if getattr(options, key, None) is not None}
    base = graph.recipe
    if recorded and isinstance(recorded.get("recipe"), dict) and recorded.get("network") == graph.name:
        base = {key: value for key, value in recorded["recipe"].items() if key in Recipe.model_fields}
    try:
        return Recipe.model_validate({**base, **flags})
    except ValidationError as err:
        e = err.errors()[0]
        where = f"--{str(e['loc'][0]).replace('_', '-')}: " if e["loc"] else ""
        raise RecipeError(f"{where}{e['msg'].removeprefix('Value error, ')}") from None


def limits_from_options(options: argparse.Namespace):
    search = tuple(Path(p) for p in options.import_path) + search_path_from_environment()
    roots = None if options.allow_any_import else search
    return Limits(params=options.max_params, instances=options.max_layers, tokens=options.max_tokens,
                  import_roots=roots, import_search=search)
