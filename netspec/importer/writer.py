"""Blocks from repeated module calls, and the spec text. Calls of one module class whose bodies are equal up to
numeric constants share a block; the constants that differ become its parameters, named after what they set
(`conv1_out`: conv1's output channels), with the most common value as default; a constant that always equals the
block's input channels is read from `input x: [cin, h, w]` instead."""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from netspec.importer.mapping import Ref, is_default
from netspec.importer.structure import Item, Scope, Traced, body_of, show_labels, with_projections
from netspec.language.evaluate import show
from netspec.language.parse import keywords
from netspec.ops import OPS

MISSING = object()
LINE = 100  # a chain longer than this goes on in a new statement
SHORT_KEYS = {"out_channels": "out", "out_features": "out", "output_size": "size"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names a label or parameter cannot be written as: the grammar's words, `none`, and the names the writer uses itself
KEYWORDS = keywords() | {"none", "recipe", "x", "cin", "h", "w"}


@dataclass
class Block:
    """A block definition: its parameters (name, default or MISSING), the body of one of its calls, and for every
    numeric constant of that body the text it is written as (a parameter's name, `cin` or the number)."""

    name: str
    params: list[tuple[str, Any]]
    items: list[Item]
    slot_texts: list[str]
    uses_cin: bool
    input_rank: int
    start: str  # the values the body starts from and ends with
    end: str


def literal(value) -> str:
    """A value as a spec writes it, whole (the evaluator's `show`, without its cut)."""
    return show(value, limit=sys.maxsize)


def is_slot(value) -> bool:
    """Whether an argument may differ between the calls one block writes: numbers, lists of them, booleans."""
    if isinstance(value, (bool, int, float)):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(is_slot(v) for v in value)


def hashable(value):
    return tuple(hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def arguments(item: Item) -> list[tuple[str | None, Any]]:
    """An item's arguments other than the tensors it names: a layer's, or the values of a call's parameters."""
    if item.kind == "layer":
        return [(k, v) for k, v in item.args if not isinstance(v, Ref)]
    if item.kind == "call":
        return list(item.instance.values)
    return []


def slot_names(item: Item, context: str = "") -> list[str]:
    """The name each numeric argument of one item takes if it becomes a parameter: the layer's label (or the
    group it is in) and the argument (`conv1_out`: conv1's output channels, `branch2_conv_out`)."""
    label = (item.shown_label or item.label or "").rpartition(".")[2]
    if label and not label.isdigit():
        what = re.sub(r"[^A-Za-z0-9_]", "_", label)
    else:
        what = context or ("" if item.kind == "call" else item.name)
    positional = list(OPS[item.name].positional) if item.kind == "layer" else []
    found = []
    for key, value in arguments(item):
        if key is None:
            key = positional.pop(0) if positional else "value"
        elif key in positional:
            positional.remove(key)
        if is_slot(value):
            key = SHORT_KEYS.get(key, key)
            found.append(key if not what or key.startswith(what) else f"{what}_{key}")
    return found


def slots(items: list[Item], context: str = "") -> list[tuple[str, Any]]:
    """Every numeric constant of a body, depth first: (the parameter name it would take, value)."""
    found = []
    for item in items:
        if item.kind == "group":
            label = (item.shown_label or "").rpartition(".")[2]
            inner = re.sub(r"[^A-Za-z0-9_]", "_", label) if label and not label.isdigit() else context
            found.extend(slots(item.body, inner))
            continue
        numbers = [hashable(v) for _, v in arguments(item) if is_slot(v)]
        found.extend(zip(slot_names(item, context), numbers))
    return found


def signature(items: list[Item], canon: dict[str, str]) -> tuple:
    """A body with its numbers left out and its values renamed by order: equal for calls one block can write."""
    tokens = []
    for item in items:
        source = canon.get(item.source, "outside")
        refs = tuple(canon.get(r, "outside") for r in item.refs)
        if item.kind == "layer" and item.name == "add" and len(refs) == 1 and "x" in (source, *refs):
            # add(x), projected or not; whether x is named (the chain goes on from the other operand)
            tokens.append(("add-input", source if refs[0] == "x" else refs[0], refs[0] == "x"))
        elif item.kind == "group":
            tokens.append(("group", item.shown_label, source, signature(item.body, canon)))
        else:
            shape = tuple((k, "#" if is_slot(v) else hashable(v)) for k, v in arguments(item))
            name = item.instance.block.name if item.kind == "call" else item.name
            tokens.append((item.kind, name, item.shown_label, shape, source, refs))
        canon[item.output] = f"v{len(canon)}"
    return tuple(tokens)


def scope_height(scope: Scope) -> int:
    height = 0
    for child in scope.items:
        if isinstance(child, Scope):
            height = max(height, scope_height(child) + (1 if child.kind == "call" else 0))
    return height


def calls_in(scope: Scope) -> Iterator[Scope]:
    for child in scope.items:
        if isinstance(child, Scope):
            if child.kind == "call":
                yield child
            yield from calls_in(child)


def unique(base: str, taken: set[str]) -> str:
    name, k = base, 2
    while name in taken:
        name, k = f"{base}{k}", k + 1
    taken.add(name)
    return name


def make_blocks(models: list[Traced], taken: set[str]) -> list[Block]:
    """One block per module class and body shape, smallest first, every call's parameter values set. With several
    models, calls from all of them share a block wherever one can write them (a family's Bottleneck once), and a
    body only one call in the whole family has is written in place, as a group, rather than as a block."""
    instances = [(scope, traced) for traced in models for scope in calls_in(traced.root)]
    blocks: list[Block] = []
    done: set[int] = set()
    while True:
        # heights are taken afresh: a call written in place no longer adds a level to the calls that hold it
        pending = [(s, t) for s, t in instances if id(s) not in done and s.kind == "call"]
        if not pending:
            return blocks
        height = min(scope_height(s) for s, _ in pending)
        bins: dict[tuple, list[tuple[Scope, list[Item]]]] = {}
        for scope, traced in ((s, t) for s, t in pending if scope_height(s) == height):
            done.add(id(scope))
            items = with_projections(body_of(scope, scope.path, traced), scope.inputs[0])
            show_labels(items)
            key = (scope.cls.__name__, signature(items, {scope.inputs[0]: "x"}))
            bins.setdefault(key, []).append((scope, items))
        merged = with_optional_residuals(bins)
        for class_name, members, optional in merged:
            if len(models) > 1 and len(members) == 1:
                members[0][0].kind = "group"
                continue
            blocks.append(parameterise(unique(class_name, taken), members, optional))


def with_optional_residuals(bins: dict) -> list[tuple[str, list, bool]]:
    """Calls of one class that differ only by a last add(x) (MobileNet's inverted residual with and without its
    shortcut) share a block whose add(x) is conditional: (class, members with the add first, optional), in the
    order the bins were first seen."""
    partners: dict[tuple, tuple] = {}
    for key in bins:
        class_name, tokens = key
        shorter = (class_name, tokens[:-1])
        if tokens and tokens[-1][0] == "add-input" and tokens[-1][2] and shorter in bins and shorter not in partners:
            partners[key], partners[shorter] = shorter, key
    result, done = [], set()
    for key in bins:
        if key in done:
            continue
        partner = partners.get(key)
        if partner is None:
            result.append((key[0], bins[key], False))
            done.add(key)
            continue
        with_add, without = (key, partner) if len(key[1]) > len(partner[1]) else (partner, key)
        result.append((key[0], bins[with_add] + bins[without], True))
        done.update([key, partner])
    return result


def parameterise(name: str, members: list[tuple[Scope, list[Item]]], optional: bool = False) -> Block:
    """The block that writes every member: constants that differ become parameters (equal columns share one).
    `optional`: the first members end with add(x), the others do not; a `residual` parameter says which."""
    found = [slots(items) for _, items in members]
    described = [d for d, _ in found[0]]
    columns = [tuple(f[j][1] for f in found) for j in range(len(described))]
    ranks = {len(scope.input_shape) for scope, _ in members}
    channels = tuple(scope.input_shape[0] if scope.input_shape else None for scope, _ in members)
    taken: set[str] = set(KEYWORDS)
    by_column: dict[tuple, str] = {}
    texts: list[str] = []
    params: list[tuple[str, Any, tuple]] = []
    uses_cin = False
    for base, column in zip(described, columns):
        if len(set(column)) == 1:
            texts.append(literal(column[0]))
        elif column == channels and ranks in ({3}, {1}):
            texts.append("cin")
            uses_cin = True
        elif column in by_column:
            texts.append(by_column[column])
        else:
            param = unique(base, taken)
            by_column[column] = param
            texts.append(param)
            value, count = Counter(column).most_common(1)[0]
            default = value if count >= 2 and 2 * count >= len(column) else MISSING
            params.append((param, default, column))
    if optional:
        length = len(members[0][1])
        column = tuple(len(items) == length for _, items in members)
        value, count = Counter(column).most_common(1)[0]
        params.append((unique("residual", taken), value if 2 * count >= len(column) else MISSING, column))
    params.sort(key=lambda p: p[1] is not MISSING)
    first = members[0][0]
    items = representative(members)
    if optional:
        last = items[-1]
        conditional = Item(last.kind, last.name, last.source, last.output, last.label, last.args, last.refs)
        conditional.shown_label, conditional.condition = last.shown_label, params_named(params, "residual")
        items[-1] = conditional
    block = Block(name, [(p, d) for p, d, _ in params], items, texts, uses_cin,
                  ranks.pop() if len(ranks) == 1 else 0, first.inputs[0], first.outputs[0])
    for index, (scope, _) in enumerate(members):
        scope.block = block
        scope.values = [(p, column[index]) for p, _, column in params]
    return block


def params_named(params: list, base: str) -> str:
    return next(p for p, _, _ in params if p == base or p.startswith(base) and p[len(base):].isdigit())


def representative(members: list[tuple[Scope, list[Item]]]) -> list[Item]:
    """The first call's body, with the label and projection of any call whose shortcut projects (all calls write
    add(x, project="auto") then, which projects only where the shapes differ)."""
    items = list(members[0][1])
    for index, item in enumerate(items):
        if item.kind == "layer" and item.name == "add":
            for _, other in members:
                if index >= len(other):
                    continue  # a call without the optional last add
                candidate = other[index]
                if ("project", "auto") in candidate.args:
                    projected = Item("layer", "add", item.source, item.output, candidate.label, candidate.args,
                                     [members[0][0].inputs[0]])
                    projected.shown_label = candidate.shown_label
                    items[index] = projected
                    break
    return items


# ---- text ---------------------------------------------------------------------------------------------------------
def label_text(label: str | None) -> str:
    if label is None:
        return ""
    return f"{label}: " if IDENTIFIER.match(label) and label not in KEYWORDS else f"{literal(label)}: "


class BodyWriter:
    """Writes one body (a block's or the network's): chains joined with ->, skips as named values."""

    def __init__(self, texts: Iterator[str], taken: set[str]):
        self.texts = texts
        self.taken = taken
        self.names: dict[str, str] = {}
        self.bound: set[str] = set()  # values a statement binds with `name = ...` (the others are labels)
        self.needed: set[str] = set()
        self.texts_of: dict[int, str] = {}

    def write(self, items: list[Item], start: str, end: str, indent: str, aux: list[str] = ()) -> list[str]:
        """The body's lines; with auxiliary outputs, an `output` statement names them all, the main one first."""
        self.needs_names(items, start, end)
        if aux:
            self.needed.update([end, *aux])
        self.assign_names(items)
        self.prepare(items)
        lines = self.lines(items, start, end, indent)
        if aux:
            if lines and lines[-1] == indent + self.names[end]:
                lines.pop()  # the output statement makes it the output
            lines.append(f"{indent}output {', '.join(self.names[v] for v in [end, *aux])}")
        return lines

    def needs_names(self, items: list[Item], start: str, end: str) -> None:
        """The values read by name: a skip, any operand after the first, an output that is not the last value."""
        current = start
        for item in items:
            if item.source != current:
                self.needed.add(item.source)
            self.needed.update(item.refs)
            if item.kind == "group":
                self.needs_names(item.body, item.source, item.output)
            current = item.output
        if current != end:
            self.needed.add(end)

    def assign_names(self, items: list[Item]) -> None:
        for item in items:
            if item.output in self.needed and item.output not in self.names:
                label = item.shown_label
                if label and IDENTIFIER.match(label) and label not in KEYWORDS and item.repeat == 1:
                    self.names[item.output] = label  # a label names its own layer's (or group's) output
                else:
                    base = item.instance.block.name.lower() if item.kind == "call" else (item.name or "group")
                    self.names[item.output] = unique(f"{base}_1" if base in self.taken else base, self.taken)
                    self.bound.add(item.output)
            if item.kind == "group":
                self.assign_names(item.body)

    def prepare(self, items: list[Item]) -> None:
        """Every item's text, depth first: the order the numbers' texts come in."""
        for item in items:
            if item.kind == "group":
                self.prepare(item.body)
            else:
                self.texts_of[id(item)] = self.call_text(item)

    def call_text(self, item: Item) -> str:
        numbers = iter([next(self.texts) for _, v in arguments(item) if is_slot(v)])
        shown = [(k, next(numbers) if is_slot(v) else literal(v)) for k, v in arguments(item)]
        if item.kind == "layer":
            positional = [t for k, t in shown if k is None]
            positional += [self.names[r] for r in item.refs]
            keywords = [f"{k}={t}" for (k, t), (_, v) in zip(shown, arguments(item))
                        if k is not None and not (t == literal(v) and is_default(item.name, k, v))]
            condition = f" if {item.condition}" if item.condition else ""
            return f"{label_text(item.shown_label)}{item.name}({', '.join(positional + keywords)}){condition}"
        defaults = dict(item.instance.block.params)
        parts = []
        for (param, text), value in zip(shown, (v for _, v in arguments(item))):
            default = defaults[param]
            if default is MISSING:
                parts.append(text)
            elif not (text == literal(value) and hashable(value) == hashable(default)):
                parts.append(f"{param}={text}")
        return f"{label_text(item.shown_label)}{item.instance.block.name}({', '.join(parts)})"

    def lines(self, items: list[Item], start: str, end: str, indent: str) -> list[str]:
        out: list[str] = []
        current = start
        parts: list[str] = []
        head = ""

        def flush(last: Item | None) -> None:
            nonlocal parts, head
            if parts:
                # a group's last value is named by the statement that holds the group
                ends_group = last is items[-1] and last.output == end and indent != "  "
                bind = (f"{self.names[last.output]} = " if last is not None and last.output in self.bound
                        and not ends_group else "")
                out.extend(long_call(indent + bind + head + " -> ".join(parts)))
            parts, head = [], ""

        previous: Item | None = None
        for item, text in compress([(item, self.texts_of.get(id(item))) for item in items], self):
            standalone = (item.kind == "group" or item.repeat > 1 or bool(item.condition)
                          or bool(item.loop and item.loop[2] > item.loop[1]))
            if parts and (item.source != current or standalone
                          or len(indent + head + " -> ".join(parts + [text or ""])) > LINE):
                flush(previous)
            if not parts:
                head = f"{self.names[item.source]} -> " if item.source != current else ""
            if item.kind == "group":
                inner = self.lines(item.body, item.source, item.output, indent + "  ")
                bind = f"{self.names[item.output]} = " if item.output in self.bound else ""
                opening = f"{bind}{head}{label_text(item.shown_label)}{{"
                if len(inner) == 1 and len(f"{indent}{opening} {inner[0].strip()} }}") <= LINE:
                    out.append(f"{indent}{opening} {inner[0].strip()} }}")
                else:
                    out.extend([indent + opening, *inner, indent + "}"])
                current, previous, head = item.output, item, ""
                continue
            parts.append(text if item.repeat == 1 else f"{text} * {item.repeat}")
            current, previous = item.output, item
            if item.output in self.needed or standalone:
                flush(item)
        flush(previous)
        if current != end:
            out.append(indent + self.names[end])
        return out


NUMBERED = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*?)(\d+)\Z")


def chained(last: Item, item: Item, writer: BodyWriter) -> bool:
    """Whether `item` takes `last`'s output and nothing else reads that output."""
    return (item.kind in ("layer", "call") and item.source == last.output and last.output not in writer.needed
            and not item.refs and not item.condition and not last.condition)


def compress(rendered: list[tuple[Item, str | None]], writer: BodyWriter) -> list[tuple[Item, str | None]]:
    """Consecutive equal unlabelled calls, each taking the one before, as `Call(...) * n`; equal calls labelled
    with consecutive numbers (denselayer1, denselayer2, ...) as a loop."""
    result: list[tuple[Item, str | None]] = []
    for item, text in rendered:
        numbered = NUMBERED.match(item.shown_label or "") if text is not None else None
        if result:
            last, last_text = result[-1]
            if (text is not None and text == last_text and item.shown_label is None and last.shown_label is None
                    and chained(last, item, writer)):
                merged = Item(last.kind, last.name, last.source, item.output, None, last.args, [], [],
                              last.instance, None, last.repeat + 1)
                result[-1] = (merged, last_text)
                continue
            if numbered and last.loop and chained(last, item, writer) and item.output not in writer.needed:
                prefix, first, final, body = last.loop
                if (numbered[1], int(numbered[2])) == (prefix, final + 1) and \
                        text[len(label_text(item.shown_label)):] == body:
                    merged = Item(last.kind, last.name, last.source, item.output, None, last.args, [], [],
                                  last.instance, None, 1, (prefix, first, final + 1, body))
                    result[-1] = (merged, last_text)
                    continue
        if numbered and item.kind in ("layer", "call") and not item.refs and item.output not in writer.needed:
            body = text[len(label_text(item.shown_label)):]
            item = Item(item.kind, item.name, item.source, item.output, item.label, item.args, [], [],
                        item.instance, item.shown_label, 1, (numbered[1], int(numbered[2]), int(numbered[2]), body))
        result.append((item, text))
    return [(item, loop_text(item) if item.loop and item.loop[2] > item.loop[1] else text) for item, text in result]


def loop_text(item: Item) -> str:
    prefix, first, final, body = item.loop
    return f'for i in range({first}, {final + 1}) {{ "{prefix}{{i}}": {body} }}'


def block_text(block: Block, taken: set[str]) -> list[str]:
    params = ", ".join(p if d is MISSING else f"{p}={literal(d)}" for p, d in block.params)
    shape = {3: "[cin, h, w]", 1: "[cin]"}.get(block.input_rank) if block.uses_cin else None
    writer = BodyWriter(iter(block.slot_texts), taken | {p for p, _ in block.params})
    writer.names[block.start] = "x"
    body = writer.write(block.items, block.start, block.end, "  ")
    return [*wrapped(f"block {block.name}(", params.split(", "), ") {"),
            f"  input x: {shape}" if shape else "  input x", *body, "}"]


def long_call(line: str) -> list[str]:
    """A statement that is one call too long for a line, its arguments continued under the first (newlines
    inside brackets mean nothing to the parser)."""
    if len(line) <= LINE or " -> " in line or not line.endswith(")") or "(" not in line:
        return [line]
    opening, _, rest = line.partition("(")
    arguments, depth, current = [], 0, ""
    for char in rest[:-1]:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            arguments.append(current.strip())
            current = ""
        else:
            current += char
    arguments.append(current.strip())
    return wrapped(opening + "(", arguments, ")")


def wrapped(opening: str, parts: list[str], closing: str) -> list[str]:
    """`opening` + the parts joined by commas + `closing`, continued under the first part past LINE."""
    lines, current = [], opening
    for index, part in enumerate(parts):
        piece = part + (", " if index < len(parts) - 1 else closing)
        if len(current) + len(piece.rstrip()) > LINE and current.strip() != opening.strip():
            lines.append(current.rstrip())
            current = " " * len(opening)
        current += piece
    if not parts:
        current += closing
    return [*lines, current]


def network_text(name: str, traced: Traced, blocks: list[Block]) -> str:
    """The whole spec: the blocks, then the network."""
    return family_text([(name, traced)], blocks)


def family_text(networks: list[tuple[str, Traced]], blocks: list[Block]) -> str:
    """One file for several models: the blocks they share, each once, then every network in the order given."""
    lines: list[str] = []
    taken = set(KEYWORDS) | {b.name for b in blocks} | {name for name, _ in networks}
    for block in blocks:
        lines.extend(block_text(block, set(taken)))
        lines.append("")
    for index, (name, traced) in enumerate(networks):
        if index:
            lines.append("")
        lines.extend(network_lines(name, traced, taken))
    return "\n".join(lines) + "\n"


def network_lines(name: str, traced: Traced, taken: set[str]) -> list[str]:
    """One network's statements, its block calls written with the values its calls give their parameters."""
    lines: list[str] = []
    items = with_projections(body_of(traced.root, "", traced), traced.input)
    show_labels(items)
    items = in_state_order(items, traced)
    numbers = (literal(v) for _, v in slots(items))
    writer = BodyWriter(numbers, set(taken))
    writer.names[traced.input] = "x"
    shape = ", ".join(str(s) for s in traced.input_shape)
    lines.append(f"network {name} {{")
    lines.append(f"  input x: [{shape}]")
    lines.extend(writer.write(items, traced.input, traced.output, "  ", traced.aux_outputs))
    lines.append("}")
    return lines


def in_state_order(items: list[Item], traced: Traced) -> list[Item]:
    """Branches that only feed auxiliary outputs, moved to where their module is registered (GoogLeNet registers
    aux1 and aux2 after inception5b though they run after inception4a and 4d): layers are registered where they
    are written, so the state_dict keeps the original's order."""
    producer = {item.output: item for item in items}
    main: set[int] = set()
    pending = [traced.output]
    while pending:
        item = producer.get(pending.pop())
        if item is not None and id(item) not in main:
            main.add(id(item))
            pending.extend([item.source, *item.refs])
    if len(main) == len(items):
        return items
    registered: dict[str, int] = {}  # module path -> the position of its first state_dict entry
    for index, key in enumerate(traced.state_order):
        parts = key.split(".")
        for end in range(1, len(parts)):
            registered.setdefault(".".join(parts[:end]), index)

    def position(item: Item) -> int | None:
        return registered.get(item.label) if item.label else None

    result = [item for item in items if id(item) in main]
    index = 0
    while index < len(items):
        if id(items[index]) in main:
            index += 1
            continue
        run = []
        while index < len(items) and id(items[index]) not in main:
            run.append(items[index])
            index += 1
        keys = [k for k in map(position, run) if k is not None]
        before = [i for i, item in enumerate(result) if items.index(item) < index]
        at = before[-1] + 1 if before else 0  # where the run was
        if keys:
            later = [i for i, item in enumerate(result) if position(item) is not None and position(item) < min(keys)]
            at = max(at, later[-1] + 1) if later else at
        result[at:at] = run
    return result
