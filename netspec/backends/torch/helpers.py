"""Copying helper layers into the generated file: the classes and functions of layers.py that the network
constructs, with those they use in turn, as their source text, in file order. The file then needs only torch.
"""

from __future__ import annotations

import ast as pyast
from pathlib import Path

from netspec.backends.torch import layers as torch_layers


def helper_sources(names: set[str]) -> list[str]:
    """The source of each named class or function of layers.py, and of those they use, in file order."""
    text = Path(torch_layers.__file__).read_text()
    tree = pyast.parse(text)
    defs = {n.name: n for n in tree.body if isinstance(n, (pyast.ClassDef, pyast.FunctionDef))}
    uses = {name: {n.id for n in pyast.walk(node) if isinstance(n, pyast.Name) and n.id in defs and n.id != name}
            for name, node in defs.items()}
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += uses[name]
    return [pyast.get_source_segment(text, node) for name, node in defs.items() if name in wanted]
