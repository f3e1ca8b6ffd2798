"""PyTorch modules for the layers torch.nn lacks. Imports only torch: `netspec compile --emit python`
copies this file into the standalone module it writes."""

import torch
from torch import nn


class MaskedConv2d(nn.Module):
    """A convolution with a sparse connection table (LeNet-5's C3).

    Only connected kernels are parameters: `weight` holds one kernel per connection, so
    `weight.numel()` counts exactly the connected weights and unconnected ones stay zero
    through any training. A fixed 0/1 `scatter` matrix places them in the dense kernel.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 table=()):
        super().__init__()
        kh, kw = kernel_size
        pairs = [(o, i) for o in range(out_channels) for i in range(in_channels) if table[i][o]]
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)
        self.stride, self.padding, self.dilation, self.table = stride, padding, dilation, table
        self.weight = nn.Parameter(torch.empty(len(pairs), kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        scatter = torch.zeros(out_channels * in_channels, len(pairs))
        for k, (o, i) in enumerate(pairs):
            scatter[o * in_channels + i, k] = 1.0
        self.register_buffer("scatter", scatter, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        # PyTorch's Conv2d default, with fan-in taken over each output map's real connections
        fan_in = max(1, round(self.weight.shape[0] / self.out_channels)) * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / fan_in ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def dense_weight(self):
        kh, kw = self.kernel_size
        dense = self.scatter.to(self.weight.dtype) @ self.weight.reshape(self.weight.shape[0], kh * kw)
        return dense.reshape(self.out_channels, self.in_channels, kh, kw)

    def forward(self, x):
        return nn.functional.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={self.weight.shape[0]}")


class Subsample(nn.Module):
    """LeNet-5 subsampling: average pooling, times a learnt coefficient, plus a learnt bias, per map."""

    def __init__(self, channels, kernel_size=(2, 2), stride=None, padding=(0, 0), ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride or kernel_size, padding, \
            ceil_mode
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        pooled = nn.functional.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return pooled * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LecunTanh(nn.Module):
    """LeCun's scaled tanh, 1.7159 * tanh(2x / 3)."""

    def forward(self, x):
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class EuclideanRBF(nn.Module):
    """LeNet-5's output: unit i gives the squared Euclidean distance between the input and its centre.

    The paper's centres are hand-drawn 7x12 bitmaps of the characters (+1/-1); they are not published
    as data, so the centres start as random +1/-1 codes, which play the same role.
    """

    def __init__(self, in_features, units):
        super().__init__()
        self.weight = nn.Parameter(torch.randint(0, 2, (units, in_features)).float() * 2 - 1)

    def forward(self, x):
        # |x - w|^2 = |x|^2 - 2 x.w + |w|^2, as one matrix product
        return ((x * x).sum(1, keepdim=True) - 2 * x @ self.weight.t() + (self.weight * self.weight).sum(1))


def select_outputs(training: bool, all_outputs: bool, main: list, aux: list):
    """(main, *aux, *reconstructions) while training or when all outputs are asked for; else the main output
    (with any reconstructions), as torchvision's GoogLeNet and Inception-v3 return their auxiliary logits."""
    if training or all_outputs:
        return (main[0], *aux, *main[1:])
    return main[0] if len(main) == 1 else tuple(main)


class ProjectedAdd(nn.Module):
    """Sum of its inputs, with 1x1 convolution (+ batch norm) shortcuts for the operands that need one.

    Children are numbered like torchvision's `downsample` Sequential: conv `0`, batch norm `1`
    (then `2`, `3` for a second projected operand).
    """

    def __init__(self, projections, batchnorm=True):
        super().__init__()
        self.projected = [index for index, _, _, _ in projections]
        self.layers = len(projections)
        number = 0
        for _, cin, cout, stride in projections:
            self.add_module(str(number), nn.Conv2d(cin, cout, 1, stride=stride, bias=False))
            number += 1
            if batchnorm:
                self.add_module(str(number), nn.BatchNorm2d(cout))
                number += 1
        self.per_projection = 2 if batchnorm else 1

    def forward(self, *inputs):
        total = inputs[0]
        children = list(self.children())
        for position, x in enumerate(inputs[1:], start=1):
            if position in self.projected:
                k = self.projected.index(position) * self.per_projection
                for layer in children[k:k + self.per_projection]:
                    x = layer(x)
            total = total + x
        return total


class Scale(nn.Module):
    """Multiplies by a constant, or by one learnt scalar."""

    def __init__(self, value=1.0, learnable=False):
        super().__init__()
        self.learnable, self.value = learnable, float(value)
        if learnable:
            self.weight = nn.Parameter(torch.tensor(self.value))

    def forward(self, x):
        return x * self.weight if self.learnable else x * self.value


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels at each position of a [B, C, H, W] map, as torchvision's ConvNeXt
    LayerNorm2d: an nn.LayerNorm(C) on channels-last, so its state_dict is the same."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelLinear(nn.Linear):
    """nn.Linear over the channels at each position of a [B, C, H, W] map (a 1x1 convolution stored as
    nn.Linear, as ConvNeXt's blocks keep it), applied channels-last."""

    def forward(self, x):
        return nn.functional.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth (Huang et al. 2016): while training, zero the input with probability p,
    per sample ("row") or for the whole batch ("batch"), and divide the survivors by 1 - p; identity in eval.
    The noise is drawn as torchvision draws it, so one seed gives the same masks."""

    def __init__(self, p, mode="row"):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


def squash(s, eps=1e-8):
    """Sabour et al.'s non-linearity over a capsule's last dimension: length |s|^2 / (1 + |s|^2), same direction."""
    squared = (s * s).sum(dim=-1, keepdim=True)
    return squared / (1 + squared) * s / torch.sqrt(squared + eps)


class Capsules(nn.Module):
    """[B, C, H, W] -> [B, C/dim * H * W, dim]: channel groups of `dim` become capsules, map by map."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        _, c, h, w = x.shape
        return x.reshape(-1, c // self.dim, self.dim, h, w).permute(0, 1, 3, 4, 2).reshape(-1, c // self.dim * h * w,
                                                                                          self.dim)


class Squash(nn.Module):
    def forward(self, s):
        return squash(s)


class CapsuleRouting(nn.Module):
    """A capsule layer with dynamic routing (Sabour et al. 2017, Procedure 1).

    Each input capsule i predicts each output capsule j through its own matrix: u_hat[j|i] = W[i, j] u[i].
    Routing logits start at zero; each iteration couples i to the outputs by a softmax over j, sums the
    weighted predictions, squashes, and raises the logits by the agreement u_hat . v. The loop runs a fixed
    number of times, so tracing (ONNX export) unrolls it.
    """

    def __init__(self, in_capsules, in_dim, units, dim, iterations=3):
        super().__init__()
        self.iterations = iterations
        self.weight = nn.Parameter(torch.empty(in_capsules, units, dim, in_dim))
        nn.init.normal_(self.weight, std=0.01)  # as in the common CapsNet implementations; PyTorch has no default

    def forward(self, u):
        return self.route(u)[0]

    def route(self, u):
        """(output capsules [B, units, dim], coupling coefficients [B, in_capsules, units] of the last iteration)."""
        u_hat = torch.einsum("nkoi,bni->bnko", self.weight, u)
        logits = torch.zeros_like(u_hat[..., 0])
        for iteration in range(self.iterations):
            coupling = logits.softmax(dim=2)
            v = squash((coupling.unsqueeze(-1) * u_hat).sum(dim=1))
            if iteration + 1 < self.iterations:
                logits = logits + (u_hat * v.unsqueeze(1)).sum(dim=-1)
        return v, coupling


class CapsuleMask(nn.Module):
    """Zeroes every capsule but one: the labelled class's when labels are given (training), else the longest."""

    def forward(self, capsules, labels=None):
        index = capsules.norm(dim=-1).argmax(dim=-1) if labels is None else labels
        keep = torch.zeros_like(capsules[..., 0]).scatter(1, index.unsqueeze(1), 1.0)
        return capsules * keep.unsqueeze(-1)


class Reconstruction(nn.Module):
    """A decoder's output in the shape of the network's input, which it is trained to reproduce."""

    def forward(self, decoded, network_input):
        return decoded.reshape(network_input.shape)


class CapsuleLength(nn.Module):
    def forward(self, v):
        return torch.sqrt((v * v).sum(dim=-1))


class Ensemble(nn.Module):
    """The weighted mean of member networks' outputs: of their softmax probabilities, or of the outputs."""

    def __init__(self, merge="softmax_mean", weights=(1.0,)):
        super().__init__()
        self.merge = merge
        self.register_buffer("weights", torch.tensor(weights), persistent=False)

    def forward(self, *outputs):
        stacked = torch.stack(outputs)  # [members, B, K]
        if self.merge == "softmax_mean":
            stacked = stacked.softmax(dim=-1)
        return (stacked * self.weights.view(-1, 1, 1).to(stacked.dtype)).sum(dim=0)


def init_kaiming(module):
    """He initialisation for ReLU networks, torchvision's ResNet rule; biases start at zero."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def init_xavier(module):
    nn.init.xavier_uniform_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def init_zeros(module):
    nn.init.zeros_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def init_zero_gamma(module):
    """A batch norm whose scale starts at 0, so its residual branch starts as the identity."""
    nn.init.zeros_(module.weight)
    return module


class CenterCrop(nn.Module):
    """The centred window of a map, sized like a second value (U-Net's crop before concat). The offsets are
    fixed when the spec is compiled (torchvision's int(round((size - target) / 2))), since both sizes are."""

    def __init__(self, top, left, height, width):
        super().__init__()
        self.top, self.left, self.height, self.width = top, left, height, width

    def forward(self, x, like):
        return x[:, :, self.top:self.top + self.height, self.left:self.left + self.width]


class Reshape(nn.Module):
    """The same numbers in another per-sample shape; the batch dimension is kept."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Chunk(nn.Module):
    """The index-th of `chunks` equal channel slices, x.chunk(chunks, dim=1)[index]."""

    def __init__(self, chunks, index):
        super().__init__()
        self.chunks, self.index = chunks, index

    def forward(self, x):
        return x.chunk(self.chunks, dim=1)[self.index]


class ChannelShuffle(nn.Module):
    """torchvision's ShuffleNetV2 channel_shuffle: view as [groups, C/groups], transpose, flatten back.
    (nn.ChannelShuffle computes the same but does not export to ONNX.)"""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        batch, channels, height, width = x.size()
        x = x.view(batch, self.groups, channels // self.groups, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(batch, channels, height, width)


class Reduce(nn.Module):
    """torch.mean, torch.amax or torch.sum over `dims`, keeping them."""

    def __init__(self, reduction, dims):
        super().__init__()
        self.reduction, self.dims = reduction, tuple(dims)

    def forward(self, x):
        return getattr(torch, self.reduction)(x, dim=self.dims, keepdim=True)


class Slice(nn.Module):
    """`length` entries of dimension `dim` from `start` on (x.narrow): a slice of channels, rows or columns."""

    def __init__(self, dim, start, length):
        super().__init__()
        self.dim, self.start, self.length = dim, start, length

    def forward(self, x):
        return x.narrow(self.dim, self.start, self.length)


class Split(nn.Module):
    """The index-th piece of torch.split(x, sizes, dim=1): uneven channel slices."""

    def __init__(self, sizes, index):
        super().__init__()
        self.sizes, self.index = list(sizes), index

    def forward(self, x):
        return torch.split(x, self.sizes, dim=1)[self.index]


class PadChannels(nn.Module):
    """`before` channels of zeros in front and `after` behind (F.pad on dimension 1 of a map or a vector)."""

    def __init__(self, before, after):
        super().__init__()
        self.before, self.after = before, after

    def forward(self, x):
        # F.pad lists the last dimension first: the spatial ones, if any, are left alone
        return nn.functional.pad(x, [0, 0] * (x.ndim - 2) + [self.before, self.after])


class Sqrt(nn.Module):
    def forward(self, x):
        return torch.sqrt(x)


class Pow(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return torch.pow(x, self.p)


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class PNorm(nn.Module):
    """The p-norm over `dims`, kept: torch.linalg.vector_norm(x, p, dims, keepdim=True)."""

    def __init__(self, p, dims):
        super().__init__()
        self.p, self.dims = p, tuple(dims)

    def forward(self, x):
        return torch.linalg.vector_norm(x, self.p, dim=self.dims, keepdim=True)


class PositionSoftmax(nn.Module):
    """A softmax over all the positions of each channel of a [B, C, H, W] map (a spatial softmax)."""

    def forward(self, x):
        return x.flatten(2).softmax(dim=2).reshape(x.shape)


class GroupSoftmax(nn.Module):
    """A softmax within each of `groups` equal runs of channels. With `radix`, each group holds `radix` splits of
    equal size and the softmax runs across the splits, channel by channel; the result is ordered split first, then
    group, as ResNeSt's rSoftMax (timm's RadixSoftmax) returns it."""

    def __init__(self, groups, radix=None):
        super().__init__()
        self.groups, self.radix = groups, radix

    def forward(self, x):
        batch = x.shape[0]
        if self.radix is None:  # [B, groups, C / groups, H, W]: over the group's channels, at each position
            return x.reshape(batch, self.groups, -1, *x.shape[2:]).softmax(dim=2).reshape(x.shape)
        # timm's RadixSoftmax: [B, groups, radix, rest] -> [B, radix, groups, rest], over the radix
        split = x.reshape(batch, self.groups, self.radix, -1).transpose(1, 2)
        return split.softmax(dim=1).reshape(x.shape)


class StdConv2d(nn.Conv2d):
    """A convolution whose weights are standardised per output channel (mean 0, variance 1, eps added to the
    variance) at every call: timm's StdConv2d (Big Transfer), written out so that it exports to ONNX."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 eps=1e-6):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.eps = eps

    def standardised_weight(self):
        mean = self.weight.mean(dim=(1, 2, 3), keepdim=True)
        variance = self.weight.var(dim=(1, 2, 3), unbiased=False, keepdim=True)  # as F.batch_norm normalises
        return (self.weight - mean) / torch.sqrt(variance + self.eps)

    def forward(self, x):
        return nn.functional.conv2d(x, self.standardised_weight(), self.bias, self.stride, self.padding, self.dilation,
                                    self.groups)


class ScaledStdConv2d(StdConv2d):
    """timm's ScaledStdConv2d (NFNet, Brock et al. 2021): the standardised weight times a learnt per-channel `gain`
    and gamma / sqrt(fan-in). The state_dict is timm's: weight, bias, gain ([out, 1, 1, 1])."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 gamma=1.0, eps=1e-6, gain_init=1.0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, eps=eps)
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), gain_init))
        self.scale = gamma * self.weight[0].numel() ** -0.5

    def standardised_weight(self):
        return super().standardised_weight() * (self.gain * self.scale)


class Tokens(nn.Module):
    """A [B, C, H, W] map as a sequence of H*W tokens of C numbers, [B, H*W, C], row by row: torchvision's ViT
    `x.reshape(n, hidden_dim, h * w).permute(0, 2, 1)` after its patch-embedding convolution."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class SelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention over tokens [B, N, D]: nn.MultiheadAttention (the same parameters, in_proj_weight
    [3D, D] holding the query, key and value projections, in_proj_bias, out_proj) with the tokens as query, key
    and value, as torchvision's ViT calls it. Each head h of the `num_heads` takes D / num_heads of the projected
    numbers: softmax(q_h k_h^T / sqrt(D / num_heads)) v_h, the heads joined and projected by out_proj."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True):
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, batch_first=True)

    def forward(self, x):
        attended, _ = super().forward(x, x, x, need_weights=False)
        return attended


class Token(nn.Module):
    """The index-th token of each sample, [B, N, D] -> [B, D]: ViT's class token, x[:, 0]."""

    def __init__(self, index=0):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[:, self.index]
