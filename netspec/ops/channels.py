"""Parameter-free ops that cut or pad channels: slice (any offset and size, or rows and columns), uneven split
and zero-padding of channels."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

from netspec.ops.base import (NonNegativeInt, Op, OpArgs, PositiveInt, Shape, TorchLayer, expect_rank, fail, fmt,
                              register)
from netspec.ops.merge import AXES

Index = Annotated[int, Strict()]


def expect_channels(op: str, shape: Shape) -> None:
    """Channel ops take a map [C, H, W] or a vector [F], whose features are its channels (dimension 1 of both)."""
    if len(shape) not in (1, 3):
        raise fail("NS305", f"{op} expects a feature map [C, H, W] or a vector [F], got {fmt(shape)}",
                   "capsules have no channels; apply it to the feature map before capsules(...)")


class SliceArgs(OpArgs):
    start: Index
    stop: Index | None = None  # to the end, as Python's x[start:]
    axis: Literal["channels", "height", "width"] = "channels"


def slice_bounds(args: SliceArgs, size: int, what: str) -> tuple[int, int]:
    """(start, stop) as non-negative offsets, Python's meaning of negative ones; out-of-range or empty is refused."""
    shown = f"slice({args.start})" if args.stop is None else f"slice({args.start}, {args.stop})"
    stop = size if args.stop is None else args.stop
    if not -size <= args.start < size or not -size <= stop <= size:
        raise fail("NS203", f"{shown} is out of range for {size} {what}",
                   f"start lies in {-size} to {size - 1} and stop in {-size} to {size} (left out: the end); "
                   "negative ones count from the end, as in Python")
    start, stop = (b + size if b < 0 else b for b in (args.start, stop))
    if stop <= start:
        raise fail("NS303", f"{shown} of {size} {what} is empty: it starts at {start} and stops at {stop}",
                   f"stop must come after start (negative ones count from the end); slice({start}, {start + 1}) "
                   "keeps one")
    return start, stop


@register
class Slice(Op):
    name = "slice"
    Args = SliceArgs
    positional = ("start", "stop")
    summary = ('channels start to stop - 1 (x[:, start:stop]), negative ones counted from the end; '
               'axis="height" or "width" slices rows or columns')

    def shape(self, args: SliceArgs, inputs):
        axis = AXES[args.axis]
        if args.axis == "channels":
            expect_channels(self.name, inputs[0])
        else:
            expect_rank(f'slice(axis="{args.axis}")', inputs[0], 3)
        what = {"channels": "channels" if len(inputs[0]) == 3 else "features", "height": "rows",
                "width": "columns"}[args.axis]
        start, stop = slice_bounds(args, inputs[0][axis], what)
        return tuple(stop - start if i == axis else size for i, size in enumerate(inputs[0]))

    def torch(self, args: SliceArgs, inputs, output):
        start, _ = slice_bounds(args, inputs[0][AXES[args.axis]], "")
        return TorchLayer("Slice", {"dim": AXES[args.axis] + 1, "start": start, "length": output[AXES[args.axis]]})


class SplitArgs(OpArgs):
    sizes: Annotated[list[PositiveInt], Field(min_length=1)]
    index: NonNegativeInt


@register
class Split(Op):
    name = "split"
    Args = SplitArgs
    positional = ("sizes", "index")
    summary = "the index-th piece of torch.split(x, sizes, dim=1): uneven channel slices that add up to the channels"

    def shape(self, args: SplitArgs, inputs):
        expect_channels(self.name, inputs[0])
        channels, pieces = inputs[0][0], len(args.sizes)
        if args.index >= pieces:
            raise fail("NS203", f"split index {args.index} is out of range for {pieces} pieces",
                       f"pieces are numbered 0 to {pieces - 1}")
        total = sum(args.sizes)
        if total != channels:
            sums = " + ".join(map(str, args.sizes))
            rest = channels - sum(args.sizes[:-1])
            hint = (f"e.g. split({fmt(args.sizes[:-1] + [rest])}, {args.index})" if rest > 0 else
                    f"the sizes must add up to the {channels} channels of its input")
            raise fail("NS203", f"split sizes {sums} = {total} must add up to the {channels} channels of its input",
                       hint)
        return (args.sizes[args.index],) + tuple(inputs[0][1:])

    def torch(self, args: SplitArgs, inputs, output):
        return TorchLayer("Split", {"sizes": tuple(args.sizes), "index": args.index})


class PadChannelsArgs(OpArgs):
    after: NonNegativeInt
    before: NonNegativeInt = 0


@register
class PadChannels(Op):
    name = "pad_channels"
    Args = PadChannelsArgs
    positional = ("after", "before")
    summary = ("adds `before` channels of zeros in front and `after` behind (F.pad on the channels): the "
               "parameter-free shortcut of ResNet's option A")

    def shape(self, args: PadChannelsArgs, inputs):
        expect_channels(self.name, inputs[0])
        return (inputs[0][0] + args.before + args.after,) + tuple(inputs[0][1:])

    def torch(self, args: PadChannelsArgs, inputs, output):
        return TorchLayer("PadChannels", {"before": args.before, "after": args.after})

