"""Ensembles: whole networks applied to one input, their outputs merged into one prediction."""

from __future__ import annotations

from typing import Literal

from netspec.ops.base import Op, OpArgs, TorchLayer, fail, fmt, register
from netspec.ops.merge import something_to_join


class EnsembleArgs(OpArgs):
    # "softmax_mean": the mean of the members' softmax probabilities (the output is probabilities);
    # "logit_mean": the mean of their raw outputs. `weights` makes either a weighted mean.
    merge: Literal["softmax_mean", "logit_mean"] = "softmax_mean"
    weights: list[float] | None = None


@register
class Ensemble(Op):
    name = "ensemble"
    Args = EnsembleArgs
    inputs = None
    summary = ("merges the outputs of whole networks (the current value and the named ones): the mean of their "
               "softmax probabilities, or merge=\"logit_mean\"; weights=[...] for a weighted mean")

    def shape(self, args, inputs):
        something_to_join(self.name, inputs)
        first = inputs[0]
        for shape in inputs[1:]:
            if shape != first:
                raise fail("NS301", f"ensemble members disagree on their output: {fmt(first)} and {fmt(shape)}",
                           "every member must predict the same classes, e.g. set classes= alike")
        if len(first) != 1:
            raise fail("NS305", f"ensemble expects each member to output a vector of scores [K], got {fmt(first)}")
        if args.weights is not None:
            if len(args.weights) != len(inputs):
                raise fail("NS203", f"ensemble has {len(inputs)} members but {len(args.weights)} weights")
            if any(w < 0 for w in args.weights) or sum(args.weights) <= 0:
                raise fail("NS203", "ensemble weights must be non-negative and not all zero")
        return first

    def class_scores(self, args):
        return "probabilities" if args.merge == "softmax_mean" else "logits"

    def torch(self, args, inputs, output):
        weights = args.weights or [1.0] * len(inputs)
        return TorchLayer("Ensemble", {"merge": args.merge, "weights": [w / sum(weights) for w in weights]})
