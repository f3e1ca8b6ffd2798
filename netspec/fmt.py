"""`netspec fmt`: one canonical layout for .net files, every comment kept (docs/editors.md).

The file is parsed a second time with every token kept; the comments are read from the gaps between tokens
and attached to the token before them on the same line (trailing) or to the token after them (leading). A
document of text, line breaks, indents and groups is built bottom-up from the tree and printed at WIDTH
columns, the way Wadler's and Prettier's printers do: a group is printed on one line if it fits, else broken.
Since newlines and spaces mean nothing to the grammar and the tokens come out in the same order (a trailing
comma is the only token dropped, and never one with a comment), the result parses to the same syntax tree;
`format_text` checks that it does.

Every walk here is iterative: the deepest nesting the parser takes is hundreds of levels of Lark's tree (each
bracket holds an or_, an and_, a compare, ...), too deep for recursion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from lark import Lark, Token, Tree

from netspec.errors import Diagnostic, NetspecError, Span

WIDTH = 120  # columns a line may fill before a group breaks
INDENT = 2
_COMMENT = re.compile(r"#[^\n]*")


# The document a spec is laid out as --------------------------------------------------------------------------

class _Line:
    """A possible line break: `flat` (a space, or nothing) when its group is flat, a newline when broken;
    `hard`: a newline always."""

    __slots__ = ("flat", "hard")

    def __init__(self, flat: str, hard: bool = False):
        self.flat, self.hard = flat, hard


LINE = _Line(" ")  # a space, or a newline
SOFTLINE = _Line("")  # nothing, or a newline
HARDLINE = _Line("", hard=True)


class _FreshLine:
    """A newline unless the line is still empty: where a comment that must start its own line goes."""


FRESHLINE = _FreshLine()


@dataclass
class Suffix:
    """A trailing comment: printed at the end of the line it is on, whatever follows on that line."""

    text: str


@dataclass
class Indent:
    contents: object


@dataclass
class Group:
    """Printed flat when it fits in the rest of the line, broken otherwise or when `broken`.

    `forced`: a newline is certain somewhere inside (a hard line, a comment, a broken group), which a group of
    braces takes as a reason to break itself; `braces`: it is, or holds, a `{ }`.
    """

    contents: object
    broken: bool = False
    forced: bool = False
    braces: bool = False


@dataclass
class Fill:
    """Items and separators alternating, `[item, separator, item, ...]`: as many items a line as fit."""

    parts: list
    start: int = 0


def _scan(doc) -> tuple[bool, bool, bool]:
    """(a comment directly inside, outside nested groups; a newline certain anywhere inside; braces inside)."""
    comment = forced = braces = False
    stack = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, list):
            stack.extend(d)
        elif isinstance(d, Indent):
            stack.append(d.contents)
        elif isinstance(d, Fill):
            stack.extend(d.parts)
        elif isinstance(d, (Suffix, _FreshLine)):
            comment = forced = True
        elif isinstance(d, _Line):
            forced = forced or d.hard
        elif isinstance(d, Group):
            forced = forced or d.forced
            braces = braces or d.braces
    return comment, forced, braces


def group(contents) -> Group:
    """Breaks when it does not fit, or holds a comment of its own (not one inside a nested group)."""
    comment, forced, braces = _scan(contents)
    return Group(contents, broken=comment, forced=forced or comment, braces=braces)


def brace_group(contents) -> Group:
    """`{ statement }`: broken when anything inside must break, or holds braces of its own."""
    _, forced, braces = _scan(contents)
    return Group(contents, broken=forced or braces, forced=forced or braces, braces=True)


def broken_braces(contents) -> Group:
    return Group(contents, broken=True, forced=True, braces=True)


# Printing ------------------------------------------------------------------------------------------------------

_FLAT, _BREAK = 0, 1


def _fits(item, rest: list, width: int) -> bool:
    """Whether `item` printed flat, then what follows up to the next line break, fits in `width` columns."""
    stack = [item]
    rest_index = len(rest)
    while width >= 0:
        if not stack:
            if rest_index == 0:
                return True
            rest_index -= 1
            stack.append(rest[rest_index])
            continue
        indent, mode, d = stack.pop()
        if isinstance(d, str):
            width -= len(d)
        elif isinstance(d, list):
            stack.extend((indent, mode, x) for x in reversed(d))
        elif isinstance(d, Indent):
            stack.append((indent, mode, d.contents))
        elif isinstance(d, Fill):
            stack.extend((indent, mode, x) for x in reversed(d.parts[d.start:]))
        elif isinstance(d, Group):
            stack.append((indent, _BREAK if d.broken else mode, d.contents))
        elif isinstance(d, _Line):
            if d.hard or mode == _BREAK:
                return True
            width -= len(d.flat)
        elif isinstance(d, (_FreshLine, Suffix)):  # the line ends here
            return True
    return False


def render(doc, width: int = WIDTH) -> list[tuple[str, str | None]]:
    """The lines of a document, each as (code, trailing comment or None)."""
    lines: list[tuple[str, str | None]] = []
    code: list[str] = []
    suffixes: list[str] = []
    column = 0

    def newline(indent: int) -> None:
        nonlocal code, suffixes, column
        lines.append(("".join(code).rstrip(), "  ".join(suffixes) or None))
        code, suffixes, column = [" " * indent], [], indent

    stack = [(0, _BREAK, doc)]
    while stack:
        indent, mode, d = stack.pop()
        if isinstance(d, str):
            if suffixes and d.strip():  # a comment ends its line: code after it goes on the next
                newline(indent)
            code.append(d)
            column += len(d)
        elif isinstance(d, list):
            stack.extend((indent, mode, x) for x in reversed(d))
        elif isinstance(d, Indent):  # the indent of a group printed on one line applies to nothing
            stack.append((indent + INDENT if mode == _BREAK else indent, mode, d.contents))
        elif isinstance(d, Fill):
            parts, i = d.parts, d.start
            if mode == _FLAT or i >= len(parts):
                stack.extend((indent, mode, x) for x in reversed(parts[i:]))
                continue
            if i + 2 < len(parts):
                stack.append((indent, mode, Fill(parts, i + 2)))
            if i + 1 < len(parts):
                both = (indent, _FLAT, [parts[i], parts[i + 1], parts[i + 2]] if i + 2 < len(parts) else parts[i:])
                stack.append((indent, _FLAT if _fits(both, [], width - column) else _BREAK, parts[i + 1]))
            item = (indent, _FLAT, parts[i])
            stack.append(item if _fits(item, [], width - column) else (indent, _BREAK, parts[i]))
        elif isinstance(d, Group):
            if d.broken:
                stack.append((indent, _BREAK, d.contents))
            elif mode == _FLAT:
                stack.append((indent, _FLAT, d.contents))
            else:
                flat = (indent, _FLAT, d.contents)
                stack.append(flat if _fits(flat, stack, width - column) else (indent, _BREAK, d.contents))
        elif isinstance(d, _Line):
            if mode == _BREAK or d.hard:
                newline(indent)
            else:
                code.append(d.flat)
                column += len(d.flat)
        elif isinstance(d, _FreshLine):
            if "".join(code).strip():
                newline(indent)
        elif isinstance(d, Suffix):
            suffixes.append(d.text)
    if "".join(code).strip() or suffixes:
        newline(0)
    return lines


def align_comments(lines: list[tuple[str, str | None]]) -> list[str]:
    """Trailing comments of a paragraph share a column: lines of code at one indentation, with no blank line,
    comment line or line indented otherwise between them."""

    def code_at(i: int, indent: int) -> bool:
        code = lines[i][0]
        return bool(code.strip()) and not code.lstrip().startswith("#") and len(code) - len(code.lstrip()) == indent

    out: list[str] = []
    start = 0
    while start < len(lines):
        end = start
        indent = len(lines[start][0]) - len(lines[start][0].lstrip())
        while end < len(lines) and code_at(end, indent):
            end += 1
        if end == start:  # a blank line or a comment line
            code, comment = lines[start]
            out.append(f"{code}  {comment}" if code and comment else code or comment or "")
            start += 1
            continue
        run = lines[start:end]
        column = max((len(code) for code, comment in run if comment), default=0) + 2
        out.extend(code.ljust(column) + comment if comment else code for code, comment in run)
        start = end
    return out


# Comments ------------------------------------------------------------------------------------------------------

@dataclass
class Comment:
    text: str
    blank_before: bool  # a blank line separates it from what precedes it


@dataclass
class Piece:
    """A subtree laid out: its document, and the comments at its edges, which the enclosing layout places.

    A comment before a node's first token goes with the largest node that starts there (a statement's
    comment is printed above the statement), one after its last token with the largest that ends there.
    """

    kind: str  # the rule or token type
    doc: object
    lead: list[Comment] = field(default_factory=list)
    trail: list[Comment] = field(default_factory=list)
    blank: bool = False  # a blank line before its first token (after any leading comments)


def _leading(comments: list[Comment]) -> list:
    """Comments printed before something in the middle of a line: each on a line of its own."""
    out: list = []
    for c in comments:
        out += [FRESHLINE, c.text, HARDLINE]
    return out


def _trailing(comments: list[Comment]) -> list:
    return [Suffix(c.text) for c in comments]


def _with_comments(piece: Piece) -> list:
    """A piece's own comments above it (a blank line kept where one was), then the piece and its trailing ones."""
    out = []
    for n, c in enumerate(piece.lead):
        out += [c.text, HARDLINE]
        following = piece.lead[n + 1].blank_before if n + 1 < len(piece.lead) else piece.blank
        if following:
            out.append(HARDLINE)
    return out + [piece.doc, *_trailing(piece.trail)]


class _Kids:
    """A node's children for its layout; `k[i]` is child i with the comments it keeps in place."""

    def __init__(self, pieces: list[Piece]):
        self.pieces = pieces
        self.last = len(pieces) - 1

    def __len__(self) -> int:
        return len(self.pieces)

    def kind(self, i: int) -> str:
        return self.pieces[i].kind

    def __getitem__(self, i: int) -> list:
        piece = self.pieces[i]
        return ((_leading(piece.lead) if i > 0 else []) + [piece.doc]
                + (_trailing(piece.trail) if i < self.last else []))

    def commented(self, i: int) -> bool:
        return bool(self.pieces[i].lead or self.pieces[i].trail)


def _attach(text: str, tokens: list[Token]) -> tuple[dict[int, list[Comment]], dict[int, list[Comment]],
                                                        dict[int, bool], list[Comment]]:
    """Comments before each token (by index), after it, whether a blank line precedes it, and after the last."""
    lead: dict[int, list[Comment]] = {}
    trail: dict[int, list[Comment]] = {}
    blank: dict[int, bool] = {}
    end_comments: list[Comment] = []
    previous_end = 0
    for i in range(len(tokens) + 1):
        start = tokens[i].start_pos if i < len(tokens) else len(text)
        gap_start = previous_end
        for match in _COMMENT.finditer(text, previous_end, start):
            comment_text = match.group().rstrip()
            before = text[gap_start:match.start()]
            if i > 0 and "\n" not in text[previous_end:match.start()]:
                trail.setdefault(i - 1, []).append(Comment(comment_text, False))
            else:
                target = lead.setdefault(i, []) if i < len(tokens) else end_comments
                target.append(Comment(comment_text, before.count("\n") >= 2))
            gap_start = match.end()
        if i < len(tokens):
            blank[i] = text[gap_start:start].count("\n") >= 2
            previous_end = tokens[i].end_pos
    return lead, trail, blank, end_comments


# Layout of each rule -------------------------------------------------------------------------------------------

_SPACED = {"binary", "compare", "or_", "and_", "ternary", "output_item", "for_stmt", "import_stmt", "let_stmt",
           "setting", "assign_stmt", "condition", "repeat", "not_"}
_GLUED = {"keyword", "param", "label", "template_label", "output_label", "block_label", "spread", "index",
          "slice", "atom"}  # rules of one token (names, numbers, ...) are that token


def _joined(k: _Kids, separator: str) -> list:
    out: list = []
    for i in range(len(k)):
        if i:
            out.append(separator)
        out.append(k[i])
    return out


def _separated(k: _Kids, first: int, last: int) -> list:
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


def _bracketed(k: _Kids, open_at: int) -> list:
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
        out += _with_comments(piece)
    for n, c in enumerate(close.lead):  # comments after the last statement
        out.append(HARDLINE)
        if c.blank_before and (n or pieces):
            out.append(HARDLINE)
        out.append(c.text)
    return out


class _Layout:
    """One method per grammar rule (or alias), given its children laid out; the tree is walked bottom-up."""

    def braces(self, k: _Kids, first: int) -> list:
        """`{ statements }` from child `first` (the brace) to the last: one statement stays on the line if it
        fits and has no comment; more go one a line."""
        statements = k.pieces[first + 1:k.last]
        close = k.pieces[k.last]
        if not statements and not close.lead:
            return [k[first], close.doc]
        if len(statements) == 1 and not close.lead:
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
        return _bracketed(k, 0)

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

    def output_stmt(self, k):
        rest = []
        for i in range(2, len(k), 2):
            rest += [k[i], LINE, k[i + 1]]
        return [k[0], " ", group([k[1], Indent(rest)])]

    def power(self, k):
        return _joined(k, " ")

    def neg(self, k):
        return [k[0], " " if k.kind(1) == "neg" else "", k[1]]


def _layout(rule: str, k: _Kids, layout: _Layout) -> list:
    handler = getattr(layout, rule, None)
    if handler is not None:
        return handler(k)
    if rule in _SPACED:
        return _joined(k, " ")
    if rule in _GLUED:
        return [k[i] for i in range(len(k))]
    raise AssertionError(f"no layout for the grammar rule {rule!r}")


def _build(tree: Tree, text: str) -> tuple[list[Piece], list[Comment]]:
    """The top-level items laid out, and the comments after the last token."""
    tokens: list[Token] = []
    stack: list = [tree]
    while stack:  # the tokens in order, without recursion
        node = stack.pop()
        if isinstance(node, Token):
            tokens.append(node)
        else:
            stack.extend(reversed(node.children))
    lead, trail, blank, end_comments = _attach(text, tokens)
    index = {id(t): i for i, t in enumerate(tokens)}
    layout = _Layout()

    def token_piece(tok: Token) -> Piece:
        i = index[id(tok)]
        return Piece(tok.type, str(tok), lead.get(i, []), trail.get(i, []), blank.get(i, False))

    done: list[Piece] = []
    work: list[tuple[Tree, bool]] = [(tree, False)]
    while work:
        node, children_done = work.pop()
        if not children_done:
            work.append((node, True))
            work.extend((c, False) for c in reversed(node.children) if isinstance(c, Tree))
            continue
        count = sum(isinstance(c, Tree) for c in node.children)
        finished = done[len(done) - count:] if count else []
        del done[len(done) - count:]
        finished.reverse()
        pieces = [token_piece(c) if isinstance(c, Token) else finished.pop() for c in node.children]
        if node is tree:
            return pieces, end_comments
        if len(pieces) == 1:  # `or_` of one `and_` of one ... `power`: the child itself
            done.append(pieces[0])
            continue
        kids = _Kids(pieces)
        doc = _layout(node.data, kids, layout)
        first, last = pieces[0], pieces[-1]
        done.append(Piece(node.data, doc, first.lead, last.trail, first.blank))
    raise AssertionError("the tree has no root")


def _module(items: list[Piece], end_comments: list[Comment]) -> list:
    """Items one after another: a blank line between them, save between consecutive items of one kind (imports,
    lets, one-line blocks, network aliases) that need not span lines, which keep the author's blank line or not."""
    out: list = []
    for j, item in enumerate(items):
        blank = item.lead[0].blank_before if item.lead else item.blank
        if j > 0:
            same = item.kind == items[j - 1].kind and not _scan(item.doc)[1] and not _scan(items[j - 1].doc)[1]
            out.append(HARDLINE)
            if blank or not same:
                out.append(HARDLINE)
        out += _with_comments(item)
    for n, c in enumerate(end_comments):
        if out:
            out.append(HARDLINE)
            if c.blank_before:
                out.append(HARDLINE)
        out.append(c.text)
    return out


# The parser that keeps every token -----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _concrete_parser() -> Lark:
    from netspec.parse import GRAMMAR, _cache_file

    grammar = GRAMMAR.read_text()
    return Lark(grammar, start="module", parser="lalr", keep_all_tokens=True, maybe_placeholders=False,
                cache=_cache_file(grammar + "\n// netspec fmt: keep_all_tokens"))


def _same_tree(a, b) -> bool:
    """Syntax trees equal but for their spans (dataclass equality, without its recursion)."""
    from dataclasses import fields, is_dataclass

    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if is_dataclass(x):
            if type(x) is not type(y):
                return False
            stack.extend((getattr(x, f.name), getattr(y, f.name)) for f in fields(x) if f.compare)
        elif isinstance(x, (list, tuple)):
            if not isinstance(y, type(x)) or len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif type(x) is not type(y) or x != y:
            return False
    return True


def format_text(text: str, file: str = "<string>") -> str:
    """`text` in the canonical layout; NetspecError (the parser's) if it does not parse.

    >>> format_text("network N{input x:[1,4,4] relu()}")
    'network N {\\n  input x: [1, 4, 4]\\n  relu()\\n}\\n'
    """
    from netspec.parse import parse

    text = text.lstrip("\ufeff")
    before = parse(text, file)  # the parser's own errors and limits (nesting, literal sizes) come first
    tree = _concrete_parser().parse(text)
    items, end_comments = _build(tree, text)
    lines = align_comments(render(_module(items, end_comments)))
    while lines and not lines[-1]:
        lines.pop()
    out = "\n".join(lines) + "\n" if lines else ""
    try:
        same = _same_tree(parse(out, file), before)
    except NetspecError:
        same = False
    if not same:  # a bug in the layout: never hand back a spec that means something else
        raise NetspecError(Diagnostic("NS100", "netspec fmt could not lay this file out without changing it; "
                                               "please report it", Span(file, 1, 1, 1, 2)))
    return out


# The command line -------------------------------------------------------------------------------------------

def _expand(paths: list[str]) -> list[str]:
    """Folders stand for the .net files inside them, in order."""
    from pathlib import Path

    out: list[str] = []
    for p in paths:
        folder = Path(p)
        out += sorted(str(f) for f in folder.rglob("*.net")) if p != "-" and folder.is_dir() else [p]
    return out


def format_paths(paths: list[str], check: bool) -> int:
    """`netspec fmt [--check] FILE...`: 0 when done (or nothing to change), 1 when --check finds files to
    reformat or a file does not parse, 2 when one cannot be read."""
    import sys
    from pathlib import Path

    from netspec.errors import Sources, render_all
    from netspec.files import write_atomic
    from netspec.lower import read_source

    changed = unchanged = failed = 0
    status = 0
    for name in _expand(paths):
        sources = Sources()
        try:
            text = sys.stdin.read() if name == "-" else read_source(Path(name), sources=sources)
            sources.texts[name] = text
            formatted = format_text(text, name)
        except NetspecError as err:
            print(render_all(err.diagnostics, sources), file=sys.stderr)
            status = max(status, 2 if err.diagnostics[0].code == "NS209" else 1)
            failed += 1
            continue
        if name == "-":
            sys.stdout.write(formatted)
        if formatted == text:
            unchanged += 1
            continue
        changed += 1
        if check:
            print(f"would reformat {name}")
            status = max(status, 1)
        elif name != "-":
            try:
                write_atomic(name, formatted)
            except OSError as err:
                print(f"netspec fmt: cannot write {name}: {err.strerror}", file=sys.stderr)
                status, changed, failed = 2, changed - 1, failed + 1
                continue
            print(f"reformatted {name}")
    verb = "would be reformatted" if check else "reformatted"
    errors = f", {failed} not formatted (see above)" if failed else ""
    print(f"{changed} file{'s' if changed != 1 else ''} {verb}, {unchanged} left unchanged{errors}", file=sys.stderr)
    return status
