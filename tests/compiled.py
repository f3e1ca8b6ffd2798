"""A spec compiled and run on a seeded batch: what the op tests compare with their torch references."""

import torch

import netspec
from netspec.backends.torch import to_module


def run(path, seed=0, positive=False):
    """The graph of `path`, its compiled module, a seeded random batch of two (in (0.1, 1.1) with `positive`)
    and the module's output on it."""
    graph = netspec.load(path)
    module = to_module(graph, seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    shape = (2, *graph.input_shape)
    x = torch.rand(shape, generator=generator) + 0.1 if positive else torch.randn(shape, generator=generator)
    with torch.no_grad():
        return graph, module, x, module(x)
