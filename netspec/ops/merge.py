"""Ops that join values: add (identity, broadcast or projected), mul, sub, div, concat, and scale."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import Op, OpArgs, Shape, TorchFunction, TorchLayer, expect_rank, fail, fmt, register

BROADCAST_RULE = ("operands broadcast between equal ranks where each size is equal or 1: a [C, 1, 1] gate "
                  "scales each channel, a [1, H, W] map each position")

# What each dimension of a vector [F], of capsules [N, D] and of a feature map [C, H, W] is called in messages.
DIMENSIONS = {1: ("features",), 2: ("capsule counts", "capsule sizes"), 3: ("channels", "heights", "widths")}


def broadcast(op: str, inputs: list[Shape], mismatch: str, hint: str | None = None) -> Shape:
    """The shape of an element-wise op over `inputs`, as PyTorch broadcasts them but only between equal ranks
    (a vector never silently spreads over a feature map). `mismatch` begins the message for sizes that
    neither agree nor are 1; `hint` replaces the one that names the disagreeing dimension."""
    result = inputs[0]
    for shape in inputs[1:]:
        if len(shape) != len(result):
            raise fail("NS301", f"{op} needs operands of one rank, got {fmt(result)} and {fmt(shape)}",
                       f"{BROADCAST_RULE}; reshape or pool the operand to {len(result)} dimensions")
        for axis, (a, b) in enumerate(zip(result, shape)):
            if a != b and 1 not in (a, b):
                names = DIMENSIONS.get(len(shape))
                where = names[axis] if names else f"sizes of dimension {axis + 1}"
                raise fail("NS301", f"{mismatch}, got {fmt(result)} and {fmt(shape)}",
                           hint or f"{BROADCAST_RULE}; here the {where} differ, {a} and {b}")
        result = tuple(max(a, b) for a, b in zip(result, shape))
    return result


class AddArgs(OpArgs):
    # False: shapes must match or broadcast; "auto": a 1x1 conv (+ BN) projects any operand whose shape
    # differs; True: every operand after the first is projected.
    project: bool | Literal["auto"] = False
    project_bn: bool = True


def projections(args: AddArgs, inputs) -> list[tuple[tuple[int, ...], int, int]]:
    """(input shape, stride, operand position) of each operand projected onto the first operand's shape."""
    if args.project is False:
        return []
    target = inputs[0]
    found = []
    for position, shape in enumerate(inputs[1:], start=1):
        if shape == target and args.project is not True:
            continue
        expect_rank("add projection", shape, 3)
        expect_rank("add projection", target, 3)
        stride = max(1, -(-shape[1] // target[1]))  # rounded up: 7 -> 4 takes stride 2, as the branch did
        if any((size - 1) // stride + 1 != want for size, want in zip(shape[1:], target[1:])):
            raise fail("NS301", f"cannot project {fmt(shape)} onto {fmt(target)}: a 1x1 convolution with "
                                f"stride {stride} gives {fmt((target[0],) + tuple((s - 1) // stride + 1 for s in shape[1:]))}")
        found.append((shape, stride, position))
    return found


def something_to_join(name: str, inputs) -> None:
    """`add()` joins nothing: an identity that reads as a merge, refused so that it is not mistaken for one."""
    if len(inputs) < 2:
        raise fail("NS204", f"{name} needs the names of the values it joins with the current one",
                   f"name them: `{name}(y)`, with `y = ...` bound before")


@register
class Add(Op):
    name = "add"
    Args = AddArgs
    inputs = None
    summary = ("element-wise sum of the current value and the named ones (sizes of 1 broadcast); `project` "
               "adds 1x1 conv shortcuts")

    def shape(self, args, inputs):
        something_to_join(self.name, inputs)
        if args.project is False:
            return broadcast("add", inputs, "add needs operands of one shape",
                             'project the shortcut onto the other branch with add(..., project="auto")')
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


class Arithmetic(Op):
    """An element-wise operator between the current value and the named ones, left to right (`a - b - c` is
    (a - b) - c), broadcast as `add` broadcasts: parameter-free, 0 MACs."""

    inputs = None
    fn: str  # the TorchFunction: the Python operator the generated forward writes

    def shape(self, args, inputs):
        something_to_join(self.name, inputs)
        return broadcast(self.name, inputs, f"{self.name} needs operands whose sizes are equal or 1")

    def torch(self, args, inputs, output):
        return TorchFunction(self.fn)


@register
class Mul(Arithmetic):
    name = "mul"
    fn = "mul"
    summary = ("element-wise product of the current value and the named ones; sizes of 1 broadcast "
               "(a [C, 1, 1] gate scales channels, as in squeeze-and-excitation)")


@register
class Sub(Arithmetic):
    name = "sub"
    fn = "sub"
    summary = "element-wise difference: the current value minus the named ones, in order; sizes of 1 broadcast"


@register
class Div(Arithmetic):
    name = "div"
    fn = "div"
    summary = "element-wise quotient: the current value divided by the named ones, in order; sizes of 1 broadcast"


AXES = {"channels": 0, "height": 1, "width": 2}


class ConcatArgs(OpArgs):
    axis: Literal["channels", "height", "width"] = "channels"


@register
class Concat(Op):
    name = "concat"
    Args = ConcatArgs
    inputs = None
    summary = "joins the current value and the named ones along channels (or height or width, with axis)"

    def shape(self, args, inputs):
        something_to_join(self.name, inputs)
        first = inputs[0]
        axis = AXES[args.axis]
        if args.axis != "channels":
            for shape in inputs:
                expect_rank(f'concat(axis="{args.axis}")', shape, 3)
        for shape in inputs[1:]:
            if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
                if args.axis == "channels":
                    raise fail("NS301", f"concat needs operands that differ only in channels, got {fmt(first)} "
                                        f"and {fmt(shape)}",
                               "make the branches' spatial sizes agree (padding, strides or pooling)")
                others = " and ".join(name for name in AXES if name != args.axis)
                raise fail("NS301", f"concat along {args.axis} needs operands that agree in {others}, got "
                                    f"{fmt(first)} and {fmt(shape)}",
                           f"only the {args.axis} may differ; make the {others} agree (pooling, convolutions "
                           "or padding)")
        return tuple(sum(s[axis] for s in inputs) if i == axis else size for i, size in enumerate(first))

    def torch(self, args, inputs, output):
        return TorchFunction("cat", {"dim": AXES[args.axis] + 1})


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
