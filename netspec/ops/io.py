"""The graph's input: a placeholder whose shape the spec declares."""

from __future__ import annotations

from netspec.ops.base import Op, OpArgs, PositiveInt, register


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
