"""Vector layers: flatten, linear, dropout, and LeNet-5's Euclidean RBF output."""

from __future__ import annotations

from math import prod
from typing import Literal

from netspec.ops.base import (Init, Op, OpArgs, PositiveInt, Probability, TorchFunction, TorchLayer, expect_rank,
                              fail, fmt, register)


@register
class Flatten(Op):
    name = "flatten"
    summary = "every dimension but the batch into one"

    def shape(self, args, inputs):
        return (prod(inputs[0]),)

    def torch(self, args, inputs, output):
        return TorchFunction("flatten", {"start_dim": 1})


class LinearArgs(OpArgs):
    out_features: PositiveInt
    bias: bool = True
    init: Init = "default"
    # "channels": the same layer at every position of a feature map, [C, H, W] -> [out, H, W] (ConvNeXt)
    over: Literal["features", "channels"] = "features"


@register
class Linear(Op):
    name = "linear"
    Args = LinearArgs
    positional = ("out_features",)
    summary = ('fully connected layer; over="channels" applies it at every position of a feature map; on tokens '
               '[N, D], to each token: [N, D] -> [N, out_features]')

    def shape(self, args, inputs):
        shape = inputs[0]
        if len(shape) == 2 and args.over == "features":  # tokens: the same layer on each, as nn.Linear on [B, N, D]
            return (shape[0], args.out_features)
        if args.over == "channels":
            if len(shape) != 3:
                raise fail("NS305", f'linear(over="channels") expects a feature map [C, H, W], got {fmt(shape)}',
                           f"over a vector, drop over: linear({args.out_features})")
            return (args.out_features, *shape[1:])
        if len(shape) == 3:
            raise fail("NS305", f"linear expects a vector [F], got {fmt(shape)}",
                       f"insert flatten() before it, or apply it at every position with "
                       f'linear({args.out_features}, over="channels")')
        expect_rank(self.name, shape, 1)
        return (args.out_features,)

    def params(self, args, inputs, output):
        return in_features(inputs[0]) * args.out_features + (args.out_features if args.bias else 0)

    def macs(self, args, inputs, output):
        if args.over == "channels":  # weights x positions, the bias left out as for convolutions
            return inputs[0][0] * args.out_features * output[1] * output[2]
        if len(inputs[0]) == 2:  # weights x tokens, the bias left out likewise
            return inputs[0][1] * args.out_features * inputs[0][0]
        return self.params(args, inputs, output)

    def torch(self, args, inputs, output):
        cls = "ChannelLinear" if args.over == "channels" else "Linear"
        return TorchLayer(cls, dict(in_features=in_features(inputs[0]), out_features=args.out_features, bias=args.bias),
                          args.init)


def in_features(shape) -> int:
    """What a linear layer multiplies: a token's D numbers of [N, D], else the features or channels."""
    return shape[-1] if len(shape) == 2 else shape[0]


class DropoutArgs(OpArgs):
    p: Probability = 0.5


@register
class Dropout(Op):
    name = "dropout"
    Args = DropoutArgs
    positional = ("p",)
    summary = "zeroes elements with probability p while training"

    def torch(self, args, inputs, output):
        return TorchLayer("Dropout", {"p": args.p})


class RbfArgs(OpArgs):
    units: PositiveInt


@register
class EuclideanRbf(Op):
    name = "rbf"
    Args = RbfArgs
    positional = ("units",)
    summary = "LeNet-5 output: unit i gives the squared distance between the input and its centre w_i"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 1)
        return (args.units,)

    def params(self, args, inputs, output):
        return args.units * inputs[0][0]

    def class_scores(self, args):
        return "distances"  # LeNet-5's: the closest centre is the likeliest class

    def torch(self, args, inputs, output):
        return TorchLayer("EuclideanRBF", dict(in_features=inputs[0][0], units=args.units))
