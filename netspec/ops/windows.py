"""Swin Transformer's layers (Liu et al. 2021; v2: Liu et al. 2022): multi-head self-attention within windows of a
feature map, shifted or not, with a relative position bias, and patch merging between stages.

The values are channels-first feature maps [C, H, W], as everywhere else in netspec, rather than tokens: the
windows are cut from the map's grid, which a map's shape keeps and a token sequence's does not; `layernorm` and
`linear(over="channels")` then act on each position exactly as torchvision's channels-last LayerNorm and Linear
(with the same state_dicts), and the two layers here permute to channels-last inside, as torchvision computes."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import (NonNegativePair, Op, OpArgs, PositiveInt, PositivePair, Probability, TorchLayer, fail,
                              fmt, nearest_divisor, register)

# Swin v2's continuous position bias: an MLP with this many hidden units maps each relative offset to one bias per
# head (torchvision's cpb_mlp: Linear(2, 512) -> ReLU -> Linear(512, heads, bias=False)).
CPB_HIDDEN = 512


def expect_map(op: str, shape) -> None:
    if len(shape) == 3:
        return
    hint = ("Swin's layers work on a feature map's grid: apply it before tokens() or flatten()" if len(shape) == 2
            else "Swin's layers work on a feature map's grid: move this layer before flatten()")
    raise fail("NS305", f"{op} expects a feature map [C, H, W], got {fmt(shape)}", hint)


def padded(size: int, window: int) -> int:
    """A side of the map padded (at the bottom or right) to a multiple of the window, as torchvision pads it."""
    return -(-size // window) * window


class WindowAttentionArgs(OpArgs):
    heads: PositiveInt
    window: PositivePair
    shift: NonNegativePair = (0, 0)
    version: Literal[1, 2] = 1
    attention_dropout: Probability = 0.0
    dropout: Probability = 0.0


@register
class WindowAttention(Op):
    name = "window_attention"
    Args = WindowAttentionArgs
    positional = ("heads", "window", "shift")
    summary = ("multi-head self-attention within each window x window of a map [C, H, W] (Swin), the map padded "
               "to a multiple of the window and cyclically shifted by `shift` (masked where the roll joins far "
               "edges; not along a side the window covers, as torchvision); a learnt relative position bias per "
               "head (version=1), or v2's cosine attention with a learnt logit scale and a continuous position "
               "bias from a small MLP (version=2)")

    def shape(self, args, inputs):
        expect_map(self.name, inputs[0])
        c, h, w = inputs[0]
        (wh, ww), (sh, sw) = args.window, args.shift
        if wh > h or ww > w:
            raise fail("NS302", f"window_attention's {wh}x{ww} window is larger than its input map {h}x{w}",
                       f"use a window of at most {min(wh, h)}x{min(ww, w)}, or a larger input (torchvision would "
                       f"attend to the padding)")
        if args.version == 2 and min(wh, ww) == 1:
            raise fail("NS203", f"window_attention(version=2) scales each offset by the window's side less one, "
                                f"but the {wh}x{ww} window has a side of 1",
                       "use a window of at least 2x2 with version=2 (torchvision's table would be 0/0)")
        if sh >= wh or sw >= ww:
            raise fail("NS203", f"window_attention's shift {sh}x{sw} is not smaller than its {wh}x{ww} window",
                       f"shift by less than the window: half of it, shift={[wh // 2, ww // 2]}, as Swin does")
        if c % args.heads:
            nearest = nearest_divisor(c, args.heads)
            raise fail("NS203", f"window_attention({args.heads}) shares each position's {c} channels among "
                                f"{args.heads} heads, but {args.heads} does not divide {c}",
                       f"use a number of heads that divides {c}, e.g. window_attention({nearest}, ...)")
        return inputs[0]

    @staticmethod
    def offsets(args) -> int:
        """The relative offsets between two positions of a window: (2 wh - 1)(2 ww - 1)."""
        return (2 * args.window[0] - 1) * (2 * args.window[1] - 1)

    def params(self, args, inputs, output):
        c = inputs[0][0]
        projections = 3 * c * c + 3 * c + c * c + c  # qkv and proj, with their biases
        if args.version == 1:  # relative_position_bias_table: one bias per offset and head
            return projections + self.offsets(args) * args.heads
        # logit_scale (one per head) and cpb_mlp: Linear(2, 512) with bias, Linear(512, heads) without
        return projections + args.heads + 2 * CPB_HIDDEN + CPB_HIDDEN + CPB_HIDDEN * args.heads

    def buffers(self, args, inputs, output):
        # relative_position_index: which offset each pair of a window's positions has; v2 adds
        # relative_coords_table, the offsets (2 numbers each) that its MLP reads
        tokens = args.window[0] * args.window[1]
        return tokens * tokens + (2 * self.offsets(args) if args.version == 2 else 0)

    def macs(self, args, inputs, output):
        # On the padded map of P positions, with windows of N positions: the projections qkv and proj (4 C x C
        # weights at every position, biases left out, as for linear layers over tokens), then each window's two
        # matrix products summed over its heads, Q K^T (N x N scores, C/heads long) and the scores times V, N*N*C
        # each per window, P/N windows: 2*P*N*C. v2 also runs its position-bias MLP once per call, over the
        # (2 wh - 1)(2 ww - 1) offsets (2 x 512 and 512 x heads weights each, not once per sample). Masks,
        # softmax, the bias gather and v2's normalisation multiply no weights and are not counted.
        c, h, w = inputs[0]
        (wh, ww) = args.window
        positions, tokens = padded(h, wh) * padded(w, ww), wh * ww
        attention = 4 * c * c * positions + 2 * positions * tokens * c
        if args.version == 2:
            attention += self.offsets(args) * (2 * CPB_HIDDEN + CPB_HIDDEN * args.heads)
        return attention

    def torch(self, args, inputs, output):
        c, h, w = inputs[0]
        cls = "ShiftedWindowAttention" if args.version == 1 else "ShiftedWindowAttentionV2"
        return TorchLayer(cls, dict(dim=c, num_heads=args.heads, window_size=list(args.window),
                                    shift_size=list(args.shift), height=h, width=w,
                                    attention_dropout=args.attention_dropout, dropout=args.dropout))


class PatchMergingArgs(OpArgs):
    version: Literal[1, 2] = 1
    eps: float = 1e-5


@register
class PatchMerging(Op):
    name = "patch_merging"
    Args = PatchMergingArgs
    summary = ("Swin's downsampling, [C, H, W] -> [2C, ceil(H/2), ceil(W/2)]: each 2x2 patch's four positions joined "
               "into 4C channels (the map padded to even sides), then a layer norm and a linear layer to 2C "
               "(version=1), or the linear layer and then the layer norm over 2C (version=2); its state_dict is "
               "torchvision's: reduction.weight, then norm")

    def shape(self, args, inputs):
        expect_map(self.name, inputs[0])
        c, h, w = inputs[0]
        return (2 * c, -(-h // 2), -(-w // 2))

    def params(self, args, inputs, output):
        c = inputs[0][0]
        normalised = 4 * c if args.version == 1 else 2 * c
        return 4 * c * 2 * c + 2 * normalised  # reduction (no bias) and the norm's weight and bias

    def macs(self, args, inputs, output):
        # The reduction's weights at every output position, and the norm's 2C, as layer norms count elsewhere
        c = inputs[0][0]
        normalised = 4 * c if args.version == 1 else 2 * c
        return 4 * c * 2 * c * output[1] * output[2] + 2 * normalised

    def torch(self, args, inputs, output):
        cls = "PatchMerging" if args.version == 1 else "PatchMergingV2"
        return TorchLayer(cls, dict(dim=inputs[0][0], eps=args.eps))
