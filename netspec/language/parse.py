"""Lark grammar -> syntax tree (netspec.language.ast), with a span on every node."""

from __future__ import annotations

import dataclasses
import re
import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from netspec.language import ast
from netspec.ground.errors import Diagnostic, NetspecError, Span, source_lines
from netspec.ground.limits import DEFAULT
from netspec.language.prescan import prescan

GRAMMAR = Path(__file__).with_name("netspec.lark")

# How terminals read in "expected ..." messages, where their pattern alone would not say.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "COMPARE": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//' or '%'",
    "$END": "end of file",
}
_BRACKETS = {"(": ")", "[": "]", "{": "}"}


def cache_file(grammar: str) -> str | bool:
    """A private per-user cache for Lark's parse tables (building them costs ~0.25 s a start).

    Lark pickles the tables, so they live in a directory only this user can write, never in a shared /tmp.
    """
    import os

    import lark

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netspec"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        if base.stat().st_uid != os.getuid() or base.stat().st_mode & 0o022:
            return False
    except OSError:
        return False
    digest = hashlib.sha256(grammar.encode()).hexdigest()[:16]
    return str(base / f"grammar-{digest}-lark{lark.__version__}.pickle")


_STARTS = ["module", "expr", "statements"]  # a file; the {expression} parts of a computed label; a run of statements


@lru_cache(maxsize=1)
def parser() -> Lark:
    grammar = GRAMMAR.read_text()
    return Lark(grammar, start=_STARTS, parser="lalr", propagate_positions=True, maybe_placeholders=True,
                cache=cache_file(grammar + "\n// start: " + " ".join(_STARTS)))


def _span(file: str, meta) -> Span:
    if getattr(meta, "empty", False) or not hasattr(meta, "line"):
        return Span(file, 1, 1, 1, 1)
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _number(text: str) -> str:
    return text.replace("_", "")


_ONE_LEVEL = {"neg", "not_", "index", "slice", "list", "group", "call", "function", "ternary", "for_stmt"}


def _nesting(rule: str, children: list) -> int:
    """Levels of syntax-tree nesting a rule adds to the AST: a chain `a + b + c` is two."""
    if rule in ("binary", "compare"):
        return len(children) // 2
    if rule in ("or_", "and_", "power"):
        return len(children) - 1
    return 1 if rule in _ONE_LEVEL else 0


class _ToAst:
    """Builds ast nodes bottom-up; one method per grammar rule (or alias), called with (meta, children).

    A plain walk rather than lark.Transformer with v_args(meta=True), which re-wraps the method on
    every call and was a third of the parse time for a 1,000-block spec.
    """

    def __init__(self, file: str, max_depth: int):
        self.file = file
        self.max_depth = max_depth

    def transform(self, root: Tree):
        """Bottom-up without recursion, so no input can exhaust Python's stack here.

        Later stages do recurse over what this builds, so it also measures each node's nesting (operators,
        brackets, groups; a plain `(...)` adds none) and refuses more than `max_depth` levels.
        """
        values: list = []  # finished subtrees' ast values, in order, and beside them their nesting
        depths: list[int] = []
        stack: list[tuple[Tree, bool]] = [(root, False)]
        while stack:
            tree, children_done = stack.pop()
            kids = tree.children
            if not children_done:
                stack.append((tree, True))
                stack.extend((c, False) for c in reversed(kids) if isinstance(c, Tree))
                continue
            children, depth = list(kids), 0
            for i in range(len(kids) - 1, -1, -1):  # the last child finished last
                if isinstance(kids[i], Tree):
                    children[i] = values.pop()
                    depth = max(depth, depths.pop())
            depth += _nesting(tree.data, children)
            if depth > self.max_depth:
                raise NetspecError(Diagnostic(
                    "NS213", f"operators, brackets and groups nest more than {self.max_depth} levels deep here",
                    self.s(tree.meta), "split the expression with `let`, or the body into blocks"))
            values.append(getattr(self, tree.data)(tree.meta, children))
            depths.append(depth)
        return values[0]

    def s(self, meta) -> Span:
        return _span(self.file, meta)

    # top level
    def module(self, meta, items):
        return ast.Module(self.file, list(items))

    def import_stmt(self, meta, c):
        return ast.Import(str(c[0])[1:-1], self.s(meta))

    def let_stmt(self, meta, c):
        return ast.Let(str(c[0]), c[1], self.s(meta))

    def block_def(self, meta, c):
        name, params, body = c
        return ast.Block(str(name), params or [], body, False, self.s(meta))

    def network_body(self, meta, c):
        name, params, body = c
        return ast.Block(str(name), params or [], body, True, self.s(meta))

    def network_alias(self, meta, c):
        name, params, step = c
        return ast.NetworkAlias(str(name), params or [], step, self.s(meta))

    def train_def(self, meta, c):
        return ast.Train(str(c[0]), list(c[1:]), self.s(meta))

    def setting(self, meta, c):
        return ast.Setting(str(c[0]), c[1], self.s(meta))

    def params(self, meta, c):
        return [p for p in c if p is not None]

    def param(self, meta, c):
        return ast.Param(str(c[0]), c[1], self.s(meta))

    def body(self, meta, c):
        return list(c)

    def statements(self, meta, c):
        return list(c)

    # statements
    def input_stmt(self, meta, c):
        return ast.Input(str(c[0]), c[1], self.s(meta))

    def assign_stmt(self, meta, c):
        *names, chain = c
        return ast.Assign(str(names[0]), chain, self.s(meta), [str(n) for n in names[1:]])

    def export_stmt(self, meta, c):
        return ast.Export([str(n) for n in c], self.s(meta))

    def register_stmt(self, meta, c):
        return ast.Register([str(n) for n in c], [_token_span(self.file, n) for n in c], self.s(meta))

    def chain(self, meta, c):
        return ast.Chain(list(c), self.s(meta))

    def step(self, meta, c):
        label, core, repeat, condition = c
        name, label_span = (label if label else (None, None))
        return ast.Step(core, name, repeat, condition, self.s(meta), label_span)

    def label(self, meta, c):
        return (str(c[0]), _token_span(self.file, c[0]))

    # Keywords that are also module names: the network's `output:`, torchvision's ConvNeXt and EfficientNet `block:`
    def output_label(self, meta, c):
        return ("output", self.s(meta))

    def block_label(self, meta, c):
        return ("block", self.s(meta))

    def template_label(self, meta, c):
        token = c[0]
        span = _token_span(self.file, token)
        parts = _template_parts(str(token), token.line, token.column, self.file, self.max_depth)
        if all(isinstance(p, str) for p in parts):
            return ("".join(parts), span)
        return (ast.Template(parts, span), span)

    def for_stmt(self, meta, c):
        name, values, body = c
        return ast.For(str(name), values, body, self.s(meta), _token_span(self.file, name))

    def output_stmt(self, meta, c):
        return ast.Output(list(c), self.s(meta))

    def output_item(self, meta, c):
        return ast.OutputItem(str(c[0]), c[1], self.s(meta))

    def repeat(self, meta, c):
        return c[0]

    def condition(self, meta, c):
        return c[0]

    def call(self, meta, c):
        name, args = c
        return ast.Call(str(name), args or [], self.s(meta), _token_span(self.file, name))

    def spread(self, meta, c):
        return ast.Spread(c[0], self.s(meta))

    def group(self, meta, c):
        return ast.Group(list(c), self.s(meta))

    def ref(self, meta, c):
        return ast.Ref(str(c[0]), self.s(meta))

    def arguments(self, meta, c):
        return [a if isinstance(a, ast.Argument) else ast.Argument(None, a, a.span) for a in c]

    def keyword(self, meta, c):
        return ast.Argument(str(c[0]), c[1], self.s(meta))

    # expressions
    def _fold(self, meta, c, ops=None):
        left = c[0]
        i = 1
        while i < len(c):
            if ops is None:
                op, right = str(c[i]), c[i + 1]
                i += 2
            else:
                op, right = ops, c[i]
                i += 1
            left = ast.Binary(op, left, right, Span(self.file, left.span.line, left.span.col, right.span.end_line, right.span.end_col))
        return left

    def binary(self, meta, c):
        return self._fold(meta, c)

    def compare(self, meta, c):
        return self._fold(meta, c)

    def or_(self, meta, c):
        return self._fold(meta, c, "or")

    def and_(self, meta, c):
        return self._fold(meta, c, "and")

    def not_(self, meta, c):
        return ast.Unary("not", c[0], self.s(meta))

    def neg(self, meta, c):
        return ast.Unary("-", c[0], self.s(meta))

    def power(self, meta, c):
        return ast.Binary("**", c[0], c[1], self.s(meta)) if len(c) == 2 else c[0]

    def index(self, meta, c):
        return ast.Index(c[0], c[1], self.s(meta))

    def slice(self, meta, c):
        return ast.Slice(c[0], c[1], c[2], self.s(meta))

    def ternary(self, meta, c):
        then, condition, otherwise = c
        return ast.Conditional(condition, then, otherwise, self.s(meta))

    def function(self, meta, c):
        name, args = c
        return ast.Function(str(name), self.arguments(meta, args or []), self.s(meta),
                            _token_span(self.file, name))

    def int_(self, meta, c):
        digits = _number(c[0])
        if len(digits) > 19:  # beyond any plausible size, and int() refuses very long digit strings
            raise NetspecError(Diagnostic("NS213", f"integer literal with {len(digits)} digits is too large",
                                          self.s(meta)))
        return ast.Literal(int(digits), self.s(meta))

    def float_(self, meta, c):
        value = float(_number(c[0]))
        if value in (float("inf"), float("-inf")):
            raise NetspecError(Diagnostic("NS213", f"number {c[0]} is too large", self.s(meta)))
        return ast.Literal(value, self.s(meta))

    def string(self, meta, c):
        return ast.Literal(str(c[0])[1:-1], self.s(meta))

    def true(self, meta, c):
        return ast.Literal(True, self.s(meta))

    def false(self, meta, c):
        return ast.Literal(False, self.s(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), self.s(meta))

    def list(self, meta, c):
        return ast.ListExpr([x for x in c if x is not None], self.s(meta))


def _shifted(node, line: int, column: int):
    """An expression parsed on its own, moved to where it sits in the file (line 1 col 1 -> line, column)."""
    if isinstance(node, list):
        return [_shifted(n, line, column) for n in node]
    if not hasattr(node, "__dataclass_fields__"):
        return node
    for name in node.__dataclass_fields__:
        value = getattr(node, name)
        if isinstance(value, Span):
            setattr(node, name, Span(value.file, line, column + value.col - 1, line, column + value.end_col - 1))
        else:
            _shifted(value, line, column)
    return node


def _template_parts(token: str, line: int, column: int, file: str, max_depth: int) -> list:
    """A label string's literal text and {expression} parts; `column` is the opening quote's."""
    parts: list = []
    text, position = token[1:-1], 0
    while position < len(text):
        start = text.find("{", position)
        if start < 0:
            parts.append(text[position:])
            break
        if start > position:
            parts.append(text[position:start])
        end = text.find("}", start)
        where = Span(file, line, column + 1 + start, line, column + 2 + start)
        if end < 0:
            raise NetspecError(Diagnostic("NS100", "a label's '{' is not closed", where,
                                          'close it: "name{i}"'))
        source = text[start + 1:end]
        if not source.strip():
            raise NetspecError(Diagnostic("NS100", "empty {} in a label", where,
                                          'put an expression inside, e.g. "layer{i + 1}"'))
        try:
            tree = parser().parse(source, start="expr")
        except UnexpectedInput as err:
            diagnostic = _syntax_error(err, file, source)
            shifted = Span(file, line, column + 1 + start + diagnostic.span.col,
                           line, column + 1 + start + diagnostic.span.end_col)
            raise NetspecError(Diagnostic("NS100", diagnostic.message + " (in a label's {expression})", shifted,
                                          diagnostic.hint)) from None
        parts.append(_shifted(_ToAst(file, max_depth).transform(tree), line, column + 2 + start))
        position = end + 1
    return parts


def _describe_expected(expected: set[str]) -> str:
    words = []
    terminals = {t.name: t for t in parser().terminals}
    for name in sorted(expected):
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
        elif name in terminals and isinstance(terminals[name].pattern, PatternStr):
            words.append(f"'{terminals[name].pattern.value}'")
        else:
            words.append(name.lower())
    words = sorted(set(words))
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _unclosed_bracket(text: str, upto_line: int, upto_col: int) -> tuple[str, int, int] | None:
    """The innermost bracket open at the given position that nothing in the whole text closes (comments and
    strings ignored); None when every bracket open there is closed later, as the body's own braces are around
    most syntax errors."""
    stack: list[tuple[str, int, int]] = []
    open_there: list[tuple[str, int, int]] | None = None
    closed: set[tuple[str, int, int]] = set()
    for lineno, line in enumerate(source_lines(text), start=1):
        in_string = False
        for colno, ch in enumerate(line, start=1):
            if open_there is None and (lineno, colno) >= (upto_line, upto_col):
                open_there = list(stack)
            if in_string:
                in_string = ch != '"'
            elif ch == '"':
                in_string = True
            elif ch == "#":
                break
            elif ch in _BRACKETS:
                stack.append((ch, lineno, colno))
            elif ch in _BRACKETS.values() and stack and _BRACKETS[stack[-1][0]] == ch:
                closed.add(stack.pop())
        if open_there is None and lineno >= upto_line:
            open_there = list(stack)
    unclosed = [b for b in (open_there if open_there is not None else stack) if b not in closed]
    return unclosed[-1] if unclosed else None


def _char_at(text: str, line: int, col: int) -> str:
    lines = source_lines(text)
    if line <= len(lines) and col <= len(lines[line - 1]):
        return lines[line - 1][col - 1]
    return "?"


def _syntax_error(err: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        char = _char_at(text, line, col)
        message = f"unexpected character {char!r}"
        expected = err.allowed or set()
        width = 1
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            message = "unexpected end of file"
            width = 1
        else:
            kind = {"NAME": "name", "INT": "integer", "FLOAT": "number", "STRING": "string"}.get(tok.type, "token")
            message = f"unexpected {kind} '{tok}'"
            width = max(1, len(str(tok)))
        expected = err.expected or set()
    else:  # UnexpectedEOF
        message = "unexpected end of file"
        expected = getattr(err, "expected", set()) or set()
        width = 1
    if expected:
        message += f"; expected {_describe_expected(set(expected))}"
    hint = None
    opened = _unclosed_bracket(text, line, col)
    if opened and _BRACKETS[opened[0]] in message:
        hint = f"the '{opened[0]}' at {opened[1]}:{opened[2]} is not closed"
    return Diagnostic("NS100", message, Span(file, line, col, line, col + width), hint)


# Parsing in pieces -------------------------------------------------------------------------------------------------
#
# A language server parses the document again at every keystroke, and a keystroke changes one line. A large text is
# therefore cut where the grammar cuts it, each piece is parsed alone and its result kept; the next parse of the
# text re-parses only the pieces whose text (or first line) changed. The cuts: top-level items, each starting at
# the beginning of a line outside any bracket; inside a block's or network's body, runs of statements, each starting
# at the beginning of a line one bracket deep, with a word that can only begin a statement. Each piece is parsed at
# its place (preceded by as many newlines as lines before it), so its spans are those of the whole parse. The
# grammar is LALR(1), hence unambiguous: when every piece parses, their trees put together are the whole text's
# tree. When any piece does not, the whole text is parsed, so a mistake is reported as it always is.

_PIECE_LINES = 32  # a body's statements are parsed in runs of about this many lines
_PIECES_FROM_CHARS = 16 * 1024  # smaller texts are parsed whole: milliseconds
_STATEMENT_KEYWORDS = frozenset({"block", "export", "for", "input", "let", "output", "register"})  # `block:` is a label
_ITEM_START = re.compile(r"(?:import|let|block|network|train)\b")
_FIRST_WORD = re.compile(r'[ \t]*(?:(")|([A-Za-z_][A-Za-z0-9_]*))')
_BRACKETS_AND_LINES = re.compile(r'"[^"\n]*"|#[^\n]*|[{}()\[\]\n]')
_OPENING = frozenset("{([")

_PIECES: OrderedDict[tuple, list] = OrderedDict()
_PIECES_ENTRIES = 8192
_PIECES_LOCK = threading.Lock()


class _NotInPieces(Exception):
    """The text cannot be cut (unbalanced brackets, a piece that does not parse): parse it whole."""


def _line_depths(text: str) -> list[int]:
    """The bracket depth at the start of each line (strings and comments skipped)."""
    depths, depth = [0], 0
    for match in _BRACKETS_AND_LINES.finditer(text):
        char = match.group()
        if char == "\n":
            depths.append(depth)
        elif char in _OPENING:
            depth += 1
        elif len(char) == 1 and char in "})]":
            depth -= 1
            if depth < 0:
                raise _NotInPieces
    return depths


def _cut_before(line: str, run: int, piece_lines: int) -> bool:
    """Whether a run of statements `run` lines long ends before `line`, where a statement may begin. Decided by the
    line's text (one line in `piece_lines`, by its hash), not by counting, so that a line added or removed moves
    the cuts only near it and the pieces after it keep their texts; within a quarter and four times the size."""
    if run < max(1, piece_lines // 4):
        return False
    digest = hashlib.blake2b(line.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return run >= 4 * piece_lines or int.from_bytes(digest, "little") % piece_lines == 0


@lru_cache(maxsize=1)
def keywords() -> frozenset[str]:
    """The grammar's reserved words (its literal terminals that are words)."""
    return frozenset(t.pattern.value for t in parser().terminals
                     if isinstance(t.pattern, PatternStr) and t.pattern.value.isidentifier())


def _starts_statement(line: str) -> bool:
    match = _FIRST_WORD.match(line)
    if match is None:
        return False
    word = match.group(2)
    return match.group(1) is not None or word not in keywords() or word in _STATEMENT_KEYWORDS


def _moved(value, lines: int):
    """A syntax tree (or part of one) parsed `lines` lines higher: the same nodes, each span moved down. The trees
    in the cache are shared, so this copies rather than changes them."""
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(item, lines) for item in value)
    if isinstance(value, Span):
        return Span(value.file, value.line + lines, value.col, value.end_line + lines, value.end_col)
    names = _FIELDS.get(type(value))
    if names is None:
        if not dataclasses.is_dataclass(value):
            return value  # a name, a number, a word
        names = _FIELDS[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    return type(value)(**{name: _moved(getattr(value, name), lines) for name in names})


_FIELDS: dict[type, tuple[str, ...]] = {}


def _parsed_piece(kind: str, lines: list[str], first: int, file: str, max_depth: int) -> list:
    """The items ("module") or statements ("statements") of lines[first:first + len], parsed at their place: kept
    by their text, so that lines added or removed above a piece move its spans instead of parsing it again."""
    text = "\n".join(lines)
    key = (kind, file, max_depth, text)
    with _PIECES_LOCK:
        kept = _PIECES.get(key)
        if kept is not None:
            _PIECES.move_to_end(key)
    if kept is not None:
        if kept[0] == first:
            return kept[1]
        found = _moved(kept[1], first - kept[0])
    else:
        try:
            found = _ToAst(file, max_depth).transform(parser().parse("\n" * first + text, start=kind))
        except (UnexpectedInput, NetspecError):  # the whole text's parse says it, where it would say it
            raise _NotInPieces from None
        found = found.items if kind == "module" else found
    with _PIECES_LOCK:
        _PIECES[key] = (first, found)
        while len(_PIECES) > _PIECES_ENTRIES:
            _PIECES.popitem(last=False)
    return found


def _item_in_pieces(lines: list[str], depths: list[int], start: int, end: int, file: str, max_depth: int,
                    piece_lines: int) -> list:
    """The items of lines[start:end], one top-level item and what follows it up to the next: a block's or
    network's body of many lines is parsed as its header and closing brace, then its statements in runs."""
    header_end = next((i for i in range(start, end - 1) if depths[i + 1] == 1), None) if end - start > piece_lines \
        else None
    closing = next((i for i in range(end - 1, start, -1) if lines[i].strip() and not lines[i].lstrip().startswith("#")),
                   None)
    if header_end is None or closing is None or not re.match(r"(?:block|network)\b", lines[start]) \
            or not re.fullmatch(r".*\{[ \t]*(?:#.*)?", lines[header_end]) or lines[closing].strip() != "}" \
            or depths[closing] != 1 or any(depths[i] < 1 for i in range(header_end + 1, closing + 1)):
        return _parsed_piece("module", lines[start:end], start, file, max_depth)
    # the header with an empty body (as many lines as the text has, so that its span is the whole item's)
    skeleton = lines[start:header_end + 1] + [""] * (closing - header_end - 1) + lines[closing:end]
    items = _parsed_piece("module", skeleton, start, file, max_depth)
    if not items or not isinstance(items[0], ast.Block) or items[0].body:
        raise _NotInPieces
    body: list = []
    run_start = header_end + 1
    for i in range(header_end + 2, closing + 1):
        if i == closing or (depths[i] == 1 and _cut_before(lines[i], i - run_start, piece_lines)
                            and _starts_statement(lines[i])):
            body += _parsed_piece("statements", lines[run_start:i], run_start, file, max_depth)
            run_start = i
    return [dataclasses.replace(items[0], body=body), *items[1:]]


def parse_in_pieces(text: str, file: str = "<string>", max_depth: int = DEFAULT.nesting,
                    piece_lines: int = _PIECE_LINES) -> ast.Module | None:
    """`text`'s syntax tree put together from its pieces' (parsed, or kept from an earlier parse); None when the
    text cannot be cut or a piece does not parse. The caller scans the text for its limits first (prescan)."""
    text = text.lstrip("\ufeff")
    try:
        depths = _line_depths(text)
        lines = text.split("\n")
        starts = [i for i, line in enumerate(lines) if depths[i] == 0 and _ITEM_START.match(line)]
        if not starts or any(line.strip() and not line.lstrip().startswith("#") for line in lines[:starts[0]]):
            return None
        items: list = []
        for start, end in zip(starts, starts[1:] + [len(lines)]):
            items += _item_in_pieces(lines, depths, start, end, file, max_depth, piece_lines)
    except _NotInPieces:
        return None
    return ast.Module(file, items)


def parse(text: str, file: str = "<string>", max_depth: int = DEFAULT.nesting,
          max_tokens: int | None = DEFAULT.tokens) -> ast.Module:
    """Parse spec text into a syntax tree; too many tokens or too deep brackets are refused before Lark runs
    (netspec.language.prescan; `max_tokens=None`: the caller has scanned the text already).

    >>> parse('network N { input x: [1, 4, 4]  relu() }').items[0].name
    'N'
    """
    text = text.lstrip("\ufeff")
    if max_tokens is not None:
        prescan(text, file, max_depth, max_tokens)  # milliseconds, where the parser could take a minute
    if len(text) >= _PIECES_FROM_CHARS and (module := parse_in_pieces(text, file, max_depth)) is not None:
        return module
    try:
        tree = parser().parse(text, start="module")
    except UnexpectedInput as err:
        raise NetspecError(_syntax_error(err, file, text)) from None
    return _ToAst(file, max_depth).transform(tree)
