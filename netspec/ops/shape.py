"""Ops that rearrange or summarise values without parameters: reshape, channel chunks and shuffles, reductions and
the p-norm."""

from __future__ import annotations

from math import prod
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from netspec.ops.base import NonNegativeInt, Op, OpArgs, PositiveInt, TorchLayer, expect_rank, fail, fmt, register


def _as_shape(value: Any) -> Any:
    """[100, 1, 1] as a tuple; a lone integer as a vector's shape."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


class ReshapeArgs(OpArgs):
    shape: Annotated[tuple[PositiveInt, ...], BeforeValidator(_as_shape)]


@register
class Reshape(Op):
    name = "reshape"
    Args = ReshapeArgs
    positional = ("shape",)
    summary = "the same numbers in another shape, e.g. a vector as a map: [100] -> [100, 1, 1] (DCGAN)"

    def shape(self, args: ReshapeArgs, inputs):
        if not 1 <= len(args.shape) <= 3:  # the ranks netspec's layers take: [F], capsules [N, D], maps [C, H, W]
            raise fail("NS203", f"reshape takes a shape of 1 to 3 dimensions (without the batch), got "
                                f"{fmt(args.shape)}",
                       "a vector is [F], a feature map [C, H, W]; the batch dimension is kept")
        have, want = prod(inputs[0]), prod(args.shape)
        if have != want:
            raise fail("NS301", f"reshape cannot fit {fmt(inputs[0])} ({have:,} numbers) into {fmt(args.shape)} "
                                f"({want:,} numbers)",
                       "the new shape must hold as many numbers as the old one")
        return args.shape

    def torch(self, args: ReshapeArgs, inputs, output):
        return TorchLayer("Reshape", {"shape": args.shape})


class ChunkArgs(OpArgs):
    chunks: PositiveInt
    index: NonNegativeInt


@register
class Chunk(Op):
    name = "chunk"
    Args = ChunkArgs
    positional = ("chunks", "index")
    summary = "the index-th of `chunks` equal slices of the channels (ShuffleNetV2's x.chunk(2, dim=1))"

    def shape(self, args: ChunkArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        c, h, w = inputs[0]
        if args.index >= args.chunks:
            raise fail("NS203", f"chunk index {args.index} is out of range for {args.chunks} chunks",
                       f"chunks are numbered 0 to {args.chunks - 1}")
        if c % args.chunks:
            raise fail("NS203", f"chunk({args.chunks}) needs channels divisible by {args.chunks}, got {c}",
                       "equal chunks need a channel count that the number of chunks divides")
        return (c // args.chunks, h, w)

    def torch(self, args: ChunkArgs, inputs, output):
        return TorchLayer("Chunk", {"chunks": args.chunks, "index": args.index})


class ChannelShuffleArgs(OpArgs):
    groups: PositiveInt


@register
class ChannelShuffle(Op):
    name = "channel_shuffle"
    Args = ChannelShuffleArgs
    positional = ("groups",)
    summary = "interleaves the channels of `groups` groups (ShuffleNet): channel g*k + i -> i*groups + g"

    def shape(self, args: ChannelShuffleArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        if inputs[0][0] % args.groups:
            raise fail("NS203", f"channel_shuffle({args.groups}) needs channels divisible by {args.groups}, "
                                f"got {inputs[0][0]}",
                       "shuffle as many groups as the grouped convolution before it has")
        return inputs[0]

    def torch(self, args: ChannelShuffleArgs, inputs, output):
        return TorchLayer("ChannelShuffle", {"groups": args.groups})


class ReduceArgs(OpArgs):
    over: Literal["channels", "positions"] = "positions"


class Reduce(Op):
    """A reduction that keeps its dimensions: over channels [C, H, W] -> [1, H, W], over positions -> [C, 1, 1]."""

    Args = ReduceArgs
    positional = ("over",)
    reduction: str  # the torch function: mean, amax or sum

    def shape(self, args: ReduceArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        c, h, w = inputs[0]
        return (1, h, w) if args.over == "channels" else (c, 1, 1)

    def torch(self, args: ReduceArgs, inputs, output):
        return TorchLayer("Reduce", {"reduction": self.reduction, "dims": (1,) if args.over == "channels" else (2, 3)})


@register
class ReduceMean(Reduce):
    name = "reduce_mean"
    reduction = "mean"
    summary = "mean over=\"positions\" ([C, H, W] -> [C, 1, 1]) or over=\"channels\" (-> [1, H, W])"


@register
class ReduceMax(Reduce):
    name = "reduce_max"
    reduction = "amax"
    summary = "maximum over=\"positions\" ([C, H, W] -> [C, 1, 1]) or over=\"channels\" (-> [1, H, W])"


@register
class ReduceSum(Reduce):
    name = "reduce_sum"
    reduction = "sum"
    summary = "sum over=\"positions\" ([C, H, W] -> [C, 1, 1]) or over=\"channels\" (-> [1, H, W])"


class PNormArgs(OpArgs):
    p: Annotated[int | float, Field(gt=0, allow_inf_nan=False)] = 2
    over: Literal["channels", "positions"] = "positions"


@register
class PNorm(Op):
    name = "pnorm"
    Args = PNormArgs
    positional = ("p", "over")
    summary = ("the p-norm (sum |x|^p)^(1/p), over=\"positions\" ([C, H, W] -> [C, 1, 1]) or over=\"channels\" "
               "(-> [1, H, W]); torch.linalg.vector_norm")

    def shape(self, args: PNormArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        c, h, w = inputs[0]
        return (1, h, w) if args.over == "channels" else (c, 1, 1)

    def macs(self, args: PNormArgs, inputs, output):
        # One per input number: |x|^p accumulated (for p = 2, x * x, a multiply-accumulate); the root is not one.
        return inputs[0][0] * inputs[0][1] * inputs[0][2]

    def torch(self, args: PNormArgs, inputs, output):
        return TorchLayer("PNorm", {"p": args.p, "dims": (1,) if args.over == "channels" else (2, 3)})
