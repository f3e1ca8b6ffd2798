"""Fine-tuning: a run that starts from pretrained weights (`--init`), with parts of the network frozen and the
head trained at its own learning rate.

    --init PATH                  a netspec checkpoint (best.pt, last.pt: forking that run), a state_dict saved by
                                 torch.save (.pt, .pth; also under "state_dict" or "model") or a .safetensors file
    --init torchvision:ENUM      torchvision's published weights (ResNet18_Weights.IMAGENET1K_V1), fetched by
                                 torchvision's own loader into torch's cache (torch.hub.get_dir())

Weights are loaded by key, strictly: every entry of the network must be in the file and every entry of the file in
the network, with the same shape, except the head's: the layers that make the network's outputs (walking back from
each output to the first layer with parameters), which are re-initialised (the seed's initial weights) when their
shapes differ, as a 1000-class ImageNet head does for a 10-class task. The report names what was loaded and what
was re-initialised.

Freezing (`--freeze PATTERN`, `--freeze-backbone`, or `frozen=true` on a layer in the spec) takes parameters out of
training; a batch norm whose parameters are all frozen by the flags is also held in evaluation mode, so its running
statistics stay the pretrained ones. `--lr-head LR` and `--backbone-lr-factor F` give the head and the rest
learning rates of their own; every schedule scales each group from its own rate.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from netspec.backends.torch.module import WeightsError, read_weights_file
from netspec.ground.errors import first_line
from netspec.ir import Graph
from netspec.train.errors import TrainError

TORCHVISION = "torchvision:"
# torchvision's DenseNet weights keep the keys of its first release (norm.1, conv.2); its builder renames them so.
DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\."
                          r"(?:weight|bias|running_mean|running_var))$")
SHOWN = 5


@dataclass(frozen=True)
class FineTune:
    """The fine-tuning settings of a run (none by default): recorded in config.json, and a resumed run must keep
    them."""

    init: str | None = None
    freeze: tuple[str, ...] = ()
    freeze_backbone: bool = False
    lr_head: float | None = None
    backbone_lr_factor: float | None = None

    def settings(self) -> dict:
        return {**asdict(self), "freeze": list(self.freeze)}

    @property
    def any(self) -> bool:
        return self != FineTune()


@dataclass
class InitReport:
    """What --init loaded: the tensors and parameters taken from the file, and the head's entries left to their
    initial weights (key, the network's shape, the file's shape)."""

    source: str
    loaded: int
    total: int
    parameters: int
    reinitialised: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    run: dict | None = None  # the network and epoch of a netspec checkpoint (a fork)

    def line(self) -> str:
        origin = f" ({self.run['network']}, epoch {self.run['epoch']})" if self.run else ""
        text = (f"init: {self.loaded} of {self.total} tensors ({self.parameters:,} parameters) from "
                f"{self.source}{origin}")
        if self.reinitialised:
            text += "; re-initialised (the file's shape differs): " + ", ".join(
                f"{key} {own} (the file's {theirs})" for key, own, theirs in self.reinitialised)
        return text

    def as_json(self) -> dict:
        return {"source": self.source, "loaded": self.loaded, "total": self.total, "parameters": self.parameters,
                "reinitialised": [{"key": key, "shape": own, "file_shape": theirs}
                                  for key, own, theirs in self.reinitialised],
                **({"run": self.run} if self.run else {})}


def head_layers(graph: Graph) -> list[str]:
    """The layers that make the network's outputs: from each output (the main one and any auxiliary), back
    through layers without parameters (flatten, softmax, pooling) to the first one with parameters."""
    heads = []
    for output in [graph.output, *graph.aux_outputs]:
        node = graph.node(output)
        while not node.params and node.inputs and node.op != "input":
            node = graph.node(node.inputs[0])
        if node.params and node.name not in heads:
            heads.append(node.name)
    return heads


def in_layers(key: str, layers: list[str]) -> bool:
    return any(key == layer or key.startswith(layer + ".") for layer in layers)


def _without_prefix(state: dict, prefix: str) -> dict:
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state


def tensors_of(content, where: str) -> dict[str, torch.Tensor]:
    """The state_dict in what a file holds: itself, or under "model", "state_dict" or "model_state_dict" (a
    DistributedDataParallel's "module." prefix dropped)."""
    if isinstance(content, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        raise TrainError(f"--init {where} holds no state_dict of tensors")
    return _without_prefix(dict(content), "module.")


def torchvision_state(name: str) -> dict[str, torch.Tensor]:
    """torchvision's published weights by their enum's name, through its loader and torch's cache."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        raise TrainError(f"--init {TORCHVISION}{name}: not torchvision weights ({first_line(err)}); name an enum "
                         f"member such as {TORCHVISION}ResNet18_Weights.IMAGENET1K_V1") from None
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as err:  # no network, a proxy, a corrupt download
        raise TrainError(f"--init {TORCHVISION}{name}: cannot fetch {weights.url} ({first_line(err)}); on a machine "
                         f"without a network, download that file elsewhere and pass it as --init FILE.pth, or place "
                         f"it in {Path(torch.hub.get_dir()) / 'checkpoints'}") from None
    if name.startswith("DenseNet"):
        state = {DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    return state


def read_init(source: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state_dict, the netspec run config it carries or None) of an --init source."""
    if source.startswith(TORCHVISION):
        return torchvision_state(source[len(TORCHVISION):]), None
    path = Path(source).expanduser()
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise TrainError(f"--init {source}: reading .safetensors needs the safetensors package (pip install "
                             "safetensors, or the project's `train` extra)") from None
        if not path.is_file():
            raise TrainError(f"--init {source}: weights file not found")
        try:
            return tensors_of(load_file(str(path)), source), None
        except (SafetensorError, OSError, ValueError) as err:
            raise TrainError(f"--init {source} is not a readable .safetensors file ({first_line(err)})") from None
    try:
        content = read_weights_file(path)
    except WeightsError as err:
        raise TrainError(f"--init: {err}") from None
    config = content.get("config") if isinstance(content, dict) and isinstance(content.get("config"), dict) else None
    run = {"network": config.get("network"), "epoch": content.get("epoch")} if config else None
    return tensors_of(content, source), run


def _shown(keys: list[str]) -> str:
    return ", ".join(f"'{k}'" for k in keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def load_init(model: nn.Module, graph: Graph, source: str) -> InitReport:
    """Load --init into `model` by key, strictly, re-initialising the head where its shapes differ; raises
    TrainError naming what does not fit (nothing is loaded then)."""
    state, run = read_init(source)
    own = model.state_dict()
    heads = head_layers(graph)
    # batch norm fills in a count it lacks (files saved before torch kept one): not a missing entry
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in own]
    if missing:
        raise TrainError(f"--init {source} has no {_shown(missing)} ({len(missing)} of the network's {len(own)} "
                         f"entries missing); its first entries are {_shown(list(state))}: it holds another network's "
                         "weights, or keys named otherwise")
    if extra:
        raise TrainError(f"--init {source} has entries the network does not: {_shown(extra)}")
    taken, reinitialised = {}, []
    for key, value in own.items():
        if key not in state:
            continue
        theirs = state[key]
        if tuple(theirs.shape) == tuple(value.shape):
            taken[key] = theirs
        elif in_layers(key, heads):
            reinitialised.append((key, list(value.shape), list(theirs.shape)))
        else:
            raise TrainError(f"--init: '{key}' has shape {list(theirs.shape)} in {source} but {list(value.shape)} in "
                             f"the spec; only the head ({', '.join(heads)}) may differ, and is re-initialised")
    model.load_state_dict({**own, **taken})
    parameters = dict(model.named_parameters())
    return InitReport(source, len(taken), len(own), sum(t.numel() for k, t in taken.items() if k in parameters),
                      reinitialised, run)


def freeze(model: nn.Module, graph: Graph, settings: FineTune) -> tuple[int, set[str]]:
    """Apply --freeze and --freeze-backbone: (the count of parameters frozen, the names of those parameters).
    A pattern is matched against parameter names (fnmatch: `layer1.*`, `*.bn*`); one without a wildcard names a
    layer or a scope (`layer1` freezes everything in it). A pattern that matches nothing is an error."""
    if not settings.freeze and not settings.freeze_backbone:
        return 0, set()
    heads = head_layers(graph)
    names = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in settings.freeze:
        wildcard = any(c in pattern for c in "*?[")
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)] if wildcard else \
            [n for n in names if n == pattern or n.startswith(pattern + ".")]
        if not matched:
            parts = ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
            raise TrainError(f"--freeze {pattern}: no parameter of {graph.name} matches it; its top-level layers "
                             f"are {parts}")
        chosen.update(matched)
    if settings.freeze_backbone:
        if not heads:
            raise TrainError(f"--freeze-backbone: {graph.name} has no layer with parameters making its output")
        chosen.update(n for n in names if not in_layers(n, heads))
    frozen = 0
    for name, parameter in model.named_parameters():
        if name in chosen and parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen, chosen


def held_norms(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """The batch norms whose parameters the flags froze (found after DDP's SyncBatchNorm conversion, which
    keeps their names): training holds them in evaluation mode, their running statistics the pretrained ones."""
    return [module for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and list(module.parameters(recurse=False))
            and all(f"{name}.{p}" in frozen for p, _ in module.named_parameters(recurse=False))]


def learning_rates(model: nn.Module, graph: Graph, settings: FineTune, lr: float):
    """The learning rate of each parameter (by identity) under --lr-head and --backbone-lr-factor; None when
    every parameter takes the recipe's."""
    if settings.lr_head is None and settings.backbone_lr_factor is None:
        return None
    heads = head_layers(graph)
    head_lr = settings.lr_head if settings.lr_head is not None else lr
    backbone_lr = lr * (settings.backbone_lr_factor if settings.backbone_lr_factor is not None else 1.0)
    return {id(p): head_lr if in_layers(name, heads) else backbone_lr for name, p in model.named_parameters()}
