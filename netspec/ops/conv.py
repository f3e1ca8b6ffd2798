"""Convolution, including sparse connection tables (LeNet-5's C3)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from netspec.ops.base import (Init, NonNegativePair, Op, OpArgs, PositiveInt, PositivePair, TorchLayer, expect_rank,
                              fail, register, window_out)


class ConvArgs(OpArgs):
    out_channels: PositiveInt
    kernel: PositivePair
    stride: PositivePair = (1, 1)
    padding: NonNegativePair | Literal["same"] = (0, 0)
    dilation: PositivePair = (1, 1)
    groups: PositiveInt = 1
    bias: bool = True
    table: list[list[Literal[0, 1]]] | None = None
    init: Init = "default"

    @model_validator(mode="after")
    def _same_needs_unit_stride(self):
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError("padding='same' needs stride 1 (PyTorch refuses other strides)")
        if self.table is not None and self.groups != 1:
            raise ValueError("a connection table replaces groups; use one or the other")
        return self


def conv_connections(args: ConvArgs, in_channels: int) -> int:
    """Input-output channel pairs that carry a kernel."""
    if args.table is not None:
        return sum(sum(row) for row in args.table)
    return in_channels // args.groups * args.out_channels


@register
class Conv(Op):
    name = "conv"
    Args = ConvArgs
    positional = ("out_channels", "kernel")
    summary = "2-D convolution; `table` gives sparse channel connectivity"

    def shape(self, args: ConvArgs, inputs):
        expect_rank("conv", inputs[0], 3)
        c, h, w = inputs[0]
        if c % args.groups or args.out_channels % args.groups:
            raise fail("NS203", f"groups={args.groups} must divide both the input channels ({c}) "
                                f"and out_channels ({args.out_channels})")
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
        if args.padding == "same":
            return (args.out_channels, h, w)
        kh, kw = args.kernel
        out_h = window_out("conv", "height", h, kh, args.stride[0], args.padding[0], args.dilation[0])
        out_w = window_out("conv", "width", w, kw, args.stride[1], args.padding[1], args.dilation[1])
        return (args.out_channels, out_h, out_w)

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
