"""Element-wise activations and softmax; only prelu has parameters (its learnt slopes)."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import Op, OpArgs, PositiveInt, TorchLayer, expect_rank, fail, nearest_divisor, register
from netspec.ops.norm import expect_vector_or_map


class Activation(Op):
    activation = True
    module: str  # the torch.nn (or netspec) class, for activations without arguments

    def torch(self, args, inputs, output):
        return TorchLayer(self.module)


@register
class Relu(Activation):
    name = "relu"
    module = "ReLU"
    summary = "max(x, 0)"


@register
class Sigmoid(Activation):
    name = "sigmoid"
    module = "Sigmoid"
    summary = "1 / (1 + exp(-x))"


@register
class Tanh(Activation):
    name = "tanh"
    module = "Tanh"
    summary = "hyperbolic tangent"


@register
class LecunTanh(Activation):
    name = "lecun_tanh"
    module = "LecunTanh"
    summary = "LeCun's scaled tanh, 1.7159 * tanh(2x/3)"


class LeakyReluArgs(OpArgs):
    negative_slope: float = 0.01


@register
class LeakyRelu(Activation):
    name = "leaky_relu"
    Args = LeakyReluArgs
    positional = ("negative_slope",)
    summary = "x if x > 0 else negative_slope * x"

    def torch(self, args, inputs, output):
        return TorchLayer("LeakyReLU", {"negative_slope": args.negative_slope})


class GeluArgs(OpArgs):
    approximate: bool = False


@register
class Gelu(Activation):
    name = "gelu"
    Args = GeluArgs
    summary = "Gaussian error linear unit (tanh approximation with approximate=true)"

    def torch(self, args, inputs, output):
        return TorchLayer("GELU", {"approximate": "tanh" if args.approximate else "none"})


class SoftmaxArgs(OpArgs):
    # "channels" is dimension 1, as before `axis` existed: a map's channels, a vector's features, the capsules of
    # [N, D]; "positions" is every position of each channel at once (a spatial softmax).
    axis: Literal["channels", "height", "width", "positions"] = "channels"
    groups: PositiveInt = 1
    radix: PositiveInt | None = None


@register
class Softmax(Activation):
    name = "softmax"
    Args = SoftmaxArgs
    summary = ('normalised exponentials over the channels (or axis="height", "width", "positions"); groups=g within '
               'each of g channel groups; radix=r across r splits of each group, as ResNeSt\'s rSoftMax')

    def shape(self, args: SoftmaxArgs, inputs):
        shape = inputs[0]
        if args.axis != "channels":
            expect_rank(f'softmax(axis="{args.axis}")', shape, 3)
        if args.groups == 1 and args.radix is None:
            return shape
        if args.axis != "channels":
            raise fail("NS203", f'softmax(axis="{args.axis}") takes no groups or radix: they split the channels',
                       'leave axis="channels" (the default) to softmax within groups of channels')
        expect_vector_or_map("softmax with groups or radix", shape)
        channels = shape[0]
        if channels % args.groups:
            nearest = nearest_divisor(channels, args.groups)
            raise fail("NS203", f"softmax groups={args.groups} must divide the {channels} channels of its input",
                       f"use a divisor of {channels}, e.g. groups={nearest}")
        if args.radix is not None:
            per_group = channels // args.groups
            if args.radix == 1:
                raise fail("NS203", "softmax(radix=1) is 1 everywhere: a softmax across a single split",
                           "ResNeSt's rSoftMax applies sigmoid() when the radix is 1")
            if per_group % args.radix:
                raise fail("NS203", f"softmax radix={args.radix} must divide the {per_group} channels of each of its "
                                    f"{args.groups} group{'s' if args.groups > 1 else ''}",
                           f"each group holds radix splits of equal size: {channels} channels need groups x radix "
                           f"to divide {channels}")
        return shape

    def torch(self, args: SoftmaxArgs, inputs, output):
        if args.groups > 1 or args.radix is not None:
            return TorchLayer("GroupSoftmax", {"groups": args.groups, "radix": args.radix})
        if args.axis == "positions":
            return TorchLayer("PositionSoftmax")
        return TorchLayer("Softmax", {"dim": {"channels": 1, "height": 2, "width": 3}[args.axis]})


@register
class Relu6(Activation):
    name = "relu6"
    module = "ReLU6"
    summary = "min(max(x, 0), 6)"


@register
class Silu(Activation):
    name = "silu"
    module = "SiLU"
    summary = "x * sigmoid(x) (swish)"


@register
class Hardswish(Activation):
    name = "hardswish"
    module = "Hardswish"
    summary = "x * relu6(x + 3) / 6, MobileNetV3's cheap swish"


@register
class Hardsigmoid(Activation):
    name = "hardsigmoid"
    module = "Hardsigmoid"
    summary = "relu6(x + 3) / 6, MobileNetV3's cheap sigmoid"


@register
class Mish(Activation):
    name = "mish"
    module = "Mish"
    summary = "x * tanh(softplus(x))"


class EluArgs(OpArgs):
    alpha: float = 1.0


@register
class Elu(Activation):
    name = "elu"
    Args = EluArgs
    positional = ("alpha",)
    summary = "x if x > 0 else alpha * (exp(x) - 1)"

    def torch(self, args, inputs, output):
        return TorchLayer("ELU", {"alpha": args.alpha})


class PreluArgs(OpArgs):
    per_channel: bool = False
    init: float = 0.25


@register
class Prelu(Op):
    name = "prelu"
    Args = PreluArgs
    summary = "x if x > 0 else a * x, the slope a learnt (one, or one per channel with per_channel=true)"

    def params(self, args, inputs, output):
        return output[0] if args.per_channel else 1

    def torch(self, args, inputs, output):
        return TorchLayer("PReLU", {"num_parameters": self.params(args, inputs, output), "init": args.init})
