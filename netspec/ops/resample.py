"""Resampling: transposed convolution, upsampling, pixel shuffle, and U-Net's centre crop."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import (Init, NonNegativePair, Op, OpArgs, PositiveInt, PositivePair, TorchLayer, expect_rank,
                              fail, fmt, register)


class ConvTransposeArgs(OpArgs):
    out_channels: PositiveInt
    kernel: PositivePair
    stride: PositivePair = (1, 1)
    padding: NonNegativePair = (0, 0)
    output_padding: NonNegativePair = (0, 0)
    groups: PositiveInt = 1
    dilation: PositivePair = (1, 1)
    bias: bool = True
    init: Init = "default"


def transposed_out(axis: str, size: int, kernel: int, stride: int, padding: int, output_padding: int,
                   dilation: int) -> int:
    """(n-1)s - 2p + d(k-1) + output_padding + 1, PyTorch's ConvTranspose2d size; refuses what it refuses."""
    if output_padding >= stride and output_padding >= dilation:
        raise fail("NS203", f"conv_transpose output_padding {output_padding} along the {axis} must be smaller "
                            f"than the stride ({stride}) or the dilation ({dilation})",
                   f"output_padding picks among the sizes a stride leaves ambiguous: use 0 to "
                   f"{max(stride, dilation) - 1} here")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise fail("NS303", f"conv_transpose output {axis} is ({size}-1)*{stride} - 2*{padding} + "
                            f"{dilation}*({kernel}-1) + {output_padding} + 1 = {out}",
                   "the padding crops more than the layer produces: reduce it, or enlarge kernel or stride")
    return out


@register
class ConvTranspose(Op):
    name = "conv_transpose"
    Args = ConvTransposeArgs
    positional = ("out_channels", "kernel")
    summary = "2-D transposed convolution (upsampling by `stride`; DCGAN's generator, U-Net's up-steps)"

    def shape(self, args: ConvTransposeArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        c, h, w = inputs[0]
        if c % args.groups or args.out_channels % args.groups:
            raise fail("NS203", f"groups={args.groups} must divide both the input channels ({c}) "
                                f"and out_channels ({args.out_channels})",
                       "choose groups among the common divisors of the two channel counts")
        sizes = [transposed_out(axis, n, *params) for axis, n, params in zip(
            ("height", "width"), (h, w),
            zip(args.kernel, args.stride, args.padding, args.output_padding, args.dilation))]
        return (args.out_channels, *sizes)

    def params(self, args: ConvTransposeArgs, inputs, output):
        kh, kw = args.kernel
        return inputs[0][0] * args.out_channels // args.groups * kh * kw + (args.out_channels if args.bias else 0)

    def macs(self, args: ConvTransposeArgs, inputs, output):
        # Every input position meets every kernel weight once: weights x *input* positions, no bias. This is
        # fvcore's and torch.utils.flop_counter's count (FLOPs = 2 x this); torchinfo multiplies by the output
        # positions instead, as for a convolution, counting taps that land on the stride's inserted zeros.
        kh, kw = args.kernel
        _, h, w = inputs[0]
        return inputs[0][0] * args.out_channels // args.groups * kh * kw * h * w

    def torch(self, args: ConvTransposeArgs, inputs, output):
        return TorchLayer("ConvTranspose2d", dict(
            in_channels=inputs[0][0], out_channels=args.out_channels, kernel_size=args.kernel, stride=args.stride,
            padding=args.padding, output_padding=args.output_padding, groups=args.groups, bias=args.bias,
            dilation=args.dilation), args.init)


class UpsampleArgs(OpArgs):
    scale: PositivePair | None = None
    size: PositivePair | None = None
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: bool | None = None


@register
class Upsample(Op):
    name = "upsample"
    Args = UpsampleArgs
    positional = ("scale",)
    summary = "resizes a feature map by an integer `scale` or to a `size` [h, w]; mode \"nearest\" or \"bilinear\""

    def shape(self, args: UpsampleArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        if (args.scale is None) == (args.size is None):
            given = "both" if args.scale is not None else "neither"
            raise fail("NS203", f"upsample takes exactly one of scale and size, got {given}",
                       "upsample(2) doubles the height and width; upsample(size=[h, w]) resizes to h x w")
        if args.align_corners is not None and args.mode != "bilinear":
            raise fail("NS203", f"align_corners applies to mode=\"bilinear\" only, not \"{args.mode}\"",
                       "drop align_corners, or use mode=\"bilinear\" (as PyTorch requires)")
        c, h, w = inputs[0]
        if args.size is not None:
            return (c, *args.size)
        return (c, h * args.scale[0], w * args.scale[1])

    def torch(self, args: UpsampleArgs, inputs, output):
        if args.size is not None:
            return TorchLayer("Upsample", dict(size=args.size, mode=args.mode, align_corners=args.align_corners))
        return TorchLayer("Upsample", dict(scale_factor=tuple(float(s) for s in args.scale), mode=args.mode,
                                           align_corners=args.align_corners))


class PixelShuffleArgs(OpArgs):
    factor: PositiveInt


@register
class PixelShuffle(Op):
    name = "pixel_shuffle"
    Args = PixelShuffleArgs
    positional = ("factor",)
    summary = "sub-pixel upsampling: [C*r*r, H, W] -> [C, H*r, W*r] with r = factor"

    def shape(self, args: PixelShuffleArgs, inputs):
        expect_rank(self.name, inputs[0], 3)
        c, h, w = inputs[0]
        r = args.factor
        if c % (r * r):
            raise fail("NS203", f"pixel_shuffle({r}) needs channels divisible by {r}*{r} = {r * r}, got {c}",
                       f"make the convolution before it output a multiple of {r * r} channels")
        return (c // (r * r), h * r, w * r)

    def torch(self, args: PixelShuffleArgs, inputs, output):
        return TorchLayer("PixelShuffle", {"upscale_factor": args.factor})


def crop_offset(size: int, target: int) -> int:
    """torchvision.transforms.functional.center_crop's offset: int(round((size - target) / 2.0))."""
    return int(round((size - target) / 2.0))


@register
class CenterCrop(Op):
    name = "center_crop"
    inputs = None  # the lowering passes the named value to crop like as the second input, as for merges
    summary = ("crops the current feature map, centred, to the height and width of the named value: "
               "`skip -> center_crop(up)` (U-Net's crop before concat); channels kept")

    def shape(self, args, inputs):
        if len(inputs) != 2:
            got = "none" if len(inputs) == 1 else f"{len(inputs) - 1}"
            raise fail("NS203", f"center_crop takes exactly one named value to crop like, got {got}",
                       "name the value whose height and width to keep: `skip -> center_crop(up)`")
        expect_rank(self.name, inputs[0], 3)
        expect_rank(f"{self.name}'s reference", inputs[1], 3)
        c, h, w = inputs[0]
        th, tw = inputs[1][1:]
        if th > h or tw > w:
            raise fail("NS302", f"center_crop to {th}x{tw} is larger than its input {fmt(inputs[0])}",
                       "crop the larger map to the smaller one: `big -> center_crop(small)`, or pad the "
                       "convolutions that shrank this one")
        return (c, th, tw)

    def torch(self, args, inputs, output):
        (_, h, w), (_, th, tw) = inputs[0], inputs[1]
        return TorchLayer("CenterCrop", dict(top=crop_offset(h, th), left=crop_offset(w, tw), height=th, width=tw))
