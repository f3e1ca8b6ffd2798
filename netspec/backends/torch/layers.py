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


# MaxViT

def relative_position_index(rows, cols):
    """For each pair of positions (i, j) of a rows x cols window, row by row, the row of the relative position bias
    table for the offset from j to i: (dy + rows - 1) * (2 cols - 1) + (dx + cols - 1); [N, N]. MaxViT's and Swin's."""
    coords = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (offsets[:, :, 0] + rows - 1) * (2 * cols - 1) + offsets[:, :, 1] + cols - 1


class PartitionAttention(nn.Module):
    """MaxViT's attention within partitions of a [B, C, H, W] map, torchvision's RelativePositionalMultiHeadAttention
    between its WindowPartition and WindowDepartition, with the same state_dict (relative_position_bias_table,
    relative_position_index, to_qkv, merge). partition="block": each size x size window of neighbouring positions
    attends within itself; "grid": each size x size grid of positions H/size and W/size apart (torchvision's "grid"
    partition with its axis swap). The map comes back [B, C, H, W]."""

    def __init__(self, channels, head_dim, size, partition="block"):
        super().__init__()
        self.heads, self.head_dim, self.size, self.partition = channels // head_dim, head_dim, size, partition
        self.scale = channels ** -0.5  # torchvision scales by the channels, not by head_dim
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.merge = nn.Linear(channels, channels)
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * size - 1) ** 2, self.heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(size, size))

    def attend(self, x):
        """Multi-head attention within each partition: [B, G, P, C] -> [B, G, P, C]."""
        batch, groups, positions, channels = x.shape
        q, k, v = (part.reshape(batch, groups, positions, self.heads, self.head_dim).transpose(2, 3)
                   for part in self.to_qkv(x).chunk(3, dim=-1))
        scores = q @ (k * self.scale).transpose(-2, -1)  # [B, G, heads, P, P]
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        scores = scores + bias.reshape(positions, positions, self.heads).permute(2, 0, 1)
        attended = scores.softmax(dim=-1) @ v
        return self.merge(attended.transpose(2, 3).reshape(batch, groups, positions, channels))

    def forward(self, x):
        batch, channels, height, width = x.shape
        size, rows, cols = self.size, height // self.size, width // self.size
        if self.partition == "block":  # [B, rows, cols, size, size, C]: the windows, each row by row
            x = x.reshape(batch, channels, rows, size, cols, size).permute(0, 2, 4, 3, 5, 1)
        else:  # [B, rows, cols, size, size, C]: the grids (one position of each window), each row by row
            x = x.reshape(batch, channels, size, rows, size, cols).permute(0, 3, 5, 2, 4, 1)
        x = self.attend(x.reshape(batch, rows * cols, size * size, channels))
        x = x.reshape(batch, rows, cols, size, size, channels)
        x = x.permute(0, 5, 1, 3, 2, 4) if self.partition == "block" else x.permute(0, 5, 3, 1, 4, 2)
        return x.reshape(batch, channels, height, width)


# Swin Transformer (v1 and v2)

class ShiftedWindowAttention(nn.Module):
    """torchvision's Swin ShiftedWindowAttention on a channels-first map [B, C, H, W]: the map (channels-last inside)
    is padded to a multiple of the window, rolled back by `shift_size`, cut into windows of N positions, and each
    window attends within itself, softmax(q k^T / sqrt(C / heads) + relative position bias + mask) v, per head;
    the same state_dict (relative_position_bias_table, relative_position_index, qkv, proj). The map's size is
    fixed when the spec is compiled, so the shift (0 where the window covers the map, as torchvision sets it) and
    the mask that keeps rolled-together edges apart are worked out once, here."""

    def __init__(self, dim, num_heads, window_size, shift_size, height, width, attention_dropout=0.0, dropout=0.0):
        super().__init__()
        self.num_heads, self.window_size, self.attention_dropout, self.dropout = num_heads, window_size, \
            attention_dropout, dropout
        self.height, self.width = height, width
        self.padded = [-(-height // window_size[0]) * window_size[0], -(-width // window_size[1]) * window_size[1]]
        self.shift_size = [0 if window >= side else shift for window, side, shift in
                           zip(window_size, self.padded, shift_size)]
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.define_relative_position_bias_table()
        # torchvision keeps Swin's flattened, MaxViT's not
        self.register_buffer("relative_position_index", relative_position_index(*window_size).flatten())
        self.register_buffer("attention_mask", self.shifted_windows_mask(), persistent=False)
        for linear in self.modules():  # torchvision's SwinTransformer starts every nn.Linear so
            if isinstance(linear, nn.Linear):
                nn.init.trunc_normal_(linear.weight, std=0.02)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    def define_relative_position_bias_table(self):
        offsets = (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(offsets, self.num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def shifted_windows_mask(self):
        """-100 between positions of a window that the roll brought together from different regions, else 0
        ([windows, N, N]); None when nothing is shifted."""
        if sum(self.shift_size) == 0:
            return None
        (pad_h, pad_w), (rows, cols), (shift_h, shift_w) = self.padded, self.window_size, self.shift_size
        regions = torch.zeros(pad_h, pad_w)
        count = 0
        for h in ((0, -rows), (-rows, -shift_h), (-shift_h, None)):
            for w in ((0, -cols), (-cols, -shift_w), (-shift_w, None)):
                regions[h[0]:h[1], w[0]:w[1]] = count
                count += 1
        regions = regions.view(pad_h // rows, rows, pad_w // cols, cols).permute(0, 2, 1, 3).reshape(-1, rows * cols)
        differ = regions.unsqueeze(1) - regions.unsqueeze(2)
        return differ.masked_fill(differ != 0, -100.0).masked_fill(differ == 0, 0.0)

    def relative_position_bias(self):
        """[1, heads, N, N]: each head's learnt bias for each pair's offset."""
        tokens = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index].view(tokens, tokens, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def qkv_bias(self):
        return self.qkv.bias

    def scores(self, q, k):
        head_dim = q.shape[-1]
        return (q * head_dim ** -0.5).matmul(k.transpose(-2, -1))

    def forward(self, x):
        channels = x.shape[1]
        (pad_h, pad_w), (rows, cols), (shift_h, shift_w) = self.padded, self.window_size, self.shift_size
        x = nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, 0, pad_w - self.width, 0, pad_h - self.height))
        if self.attention_mask is not None:
            x = torch.roll(x, shifts=(-shift_h, -shift_w), dims=(1, 2))
        windows = x.reshape(-1, pad_h // rows, rows, pad_w // cols, cols, channels).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, rows * cols, channels)  # [B * windows, N, C]
        x = self.attend(windows)
        x = x.reshape(-1, pad_h // rows, pad_w // cols, rows, cols, channels).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, pad_h, pad_w, channels)
        if self.attention_mask is not None:
            x = torch.roll(x, shifts=(shift_h, shift_w), dims=(1, 2))
        return x[:, :self.height, :self.width].permute(0, 3, 1, 2)

    def attend(self, windows):
        """Multi-head attention within each window, [B * windows, N, C] -> the same."""
        count, tokens, channels = windows.shape
        qkv = nn.functional.linear(windows, self.qkv.weight, self.qkv_bias())
        q, k, v = qkv.reshape(count, tokens, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        attention = self.scores(q, k) + self.relative_position_bias()
        if self.attention_mask is not None:
            windows_per_sample = self.attention_mask.shape[0]
            attention = attention.view(-1, windows_per_sample, self.num_heads, tokens, tokens)
            attention = attention + self.attention_mask.unsqueeze(1).unsqueeze(0)
            attention = attention.view(-1, self.num_heads, tokens, tokens)
        attention = nn.functional.dropout(attention.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        x = attention.matmul(v).transpose(1, 2).reshape(count, tokens, channels)
        return nn.functional.dropout(self.proj(x), p=self.dropout, training=self.training)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, window_size={self.window_size}, shift_size={self.shift_size}"


class ShiftedWindowAttentionV2(ShiftedWindowAttention):
    """torchvision's Swin v2 ShiftedWindowAttentionV2: cosine attention, cos(q, k) times a learnt per-head
    `logit_scale` (exp, at most 100), and a continuous position bias, 16 sigmoid(cpb_mlp(offset)), the offsets
    log-spaced in `relative_coords_table`; the key's bias is held at zero. The same state_dict as torchvision's."""

    def __init__(self, dim, num_heads, window_size, shift_size, height, width, attention_dropout=0.0, dropout=0.0):
        super().__init__(dim, num_heads, window_size, shift_size, height, width, attention_dropout, dropout)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        nn.init.trunc_normal_(self.cpb_mlp[0].weight, std=0.02)
        nn.init.zeros_(self.cpb_mlp[0].bias)
        nn.init.trunc_normal_(self.cpb_mlp[2].weight, std=0.02)

    def define_relative_position_bias_table(self):
        """Each offset (dy, dx) scaled to [-8, 8] by the window and log-spaced: sign * log2(|.| + 1) / 3."""
        rows, cols = self.window_size
        dy = torch.arange(-(rows - 1), rows, dtype=torch.float32) / (rows - 1) * 8
        dx = torch.arange(-(cols - 1), cols, dtype=torch.float32) / (cols - 1) * 8
        table = torch.stack(torch.meshgrid([dy, dx], indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
        self.register_buffer("relative_coords_table", torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0)

    def relative_position_bias(self):
        tokens = self.window_size[0] * self.window_size[1]
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index].view(tokens, tokens, -1).permute(2, 0, 1).contiguous()
        return 16 * torch.sigmoid(bias.unsqueeze(0))

    def qkv_bias(self):
        third = self.qkv.bias.numel() // 3
        return torch.cat([self.qkv.bias[:third], torch.zeros_like(self.qkv.bias[third:2 * third]),
                          self.qkv.bias[2 * third:]])

    def scores(self, q, k):
        cosine = nn.functional.normalize(q, dim=-1) @ nn.functional.normalize(k, dim=-1).transpose(-2, -1)
        return cosine * torch.clamp(self.logit_scale, max=4.605170185988092).exp()  # at most log(100)


class PatchMerging(nn.Module):
    """torchvision's Swin PatchMerging on a channels-first map: each 2x2 patch's positions (top-left, bottom-left,
    top-right, bottom-right) joined into 4C channels, the map padded to even sides first, then `norm` over the
    4C and `reduction` to 2C, channels-last inside; [B, C, H, W] -> [B, 2C, ceil(H/2), ceil(W/2)]."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(self.normalised(dim), eps=eps)
        nn.init.trunc_normal_(self.reduction.weight, std=0.02)

    def normalised(self, dim):
        return 4 * dim

    def merge(self, x):
        """[B, C, H, W] -> [B, ceil(H/2), ceil(W/2), 4C], channels-last."""
        height, width = x.shape[-2:]
        x = nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, 0, width % 2, 0, height % 2))
        return torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)

    def forward(self, x):
        return self.reduction(self.norm(self.merge(x))).permute(0, 3, 1, 2)


class PatchMergingV2(PatchMerging):
    """torchvision's Swin v2 PatchMergingV2: the reduction to 2C first, then the norm over the 2C."""

    def normalised(self, dim):
        return 2 * dim

    def forward(self, x):
        return self.norm(self.reduction(self.merge(x))).permute(0, 3, 1, 2)
