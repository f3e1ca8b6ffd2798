"""Normalisation: batch norm and local response norm."""

from __future__ import annotations

from netspec.ops.base import Op, OpArgs, PositiveInt, TorchLayer, expect_rank, register


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
