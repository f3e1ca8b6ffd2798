"""The PyTorch backend: a spec's graph as a torch.fx GraphModule (module.py, with torchvision's state_dict
layout), as standalone Python source (source.py, which lists the modules that write it), and the layers torch
lacks (layers.py)."""

from netspec.backends.torch.module import (StateDictMismatch, WeightsError, build_layer, load_foreign_state_dict,
                                          load_weights, to_module)
from netspec.backends.torch.source import to_python

__all__ = ["StateDictMismatch", "WeightsError", "build_layer", "load_foreign_state_dict", "load_weights", "to_module",
           "to_python"]
