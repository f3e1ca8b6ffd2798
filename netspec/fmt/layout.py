"""The layout of each grammar rule: statements and expressions, given their children laid out, as documents.

`layout_node` is called bottom-up by `netspec.fmt.build` with a node's children already laid out (`Kids`).
Most rules are their children joined by a space (`_SPACED`) or by nothing (`_GLUED`); the others, brackets,
braces, chains and definitions, have a method of `_Layout` named after the rule (or its alias in the grammar).
"""

from __future__ import annotations

from netspec.fmt.comments import Kids, Piece, with_comments
from netspec.fmt.document import (HARDLINE, LINE, SOFTLINE, Fill, Group, Indent, brace_group, broken_braces,
                                  group)

_SPACED = {"binary", "compare", "or_", "and_", "ternary", "output_item", "for_stmt", "import_stmt", "let_stmt",
           "setting", "condition", "repeat", "not_"}
_GLUED = {"keyword", "param", "label", "template_label", "output_label", "block_label", "spread", "index",
          "slice", "atom"}  # rules of one token (names, numbers, ...) are that token


def _joined(k: Kids, separator: str) -> list:
    out: list = []
    for i in range(len(k)):
        if i:
            out.append(separator)
        out.append(k[i])
    return out


def _separated(k: Kids, first: int, last: int) -> list:
    """Items between brackets, `,` then a line between them; a trailing comma dropped unless a comment is on it."""
    out: list = []
    for i in range(first, last + 1):
        if k.kind(i) == "COMMA":
            if i < last:
                out.append([k[i], LINE])
            elif k.commented(i):
                out.append(k[i])
        else:
            out.append(k[i])
    return out


_LITERALS = {"INT", "FLOAT", "STRING", "TRUE", "FALSE", "NAME", "neg", "COMMA"}


def _bracketed(k: Kids, open_at: int) -> list:
    """`(` items `)` or `[` items `]`, from child `open_at` to the last: one line, or one item a line (a list
    of plain numbers, strings or names: as many a line as fit)."""
    close = k.last
    if close == open_at + 1:
        return [k[open_at], k[close]]
    if k.kind(open_at + 1) == "arguments":
        items = k[open_at + 1]
    else:
        items = _separated(k, open_at + 1, close - 1)
        inner = k.pieces[open_at + 1:close]
        if len(inner) > 1 and all(p.kind in _LITERALS and not p.lead and not p.trail for p in inner):
            parts: list = []
            for i in range(open_at + 1, close, 2):  # `item,` then a line, up to the last item
                parts += [[k[i], k[i + 1]] if i + 1 < close else k[i], LINE]
            if inner[-1].kind == "COMMA":  # dropped
                parts[-2] = parts[-2][0]
            items = Fill(parts[:-1])
    return [group([k[open_at], Indent([SOFTLINE, items]), SOFTLINE, k[close]])]


def _statements(pieces: list[Piece], close: Piece) -> list:
    """Statements one a line inside `{ }`, each after its comments; blank lines kept, one at most; then the
    comments before the `}`."""
    out: list = []
    for j, piece in enumerate(pieces):
        blank = piece.lead[0].blank_before if piece.lead else piece.blank
        out.append(HARDLINE)
        if j > 0 and blank:
            out.append(HARDLINE)
        out += with_comments(piece)
    for n, c in enumerate(close.lead):  # comments after the last statement
        out.append(HARDLINE)
        if c.blank_before and (n or pieces):
            out.append(HARDLINE)
        out.append(c.text)
    return out


class _Layout:
    """One method per grammar rule (or alias), given its children laid out; the tree is walked bottom-up."""

    def braces(self, k: Kids, first: int) -> list:
        """`{ statements }` from child `first` (the brace) to the last: one statement stays on the line if it
        fits, has no comment and was written on the brace's line; more go one a line."""
        statements = k.pieces[first + 1:k.last]
        close = k.pieces[k.last]
        if not statements and not close.lead:
            return [k[first], close.doc]
        if len(statements) == 1 and not close.lead and k.pieces[first].lines[0] == statements[0].lines[0]:
            return [brace_group([k[first], Indent([LINE, k[first + 1]]), LINE, close.doc])]
        return [broken_braces([k[first], Indent(_statements(statements, close)), HARDLINE, close.doc])]

    def body(self, k):
        return self.braces(k, 0)

    def group(self, k):
        return self.braces(k, 0)

    def train_def(self, k):
        return [k[0], " ", k[1], " ", *self.braces(k, 2)]

    def block_def(self, k):
        return self._definition(k)

    def network_body(self, k):
        return self._definition(k)

    def _definition(self, k):
        out = [k[0], " ", k[1]]
        if k.kind(2) == "params":
            out.append(k[2])
        return out + [" ", k[k.last]]

    def network_alias(self, k):
        out = [k[0], " ", k[1]]
        i = 2
        if k.kind(2) == "params":
            out.append(k[2])
            i = 3
        return out + [" ", k[i], " ", k[i + 1]]

    def params(self, k):
        """A header's parameters: on its line when they fit and the author wrote them on one line; one a line
        otherwise, as a long header reads best."""
        laid = _bracketed(k, 0)
        if k.pieces[0].lines[0] != k.pieces[k.last].lines[1] and isinstance(laid[0], Group):
            laid[0].broken = laid[0].forced = True
        return laid

    def arguments(self, k):
        return _separated(k, 0, k.last)

    def call(self, k):
        return [k[0], *_bracketed(k, 1)]

    def function(self, k):
        return [k[0], *_bracketed(k, 1)]

    def list(self, k):
        return _bracketed(k, 0)

    def chain(self, k):
        rest = []
        for i in range(1, len(k), 2):
            rest += [LINE, k[i], " ", k[i + 1]]
        return [group([k[0], Indent(rest)])]

    def step(self, k):
        return _joined(k, " ")

    def input_stmt(self, k):
        if len(k) == 2:
            return [k[0], " ", k[1]]
        return [k[0], " ", k[1], k[2], " ", k[3]]

    def assign_stmt(self, k):
        """`y = chain`, `hi, lo = chain`."""
        out = [k[0]]
        for i in range(1, len(k) - 2, 2):
            out += [k[i], " ", k[i + 1]]
        return out + [" ", k[len(k) - 2], " ", k[len(k) - 1]]

    def export_stmt(self, k):
        out = [k[0], " ", k[1]]
        for i in range(2, len(k), 2):
            out += [k[i], " ", k[i + 1]]
        return out

    register_stmt = export_stmt

    def output_stmt(self, k):
        rest = []
        for i in range(2, len(k), 2):
            rest += [k[i], LINE, k[i + 1]]
        return [k[0], " ", group([k[1], Indent(rest)])]

    def power(self, k):
        return _joined(k, " ")

    def neg(self, k):
        return [k[0], " " if k.kind(1) == "neg" else "", k[1]]


_LAYOUT = _Layout()


def layout_node(rule: str, k: Kids) -> list:
    """The document of a node of grammar rule `rule` with (at least two) children `k`."""
    handler = getattr(_LAYOUT, rule, None)
    if handler is not None:
        return handler(k)
    if rule in _SPACED:
        return _joined(k, " ")
    if rule in _GLUED:
        return [k[i] for i in range(len(k))]
    raise AssertionError(f"no layout for the grammar rule {rule!r}")
