"""One instance's body: how each of its layers is constructed (`nn.Conv2d(...)`, a helper layer, an init function,
a bare parameter), which become attributes, and the forward's statements, or its children where the instance is
a straight chain that nn.Sequential can hold. Layers without state share one attribute per class where they are
alike, as torchvision's blocks share `self.relu`.
"""

from __future__ import annotations

from typing import Any

import torch

from netspec.backends.torch import layers as torch_layers
from netspec.backends.torch.expressions import PAIRS, Call, Frozen, same, strict
from netspec.backends.torch.module import build_layer, layers
from netspec.backends.torch.naming import free_attribute, is_identifier, local_name, symbol_name
from netspec.backends.torch.printing import constructor_parameters
from netspec.backends.torch.structure import LABELS, Instance, Scopes, Stmt, registered
from netspec.language.evaluate import Symbol
from netspec.ops.base import TorchFunction, TorchLayer, TorchParameter


class StatementBuilder:
    """Fills in each instance's statements and attributes, and records the helper layers they construct."""

    def __init__(self, scopes: Scopes):
        self.scopes = scopes
        self.impls = layers(scopes.graph)
        self.used_helpers: set[str] = set()  # names in layers.py that the generated file must copy
        self.stateless_cache: dict[Any, bool] = {}

    def _stateless(self, impl: TorchLayer) -> bool:
        key = (impl.cls, strict(tuple(sorted(impl.kwargs.items()))))
        if key not in self.stateless_cache:
            with torch.device("meta"):
                module = build_layer(TorchLayer(impl.cls, impl.kwargs), frozen=False)
            self.stateless_cache[key] = not module.state_dict()
        return self.stateless_cache[key]

    def construction(self, name: str) -> Any:
        """How a layer is constructed."""
        impl, node = self.impls[name], self.scopes.nodes[name]
        if isinstance(impl, TorchParameter):
            kwargs = (("requires_grad", False),) if node.args.frozen else ()
            value = (Call("torch.normal", (("size", tuple(impl.shape)),), (impl.init, impl.std)) if impl.std > 0
                     else Call("torch.full", (), (tuple(impl.shape), impl.init)))
            return Call("nn.Parameter", kwargs, (value,))
        if impl.cls in vars(torch_layers):
            self.used_helpers.add(impl.cls)
            callee = impl.cls
        else:
            callee = f"nn.{impl.cls}"
        kwargs = []
        for key, value in impl.kwargs.items():
            if (callee.startswith("nn.") and key in PAIRS and isinstance(value, tuple) and len(value) == 2
                    and same(list(value))):
                value = value[0]
            kwargs.append((key, value))
        order = [p.name for p in constructor_parameters(callee) or ()]
        kwargs.sort(key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        built: Any = Call(callee, tuple(kwargs))
        if impl.init != "default":
            self.used_helpers.add(f"init_{impl.init}")
            built = Call(f"init_{impl.init}", (), (built,))
        return Frozen(built) if node.args.frozen else built

    def build(self, inst: Instance) -> None:
        """The instance's statements and attributes (its children's constructions are known)."""
        scope = inst.path
        position = {value: k for k, value in enumerate(inst.inputs)}

        def ref(value: str) -> tuple[str, Any]:
            return ("in", position[value]) if value in position else ("v", local_name(scope, value))

        raw = []  # (ref, inputs, outputs, what, construction)
        combines: dict[str, str] = {}  # a bare parameter that is added or put in front rather than multiplied
        for kind, name in inst.items:
            local = local_name(scope, name)
            if kind == "scope":
                child = self.scopes.instances[name]
                child_outputs = tuple(local_name(scope, o) for o in child.outputs)
                raw.append((local, tuple(ref(v) for v in child.inputs), child_outputs, "scope", child.expr))
                continue
            impl = self.impls[name]
            inputs = tuple(ref(v) for v in self.scopes.node_inputs(name))
            if isinstance(impl, TorchFunction):
                raw.append((local, inputs, (local,), ("fn", impl.fn, tuple(sorted(impl.kwargs.items()))), None))
            elif isinstance(impl, TorchParameter):
                raw.append((local, inputs, (local,), "param", self.construction(name)))
                if impl.combine != "mul":
                    combines[local] = impl.combine
            else:
                raw.append((local, inputs, (local,), "stateless" if self._stateless(impl) else "module",
                            self.construction(name)))
        chain = (len(inst.inputs) == 1 and inst.inputs[0] != LABELS and raw
                 and all(what in ("module", "stateless", "scope") and len(outs) == 1 for _, _, outs, what, _ in raw)
                 and [o for _, _, o, _, _ in raw][-1] == tuple(local_name(scope, o) for o in inst.outputs)
                 and all(ins == ((("in", 0),) if k == 0 else (("v", raw[k - 1][2][0]),))
                         for k, (_, ins, _, _, _) in enumerate(raw)))
        # A chain is an nn.Sequential when its names are numbers, or when a layer with state has a name that
        # cannot be an attribute; otherwise a class with named attributes reads better. A dotted name is a path
        # through containers (`convs.0`), which only a class holds (writer.py).
        names = [local for local, *_ in raw]
        odd = any(not is_identifier(local) for local, _, _, what, _ in raw if what != "stateless")
        # nn.Sequential registers its children in the order they run: not for a body whose `register` differs
        in_order = registered(names, inst.registration) == names
        if chain and in_order and not any("." in n for n in names) and (all(n.isdecimal() for n in names) or odd):
            inst.kind, inst.names = "sequential", tuple(names)
            inst.children = [built for *_, built in raw]
            return
        taken = {local.split(".")[0] for local, _, _, what, _ in raw if what in ("module", "param", "scope")
                 or (what == "stateless" and (is_identifier(local) or "." in local))}
        stateless: dict[Any, str] = {}  # construction -> the attribute that holds it
        for local, inputs, outputs, what, built in raw:
            if isinstance(what, tuple):
                inst.stmts.append(Stmt(local, inputs, outputs, what))
                continue
            attr = local
            if what == "stateless" and "." not in local:  # a dotted one keeps its place in its container
                key = strict(built)
                if is_identifier(local):
                    stateless.setdefault(key, local)
                elif key in stateless:
                    attr = stateless[key]
                else:
                    attr = free_attribute(self._stateless_name(inst, local), taken)
                    taken.add(attr)
                    stateless[key] = attr
            inst.attrs.setdefault(attr, built)
            if what == "param":
                how = ("param", attr, combines[local]) if local in combines else ("param", attr)
            else:
                how = ("scope" if what == "scope" else "module", attr)
            inst.stmts.append(Stmt(local, inputs, outputs, how))

    def _stateless_name(self, inst: Instance, local: str) -> str:
        """An attribute name for a stateless layer whose own name cannot be one: the block parameter that chose
        it, else its operation."""
        op = self.scopes.nodes[f"{inst.path}.{local}" if inst.path else local].op
        for name, value in inst.arguments.items():  # `act()` with act=relu6 is `self.act`
            if isinstance(value, (Symbol, str)) and symbol_name(value) == op and is_identifier(name):
                return name
        return op
