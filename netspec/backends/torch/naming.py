"""Identifiers in the generated source: the names it must not take (Python's builtins and keywords, the names it
imports, nn.Module's and netspec's attributes), a scope-local name from a qualified one, a class name from a
group's label, and the first free variant of a wanted name.
"""

from __future__ import annotations

import builtins
import keyword

from netspec.backends.torch import layers as torch_layers
from netspec.language.evaluate import Symbol
from netspec.semantics.reserved import GRAPH_MODULE_ATTRIBUTES, MODULE_ATTRIBUTES, NETSPEC_ATTRIBUTES

# names a class, parameter or local variable must not take: the file imports or defines them, or Python does
RESERVED = frozenset({"self", "torch", "nn", "OrderedDict", "labels"} | set(dir(builtins)) | set(keyword.kwlist))
# attribute names that would hide a method or attribute of the module
ATTRIBUTE_CLASHES = MODULE_ATTRIBUTES | GRAPH_MODULE_ATTRIBUTES | NETSPEC_ATTRIBUTES


def is_identifier(name: str) -> bool:
    """Whether `name` can be written as a Python name (`self.name`, a parameter, a variable)."""
    return name.isidentifier() and not keyword.iskeyword(name)


def local_name(path: str, name: str) -> str:
    """`name` relative to the scope `path`: layer1.0.conv1 in layer1 is 0.conv1."""
    return name[len(path) + 1:] if path else name


def symbol_name(value: Symbol | str) -> str:
    """The word of a symbol argument (`act=relu6`), or the string itself."""
    return value.name if isinstance(value, Symbol) else value


def camel_case(label: str) -> str:
    """A group's class name from its label: trunk_output -> TrunkOutput, block1-0 -> Block1_0."""
    name = ""
    for part in [p for p in "".join(c if c.isalnum() else "_" for c in label).split("_") if p]:
        name += ("_" if name[-1:].isdigit() and part[0].isdigit() else "") + part[0].upper() + part[1:]
    return name if name and not name[0].isdigit() else "Group" + name


def free_attribute(base: str, taken: set[str]) -> str:
    """`base`, or base2, base3, ...: the first that is an identifier, not taken and no module attribute."""
    name, k = base, 2
    while name in taken or name in ATTRIBUTE_CLASHES or not is_identifier(name):
        name, k = f"{base}{k}", k + 1
    return name


def network_class_name(name: str) -> str:
    """The network's class in the generated file: its name, unless the file needs that name for something else
    (`network torch` would hide the torch module, `network __class__` Python's own class cell)."""
    if is_identifier(name) and name not in RESERVED and name not in vars(torch_layers) and not _dunder(name):
        return name
    return f"{name.strip('_') or 'network'}_network"


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def free_class_name(base: str, taken: set[str]) -> str:
    """The block's name; a second class of one block (its instances differ in layers) gets _2, and so on.
    The name is added to `taken`."""
    base = base.strip("_") if _dunder(base) else base  # `__class__` would be Python's class cell in each method
    base = base if is_identifier(base) else "Block"
    name, k = base, 2
    while name in RESERVED or name in vars(torch_layers) or name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name
