"""Pooling: max, average, adaptive, global, and LeNet's trainable subsampling."""

from __future__ import annotations

from pydantic import Field, model_validator

from netspec.ops.base import (NonNegativePair, Op, OpArgs, PositivePair, TorchLayer, expect_rank, register,
                              window_out)


class PoolArgs(OpArgs):
    kernel: PositivePair
    stride: PositivePair | None = Field(None, json_schema_extra={"shown": "kernel"})  # the kernel, as in PyTorch
    padding: NonNegativePair = (0, 0)
    ceil_mode: bool = False

    @model_validator(mode="after")
    def _padding_at_most_half_kernel(self):
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"padding {self.padding} must be at most half the kernel {self.kernel}")
        return self


class MaxPoolArgs(PoolArgs):
    dilation: PositivePair = (1, 1)


class AvgPoolArgs(PoolArgs):
    count_include_pad: bool = True


def pooled(op: str, args, shape, dilation=(1, 1)):
    expect_rank(op, shape, 3)
    c, h, w = shape
    stride = args.stride or args.kernel
    out_h = window_out(op, "height", h, args.kernel[0], stride[0], args.padding[0], dilation[0], args.ceil_mode)
    out_w = window_out(op, "width", w, args.kernel[1], stride[1], args.padding[1], dilation[1], args.ceil_mode)
    return (c, out_h, out_w)


@register
class MaxPool(Op):
    name = "maxpool"
    Args = MaxPoolArgs
    positional = ("kernel",)
    summary = "max pooling"

    def shape(self, args, inputs):
        return pooled(self.name, args, inputs[0], args.dilation)

    def torch(self, args, inputs, output):
        return TorchLayer("MaxPool2d", dict(kernel_size=args.kernel, stride=args.stride or args.kernel,
                                            padding=args.padding, dilation=args.dilation, ceil_mode=args.ceil_mode))


@register
class AvgPool(Op):
    name = "avgpool"
    Args = AvgPoolArgs
    positional = ("kernel",)
    summary = "average pooling"

    def shape(self, args, inputs):
        return pooled(self.name, args, inputs[0])

    def torch(self, args, inputs, output):
        return TorchLayer("AvgPool2d", dict(kernel_size=args.kernel, stride=args.stride or args.kernel,
                                            padding=args.padding, ceil_mode=args.ceil_mode,
                                            count_include_pad=args.count_include_pad))


class SubsampleArgs(OpArgs):
    kernel: PositivePair = (2, 2)
    stride: PositivePair | None = Field(None, json_schema_extra={"shown": "kernel"})
    padding: NonNegativePair = (0, 0)
    ceil_mode: bool = False


@register
class Subsample(Op):
    name = "subsample"
    Args = SubsampleArgs
    positional = ("kernel",)
    summary = "LeNet-5 subsampling: average pool times a learnt coefficient plus a learnt bias, per map"

    def shape(self, args, inputs):
        return pooled(self.name, args, inputs[0])

    def params(self, args, inputs, output):
        return 2 * inputs[0][0]

    def torch(self, args, inputs, output):
        return TorchLayer("Subsample", dict(channels=inputs[0][0], kernel_size=args.kernel,
                                            stride=args.stride or args.kernel, padding=args.padding,
                                            ceil_mode=args.ceil_mode))


class AdaptiveArgs(OpArgs):
    output_size: PositivePair


class Adaptive(Op):
    positional = ("output_size",)
    module: str

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 3)
        return (inputs[0][0], *args.output_size)

    def torch(self, args, inputs, output):
        return TorchLayer(self.module, {"output_size": args.output_size})


@register
class AdaptiveAvgPool(Adaptive):
    name = "adaptive_avgpool"
    module = "AdaptiveAvgPool2d"
    Args = AdaptiveArgs
    summary = "average pooling to a fixed output size"


@register
class AdaptiveMaxPool(Adaptive):
    name = "adaptive_maxpool"
    module = "AdaptiveMaxPool2d"
    Args = AdaptiveArgs
    summary = "max pooling to a fixed output size"


class Global(Op):
    module: str

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 3)
        return (inputs[0][0], 1, 1)

    def torch(self, args, inputs, output):
        return TorchLayer(self.module, {"output_size": 1})


@register
class GlobalAvgPool(Global):
    name = "global_avgpool"
    module = "AdaptiveAvgPool2d"
    summary = "average over all positions: [C, H, W] -> [C, 1, 1]"


@register
class GlobalMaxPool(Global):
    name = "global_maxpool"
    module = "AdaptiveMaxPool2d"
    summary = "maximum over all positions: [C, H, W] -> [C, 1, 1]"

