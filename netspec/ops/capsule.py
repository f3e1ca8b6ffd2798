"""Capsules (Sabour, Frosst & Hinton 2017): groups of neurons whose vector length is a probability,
routed between layers by agreement. A capsule tensor has the shape [N, D]: N capsules of D dimensions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

from netspec.ops.base import Op, OpArgs, PositiveInt, TorchLayer, expect_rank, fail, register


class CapsulesArgs(OpArgs):
    dim: PositiveInt


@register
class Capsules(Op):
    name = "capsules"
    Args = CapsulesArgs
    positional = ("dim",)
    summary = "groups channels into capsules of `dim` numbers: [C, H, W] -> [C/dim * H * W, dim]"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 3)
        c, h, w = inputs[0]
        if c % args.dim:
            raise fail("NS203", f"capsules of {args.dim} dimensions need channels divisible by {args.dim}, got {c}")
        return (c // args.dim * h * w, args.dim)

    def torch(self, args, inputs, output):
        return TorchLayer("Capsules", {"dim": args.dim})


@register
class Squash(Op):
    name = "squash"
    activation = True
    summary = "scales each capsule to length |s|^2 / (1 + |s|^2), below 1, keeping its direction"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 2)
        return inputs[0]

    def torch(self, args, inputs, output):
        return TorchLayer("Squash")


class CapsuleArgs(OpArgs):
    units: PositiveInt
    dim: PositiveInt
    iterations: Annotated[int, Strict(), Field(gt=0, le=100)] = 3


@register
class Capsule(Op):
    name = "capsule"
    Args = CapsuleArgs
    positional = ("units", "dim")
    summary = ("capsule layer with routing by agreement: [N, D] -> [units, dim]; a D x dim matrix per pair of "
               "capsules, no bias; the routing logits are not parameters")

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 2)
        return (args.units, args.dim)

    def params(self, args, inputs, output):
        n, d = inputs[0]
        return n * args.units * d * args.dim

    def macs(self, args, inputs, output):
        # predictions u_hat = W u, then per iteration the weighted sum over inputs, and between iterations
        # the agreement u_hat . v: each of the last two N * units * dim multiply-accumulates.
        n, d = inputs[0]
        routing = n * args.units * args.dim
        return n * args.units * d * args.dim + (2 * args.iterations - 1) * routing

    def torch(self, args, inputs, output):
        n, d = inputs[0]
        return TorchLayer("CapsuleRouting", {"in_capsules": n, "in_dim": d, "units": args.units, "dim": args.dim,
                                             "iterations": args.iterations})


@register
class CapsuleMask(Op):
    name = "capsule_mask"
    takes_labels = True
    summary = ("keeps one capsule and zeroes the others: the true class's while training, the longest otherwise "
               "(the input of CapsNet's reconstruction decoder)")

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 2)
        return inputs[0]

    def torch(self, args, inputs, output):
        return TorchLayer("CapsuleMask")


@register
class CapsuleLength(Op):
    name = "capsule_length"
    summary = "each capsule's length, the probability that its entity is present: [N, D] -> [N]"

    def shape(self, args, inputs):
        expect_rank(self.name, inputs[0], 2)
        return (inputs[0][0],)

    def torch(self, args, inputs, output):
        return TorchLayer("CapsuleLength")
