"""Normalisation (batch, layer, group, instance and local response norm) and its residual-branch companions:
ConvNeXt's layer scale and stochastic depth."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import (Op, OpArgs, PositiveInt, Probability, Shape, TorchLayer, TorchParameter, expect_rank,
                              fail, fmt, nearest_divisor, register)


def expect_vector_or_map(op: str, shape: Shape) -> None:
    """Layers with one value per channel take a vector [F] (its features are the channels) or a map [C, H, W]."""
    if len(shape) in (1, 3):
        return
    hint = ("capsules have no channels; apply it to the feature map before capsules(...)" if len(shape) == 2
            else "flatten() makes a vector")
    raise fail("NS305", f"{op} expects a vector [F] or a feature map [C, H, W], got {fmt(shape)}", hint)


class BatchNormArgs(OpArgs):
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    track_running_stats: bool = True
    zero_init: bool = False  # start the scale (gamma) at 0, e.g. on a residual branch's last batch norm


@register
class BatchNorm(Op):
    name = "batchnorm"
    Args = BatchNormArgs
    summary = "batch normalisation over channels (1-D for vectors, 2-D for feature maps)"

    def params(self, args, inputs, output):
        return 2 * inputs[0][0] if args.affine else 0

    def buffers(self, args, inputs, output):
        # running_mean, running_var and the num_batches_tracked counter, as PyTorch stores them
        return 2 * inputs[0][0] + 1 if args.track_running_stats else 0

    def torch(self, args, inputs, output):
        cls = "BatchNorm2d" if len(inputs[0]) == 3 else "BatchNorm1d"
        return TorchLayer(cls, dict(num_features=inputs[0][0], eps=args.eps, momentum=args.momentum,
                                    affine=args.affine, track_running_stats=args.track_running_stats),
                          "zero_gamma" if args.zero_init else "default")


class LrnArgs(OpArgs):
    size: PositiveInt
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@register
class LocalResponseNorm(Op):
    name = "lrn"
    Args = LrnArgs
    positional = ("size",)
    summary = "local response normalisation across neighbouring channels (AlexNet)"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 3)  # torch's LocalResponseNorm needs channels and positions
        return inputs[0]

    def torch(self, args, inputs, output):
        return TorchLayer("LocalResponseNorm", dict(size=args.size, alpha=args.alpha, beta=args.beta, k=args.k))


class LayerNormArgs(OpArgs):
    eps: float = 1e-5
    affine: bool = True


@register
class LayerNorm(Op):
    name = "layernorm"
    Args = LayerNormArgs
    summary = ("layer normalisation over a vector's features, over the channels at each position of a map, or over "
               "each token's numbers (tokens [N, D])")

    def shape(self, args, inputs):
        if len(inputs[0]) != 2:  # tokens [N, D] are normalised token by token, as nn.LayerNorm(D)
            expect_vector_or_map(self.name, inputs[0])
        return inputs[0]

    def params(self, args, inputs, output):
        return 2 * normalised(inputs[0]) if args.affine else 0

    def torch(self, args, inputs, output):
        # torchvision's ConvNeXt LayerNorm2d for maps: an nn.LayerNorm over channels, so the same state_dict
        cls = "LayerNorm2d" if len(inputs[0]) == 3 else "LayerNorm"
        return TorchLayer(cls, dict(normalized_shape=normalised(inputs[0]), eps=args.eps,
                                    elementwise_affine=args.affine))


def normalised(shape: Shape) -> int:
    """The numbers a layer norm normalises together: a token's D of [N, D], else the features or channels."""
    return shape[-1] if len(shape) == 2 else shape[0]




class GroupNormArgs(OpArgs):
    groups: PositiveInt
    eps: float = 1e-5
    affine: bool = True


@register
class GroupNorm(Op):
    name = "groupnorm"
    Args = GroupNormArgs
    positional = ("groups",)
    summary = "group normalisation: statistics over each group of channels (and all positions), per sample"

    def shape(self, args, inputs):
        expect_vector_or_map(self.name, inputs[0])
        channels = inputs[0][0]
        if channels % args.groups:
            nearest = nearest_divisor(channels, args.groups)
            raise fail("NS203", f"groups={args.groups} must divide the {channels} channels of its input",
                       f"use a divisor of {channels}, e.g. groupnorm({nearest})")
        return inputs[0]

    def params(self, args, inputs, output):
        return 2 * inputs[0][0] if args.affine else 0

    def torch(self, args, inputs, output):
        return TorchLayer("GroupNorm", dict(num_groups=args.groups, num_channels=inputs[0][0], eps=args.eps,
                                           affine=args.affine))


class InstanceNormArgs(OpArgs):
    eps: float = 1e-5
    affine: bool = False
    track_running_stats: bool = False


@register
class InstanceNorm(Op):
    name = "instancenorm"
    Args = InstanceNormArgs
    summary = "instance normalisation: statistics over each channel's positions, per sample"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 3)
        if inputs[0][1] * inputs[0][2] == 1:  # a channel's statistics over one value: torch refuses it
            raise fail("NS302", f"instancenorm normalises each channel over its positions, but {fmt(inputs[0])} has "
                                "one position", "move it before the layer that pools the map to 1x1")
        return inputs[0]

    def params(self, args, inputs, output):
        return 2 * inputs[0][0] if args.affine else 0

    def buffers(self, args, inputs, output):
        # running_mean, running_var and num_batches_tracked, as batch norm's
        return 2 * inputs[0][0] + 1 if args.track_running_stats else 0

    def torch(self, args, inputs, output):
        return TorchLayer("InstanceNorm2d", dict(num_features=inputs[0][0], eps=args.eps, affine=args.affine,
                                                 track_running_stats=args.track_running_stats))


class LayerScaleArgs(OpArgs):
    init: float = 1e-6


@register
class LayerScale(Op):
    name = "layer_scale"
    Args = LayerScaleArgs
    positional = ("init",)
    summary = "multiplies each channel by a learnt scale, initialised to `init` (ConvNeXt's residual branches)"

    def shape(self, args, inputs):
        expect_vector_or_map(self.name, inputs[0])
        return inputs[0]

    def params(self, args, inputs, output):
        return inputs[0][0]

    def torch(self, args, inputs, output):
        # A bare parameter named by the label, as torchvision's CNBlock.layer_scale: [C, 1, 1] broadcasts over a map
        shape = (inputs[0][0], 1, 1) if len(inputs[0]) == 3 else (inputs[0][0],)
        return TorchParameter(shape, args.init)


class StochasticDepthArgs(OpArgs):
    p: Probability
    mode: Literal["row", "batch"] = "row"


@register
class StochasticDepth(Op):
    name = "stochastic_depth"
    Args = StochasticDepthArgs
    positional = ("p",)
    summary = ("while training, zeroes a residual branch with probability p, per sample (mode=\"row\") or for the "
               "whole batch (\"batch\"), and scales what survives by 1/(1-p); the identity in eval")

    def torch(self, args, inputs, output):
        return TorchLayer("StochasticDepth", dict(p=args.p, mode=args.mode))
