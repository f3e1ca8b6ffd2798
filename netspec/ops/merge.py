"""Ops that join values: add (identity or projected), concat, and scale."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import Op, OpArgs, TorchFunction, TorchLayer, expect_rank, fail, fmt, register


class AddArgs(OpArgs):
    # False: shapes must match; "auto": a 1x1 conv (+ BN) projects any operand whose shape differs;
    # True: every operand after the first is projected.
    project: bool | Literal["auto"] = False
    project_bn: bool = True


def projections(args: AddArgs, inputs) -> list[tuple[tuple[int, ...], int, int]]:
    """(input shape, stride, operand position) of each operand projected onto the first operand's shape."""
    target = inputs[0]
    found = []
    for position, shape in enumerate(inputs[1:], start=1):
        if shape == target and args.project is not True:
            continue
        if args.project is False:
            raise fail("NS301", f"add needs operands of one shape, got {fmt(target)} and {fmt(shape)}",
                       'project the shortcut onto the other branch with add(..., project="auto")')
        expect_rank("add projection", shape, 3)
        expect_rank("add projection", target, 3)
        stride = max(1, -(-shape[1] // target[1]))  # rounded up: 7 -> 4 takes stride 2, as the branch did
        if any((size - 1) // stride + 1 != want for size, want in zip(shape[1:], target[1:])):
            raise fail("NS301", f"cannot project {fmt(shape)} onto {fmt(target)}: a 1x1 convolution with "
                                f"stride {stride} gives {fmt((target[0],) + tuple((s - 1) // stride + 1 for s in shape[1:]))}")
        found.append((shape, stride, position))
    return found


@register
class Add(Op):
    name = "add"
    Args = AddArgs
    inputs = None
    summary = "element-wise sum of the current value and the named ones; `project` adds 1x1 conv shortcuts"

    def shape(self, args, inputs):
        projections(args, inputs)
        return inputs[0]

    def params(self, args, inputs, output):
        c = output[0]
        return sum(shape[0] * c + (2 * c if args.project_bn else 0) for shape, _, _ in projections(args, inputs))

    def buffers(self, args, inputs, output):
        c = output[0]
        return sum(2 * c + 1 if args.project_bn else 0 for _ in projections(args, inputs))

    def macs(self, args, inputs, output):
        c, h, w = output if len(output) == 3 else (output[0], 1, 1)
        return sum(shape[0] * c * h * w + (2 * c if args.project_bn else 0)
                   for shape, _, _ in projections(args, inputs))

    def torch(self, args, inputs, output):
        found = projections(args, inputs)
        if not found:
            return TorchFunction("add")
        return TorchLayer("ProjectedAdd", dict(projections=[(position, shape[0], output[0], stride)
                                                            for shape, stride, position in found],
                                               batchnorm=args.project_bn))


@register
class Concat(Op):
    name = "concat"
    inputs = None
    summary = "joins the current value and the named ones along channels"

    def shape(self, args, inputs):
        first = inputs[0]
        for shape in inputs[1:]:
            if len(shape) != len(first) or shape[1:] != first[1:]:
                raise fail("NS301", f"concat needs operands that differ only in channels, got {fmt(first)} "
                                    f"and {fmt(shape)}",
                           "make the branches' spatial sizes agree (padding, strides or pooling)")
        return (sum(s[0] for s in inputs), *first[1:])

    def torch(self, args, inputs, output):
        return TorchFunction("cat", {"dim": 1})


class ScaleArgs(OpArgs):
    value: float = 1.0
    learnable: bool = False


@register
class Scale(Op):
    name = "scale"
    Args = ScaleArgs
    positional = ("value",)
    summary = "multiplies by a constant, or by one learnt scalar (initialised to value) with learnable=true"

    def params(self, args, inputs, output):
        return 1 if args.learnable else 0

    def torch(self, args, inputs, output):
        return TorchLayer("Scale", dict(value=args.value, learnable=args.learnable))
