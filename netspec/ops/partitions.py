"""MaxViT's multi-axis attention (Tu et al. 2022): self-attention within partitions of a feature map, with a
learnt relative position bias. Block attention attends within each `size` x `size` window of neighbouring
positions; grid attention within each `size` x `size` grid of positions spread evenly over the whole map, H/size
rows and W/size columns apart. The map goes in and comes out [C, H, W]: the layer norms, the MLP and the residual
adds around it work position by position, so they need not see the partitions (torchvision partitions once around
them, netspec inside the attention; the same numbers, up to float round-off)."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import Op, OpArgs, PositiveInt, TorchLayer, divisors, fail, fmt, nearest_divisor, register


class PartitionAttentionArgs(OpArgs):
    size: PositiveInt
    head_dim: PositiveInt
    partition: Literal["block", "grid"] = "block"


@register
class PartitionAttention(Op):
    name = "partition_attention"
    Args = PartitionAttentionArgs
    positional = ("size", "head_dim")
    summary = ("multi-head self-attention within partitions of a map [C, H, W] (MaxViT; torchvision's "
               "RelativePositionalMultiHeadAttention between its partition and departition): partition=\"block\" "
               "attends within each size x size window, \"grid\" within each size x size grid spread over the map; "
               "C / head_dim heads, a learnt relative position bias per head")

    def shape(self, args, inputs):
        if len(inputs[0]) != 3:
            raise fail("NS305", f"partition_attention expects a feature map [C, H, W], got {fmt(inputs[0])}",
                       "it partitions the map's positions; apply it before flatten() or tokens()")
        channels, height, width = inputs[0]
        grid = ', partition="grid"' if args.partition == "grid" else ""
        call = f"partition_attention({args.size}, {args.head_dim}{grid})"
        if channels % args.head_dim:
            nearest = nearest_divisor(channels, args.head_dim)
            raise fail("NS203", f"{call} splits the {channels} channels into heads of {args.head_dim}, but "
                                f"{args.head_dim} does not divide {channels}",
                       f"use a head_dim that divides {channels}, e.g. {nearest}")
        for axis, length in (("height", height), ("width", width)):
            if length % args.size:
                shared = sorted(d for d in divisors(height) if width % d == 0)
                sides = f"{height}" if height == width else f"both {height} and {width}"
                raise fail("NS203", f"{call} cuts the {height}x{width} map into {args.size}x{args.size} "
                                    f"{'windows' if args.partition == 'block' else 'grids'}, but {args.size} does "
                                    f"not divide its {axis} {length}",
                           f"use a size that divides {sides} ({', '.join(map(str, shared))}), "
                           f"or an input whose map here is a multiple of {args.size}")
        return inputs[0]

    def params(self, args, inputs, output):
        channels = inputs[0][0]
        heads = channels // args.head_dim
        # to_qkv [3C, C] and its bias, merge [C, C] and its bias, and a bias for each of the (2 size - 1)^2
        # relative offsets between two positions of a partition, per head
        return 4 * channels * channels + 4 * channels + (2 * args.size - 1) ** 2 * heads

    def buffers(self, args, inputs, output):
        return args.size ** 4  # relative_position_index: the offset's row in the table for each pair of positions

    def macs(self, args, inputs, output):
        # The projections (to_qkv's 3 C x C weights and merge's C x C at each of the H W positions, no bias),
        # then each partition's two matrix products, summed over heads and partitions: Q K^T (P x P scores, P
        # = size^2 positions, each C/heads long) and the scores times V (P x C/heads outputs, each P long),
        # P * P * C each per partition, H W / P partitions. Adding the bias and the softmax multiply nothing.
        channels, height, width = inputs[0]
        positions, partition = height * width, args.size ** 2
        return 4 * channels * channels * positions + 2 * positions * partition * channels

    def torch(self, args, inputs, output):
        return TorchLayer("PartitionAttention", dict(channels=inputs[0][0], head_dim=args.head_dim,
                                                     size=args.size, partition=args.partition))
