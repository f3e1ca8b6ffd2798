"""The syntax tree: plain dataclasses, each node with the span it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from netspec.ground.errors import Span

# Spans are excluded from equality so that trees compare by meaning.
def _span():
    return field(default=None, compare=False, repr=False)


# Expressions ---------------------------------------------------------------

@dataclass
class Literal:
    value: int | float | bool | str
    span: Span = _span()


@dataclass
class Name:
    id: str
    span: Span = _span()


@dataclass
class ListExpr:
    items: list[Expr]
    span: Span = _span()


@dataclass
class Unary:
    op: str  # "-" or "not"
    operand: Expr
    span: Span = _span()


@dataclass
class Binary:
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass
class Index:
    target: Expr
    index: Expr
    span: Span = _span()


@dataclass
class Slice:
    target: Expr
    start: Expr | None
    stop: Expr | None
    span: Span = _span()


@dataclass
class Conditional:
    """`a if condition else b`."""

    condition: Expr
    then: Expr
    otherwise: Expr
    span: Span = _span()


@dataclass
class Function:
    """A built-in function applied to arguments: `max(a, b)`, `make_divisible(c * 0.75, 8)`."""

    name: str
    args: list[Argument]
    span: Span = _span()
    name_span: Span = _span()


Expr = Literal | Name | ListExpr | Unary | Binary | Index | Slice | Conditional | Function


@dataclass
class Template:
    """A label computed from expressions: `"denselayer{i + 1}"` is ["denselayer", <i + 1>]."""

    parts: list[str | Expr]
    span: Span = _span()


# Steps and statements ------------------------------------------------------

@dataclass
class Argument:
    name: str | None  # None for positional
    value: Expr
    span: Span = _span()


@dataclass
class Call:
    callee: str
    args: list[Argument]
    span: Span = _span()
    callee_span: Span = _span()


@dataclass
class Spread:
    call: Call
    span: Span = _span()


@dataclass
class Group:
    body: list[Stmt]
    span: Span = _span()


@dataclass
class Ref:
    name: str
    span: Span = _span()


@dataclass
class Step:
    core: Call | Spread | Group | Ref
    label: str | Template | None = None
    repeat: Expr | None = None
    condition: Expr | None = None
    span: Span = _span()
    label_span: Span | None = _span()


@dataclass
class Chain:
    steps: list[Step]
    span: Span = _span()


@dataclass
class Assign:
    """`y = chain`, or `hi, lo = chain` whose last step is a block with outputs `hi`'s and `lo`'s."""

    target: str
    chain: Chain
    span: Span = _span()
    more: list[str] = field(default_factory=list)  # the further names of `a, b = ...`

    @property
    def targets(self) -> list[str]:
        return [self.target, *self.more]


@dataclass
class Export:
    """`export a, b`: values bound in a group that the body around it may read after the group."""

    names: list[str]
    span: Span = _span()


@dataclass
class Register:
    """`register norm1, attn, mlp`: the order in which the compiled module registers these labelled children of
    the body (torch's `__init__` order), placed where the first of them would be; what runs is unchanged."""

    names: list[str]
    name_spans: list[Span] = field(default_factory=list, compare=False, repr=False)  # each name's, in order
    span: Span = _span()


@dataclass
class Input:
    name: str
    shape: Expr | None
    span: Span = _span()


@dataclass
class For:
    """`for name in values { ... }`: the body once per value, in the enclosing scope."""

    name: str
    values: Expr
    body: list[Stmt]
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class OutputItem:
    name: str
    condition: Expr | None = None
    span: Span = _span()


@dataclass
class Output:
    """`output main, aux2 if aux_logits, ...`: a network's outputs, the main one first."""

    items: list[OutputItem]
    span: Span = _span()


@dataclass
class Let:
    """`let name = expr`: a file's constant, or a body's local one (for the rest of the body)."""

    name: str
    value: Expr
    span: Span = _span()


Stmt = Input | Assign | Chain | For | Output | Let | Export | Register  # a Let in a body binds a local constant


# Top-level items -----------------------------------------------------------

@dataclass
class Param:
    name: str
    default: Expr | None
    span: Span = _span()


@dataclass
class Block:
    name: str
    params: list[Param]
    body: list[Stmt]
    is_network: bool = False
    span: Span = _span()


@dataclass
class NetworkAlias:
    """`network ResNet50(classes=1000) = ResNet(...)`: a network that is one block's body."""

    name: str
    params: list[Param]
    step: Step
    span: Span = _span()


@dataclass
class Import:
    path: str
    span: Span = _span()


@dataclass
class Setting:
    name: str
    value: Expr
    span: Span = _span()


@dataclass
class Train:
    """`train Network { key = value ... }`: a training recipe, validated by netspec.semantics.recipe."""

    network: str
    settings: list[Setting]
    span: Span = _span()


@dataclass
class Module:
    file: str
    items: list[Import | Let | Block | NetworkAlias | Train]
