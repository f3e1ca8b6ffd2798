"""Lowering: a loaded program's network instantiated as the graph IR, with names, blocks, arguments, repeats and
groups resolved (program.py loads the files; reserved.py names the labels a layer cannot take).

Over 500 lines for a reason: it is one class, `Lowering`, whose methods walk the AST together over one stack of
frames (a body runs statements, a statement a chain, a chain its steps, a step a call or a block instance,
which runs a body again); split across modules they would share all of that state."""

from __future__ import annotations

import dataclasses
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from netspec.language import ast
from netspec.ground.errors import Diagnostic, NetspecError, Related, Span, did_you_mean
from netspec.language.evaluate import (POISONED, Symbol, evaluate, handed_on, show, spend_as_before,
                                      step_limit, steps_spent)
from netspec.ir import Graph, Node, Scope
from netspec.ops import OPS
from netspec.ops.base import fmt, signature
from netspec.semantics.binder import NameScope
from netspec.semantics.program import Definitions, Program, select_network
from netspec.semantics.recipe import recipe_from_section
from netspec.semantics.reserved import reserved
from netspec.semantics.shapes import infer_node


# Instantiation ---------------------------------------------------------------

_POISON = None  # the value of anything whose definition had an error; its users stay silent

_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9][A-Za-z0-9_-]*)*")  # dots: module paths, convs.0

@dataclass
class Frame:
    """One body being instantiated: a network, a block instance or a group (a for loop's pass too). Its names are
    a binder NameScope: a group's sees its enclosing body's, a block instance's stops at its own body for values and
    reaches its home file's lets for parameters."""

    defs: Definitions
    prefix: str
    counter: list[int]  # shared with spread blocks, which continue their caller's numbering
    params: dict[str, Any]
    scope: tuple[str, ...]
    stack: tuple[str, ...]  # block names being instantiated, to catch recursion
    parent: Frame | None = None  # groups see their enclosing names
    value_spans: dict[str, Span] = field(default_factory=dict)
    kind: str = "block"  # "block" (a network or block instance), "group" or "loop" (one pass of a for loop)
    tensors: dict[str, Any] = field(default_factory=dict)  # a block instance's further inputs, by name
    outputs: list[str] | None = None  # a block's `output` statement: its values, the main one first
    labels: list[str] = field(default_factory=list)  # the labels of what the body made, its loops' included

    def body_frame(self) -> Frame:
        """The frame of the body a for loop's pass runs in (this frame, outside a loop)."""
        return self.parent.body_frame() if self.kind == "loop" and self.parent is not None else self

    def __post_init__(self):
        enclosing = self.parent.names if self.parent is not None else NameScope(params=self.defs.lets)
        self.names = NameScope(enclosing, block=self.parent is None, params=self.params)
        self.values: dict[str, str | None] = self.names.values  # a name's graph node (None: poisoned)

    def lookup_param(self, name: str) -> Any:
        return self.names.find_param(name)

    def param_names(self) -> list[str]:
        return self.names.param_names()

    def lookup_value(self, name: str) -> str | None:
        return self.names.find_value(name)

    def value_names(self) -> list[str]:
        return self.names.value_names()

    def child_name(self, label: str | None) -> str:
        local = label if label is not None else str(self.counter[0])
        # A numeric label sets the numbering, as torchvision's Sequentials with gaps need: `"2": ...` is
        # followed by 3, 4, ...
        self.counter[0] = int(label) + 1 if label is not None and label.isdecimal() else self.counter[0] + 1
        return f"{self.prefix}.{local}" if self.prefix else local

    def evaluate(self, expr: ast.Expr, allow_symbol: bool = False) -> Any:
        return handed_on(evaluate(expr, self.lookup_param, self.param_names, allow_symbol), expr)


# pydantic's wording names Python types; these name the spec's.
_FRIENDLY = {
    "tuple_type": "expected an integer or a pair [h, w]",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "float_type": "expected a number",
    "list_type": "expected a list",
}

_NO_INPUT = object()  # the incoming value of a network's root body: its `input` creates the graph input


def _hashable(value: Any) -> Any:
    """A cache key that tells 1, 1.0 and true apart, as validation does."""
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_hashable(v) for v in value))
    return (type(value).__name__, value)


@dataclass
class _Template:
    """What lowering one block instance made, to be copied for another with the same key: its layers (a slice of
    the graph's nodes), the scopes inside it, labels read as the chain's head, and what it gave back."""

    path: str
    scope: tuple[str, ...]  # its caller's scope
    inputs: dict[str, str]  # its main input and further inputs, as node names: "" for the main one
    nodes: list[Node]
    scopes: list[str]
    early_labels: list[str]
    instances: int
    steps: int  # evaluation steps (Limits.evaluation_steps)
    value: str
    outputs: list[str] | None


class Lowering:
    """One network's lowering: walks the AST over a stack of Frames and emits the graph's nodes and scopes."""

    def __init__(self, program: Program, reuse_instances: bool = True):
        self.program = program
        self.limits = program.limits
        self.instances = 0  # layers, blocks and groups instantiated: bounds the work, even of empty groups
        self.nodes: list[Node] = []
        self.node_spans: dict[str, Span] = {}
        self.scopes: dict[str, Scope] = {}
        self.errors: list[Diagnostic] = []
        self.reported: set[tuple] = set()
        self.shapes: dict[str, tuple[int, ...]] = {}  # each layer's output shape, as it is made
        self.symbol_frames: dict[Span | None, Frame] = {}  # where each bare word was written
        self.block_outputs: tuple[Any, list[str]] | None = None  # the last block instance's main value and outputs
        # Labels on a chain's first layer when the chain goes on: reading one by name is refused
        # (`enc2: maxpool(2) -> DoubleConv(64)` then `concat(enc2)`)
        self.early_labels: dict[str, tuple[str, Span, ast.Chain, int]] = {}
        self.input_name: str | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.validated: dict[tuple, Any] = {}
        self.declared_outputs: list[str] | None = None  # from the network's `output` statement
        self.calls: list[tuple[str, Span | None]] = []  # the block instances being lowered, outermost first
        self.output_names: list[str] = []  # the same, as the statement names them
        self.root_registration: tuple[str, ...] = ()  # the network body's `register` statement, checked
        self.registered: dict[str, Span] = {}  # each body's path ("" the network's) -> its `register` statement
        self.scope_order: list[str] = []  # self.scopes' paths in the order made, to find an instance's own
        # Block instances already lowered, by what decides their layers (_instance_key): a network of 1,000
        # identical residual blocks lowers one and copies it 999 times, renamed (_replay). Off to compare.
        self.templates: dict[tuple, _Template] | None = {} if reuse_instances else None

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None, notes=(),
              calls: bool = True) -> None:
        self._report([Diagnostic(code, message, span, hint, tuple(notes))], calls)

    def _report(self, diagnostics: list[Diagnostic], with_calls: bool = True) -> None:
        """Once per place: a mistake inside a block repeated 1,000 times is one mistake, reported with the
        calls that led to its first instance."""
        for d in diagnostics:
            key = (d.code, d.span, d.message)
            if key not in self.reported:
                self.reported.add(key)
                # innermost first, each call site once (a recursive block's calls repeat one site)
                calls = list(dict.fromkeys((block, span) for block, span in reversed(self.calls)
                                           if span is not None and span != d.span)) if with_calls else []
                if calls:
                    notes = tuple(f"in block {block} called at {span}" for block, span in calls)
                    related = tuple(Related(span, f"in block {block} called here") for block, span in calls)
                    d = dataclasses.replace(d, notes=d.notes + notes, related=d.related + related)
                self.errors.append(d)

    # network entry -----------------------------------------------------------

    def network(self, name: str, overrides: dict[str, Any]) -> Graph:
        defs = self.program.root
        item = defs.blocks[name]
        if keyword.iskeyword(name):  # it becomes the compiled module's class name
            self.error("NS203", f"'{name}' cannot name a network: it is a Python keyword", item.span)
        frame = Frame(defs, "", [0], {}, (), (name,))
        self._bind_network_params(item, overrides, frame)
        arguments = dict(frame.params)  # before the body's lets join them
        if isinstance(item, ast.NetworkAlias):
            output = self._run_step(item.step, frame, _NO_INPUT, root_alias=True)
        else:
            output = self._run_body(item.body, frame, _NO_INPUT, item)
        if self.input_name is None and not self.errors:
            self.error("NS210", f"network '{name}' declares no input", item.span,
                       "start its body with an input shape, e.g. `input x: [3, 224, 224]`")
        aux_outputs: list[str] = []
        output_names = self.output_names
        if self.declared_outputs:
            output, *aux_outputs = self.declared_outputs
        if self.errors:  # keep what was built, so the shape pass can still report independent mistakes
            output = self.nodes[-1].name if self.nodes else ""
            aux_outputs, output_names = [], []
        recipe, mistakes = recipe_from_section(defs.trains.get(name), defs.lets)
        self.errors.extend(mistakes)
        return Graph(name=name, file=defs.file, arguments=arguments, input=self.input_name or "",
                     input_shape=self.input_shape or (), output=output, aux_outputs=aux_outputs,
                     output_names=output_names, nodes=self.nodes, registration=self.root_registration,
                     scopes=self.scopes, recipe=recipe, diagnostics=self.errors)

    def _bind_network_params(self, item, overrides: dict[str, Any], frame: Frame) -> None:
        declared = {p.name for p in item.params}
        for key in overrides:
            if key not in declared:
                hint = did_you_mean(key, declared) or (f"it takes {', '.join(sorted(declared))}" if declared
                                                       else "it takes no parameters")
                self.error("NS202", f"network '{item.name}' has no parameter '{key}'", item.span, hint)
        for param in item.params:
            if param.name in overrides:
                frame.params[param.name] = overrides[param.name]
            elif param.default is not None:
                frame.params[param.name] = self._eval(frame, param.default, allow_symbol=True)
            else:
                self.error("NS204", f"network parameter '{param.name}' has no default and was not set",
                           param.span, f"pass it with --set {param.name}=VALUE")

    # bodies and statements --------------------------------------------------

    def _run_body(self, body: list[ast.Stmt], frame: Frame, current, owner: ast.Block | None,
                  loop: bool = False) -> Any:
        inputs = leading_inputs(body)
        register: ast.Register | None = None
        for position, stmt in enumerate(body):
            if isinstance(stmt, ast.Input):
                if position >= inputs or owner is None:
                    self.error("NS203", "`input` statements come first in a block or network", stmt.span,
                                "declare every input at the top of the body, the main one first")
                    continue
                if position == 0:
                    current = self._declare_input(stmt, frame, current, owner)
                else:
                    self._declare_further_input(stmt, frame, owner)
            elif isinstance(stmt, ast.Assign):
                current = self._run_chain(stmt.chain, frame, current)
                self._bind_assignment(stmt, frame, current)
            elif isinstance(stmt, ast.For):
                current = self._run_for(stmt, frame, current)
            elif isinstance(stmt, ast.Output):
                self._declare_outputs(stmt, frame, owner, position == len(body) - 1)
            elif isinstance(stmt, ast.Let):
                self._let(stmt, frame)
            elif isinstance(stmt, ast.Export):
                self._export(stmt, frame)
            elif isinstance(stmt, ast.Register):
                if loop:
                    self.error("NS203", "`register` belongs in a block's, network's or group's body, not in a for "
                                        "loop", stmt.span, "write it once, after the loop, in the body around it")
                elif register is not None:
                    self.error("NS203", "a body has one `register` statement", stmt.span,
                               f"list every label in the first one (line {register.span.line})")
                else:
                    register = stmt
            else:
                current = self._run_chain(stmt, frame, current)
        if register is not None:  # at the end: it may name labels made after it
            self._register(register, frame, body)
        if current is _NO_INPUT and not loop:
            return _POISON
        return current

    def _let(self, stmt: ast.Let, frame: Frame) -> None:
        """`let hidden = c * t` in a body: a constant for the rest of the body and what it contains."""
        if stmt.name in frame.params:
            self.error("NS206", f"'{stmt.name}' is already bound in this body", stmt.span,
                       "choose another name for the let")
            return
        value = self._eval(frame, stmt.value)
        frame.params[stmt.name] = POISONED if value is _POISON else value

    def _export(self, stmt: ast.Export, frame: Frame) -> None:
        if frame.kind != "group" or frame.parent is None:
            self.error("NS203", "`export` belongs in a group: it makes names bound inside `{ ... }` readable after it",
                       stmt.span, "a block gives values out with `output a, b`; a network's names are all readable")
            return
        for name in stmt.names:
            if name not in frame.values:
                self.error("NS205", f"'{name}' is not bound in this group, so it cannot be exported", stmt.span,
                           did_you_mean(name, frame.values) or self._names_hint(frame))
                continue
            self._bind(frame.parent, name, frame.values[name], stmt.span)

    def _register(self, stmt: ast.Register, frame: Frame, body: list[ast.Stmt]) -> None:
        """Check `register a, b` against the labels the body made and record the order for the torch backend. A
        label written in the body but not made here (its step's condition was false) is left out."""
        first = self.registered.setdefault(frame.prefix, stmt.span)
        if first != stmt.span:  # a spread block's body is its caller's: two statements would order one body
            self.error("NS203", "a body has one `register` statement, and this one orders a body ordered already",
                       stmt.span, "list every label in one of them", notes=(f"the other is at {first}",))
            return
        made, written = frame.labels, labels_written(body)
        order: list[str] = []
        listed: set[str] = set()
        for name, span in zip(stmt.names, stmt.name_spans):
            if name in listed:
                self.error("NS203", f"'{name}' is listed twice in `register`", span, "list each label once")
                continue
            listed.add(name)
            if name in made:
                order.append(name)
            elif name in written:
                continue
            elif name in frame.values:
                self.error("NS203", f"'{name}' names a value, not a labelled layer: `register` orders the layers, "
                                    "groups and block instances this body makes by their labels", span,
                           did_you_mean(name, made) or f"label the layer that makes it: `{name}: ...`")
            else:
                self.error("NS205", f"'{name}' is not a label of this body", span,
                           did_you_mean(name, made) or (f"its labels are {', '.join(made)}" if made else
                                                        f"label a layer of this body (`{name}: ...`) to register it"))
        if frame.prefix:
            self.scopes[frame.prefix].registration = tuple(order)
        else:
            self.root_registration = tuple(order)

    def _bind_assignment(self, stmt: ast.Assign, frame: Frame, current) -> None:
        if not stmt.more:
            self._bind(frame, stmt.target, current, stmt.span)
            return
        targets = stmt.targets
        last = stmt.chain.steps[-1].core
        outputs = self.block_outputs[1] if self.block_outputs and self.block_outputs[0] == current else None
        if current is _POISON:
            values = [_POISON] * len(targets)
        elif outputs is None or isinstance(last, ast.Ref):
            self.error("NS203", f"`{', '.join(targets)} = ...` binds {len(targets)} values, but the chain ends in "
                                "a layer that gives one", stmt.chain.steps[-1].span,
                       "end the chain with a block that lists its outputs (`output a, b`), or bind one name")
            values = [_POISON] * len(targets)
        elif len(outputs) != len(targets):
            self.error("NS203", f"`{', '.join(targets)} = ...` binds {len(targets)} values, but the block gives "
                                f"{len(outputs)}", stmt.span, f"bind {len(outputs)} names, one for each output")
            values = [_POISON] * len(targets)
        else:
            values = outputs
        for name, value in zip(targets, values):
            self._bind(frame, name, value, stmt.span)

    def _run_for(self, stmt: ast.For, frame: Frame, current):
        values = self._eval(frame, stmt.values)
        if values is _POISON:
            return _POISON
        if not isinstance(values, list):
            self.error("NS203", f"a for loop runs over a list, got {show(values)}", stmt.values.span,
                       "loop over range(n) or a list such as [64, 128]")
            return _POISON
        for value in values:
            self.instances += 1  # an empty body still costs a pass: bound it with the layers
            if self.instances > self.limits.instances:
                self.error("NS213", f"the network instantiates more than {self.limits.instances:,} layers, blocks "
                                    "and groups", stmt.span)
                raise NetspecError(self.errors)
            # One frame per pass: the loop variable and the names bound inside are the pass's own, while the
            # layers it makes are numbered and scoped as if written out in the enclosing body.
            iteration = Frame(frame.defs, frame.prefix, frame.counter, {stmt.name: value}, frame.scope, frame.stack,
                              parent=frame, kind="loop")
            current = self._run_body(stmt.body, iteration, current, None, loop=True)
        return current

    def _declare_outputs(self, stmt: ast.Output, frame: Frame, owner, last: bool) -> None:
        if owner is None:
            self.error("NS203", "`output` lists a block's or network's outputs: it belongs in its own body, not in "
                                "a group or loop", stmt.span)
            return
        nested = bool(frame.stack[1:])  # a block instance, or a network called from another
        if not last or (not nested and self.declared_outputs is not None):
            kind = "network" if owner.is_network else "block"
            self.error("NS203", f"`output` must be the last statement of the {kind}", stmt.span)
            names = None
        else:
            names = self._output_values(stmt, frame, nested)
        if nested:  # after a mistake here, no output: what the caller binds from it stays silent
            frame.outputs = names if names is not None else []
        elif names is not None:
            self.declared_outputs = names

    def _output_values(self, stmt: ast.Output, frame: Frame, nested: bool) -> list[str] | None:
        names: list[str] = []
        for item in stmt.items:
            if item.condition is not None:
                keep = self._eval(frame, item.condition)
                if keep is _POISON:
                    return None
                if not keep:
                    continue
            value = self._reference(frame, item.name, item.span)
            if value is _POISON:
                return None
            if value in names:
                self.error("NS206", f"'{item.name}' is listed as an output twice", item.span)
                return None
            names.append(value)
            if not nested:
                self.output_names.append(item.name)
        return names

    def _declare_input(self, stmt: ast.Input, frame: Frame, current, owner: ast.Block):
        if current is not _NO_INPUT:  # a block's: bind the sizes its shape names, check the rest
            self._match_input_shape(stmt, frame, current, owner)
            self._bind(frame, stmt.name, current, stmt.span)
            return current
        shape = None
        if stmt.shape is not None:
            value = self._eval(frame, stmt.shape)
            if value is not _POISON:
                shape = self._shape_value(value, stmt.shape.span)
        if current is _NO_INPUT:
            if stmt.shape is None:
                self.error("NS210", f"'{owner.name}' is used as a network but its input has no shape",
                           stmt.span, f"declare it: `input {stmt.name}: [C, H, W]`")
                return _POISON
            if shape is None:
                return _POISON
            self.input_name, self.input_shape = stmt.name, shape
            name = f"{frame.prefix}.{stmt.name}" if frame.prefix else stmt.name
            self._emit(name, "input", {"shape": shape}, [], stmt.span, frame)
            current = name
        self._bind(frame, stmt.name, current, stmt.span)
        return current

    def _declare_further_input(self, stmt: ast.Input, frame: Frame, owner: ast.Block) -> None:
        """A block's second, third... input: the value its caller passed by the input's name."""
        if stmt.name not in frame.tensors:  # a network's, or a call that did not pass it (reported there)
            if not frame.stack[1:]:
                self.error("NS203", f"network '{owner.name}' takes one input; '{stmt.name}' is a second", stmt.span,
                           "a network's input is its first statement; further tensors are for blocks")
            self._bind(frame, stmt.name, _POISON, stmt.span)
            return
        value = frame.tensors[stmt.name]
        self._match_input_shape(stmt, frame, value, owner)
        self._bind(frame, stmt.name, value, stmt.span)

    def _match_input_shape(self, stmt: ast.Input, frame: Frame, value, owner: ast.Block) -> None:
        """`input x: [c, h, w]`: each name not bound yet is bound to that size of what the block receives; every
        other item is an expression the size must equal (NS306)."""
        if stmt.shape is None:
            return
        got = self.shapes.get(value) if value not in (_POISON, _NO_INPUT) else None
        items = stmt.shape.items if isinstance(stmt.shape, ast.ListExpr) else None
        if items is None:  # a whole expression, `input x: SHAPE`
            expected = self._eval(frame, stmt.shape)
            if expected is not _POISON and self._shape_value(expected, stmt.shape.span) is not None \
                    and got is not None and tuple(expected) != got:
                self._input_mismatch(stmt, owner, tuple(expected), got)
            return
        if got is not None and len(got) != len(items):
            self.error("NS306", f"block '{owner.name}' declares a rank-{len(items)} input but receives {fmt(got)}",
                       stmt.shape.span, "declare as many sizes as the value it receives has")
            got = None
        expected: list[Any] = []
        for position, item in enumerate(items):
            if isinstance(item, ast.Name) and item.id not in frame.params and self._unbound(frame, item.id):
                size = got[position] if got is not None else POISONED
                frame.params[item.id] = size
                expected.append(size)
                continue
            size = self._eval(frame, item)
            if size is _POISON:
                return
            expected.append(size)
        if got is None:
            return
        if self._shape_value(expected, stmt.shape.span) is not None and tuple(expected) != got:
            self._input_mismatch(stmt, owner, tuple(expected), got)

    def _unbound(self, frame: Frame, name: str) -> bool:
        try:
            frame.lookup_param(name)
            return False
        except KeyError:
            return True

    def _input_mismatch(self, stmt: ast.Input, owner: ast.Block, expected: tuple, got: tuple) -> None:
        self.error("NS306", f"block '{owner.name}' declares input {fmt(expected)} but receives {fmt(got)}",
                   stmt.span, "change the declared shape, or the layers before the block")

    def _shape_value(self, value, span: Span) -> tuple[int, ...] | None:
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in value):
            self.error("NS203", f"an input shape is a list of integers such as [3, 224, 224], got {show(value)}",
                       span)
            return None
        if any(v <= 0 for v in value):
            self.error("NS303", f"input shape {show(value)} has a non-positive dimension", span)
            return None
        if any(v > 2**31 for v in value):
            self.error("NS213", f"input shape {show(value)} has a dimension over 2^31", span)
            return None
        return tuple(value)

    def _bind(self, frame: Frame, name: str, value, span: Span) -> None:
        if name in frame.values:
            self.error("NS206", f"duplicate name '{name}'", span, notes=(f"first bound at {frame.value_spans[name]}",))
            return
        frame.values[name] = value
        frame.value_spans[name] = span

    def _run_chain(self, chain: ast.Chain, frame: Frame, current) -> Any:
        layers = [i for i, step in enumerate(chain.steps) if not isinstance(step.core, ast.Ref)]
        if len(layers) > 1:
            self._refuse_ambiguous_modifiers(chain, layers)
        for position, step in enumerate(chain.steps):
            current = self._run_step(step, frame, current)
            # a label at the head of a chain that goes on reads as the chain's name; one in the middle does not
            if step.label is not None and position == layers[0] < layers[-1] and current is not _POISON:
                self.early_labels.setdefault(current, (step.label if isinstance(step.label, str) else "",
                                                       step.label_span or step.span, chain, position))
        return current

    def _refuse_ambiguous_modifiers(self, chain: ast.Chain, layers: list[int]) -> None:
        """`a -> b -> c if cond` and `a -> b * 3` read as if the modifier took the whole chain; it would take only
        the last layer. Both readings are refused, with the two ways to write what was meant (docs/language.md)."""
        for position in layers:
            step = chain.steps[position]
            if isinstance(step.core, ast.Group):  # `{ a -> b } if c`: the braces say what the modifier takes
                continue
            for modifier, expr in (("if", step.condition), ("*", step.repeat)):
                if expr is None:
                    continue
                layer = self._text(step.core.span)
                whole = self._text(Span(chain.span.file, chain.span.line, chain.span.col, step.core.span.end_line,
                                        step.core.span.end_col))
                written = f"{modifier} {self._text(expr.span)}"
                meaning = "is conditional" if modifier == "if" else "is repeated"
                self.error("NS215", f"`{written}` here would take only {layer}, not the chain before it", expr.span,
                           f"write `{{ {whole} }} {written}` if the whole chain {meaning}, or put "
                           f"`{layer} {written}` on a line of its own if only {layer} {meaning}",
                           notes=("a modifier on a chain of layers is ambiguous, so netspec refuses it",))

    def _text(self, span: Span) -> str:
        """The source text of a span on one line, as a message quotes it."""
        line = self.program.sources.line(span.file, span.line) or ""
        end = span.end_col - 1 if span.end_line == span.line else len(line)
        text = line[span.col - 1:end].strip()
        return text if len(text) <= 60 else text[:57] + "..."

    # steps --------------------------------------------------------------------

    def _run_step(self, step: ast.Step, frame: Frame, current, root_alias: bool = False) -> Any:
        if step.condition is not None and not self._eval(frame, step.condition):
            return current
        if isinstance(step.label, ast.Template):
            label = self._fill_label(step.label, frame)
            if label is None:
                return _POISON
            step = dataclasses.replace(step, label=label)
        if step.label is not None and not _LABEL.fullmatch(step.label):
            self.error("NS203", f"'{step.label}' cannot name a layer: a label is letters, digits, '_' and '-', in "
                                "parts joined by single dots, each part after a dot starting with a letter or digit",
                       step.label_span, "e.g. \"block1-0\", \"denselayer{i + 1}\" or \"stage2.0.branches.1\"")
            return _POISON
        if step.label is not None and reserved(step.label):
            self.error("NS203", f"'{step.label}' cannot name a layer: {reserved(step.label)}", step.label_span,
                       f"choose another label, e.g. '{step.label.lstrip('_') or 'layer'}_'")
            return _POISON
        if step.label is not None and step.label in frame.values:
            self.error("NS206", f"duplicate name '{step.label}'", step.label_span,
                       notes=(f"first bound at {frame.value_spans[step.label]}",))
            return _POISON
        count = 1
        if step.repeat is not None:
            count = self._eval(frame, step.repeat)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                if count is not _POISON:
                    self.error("NS203", f"a repeat count is a non-negative integer, got {show(count)}",
                               step.repeat.span)
                return _POISON
            if count > self.limits.repeat:
                self.error("NS213", f"repeat count {count:,} exceeds the limit of {self.limits.repeat:,}",
                           step.repeat.span)
                return _POISON
            if step.label is not None and not isinstance(step.core, ast.Ref):
                group = self._group(frame, step.label, step.span)
                for _ in range(count):
                    current = self._run_core(step.core, None, group, current, step)
                self._bind(frame, step.label, current, step.label_span or step.span)
                frame.body_frame().labels.append(step.label)
                return current
        for _ in range(count):
            current = self._run_core(step.core, step.label, frame, current, step, root_alias)
        if step.label is not None:
            self._bind(frame, step.label, current, step.label_span or step.span)
            if not isinstance(step.core, ast.Ref) and current is not _POISON:
                frame.body_frame().labels.append(step.label)
        return current

    def _fill_label(self, template: ast.Template, frame: Frame) -> str | None:
        text = []
        for part in template.parts:
            if isinstance(part, str):
                text.append(part)
                continue
            value = self._eval(frame, part)
            if value is _POISON:
                return None
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                self.error("NS203", f"a label's {{expression}} must give an integer or a string, got {show(value)}",
                           part.span)
                return None
            text.append(str(value))
        return "".join(text)

    def _run_core(self, core, label: str | None, frame: Frame, current, step: ast.Step, root_alias=False):
        self.instances += 1
        if self.instances > self.limits.instances:
            self.errors.append(Diagnostic(
                "NS213", f"the network instantiates more than {self.limits.instances:,} layers, blocks and groups",
                step.span, "raise the ceiling with --max-layers N if the network is really this large",
                (f"inside {' -> '.join(frame.stack)}",)))
            raise NetspecError(self.errors)
        if isinstance(core, ast.Ref):
            if label is not None:
                self.error("NS203", f"the label '{label}' names a reference to '{core.name}', not a layer",
                           step.label_span, f"put the label on the layer: `{core.name} -> {label}: ...`")
                return _POISON
            return self._reference(frame, core.name, core.span)
        if isinstance(core, ast.Group):
            group = self._group(frame, label, core.span)
            return self._run_body(core.body, group, current, None)
        spread = isinstance(core, ast.Spread) or root_alias
        call = core.call if isinstance(core, ast.Spread) else core
        callee, home = call.callee, frame.defs
        try:
            bound = frame.lookup_param(callee)
            if isinstance(bound, (Symbol, str)):  # a parameter naming a layer or block: `act()` with act=relu
                callee = bound.name if isinstance(bound, Symbol) else bound
                if isinstance(bound, Symbol) and bound.home is not None:
                    home = bound.home  # the file where the block's name was passed, not the callee's
        except KeyError:
            pass
        if callee in OPS and OPS[callee].inputs != 0:
            return self._call_op(callee, call, label, frame, current)
        block = home.blocks.get(callee)
        if block is None:
            known = [n for n, op in OPS.items() if op.inputs != 0] + list(frame.defs.blocks)
            hint = did_you_mean(callee, known) or "see `netspec ops` for the layers netspec knows"
            tensors = [arg.value.id for arg in call.args if isinstance(arg.value, ast.Name)
                       and self._is_tensor(frame, Symbol(arg.value.id))]
            notes = (f"'{tensors[0]}' is a tensor: a layer or block is not called on its input as in Keras; the "
                     f"chain passes it: `{tensors[0]} -> {callee}(...)`",) if tensors else ()
            self.error("NS201", f"unknown layer or block '{callee}'", call.callee_span, hint, notes)
            for arg in call.args:  # still report mistakes inside the arguments
                self._eval(frame, arg.value, allow_symbol=True)
            return _POISON
        return self._call_block(block, call, label, frame, current, spread, home.homes[block.name])

    def _group(self, frame: Frame, label: str | None, span: Span) -> Frame:
        path = frame.child_name(label)
        self._add_scope(path, "group", span)
        return Frame(frame.defs, path, [0], {}, frame.scope + (path,), frame.stack, parent=frame, kind="group")

    def _reference(self, frame: Frame, name: str, span: Span):
        try:
            value = frame.lookup_value(name)
        except KeyError:
            if name in frame.param_names():
                self.error("NS205", f"'{name}' is a number (a parameter, loop variable or let), not a value the "
                                    "network computes", span,
                           did_you_mean(name, frame.value_names()) or self._names_hint(frame))
                return _POISON
            self.error("NS205", f"undefined name '{name}'", span,
                       did_you_mean(name, frame.value_names()) or self._names_hint(frame))
            return _POISON
        early = self.early_labels.get(value)
        if early is not None and early[0] == name:
            self._refuse_early_label(name, early, span)
            return _POISON
        return value

    def _refuse_early_label(self, name: str, early, read_at: Span) -> None:
        _, label_span, chain, position = early
        first = chain.steps[position]
        layer = self._text(first.core.span)
        rest = chain.steps[position + 1:]
        last = self._text(rest[-1].core.span) if rest else layer
        whole = self._text(Span(first.core.span.file, first.core.span.line, first.core.span.col,
                                rest[-1].span.end_line, rest[-1].span.end_col)) if rest else layer
        self.error("NS215", f"'{name}' names the output of {layer}, but its chain goes on to {last}", label_span,
                   f"to name the chain's result write `{name} = {whole}`; to name {layer}'s output, end the chain "
                   f"after it (`{name}: {layer}` on a line of its own)",
                   notes=(f"'{name}' is read at {read_at}",))

    @staticmethod
    def _names_hint(frame: Frame) -> str | None:
        names = frame.value_names()
        return f"names defined here: {', '.join(names)}" if names else None

    # ops ------------------------------------------------------------------------

    def _call_op(self, op_name: str, call: ast.Call, label: str | None, frame: Frame, current):
        op = OPS[op_name]
        inputs = [current]
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        positional = list(op.positional)
        ok = True
        for arg in call.args:
            if arg.name is None:
                if op.inputs is None:  # merges take the names of the values they join
                    if isinstance(arg.value, ast.Name):
                        inputs.append(self._reference(frame, arg.value.id, arg.value.span))
                    else:
                        self.error("NS203", f"{op_name} takes the names of values to join, got an expression",
                                   arg.span, f"bind it first: `y = ...`, then {op_name}(y)")
                        ok = False
                    continue
                if not positional:
                    self.error("NS211", f"too many positional arguments for {op_name}", arg.span,
                               f"expected {signature(op)}")
                    ok = False
                    continue
                key = positional.pop(0)
            else:
                key = arg.name
                if key not in op.Args.model_fields:
                    self.error("NS202", f"{op_name} has no argument '{key}'", arg.span,
                               did_you_mean(key, op.Args.model_fields) or f"expected {signature(op)}")
                    ok = False
                    continue
                if key in values:
                    self.error("NS203", f"argument '{key}' given twice", arg.span)
                    ok = False
                    continue
                if key in positional:
                    positional.remove(key)
            value = self._eval(frame, arg.value, allow_symbol=True)
            if value is _POISON:
                ok = False
                continue
            values[key], spans[key] = value, arg.value.span
        args = self._validate(op_name, values, spans, call, frame) if ok else None
        if op.reconstructs_input:
            inputs.append(self.input_name if self.input_name is not None else _POISON)
        name = frame.child_name(label)
        if args is None or any(v is _POISON for v in inputs) or current is _NO_INPUT:
            if current is _NO_INPUT:
                self.error("NS210", f"{op_name} has no input: the network has not declared one yet", call.span,
                           "start the network with `input x: [C, H, W]`")
            return _POISON
        self._emit(name, op_name, args, inputs, call.span, frame)
        return name

    def _validate(self, op_name: str, values: dict, spans: dict, call: ast.Call, frame: Frame):
        plain = {k: (v.name if isinstance(v, Symbol) else v) for k, v in values.items()}
        # Block instances repeat the same arguments; args are immutable, so one validation serves them all.
        key = (op_name, _hashable(plain))
        if key in self.validated:
            return self.validated[key]
        if key + (call.span,) in self.validated:  # these arguments failed here before, and were reported
            return None
        self.validated[key + (call.span,)] = None
        try:
            args = self.validated[key] = OPS[op_name].Args.model_validate(plain)
            return args
        except ValidationError as err:
            reported: set = set()
            for e in err.errors():
                key = e["loc"][0] if e["loc"] else None
                if key in reported:  # a union type reports once per alternative; one message is enough
                    continue
                reported.add(key)
                span = spans.get(key, call.span)
                original = values.get(key)
                if isinstance(original, Symbol) and self._is_tensor(frame, original):
                    self._tensor_for_number(original.name, f"'{key}' of {op_name}", span)
                elif isinstance(original, Symbol):  # at the word itself, which may be a caller's argument
                    self.error("NS205", f"undefined name '{original.name}'", original.span or span,
                               did_you_mean(original.name, self._names_where(original, frame)),
                               calls=original.span is None)
                elif e["type"] == "missing":
                    self.error("NS204", f"{op_name} needs argument '{key}'", call.span,
                               f"expected {signature(OPS[op_name])}")
                elif e["type"] in ("greater_than", "greater_than_equal") and isinstance(e.get("input"), int):
                    limit = "positive" if e["type"] == "greater_than" else "non-negative"
                    self.error("NS303", f"'{key}' of {op_name} must be {limit}, got {e['input']}", span)
                else:
                    message = _FRIENDLY.get(e["type"]) or e["msg"].removeprefix("Value error, ")
                    got = f", got {show(original)}" if key else ""
                    where = f"'{key}' of {op_name}" if key else op_name
                    self.error("NS203", f"invalid {where}: {message[:1].lower()}{message[1:]}{got}", span)
                if key is None:
                    break
            return None

    def _emit(self, name: str, op: str, args, inputs: list[str], span: Span, frame: Frame) -> None:
        if name in self.node_spans:
            self.error("NS206", f"duplicate layer name '{name}'", span,
                       notes=(f"first defined at {self.node_spans[name]}",))
            return
        if isinstance(args, dict):
            args = OPS[op].Args.model_validate(args)
        node = Node(name=name, op=op, args=args, inputs=inputs, span=span, scope=frame.scope)
        self.nodes.append(node)
        self.node_spans[name] = span
        if all(source in self.shapes for source in inputs):
            problem = infer_node(node, self.shapes, self.scopes, self.limits)
            if problem is not None:
                self.errors.append(problem)

    def _add_scope(self, path: str, kind: str, span: Span) -> None:
        if path not in self.scopes:
            self.scopes[path] = Scope(path=path, kind=kind, span=span)
            self.scope_order.append(path)

    # blocks -----------------------------------------------------------------------

    def _call_block(self, block, call: ast.Call, label, frame: Frame, current, spread: bool, home: Definitions):
        if block.name in frame.stack and len(frame.stack) >= self.limits.block_depth:
            last = len(frame.stack) - 1 - frame.stack[::-1].index(block.name)
            cycle = " -> ".join(frame.stack[last:] + (block.name,))
            param = block.params[0].name if block.params else "depth"
            self.error("NS207", f"block '{block.name}' calls itself without end ({cycle}, "
                                f"{frame.stack.count(block.name)} levels deep)", call.span,
                       f"a block may call itself only under a condition that ends the recursion, on an argument "
                       f"that shrinks: e.g. `{block.name}({param} - 1) if {param} > 1`")
            return _POISON
        if len(frame.stack) >= self.limits.block_depth:
            self.error("NS213", f"blocks nest deeper than {self.limits.block_depth}", call.span)
            return _POISON
        if spread:
            if isinstance(block, ast.Block) and leading_inputs(block.body) > 1:
                if current is _NO_INPUT:  # `network N = Block(...)`
                    self.error("NS203", f"block '{block.name}' takes several inputs, and a network takes one",
                               call.span, f"write the network with a body: `input x: [C, H, W]`, then "
                                          f"`{block.name}(..., name=value)`")
                else:
                    self.error("NS203", f"block '{block.name}' takes several inputs, so it cannot be spread",
                               call.span, f"call it without `...`: `{block.name}(...)`")
                return _POISON
            inner = Frame(home, frame.prefix, frame.counter, {}, frame.scope, frame.stack + (block.name,))
        else:
            path = frame.child_name(label)
            inner = Frame(home, path, [0], {}, frame.scope + (path,), frame.stack + (block.name,))
            self._add_scope(path, block.name, call.span)
        if not self._bind_block_args(block, call, frame, inner):
            return _POISON
        if not spread:  # the generated Python names a block class's parameters after these (backends/torch/source.py)
            given: list[str] = []  # as _bind_block_args binds them: a positional argument takes the next free name
            for arg in call.args:
                given.append(arg.name or next((p.name for p in block.params if p.name not in given), ""))
            self.scopes[path].arguments = dict(inner.params)
            self.scopes[path].defaulted = tuple(name for name in inner.params if name not in given)
        key = None if spread or isinstance(block, ast.NetworkAlias) else \
            self._instance_key(block, home, inner, frame, current)
        template = self.templates.get(key) if key is not None else None
        if template is not None and self.instances + template.instances <= self.limits.instances \
                and spend_as_before(template.steps):
            value = self._replay(template, path, frame.scope, current, inner)
        else:  # lowered afresh; up to a limit, where it stops the error is where the layers would have been made
            mark = (len(self.nodes), len(self.errors), len(self.scope_order), len(self.early_labels), self.instances,
                    steps_spent())
            self.calls.append((block.name, call.span))
            try:
                if isinstance(block, ast.NetworkAlias):
                    return self._run_step(block.step, inner, current, root_alias=current is _NO_INPUT)
                value = self._run_body(block.body, inner, current, block)
            finally:
                self.calls.pop()
            if key is not None and len(self.errors) == mark[1] and isinstance(value, str):
                self.templates[key] = _Template(
                    path, frame.scope, {"": current, **inner.tensors}, self.nodes[mark[0]:],
                    self.scope_order[mark[2]:], list(self.early_labels)[mark[3]:], self.instances - mark[4],
                    steps_spent() - mark[5], value, inner.outputs)
        if inner.outputs is not None:
            value = inner.outputs[0] if inner.outputs else _POISON
            self.block_outputs = (value, inner.outputs)
        return value

    def _instance_key(self, block: ast.Block, home: Definitions, inner: Frame, caller: Frame, current) -> tuple | None:
        """What decides the layers a block instance makes: the block, its arguments, the shapes it receives and the
        blocks being instantiated around it (recursion stops by depth). None when an instance cannot be copied:
        an input that is not a shaped layer, or one name standing for two of its inputs (renaming would merge
        them)."""
        if self.templates is None:
            return None
        inputs = [current, *inner.tensors.values()]
        if len(set(inputs)) < len(inputs) or self.input_name in inputs \
                or not all(isinstance(v, str) and v in self.shapes for v in inputs):
            return None
        try:
            arguments = _hashable(inner.params)
            hash(arguments)
        except TypeError:  # an argument without a value identity (a Symbol of another program, say)
            return None
        return (id(block), id(home), arguments, caller.stack, tuple(inner.tensors),
                tuple(self.shapes[v] for v in inputs))

    def _replay(self, template: _Template, path: str, scope: tuple[str, ...], current: str, inner: Frame) -> str:
        """Copy a lowered instance's layers and scopes as the instance at `path`: the same nodes (arguments, spans and
        shapes shared, being immutable), renamed under `path` and reading this instance's inputs."""
        old = template.path + "."
        renamed = {template.inputs[""]: current, **{template.inputs[k]: v for k, v in inner.tensors.items()}}

        def rename(name: str) -> str:
            return path + "." + name[len(old):] if name.startswith(old) else renamed.get(name, name)

        for old_path in template.scopes:
            new_path = rename(old_path)
            if new_path not in self.scopes:
                self.scopes[new_path] = self.scopes[old_path].model_copy(update={"path": new_path})
                self.scope_order.append(new_path)
        self.scopes[path].registration = self.scopes[template.path].registration  # the instance's own scope
        depth = len(template.scope) + 1
        head = scope + (path,)
        for node in template.nodes:
            name = rename(node.name)
            self.nodes.append(node.renamed(name, [rename(i) for i in node.inputs],
                                           head + tuple(rename(s) for s in node.scope[depth:])))
            self.node_spans[name] = node.span
            self.shapes[name] = node.shape
        for label in template.early_labels:
            self.early_labels.setdefault(rename(label), self.early_labels[label])
        self.instances += template.instances
        if template.outputs is not None:
            inner.outputs = [rename(v) for v in template.outputs]
        return rename(template.value)

    def _bind_block_args(self, block, call: ast.Call, caller: Frame, inner: Frame) -> bool:
        params = {p.name: p for p in block.params}
        order = [p.name for p in block.params]
        body = block.body if isinstance(block, ast.Block) else []
        tensors = [stmt.name for stmt in body[1:leading_inputs(body)]]  # its inputs after the main one
        given: dict[str, Any] = {}
        ok = True
        for arg in call.args:
            if arg.name in tensors and arg.name not in params:
                if arg.name in inner.tensors:
                    self.error("NS203", f"argument '{arg.name}' given twice", arg.span)
                    ok = False
                elif not isinstance(arg.value, ast.Name):
                    self.error("NS203", f"'{arg.name}' is an input of block '{block.name}': pass it a value's name",
                               arg.value.span, f"bind the value first: `y = ...`, then {block.name}(..., "
                                               f"{arg.name}=y)")
                    ok = False
                else:
                    inner.tensors[arg.name] = self._reference(caller, arg.value.id, arg.value.span)
                    ok = ok and inner.tensors[arg.name] is not _POISON
                continue
            if arg.name is None:
                remaining = [n for n in order if n not in given]
                if isinstance(arg.value, ast.Name) and self._is_tensor(caller, Symbol(arg.value.id)):
                    free = [n for n in tensors if n not in inner.tensors]
                    self._tensor_for_number(
                        arg.value.id, f"parameter '{remaining[0]}' of block '{block.name}'" if remaining else
                        f"block '{block.name}'", arg.value.span,
                        f"pass it as the block's input by name: `{block.name}(..., {free[0]}={arg.value.id})`"
                        if free else None)
                    if free:
                        inner.tensors[free[0]] = _POISON  # reported: the missing input is not reported again
                    ok = False
                    continue
                if not remaining:
                    self.error("NS211", f"too many positional arguments for block '{block.name}'", arg.span,
                               f"{block.name} takes ({', '.join(order)})")
                    ok = False
                    continue
                key = remaining[0]
            else:
                key = arg.name
                if key not in params:
                    self.error("NS202", f"block '{block.name}' has no parameter '{key}'", arg.span,
                               did_you_mean(key, order) or f"{block.name} takes ({', '.join(order)})")
                    ok = False
                    continue
                if key in given:
                    self.error("NS203", f"argument '{key}' given twice", arg.span)
                    ok = False
                    continue
            value = self._eval(caller, arg.value, allow_symbol=True)
            if value is _POISON:
                ok = False
            elif self._is_tensor(caller, value):
                self._tensor_for_number(value.name, f"parameter '{key}' of block '{block.name}'", arg.value.span,
                                        tensors and f"pass it as an input: `{block.name}(..., {tensors[0]}="
                                                    f"{value.name})`")
                ok = False
            given[key] = value
        missing = [name for name in tensors if name not in inner.tensors]
        if missing:
            self.error("NS204", f"block '{block.name}' needs the input{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(repr(n) for n in missing)}", call.span,
                       f"pass {'them' if len(missing) > 1 else 'it'} by name: `{block.name}(..., "
                       f"{', '.join(f'{n}=VALUE' for n in missing)})`, VALUE a name bound before the call")
            ok = False
        for name in order:  # defaults may use earlier parameters, e.g. `mid=c // 4`
            if name in given:
                inner.params[name] = given[name]
            elif params[name].default is not None:
                value = self._eval(inner, params[name].default, allow_symbol=True)
                ok = ok and value is not _POISON
                inner.params[name] = value
            else:
                self.error("NS204", f"block '{block.name}' needs argument '{name}'", call.span,
                           f"{block.name} takes ({', '.join(order)})")
                ok = False
        return ok

    @staticmethod
    def _is_tensor(frame: Frame, value) -> bool:
        """Whether an argument is the bare name of a value (a tensor) where a number or word was expected."""
        if not isinstance(value, Symbol):
            return False
        try:
            return frame.lookup_value(value.name) is not _POISON
        except KeyError:
            return False

    def _tensor_for_number(self, name: str, what: str, span: Span, hint: str | None = None) -> None:
        self.error("NS203", f"'{name}' is a tensor (a value the network computes), but {what} takes a number, a "
                            "word or a list", span,
                   hint or f"a layer takes its tensor from the chain: `{name} -> layer(...)`; a block that needs a "
                           "second tensor declares it with `input` and takes it by name")

    def _eval(self, frame: Frame, expr: ast.Expr, allow_symbol: bool = False):
        try:
            value = frame.evaluate(expr, allow_symbol)
        except NetspecError as err:
            self._report(err.diagnostics)
            return _POISON
        if isinstance(value, Symbol):
            self.symbol_frames.setdefault(value.span, frame)
            if value.home is None and value.name in frame.defs.blocks:
                return Symbol(value.name, frame.defs, value.span)  # a block named here is this file's, wherever used
        return value

    def _names_where(self, symbol: Symbol, frame: Frame) -> list[str]:
        """The parameters seen where a word was written, for its "did you mean"."""
        return self.symbol_frames.get(symbol.span, frame).param_names()


def labels_written(body: list[ast.Stmt]) -> set[str]:
    """The labels a body's steps are written with (its for loops' included, not its groups'), as text."""
    found: set[str] = set()
    for stmt in body:
        if isinstance(stmt, ast.For):
            found |= labels_written(stmt.body)
        chain = stmt.chain if isinstance(stmt, ast.Assign) else stmt if isinstance(stmt, ast.Chain) else None
        if chain is not None:
            found.update(step.label for step in chain.steps if isinstance(step.label, str))
    return found


def leading_inputs(body: list[ast.Stmt]) -> int:
    """How many `input` statements open a body: a block's inputs, the main one first."""
    count = 0
    while count < len(body) and isinstance(body[count], ast.Input):
        count += 1
    return count


def lower(program: Program, network: str | None = None, overrides: dict[str, Any] | None = None,
          reuse_instances: bool = True) -> Graph:
    """Instantiate one network of a loaded program as a graph, each layer's shape inferred as it is made.

    Mistakes found here are in `graph.diagnostics`; the graph then holds the layers that were sound.
    `reuse_instances=False` lowers every block instance afresh (to check that copying them changes nothing).
    """
    name = select_network(program, network)
    with step_limit(program.limits.evaluation_steps):  # the arguments of every instance
        return Lowering(program, reuse_instances).network(name, overrides or {})
