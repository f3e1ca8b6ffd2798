"""The validated graph: what every pass and backend consumes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from netspec.ground.errors import Diagnostic, Span
from netspec.ops import OPS, OpArgs


class Node(BaseModel):
    """One layer instance. `name` is its scoped module path, e.g. `layer1.0.conv1`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    op: str
    args: SerializeAsAny[OpArgs]
    inputs: list[str]
    span: Span | None = Field(default=None, exclude=True)
    scope: tuple[str, ...] = ()  # enclosing scopes, outermost first, e.g. ("layer1", "layer1.0")

    # Filled by the passes (netspec.analysis.passes); None until then.
    shape: tuple[int, ...] | None = None
    params: int | None = None
    trainable: int | None = None
    buffers: int | None = None
    macs: int | None = None

    def renamed(self, name: str, inputs: list[str], scope: tuple[str, ...]) -> Node:
        """A copy under another name, reading other inputs (lowering's copy of a block instance): the fields are
        shared, all immutable but the three replaced. What pydantic's model_copy does, without its copying of
        each field, which was most of copying a 1,000-block network's layers."""
        copy = Node.__new__(Node)
        object.__setattr__(copy, "__dict__", {**self.__dict__, "name": name, "inputs": inputs, "scope": scope})
        object.__setattr__(copy, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        object.__setattr__(copy, "__pydantic_extra__", None)
        object.__setattr__(copy, "__pydantic_private__", None)
        return copy


class Scope(BaseModel):
    """A block instance or group: what `--depth` collapses into one row."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str
    kind: str  # a block's name, or "group"
    span: Span | None = Field(default=None, exclude=True)
    arguments: dict[str, Any] = Field(default_factory=dict, exclude=True)  # a block instance's evaluated arguments
    defaulted: tuple[str, ...] = Field(default=(), exclude=True)  # those it took from the block's defaults
    # its `register` statement: children (local names) the compiled module registers in this order (torch's)
    registration: tuple[str, ...] = ()


class Graph(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    file: str
    arguments: dict[str, Any] = {}
    input: str
    input_shape: tuple[int, ...]
    output: str
    aux_outputs: list[str] = []  # further outputs (auxiliary classifiers), returned while training
    output_names: list[str] = []  # the outputs as the spec's `output` statement names them, main first
    nodes: list[Node]
    scopes: dict[str, Scope] = {}
    registration: tuple[str, ...] = ()  # the network body's `register` statement (Scope.registration)
    recipe: dict[str, Any] = {}  # the spec's `train` settings (netspec.semantics.recipe.Recipe fields)
    diagnostics: list[Diagnostic] = Field(default_factory=list, exclude=True)  # errors and warnings, as found
    warnings: list[Diagnostic] = Field(default_factory=list, exclude=True)  # set by netspec.load: the spec checked

    def outputs(self) -> list[str]:
        """Every output: the main one, the auxiliary ones, then each reconstruction of the input."""
        return ([self.output] + self.aux_outputs
                + [n.name for n in self.nodes if OPS[n.op].reconstructs_input and n.name != self.output])

    def reconstructions(self) -> list[str]:
        return [n.name for n in self.nodes if OPS[n.op].reconstructs_input and n.name != self.output]

    def takes_labels(self) -> bool:
        """Whether a layer reads the class labels while training (the compiled forward's `labels=None`)."""
        return any(OPS[n.op].takes_labels for n in self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def validate(graph: Graph) -> None:
    """Structural invariants every pass must keep; used by the tests after each pass."""
    seen: set[str] = set()
    for node in graph.nodes:
        assert node.op in OPS, f"{node.name}: unknown op {node.op}"
        assert node.name not in seen, f"{node.name}: duplicate"
        assert isinstance(node.args, OPS[node.op].Args), f"{node.name}: args of the wrong type"
        for source in node.inputs:
            assert source in seen, f"{node.name}: input {source} is not defined before it"
        arity = OPS[node.op].inputs
        assert arity is None or len(node.inputs) == arity, f"{node.name}: {len(node.inputs)} inputs"
        seen.add(node.name)
    assert graph.output in seen, "output is not a node"
    assert all(name in seen for name in graph.aux_outputs), "an auxiliary output is not a node"
    assert graph.nodes and graph.nodes[0].name == graph.input, "the first node is the input"
