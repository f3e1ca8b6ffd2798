"""Convolution, including sparse connection tables (LeNet-5's C3), and weight-standardised convolution (NFNet, BiT)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from netspec.ops.base import (Init, NonNegativePair, Op, OpArgs, PositiveInt, PositivePair, Shape, TorchLayer,
                              expect_rank, fail, register, window_out)


def same_needs_unit_stride(args) -> None:
    if args.padding == "same" and args.stride != (1, 1):
        raise ValueError("padding='same' needs stride 1 (PyTorch refuses other strides)")


class ConvolutionArgs(OpArgs):
    """What every 2-d convolution takes, in the order of its positional arguments."""

    out_channels: PositiveInt
    kernel: PositivePair
    stride: PositivePair = (1, 1)
    padding: NonNegativePair | Literal["same"] = (0, 0)
    dilation: PositivePair = (1, 1)
    groups: PositiveInt = 1
    bias: bool = True


class ConvArgs(ConvolutionArgs):
    table: list[list[Literal[0, 1]]] | None = None
    init: Init = "default"

    @model_validator(mode="after")
    def _same_needs_unit_stride(self):
        same_needs_unit_stride(self)
        if self.table is not None and self.groups != 1:
            raise ValueError("a connection table replaces groups; use one or the other")
        return self


def conv_connections(args: ConvArgs, in_channels: int) -> int:
    """Input-output channel pairs that carry a kernel."""
    if args.table is not None:
        return sum(sum(row) for row in args.table)
    return in_channels // args.groups * args.out_channels


def conv_output(op: str, args, shape: Shape) -> Shape:
    """The output of a convolution with `args` (out_channels, kernel, stride, padding, dilation, groups) on a
    [C, H, W] map, PyTorch's arithmetic; groups that divide neither side are NS203."""
    expect_rank(op, shape, 3)
    c, h, w = shape
    if c % args.groups or args.out_channels % args.groups:
        raise fail("NS203", f"groups={args.groups} must divide both the input channels ({c}) "
                            f"and out_channels ({args.out_channels})")
    if args.padding == "same":
        return (args.out_channels, h, w)
    kh, kw = args.kernel
    out_h = window_out(op, "height", h, kh, args.stride[0], args.padding[0], args.dilation[0])
    out_w = window_out(op, "width", w, kw, args.stride[1], args.padding[1], args.dilation[1])
    return (args.out_channels, out_h, out_w)


@register
class Conv(Op):
    name = "conv"
    Args = ConvArgs
    positional = ("out_channels", "kernel")
    summary = "2-D convolution; `table` gives sparse channel connectivity"

    def shape(self, args: ConvArgs, inputs):
        expect_rank("conv", inputs[0], 3)
        c = inputs[0][0]
        if args.table is not None:
            rows, cols = len(args.table), {len(r) for r in args.table}
            if rows != c or cols != {args.out_channels}:
                got = f"{rows}x{'/'.join(map(str, sorted(cols))) or 0}"
                raise fail("NS304", f"connection table is {got} but the layer connects {c} input to "
                                    f"{args.out_channels} output channels (needs {c}x{args.out_channels})",
                           "one row per input channel, one column per output channel")
            unused = [j for j in range(args.out_channels) if not any(r[j] for r in args.table)]
            if unused:
                raise fail("NS304", f"connection table leaves output channel {unused[0]} with no input")
        return conv_output(self.name, args, inputs[0])

    def params(self, args: ConvArgs, inputs, output):
        kh, kw = args.kernel
        return conv_connections(args, inputs[0][0]) * kh * kw + (args.out_channels if args.bias else 0)

    def torch(self, args: ConvArgs, inputs, output):
        common = dict(in_channels=inputs[0][0], out_channels=args.out_channels, kernel_size=args.kernel,
                      stride=args.stride, padding=args.padding, dilation=args.dilation, bias=args.bias)
        if args.table is not None:
            return TorchLayer("MaskedConv2d", {**common, "table": args.table}, args.init)
        return TorchLayer("Conv2d", {**common, "groups": args.groups}, args.init)

    def macs(self, args, inputs, output):
        # Kernel weights x output positions. The bias is left out, as in torchvision's published figures
        # (torchinfo adds it: VGG-16 15.484 G there, 15.470 G here and in torchvision's documentation).
        kh, kw = args.kernel
        return conv_connections(args, inputs[0][0]) * kh * kw * output[1] * output[2]


class StdConvArgs(ConvolutionArgs):
    gain: bool = True  # timm's ScaledStdConv2d (NFNet); false: its StdConv2d (BiT), the standardised weight alone
    gamma: float = 1.0  # ScaledStdConv2d's constant factor (NFNet passes its activation's gamma)
    eps: Annotated[float, Field(gt=0)] = 1e-6
    init: Init = "default"

    @model_validator(mode="after")
    def _consistent(self):
        same_needs_unit_stride(self)
        if not self.gain and self.gamma != 1.0:
            raise ValueError("gamma scales the learnt gain; with gain=false (timm's StdConv2d) there is none")
        return self


@register
class StdConv(Op):
    name = "std_conv"
    Args = StdConvArgs
    positional = ("out_channels", "kernel")
    summary = ("weight-standardised 2-D convolution: each output channel's weights to mean 0 and variance 1, times a "
               "learnt gain x gamma / sqrt(fan-in) (timm's ScaledStdConv2d, NFNet); gain=false: StdConv2d (BiT)")

    def shape(self, args: StdConvArgs, inputs):
        output = conv_output(self.name, args, inputs[0])
        kh, kw = args.kernel
        fan_in = inputs[0][0] // args.groups * kh * kw
        if fan_in == 1:  # (w - mean(w)) of a single weight: the convolution would be 0 whatever it learns
            raise fail("NS203", f"std_conv standardises the weights of each output channel, but each has one "
                                f"(in_channels / groups x kernel = {inputs[0][0]} / {args.groups} x {kh}x{kw} = 1): "
                                "standardised, it is 0",
                       "use conv() for a depthwise 1x1 convolution, or a larger kernel")
        return output

    def params(self, args: StdConvArgs, inputs, output):
        kh, kw = args.kernel
        weights = inputs[0][0] // args.groups * args.out_channels * kh * kw
        return weights + (args.out_channels if args.bias else 0) + (args.out_channels if args.gain else 0)

    def macs(self, args: StdConvArgs, inputs, output):
        # A convolution's: kernel weights x output positions. Standardising the weights costs the same for any
        # batch and is not counted per sample.
        kh, kw = args.kernel
        return inputs[0][0] // args.groups * args.out_channels * kh * kw * output[1] * output[2]

    def torch(self, args: StdConvArgs, inputs, output):
        kwargs = dict(in_channels=inputs[0][0], out_channels=args.out_channels, kernel_size=args.kernel,
                      stride=args.stride, padding=args.padding, dilation=args.dilation, groups=args.groups,
                      bias=args.bias, eps=args.eps)
        if args.gain:
            return TorchLayer("ScaledStdConv2d", {**kwargs, "gamma": args.gamma}, args.init)
        return TorchLayer("StdConv2d", kwargs, args.init)
