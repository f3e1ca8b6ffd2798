"""The graph's input, a placeholder whose shape the spec declares, and a reconstruction of it."""

from __future__ import annotations

from math import prod

from netspec.ops.base import Op, OpArgs, PositiveInt, TorchLayer, fail, fmt, register


class InputArgs(OpArgs):
    shape: tuple[PositiveInt, ...]


@register
class Input(Op):
    name = "input"
    Args = InputArgs
    inputs = 0
    summary = "the network's input, declared with `input x: [C, H, W]`"

    def shape(self, args, inputs):
        return args.shape


@register
class Reconstruction(Op):
    name = "reconstruction"
    inputs = 2  # the decoder's output and, added by the lowering, the network's input
    reconstructs_input = True
    summary = ("reshapes a decoder's output to the network's input shape and makes it a second output, trained "
               "toward the input (recipe: reconstruction_weight)")

    def shape(self, args, inputs):
        decoded, target = inputs
        if prod(decoded) != prod(target):
            raise fail("NS301", f"reconstruction() needs as many numbers as the network's input {fmt(target)} "
                                f"({prod(target):,}), got {fmt(decoded)} ({prod(decoded):,})",
                       f"end the decoder with a layer of {prod(target):,} outputs, e.g. linear({prod(target)})")
        return target

    def torch(self, args, inputs, output):
        return TorchLayer("Reconstruction")
