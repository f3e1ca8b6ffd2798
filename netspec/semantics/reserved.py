"""Names a layer label cannot take: the compiled network is a torch.fx GraphModule whose submodules are named
after the labels, so Python keywords and the attributes torch and netspec already use are refused by check."""

from __future__ import annotations

import keyword

# A label names a submodule of the compiled torch.nn.Module, so it cannot be a Python keyword or one of
# nn.Module's own attributes (add_module refuses those). tests/test_torch.py keeps this list equal to torch's.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile",
    "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer",
    "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia",
    "named_buffers", "named_children", "named_modules", "named_parameters", "parameters",
    "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule", "share_memory",
    "state_dict", "to", "to_empty", "train", "type", "xpu", "zero_grad"})

# The compiled network is a torch.fx GraphModule: its own attributes, an nn.Module's instance attribute
# `training`, and the two netspec sets, cannot name a top-level layer either (tests/test_torch.py keeps the
# list equal to torch's).
GRAPH_MODULE_ATTRIBUTES = frozenset({
    "add_submodule", "code", "delete_all_unused_submodules", "delete_submodule", "graph", "meta",
    "print_readable", "recompile", "shape_env", "to_folder", "training"})
NETSPEC_ATTRIBUTES = frozenset({"netspec_graph", "all_outputs"})

# A dotted label's parts name torch containers (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict),
# which refuse their own attributes as members: nn.Module's, `training`, and these (tests/test_torch.py keeps the
# list equal to torch's).
CONTAINER_ATTRIBUTES = MODULE_ATTRIBUTES | {"training"} | frozenset({
    "append", "clear", "copy", "extend", "fromkeys", "get", "insert", "items", "keys", "pop", "popitem", "setdefault",
    "update", "values"})


def reserved(name: str) -> str | None:
    """Why `name` cannot name a layer, if it cannot."""
    if keyword.iskeyword(name):
        return "it is a Python keyword"
    if name.startswith("_"):
        return "PyTorch keeps its modules' internals under names that start with '_'"
    if name in MODULE_ATTRIBUTES or name in GRAPH_MODULE_ATTRIBUTES:
        return "the compiled torch module already has an attribute of that name"
    if name in NETSPEC_ATTRIBUTES:
        return "netspec's compiled module uses that attribute"
    return None
