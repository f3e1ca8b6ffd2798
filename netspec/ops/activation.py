"""Element-wise activations and softmax; none has parameters."""

from __future__ import annotations

from netspec.ops.base import Op, OpArgs, register


class Activation(Op):
    activation = True


@register
class Relu(Activation):
    name = "relu"
    summary = "max(x, 0)"


@register
class Sigmoid(Activation):
    name = "sigmoid"
    summary = "1 / (1 + exp(-x))"


@register
class Tanh(Activation):
    name = "tanh"
    summary = "hyperbolic tangent"


@register
class LecunTanh(Activation):
    name = "lecun_tanh"
    summary = "LeCun's scaled tanh, 1.7159 * tanh(2x/3)"


class LeakyReluArgs(OpArgs):
    negative_slope: float = 0.01


@register
class LeakyRelu(Activation):
    name = "leaky_relu"
    Args = LeakyReluArgs
    positional = ("negative_slope",)
    summary = "x if x > 0 else negative_slope * x"


class GeluArgs(OpArgs):
    approximate: bool = False


@register
class Gelu(Activation):
    name = "gelu"
    Args = GeluArgs
    summary = "Gaussian error linear unit (tanh approximation with approximate=true)"


@register
class Softmax(Activation):
    name = "softmax"
    summary = "normalised exponentials over the channel (or feature) dimension"
