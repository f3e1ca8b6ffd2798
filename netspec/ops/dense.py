"""Vector layers: flatten, linear, dropout, and LeNet-5's Euclidean RBF output."""

from __future__ import annotations

from math import prod

from netspec.ops.base import (Init, Op, OpArgs, PositiveInt, Probability, TorchFunction, TorchLayer, expect_rank,
                              register)


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


@register
class Linear(Op):
    name = "linear"
    Args = LinearArgs
    positional = ("out_features",)
    summary = "fully connected layer"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 1)
        return (args.out_features,)

    def params(self, args, inputs, output):
        return inputs[0][0] * args.out_features + (args.out_features if args.bias else 0)

    def torch(self, args, inputs, output):
        return TorchLayer("Linear", dict(in_features=inputs[0][0], out_features=args.out_features, bias=args.bias),
                          args.init)


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

    def torch(self, args, inputs, output):
        return TorchLayer("EuclideanRBF", dict(in_features=inputs[0][0], units=args.units))
