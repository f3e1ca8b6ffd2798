"""Element-wise activations and softmax; only prelu has parameters (its learnt slopes)."""

from __future__ import annotations

from netspec.ops.base import Op, OpArgs, TorchLayer, register


class Activation(Op):
    activation = True
    module: str  # the torch.nn (or netspec) class, for activations without arguments

    def torch(self, args, inputs, output):
        return TorchLayer(self.module)


@register
class Relu(Activation):
    name = "relu"
    module = "ReLU"
    summary = "max(x, 0)"


@register
class Sigmoid(Activation):
    name = "sigmoid"
    module = "Sigmoid"
    summary = "1 / (1 + exp(-x))"


@register
class Tanh(Activation):
    name = "tanh"
    module = "Tanh"
    summary = "hyperbolic tangent"


@register
class LecunTanh(Activation):
    name = "lecun_tanh"
    module = "LecunTanh"
    summary = "LeCun's scaled tanh, 1.7159 * tanh(2x/3)"


class LeakyReluArgs(OpArgs):
    negative_slope: float = 0.01


@register
class LeakyRelu(Activation):
    name = "leaky_relu"
    Args = LeakyReluArgs
    positional = ("negative_slope",)
    summary = "x if x > 0 else negative_slope * x"

    def torch(self, args, inputs, output):
        return TorchLayer("LeakyReLU", {"negative_slope": args.negative_slope})


class GeluArgs(OpArgs):
    approximate: bool = False


@register
class Gelu(Activation):
    name = "gelu"
    Args = GeluArgs
    summary = "Gaussian error linear unit (tanh approximation with approximate=true)"

    def torch(self, args, inputs, output):
        return TorchLayer("GELU", {"approximate": "tanh" if args.approximate else "none"})


@register
class Softmax(Activation):
    name = "softmax"
    summary = "normalised exponentials over the channel (or feature) dimension"

    def torch(self, args, inputs, output):
        return TorchLayer("Softmax", {"dim": 1})


@register
class Relu6(Activation):
    name = "relu6"
    module = "ReLU6"
    summary = "min(max(x, 0), 6)"


@register
class Silu(Activation):
    name = "silu"
    module = "SiLU"
    summary = "x * sigmoid(x) (swish)"


@register
class Hardswish(Activation):
    name = "hardswish"
    module = "Hardswish"
    summary = "x * relu6(x + 3) / 6, MobileNetV3's cheap swish"


@register
class Hardsigmoid(Activation):
    name = "hardsigmoid"
    module = "Hardsigmoid"
    summary = "relu6(x + 3) / 6, MobileNetV3's cheap sigmoid"


@register
class Mish(Activation):
    name = "mish"
    module = "Mish"
    summary = "x * tanh(softplus(x))"


class EluArgs(OpArgs):
    alpha: float = 1.0


@register
class Elu(Activation):
    name = "elu"
    Args = EluArgs
    positional = ("alpha",)
    summary = "x if x > 0 else alpha * (exp(x) - 1)"

    def torch(self, args, inputs, output):
        return TorchLayer("ELU", {"alpha": args.alpha})


class PreluArgs(OpArgs):
    per_channel: bool = False
    init: float = 0.25


@register
class Prelu(Op):
    name = "prelu"
    Args = PreluArgs
    summary = "x if x > 0 else a * x, the slope a learnt (one, or one per channel with per_channel=true)"

    def params(self, args, inputs, output):
        return output[0] if args.per_channel else 1

    def torch(self, args, inputs, output):
        return TorchLayer("PReLU", {"num_parameters": self.params(args, inputs, output), "init": args.init})
