"""Element-wise activations and softmax; none has parameters."""

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
