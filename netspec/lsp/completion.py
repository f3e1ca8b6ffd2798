"""Completion: the arguments of the op or block being called, then every op and every block in sight.

Where the cursor is (inside which call, with which arguments given) is read from the text as it is now, so it
works while the text does not parse; the blocks come from the document's last check that parsed.
"""

from __future__ import annotations

import re

from lsprotocol import types as lsp

from netspec.language.evaluate import show
from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.hovers import block_signature, source_text, summary_line
from netspec.ops import OPS
from netspec.ops.base import signature

_KEYWORD_ARGUMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")
# The characters the scans below act on: found by a regular expression, the text between them is skipped
# without a Python loop (a long line costs a search, not a step per character).
_BRACKETS_QUOTES_COMMENTS = re.compile(r'[#"()\[\]{}]')
_BRACKETS_QUOTES_COMMAS = re.compile(r'["()\[\]{},]')
_NAME_REVERSED = re.compile(r"\s*([A-Za-z0-9_]*[A-Za-z_])")


def completion(analysis: DocumentAnalysis | None, text: str, offset: int) -> lsp.CompletionList | None:
    """What may be typed at `offset` of `text`; `analysis` is the document's last check that parsed."""
    where = call_context(text, offset)
    if where == "":
        return None  # in a comment or a string
    items: list[lsp.CompletionItem] = []
    if where is not None:
        callee, given, positional = where
        items += argument_items(analysis, callee, given, positional)
    for name, op in sorted(OPS.items()):
        if op.inputs != 0:
            items.append(lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Function, detail=signature(op),
                                            documentation=op.summary, sort_text=f"1{name}"))
    for name, binding in sorted(analysis.names.blocks.items() if analysis else []):
        node = binding.node
        summary = summary_line(analysis, node, binding.file)
        items.append(lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Class,
                                        detail=block_signature(analysis, node), documentation=summary or None,
                                        sort_text=f"1{name}"))
    return lsp.CompletionList(is_incomplete=False, items=items)


def argument_items(analysis: DocumentAnalysis | None, callee: str, given: set[str],
                   positional: int) -> list[lsp.CompletionItem]:
    """`name=` for each argument of the op or block being called that is not given yet (by name, or by
    position), its default shown."""
    rows: list[tuple[str, str]] = []
    if analysis is not None and callee in analysis.names.blocks:
        block = analysis.names.blocks[callee].node
        rows = [(p.name, p.name if p.default is None else f"{p.name}={source_text(analysis, p.default)}")
                for p in block.params]
        given = given | {name for name, _ in rows[:positional]}
        about = block_signature(analysis, block)
    elif callee in OPS and OPS[callee].inputs != 0:
        op = OPS[callee]
        fields = [(n, i) for n, i in op.Args.model_fields.items() if n != "frozen"] + \
            [("frozen", op.Args.model_fields["frozen"])]  # every op's, so last
        rows = [(name, name if info.is_required() else f"{name}={show(info.default)}") for name, info in fields]
        if op.inputs is not None:  # a merge's positional arguments are the values it joins
            given = given | set(op.positional[:positional])
        about = signature(op)
    else:
        return []
    return [lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Field, detail=shown if "=" in shown else
                               f"{name} (required)", documentation=about, insert_text=f"{name}=",
                               sort_text=f"0{n:03d}")
            for n, (name, shown) in enumerate(rows) if name not in given]


def call_context(text: str, offset: int) -> tuple[str, set[str], int] | str | None:
    """The call whose parentheses hold `offset`, the argument names given it so far and how many arguments
    came by position; None outside any call; "" in a comment or a string. Read from the text, so it works
    while the text does not parse."""
    found = open_call(text, offset)
    if not isinstance(found, tuple):
        return found
    callee, start = found
    arguments = top_level_parts(text[start + 1:min(offset, len(text))])[:-1]  # the last is the one being typed
    given = {m.group(1) for m in map(_KEYWORD_ARGUMENT.match, arguments) if m}
    return callee, given, sum(1 for a in arguments if not _KEYWORD_ARGUMENT.match(a))


def open_call(text: str, offset: int) -> tuple[str, int] | str | None:
    """The callee of the call whose parentheses hold `offset` and the offset of its "("; None outside any
    call; "" in a comment or a string."""
    opened: list[tuple[str, int]] = []
    i, end = 0, min(offset, len(text))
    while (found := _BRACKETS_QUOTES_COMMENTS.search(text, i, end)) is not None:
        i = found.start()
        c = text[i]
        if c == "#":
            newline = text.find("\n", i)
            if newline < 0 or newline >= end:
                return ""
            i = newline
        elif c == '"':
            close, newline = text.find('"', i + 1), text.find("\n", i + 1)
            stop = min(x for x in (close, newline, len(text)) if x >= 0)
            if stop >= end:
                return ""
            i = stop
        elif c in "([{":
            opened.append((c, i))
        elif c in ")]}" and opened:
            opened.pop()
        i += 1
    if not opened or opened[-1][0] != "(":
        return None
    start = opened[-1][1]
    # The callee's name, read backwards from the bracket: a search forwards for a name at the end would retry
    # at every character of a long run of letters.
    before = _NAME_REVERSED.match(text[start - 1::-1] if start else "")
    if before is None:
        return None
    return before.group(1)[::-1], start


def top_level_parts(text: str) -> list[str]:
    """`a, f(b, c), d=[1, 2]` -> the three arguments: split at commas outside brackets and strings."""
    parts, depth, start, quoted = [], 0, 0, False
    for found in _BRACKETS_QUOTES_COMMAS.finditer(text):
        i, c = found.start(), found.group()
        if c == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]
