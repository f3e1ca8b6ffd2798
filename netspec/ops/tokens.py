"""Token sequences (the Vision Transformer's values): a feature map as tokens, the learnt class token and position
embedding, multi-head self-attention, and one token read back out. A token sequence has the shape [N, D]: N tokens
of D numbers (without the batch dimension); `layernorm`, `linear`, `gelu`, `dropout` and `add` take it too."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

from netspec.ops.base import (Op, OpArgs, PositiveInt, Probability, Shape, TorchLayer, TorchParameter, fail, fmt,
                              nearest_divisor, register)

NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def expect_tokens(op: str, shape: Shape) -> None:
    if len(shape) == 2:
        return
    hint = ("make tokens of the feature map first: tokens() turns [C, H, W] into [H*W, C]" if len(shape) == 3
            else "a vector is one token's numbers, not a sequence; apply it before the layer that took one token")
    raise fail("NS305", f"{op} expects tokens [N, D], got {fmt(shape)}", hint)


@register
class Tokens(Op):
    name = "tokens"
    summary = ("a feature map as a sequence of tokens, one per position, row by row: [C, H, W] -> [H*W, C] (ViT's "
               "patch embedding is a convolution with stride = kernel = patch, then tokens())")

    def shape(self, args, inputs):
        if len(inputs[0]) != 3:
            raise fail("NS305", f"tokens expects a feature map [C, H, W], got {fmt(inputs[0])}",
                       "tokens() turns a map's positions into tokens; apply it after the patch convolution")
        c, h, w = inputs[0]
        return (h * w, c)

    def torch(self, args, inputs, output):
        return TorchLayer("Tokens")


class ClassTokenArgs(OpArgs):
    init: Annotated[float, Field(allow_inf_nan=False)] = 0.0


@register
class ClassToken(Op):
    name = "class_token"
    Args = ClassTokenArgs
    summary = ("puts a learnt token in front of the sequence: [N, D] -> [N + 1, D]; a bare [1, 1, D] parameter named "
               "by its label (ViT's class_token), starting at `init`")

    def shape(self, args, inputs):
        expect_tokens(self.name, inputs[0])
        n, d = inputs[0]
        return (n + 1, d)

    def params(self, args, inputs, output):
        return inputs[0][1]

    def macs(self, args, inputs, output):
        return 0  # a concatenation multiplies nothing

    def torch(self, args, inputs, output):
        return TorchParameter((1, 1, inputs[0][1]), args.init, combine="prepend")


class PositionEmbeddingArgs(OpArgs):
    std: NonNegativeFloat = 0.02


@register
class PositionEmbedding(Op):
    name = "position_embedding"
    Args = PositionEmbeddingArgs
    summary = ("adds a learnt vector to each token, one per position: a bare [1, N, D] parameter named by its label "
               "(ViT's encoder.pos_embedding), drawn from N(0, std^2)")

    def shape(self, args, inputs):
        expect_tokens(self.name, inputs[0])
        return inputs[0]

    def params(self, args, inputs, output):
        return inputs[0][0] * inputs[0][1]

    def macs(self, args, inputs, output):
        return 0  # an addition, not a multiply-accumulate

    def torch(self, args, inputs, output):
        n, d = inputs[0]
        return TorchParameter((1, n, d), 0.0, combine="add", std=args.std)


class SelfAttentionArgs(OpArgs):
    heads: PositiveInt
    dropout: Probability = 0.0
    bias: bool = True


@register
class SelfAttention(Op):
    name = "self_attention"
    Args = SelfAttentionArgs
    positional = ("heads",)
    summary = ("multi-head self-attention over tokens [N, D] (nn.MultiheadAttention with the tokens as query, key "
               "and value): each of `heads` heads attends with D / heads of the projected numbers")

    def shape(self, args, inputs):
        expect_tokens(self.name, inputs[0])
        d = inputs[0][1]
        if d % args.heads:
            nearest = nearest_divisor(d, args.heads)
            raise fail("NS203", f"self_attention({args.heads}) shares each token's {d} numbers among {args.heads} "
                                f"heads, but {args.heads} does not divide {d}",
                       f"use a number of heads that divides {d}, e.g. self_attention({nearest})")
        return inputs[0]

    def params(self, args, inputs, output):
        d = inputs[0][1]
        # in_proj_weight [3D, D] and out_proj.weight [D, D]; in_proj_bias [3D] and out_proj.bias [D]
        return 4 * d * d + (4 * d if args.bias else 0)

    def macs(self, args, inputs, output):
        # The projections (query, key, value and output: 4 D x D weights at each of the N tokens, no bias), then
        # the two matrix products of every head, summed over the heads: Q K^T (N x N scores, each D/heads long)
        # and the scores times V (N x D/heads outputs, each N long), N * N * D each.
        n, d = inputs[0]
        return 4 * d * d * n + 2 * n * n * d

    def torch(self, args, inputs, output):
        return TorchLayer("SelfAttention", dict(embed_dim=inputs[0][1], num_heads=args.heads, dropout=args.dropout,
                                                bias=args.bias))


class TokenArgs(OpArgs):
    index: Annotated[int, Strict()] = 0


@register
class Token(Op):
    name = "token"
    Args = TokenArgs
    positional = ("index",)
    summary = ("one token of the sequence, [N, D] -> [D] (x[:, index]; negative from the end): ViT's classifier "
               "reads the class token, token(0)")

    def shape(self, args, inputs):
        expect_tokens(self.name, inputs[0])
        n, d = inputs[0]
        if not -n <= args.index < n:
            raise fail("NS203", f"token({args.index}) is out of range for {n} tokens",
                       f"tokens are numbered 0 to {n - 1}, or -{n} to -1 from the end")
        return (d,)

    def torch(self, args, inputs, output):
        n = inputs[0][0]
        return TorchLayer("Token", {"index": args.index % n})
