"""Element-wise arithmetic on one value: sqrt, pow, exp and log. Parameter-free, the shape kept, 0 MACs (as every
element-wise op without parameters: docs/language.md, "What the numbers count"). The merges between values
(sub, div, like add and mul) are in merge.py."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from netspec.ops.activation import Activation
from netspec.ops.base import OpArgs, TorchLayer, register


@register
class Sqrt(Activation):
    name = "sqrt"
    module = "Sqrt"
    summary = "element-wise square root (NaN below 0, as torch.sqrt)"


class PowArgs(OpArgs):
    # int or float: pow(2) is x ** 2 exactly as torch computes it for an integer exponent
    p: int | Annotated[float, Field(allow_inf_nan=False)]


@register
class Pow(Activation):
    name = "pow"
    Args = PowArgs
    positional = ("p",)
    summary = "element-wise power x ** p (torch.pow)"

    def torch(self, args, inputs, output):
        return TorchLayer("Pow", {"p": args.p})


@register
class Exp(Activation):
    name = "exp"
    module = "Exp"
    summary = "element-wise exponential"


@register
class Log(Activation):
    name = "log"
    module = "Log"
    summary = "element-wise natural logarithm (NaN below 0, -inf at 0, as torch.log)"
