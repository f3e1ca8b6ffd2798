"""The op registry: everything about a layer type sits in one class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from netspec.ground.errors import ShapeRuleError

Shape = tuple[int, ...]
ClassScores = Literal["logits", "distances", "probabilities"]

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _as_pair(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)
    return value


Init = Literal["default", "kaiming", "xavier", "zeros"]

PositivePair = Annotated[tuple[PositiveInt, PositiveInt], BeforeValidator(_as_pair)]
NonNegativePair = Annotated[tuple[NonNegativeInt, NonNegativeInt], BeforeValidator(_as_pair)]


@dataclass(frozen=True)
class TorchLayer:
    """How the PyTorch backend builds a layer: a class of torch.nn or of netspec.backends.torch.layers,
    its keyword arguments, and the initialisation to apply after: "default" (PyTorch's) or the X of
    one of the torch backend's `init_X` functions (backends/torch/layers.py)."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    init: str = "default"


@dataclass(frozen=True)
class TorchFunction:
    """A parameter-free op the backend emits as a function call: "add", "mul", "sub", "div" (as Python's
    operators), "cat" or "flatten"."""

    fn: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TorchParameter:
    """A learnt tensor that multiplies the input (broadcasting), filled with `init` at the start. The backend
    registers it as a bare parameter named by the layer's label on the enclosing module, where torchvision
    keeps such scales (ConvNeXt's `features.1.0.layer_scale`), rather than as a submodule's `.weight`.

    `combine` says how it meets the input: "mul" (`x * p`), "add" (`x + p`: ViT's position embedding) or
    "prepend" (`torch.cat([p.expand(batch, -1, -1), x], dim=1)`: ViT's class token, a [1, 1, D] parameter put in
    front of the tokens). `std` > 0 draws it from a normal distribution of mean `init` and that deviation."""

    shape: tuple[int, ...]
    init: float
    combine: Literal["mul", "add", "prepend"] = "mul"
    std: float = 0.0


class OpArgs(BaseModel):
    """Validated arguments of one layer; `frozen` marks its parameters as not trained."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    frozen: bool = False


class Op:
    """A layer type. Subclasses set `name`, `Args`, `positional` and override the hooks.

    `inputs` is the number of tensors the op consumes (None: one or more, for merges).
    Shapes exclude the batch dimension: (C, H, W) for feature maps, (F,) for vectors.
    """

    name: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = OpArgs
    positional: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[int | None] = 1
    summary: ClassVar[str] = ""
    activation: ClassVar[bool] = False  # element-wise and parameter-free: diagrams draw it with its producer
    # Reads the class labels while training: the compiled forward takes `labels=None` and passes them on.
    takes_labels: ClassVar[bool] = False
    # Its value is an extra output of the network, trained toward the network's input (which the lowering
    # passes as its last input, for the shape rule); the class scores stay the first output.
    reconstructs_input: ClassVar[bool] = False

    def shape(self, args: Any, inputs: list[Shape]) -> Shape:
        return inputs[0]

    def class_scores(self, args: Any) -> ClassScores:
        """What the op's output holds when it is a network's class scores, which training turns into logits for
        the loss and the accuracy: "logits" as they are, "distances" (small = likely: negated) or
        "probabilities" (their logarithm)."""
        return "logits"

    def params(self, args: Any, inputs: list[Shape], output: Shape) -> int:
        """Learnable parameters (trainable or frozen)."""
        return 0

    def buffers(self, args: Any, inputs: list[Shape], output: Shape) -> int:
        """Saved state that is not learnt, such as batch-norm running statistics."""
        return 0

    def macs(self, args: Any, inputs: list[Shape], output: Shape) -> int:
        """Multiply-accumulates for one sample, by torchinfo's rule (docs/language.md)."""
        return self.params(args, inputs, output)

    def torch(self, args: Any, inputs: list[Shape], output: Shape) -> TorchLayer | TorchFunction:
        """The PyTorch implementation; described as data so the checker never imports torch."""
        raise NotImplementedError(f"op {self.name!r} has no PyTorch implementation")


OPS: dict[str, Op] = {}


def signature(op: Op) -> str:
    """`conv(out_channels, kernel, stride=[1, 1], ...)`, as a spec calls it (every op also takes `frozen`)."""
    from netspec.language.evaluate import show

    fields = {k: v for k, v in op.Args.model_fields.items() if k != "frozen"}
    parts = ["values..."] if op.inputs is None else []
    for name, info in fields.items():
        # A default that stands for another argument is shown as that argument: `stride=kernel`, not `stride=none`.
        shown = info.json_schema_extra.get("shown") if isinstance(info.json_schema_extra, dict) else None
        parts.append(name if info.is_required() else f"{name}={shown or show(info.default)}")
    return f"{op.name}({', '.join(parts)})"


def register(cls: type[Op]) -> type[Op]:
    if cls.name in OPS:
        raise RuntimeError(f"op {cls.name!r} registered twice")
    OPS[cls.name] = cls()
    return cls


# Helpers shared by the shape rules ------------------------------------------

def fail(code: str, message: str, hint: str | None = None) -> ShapeRuleError:
    return ShapeRuleError(code, message, hint)


def divisors(n: int) -> list[int]:
    from math import isqrt

    small = [d for d in range(1, isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in small]


def nearest_divisor(n: int, wanted: int) -> int:
    """The divisor of `n` closest to `wanted` (the smaller of two as close), for a hint."""
    return min(divisors(n), key=lambda d: (abs(d - wanted), d))


def fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def expect_rank(op: str, shape: Shape, rank: int) -> None:
    if len(shape) == rank:
        return
    if rank == 2:
        raise fail("NS305", f"{op} expects capsules [N, D], got {fmt(shape)}",
                   "group a feature map into capsules first, e.g. capsules(8) -> squash()")
    if rank == 3:
        raise fail("NS305", f"{op} expects a feature map [C, H, W], got {fmt(shape)}",
                    "a flattened vector cannot be convolved or pooled; move this layer before flatten()")
    raise fail("NS305", f"{op} expects a vector [F], got {fmt(shape)}", "insert flatten() before it")


def window_out(op: str, axis: str, size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
               ceil_mode: bool = False) -> int:
    """(n + 2p - d(k-1) - 1) / s + 1, rounded down (or up with ceil_mode, as PyTorch does)."""
    span = dilation * (kernel - 1) + 1
    padded = size + 2 * padding
    if span > padded:
        shown = f"{size} + 2*{padding} = {padded}" if padding else f"{size}"
        dil = f" (dilated to {span})" if dilation > 1 else ""
        raise fail("NS302", f"{op} kernel {kernel}{dil} is larger than its input {axis} {shown}: "
                            f"({size} + 2*{padding} - {dilation}*({kernel}-1) - 1) // {stride} + 1 = "
                            f"{(padded - span) // stride + 1}",
                   "reduce the kernel, add padding, or remove a downsampling layer before it")
    numerator = padded - span
    out = (-(-numerator // stride) if ceil_mode else numerator // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch: the last window must start inside the input or left padding
    return out

