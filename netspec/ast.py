"""The syntax tree: plain dataclasses, each node with the span it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from netspec.errors import Span

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


Expr = Literal | Name | ListExpr | Unary | Binary | Index


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
    label: str | None = None
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
    target: str
    chain: Chain
    span: Span = _span()


@dataclass
class Input:
    name: str
    shape: Expr | None
    span: Span = _span()


Stmt = Input | Assign | Chain


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
class Let:
    name: str
    value: Expr
    span: Span = _span()


@dataclass
class Setting:
    name: str
    value: Expr
    span: Span = _span()


@dataclass
class Train:
    """`train Network { key = value ... }`: a training recipe, validated by netspec.recipe."""

    network: str
    settings: list[Setting]
    span: Span = _span()


@dataclass
class Module:
    file: str
    items: list[Import | Let | Block | NetworkAlias | Train]
