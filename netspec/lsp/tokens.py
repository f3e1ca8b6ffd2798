"""Semantic tokens and folding ranges, read from a document's last check that parsed.

Tokens tell apart what the highlighter's grammar cannot: a registry op from a block, a value the network
computes from a parameter (or loop variable, or a size read from an input) and a let; the binder says which
each name is. Folding ranges are the bodies of blocks, networks, groups, loops and train recipes, and runs of
comment lines.
"""

from __future__ import annotations

import re

from lsprotocol import types as lsp

from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.positions import TextIndex, map_offset
from netspec.lsp.walk import bodies
from netspec.ops import OPS
from netspec.semantics.binder import name_offsets

TOKEN_TYPES = ["function", "class", "variable", "parameter"]
TOKEN_MODIFIERS = ["declaration", "readonly", "defaultLibrary"]
LEGEND = lsp.SemanticTokensLegend(TOKEN_TYPES, TOKEN_MODIFIERS)
_KIND = {"block": ("class", 0), "network": ("class", 0), "parameter": ("parameter", 0),
         "loop variable": ("parameter", 0), "input size": ("parameter", 0), "let": ("variable", 2),
         "value": ("variable", 0), "input": ("variable", 0), "layer": ("variable", 0)}
_COMMENT_RUN = re.compile(r"(?:^[ \t]*#[^\n]*\n){2,}", re.MULTILINE)


def classify(o, analysis: DocumentAnalysis) -> tuple[str, int] | None:
    """(token type, modifier bits) of an occurrence, or None where it is not a token of its own."""
    if o.kind in ("call", "import"):
        return None
    library = 1 << TOKEN_MODIFIERS.index("defaultLibrary")
    if o.kind == "function":
        return "function", library
    if o.binding is None:
        if (o.kind == "callee" and o.node.callee in OPS) or (o.kind == "name" and getattr(o.node, "id", None) in OPS):
            return "function", library
        return None
    if o.kind == "label" and not o.binding.name:
        return None  # a template label: its parts are tokens of their own
    kind, modifiers = _KIND.get(o.binding.kind, ("variable", 0))
    if o.binding.file == analysis.name and (o.start, o.end) == name_offsets(o.binding, analysis.index):
        modifiers |= 1 << TOKEN_MODIFIERS.index("declaration")
    return kind, modifiers


def semantic_tokens(analysis: DocumentAnalysis, text: str, current: TextIndex, encoding: str) -> list[int]:
    """The tokens of the document, whose text is now `text`, in the protocol's relative encoding."""
    found = []
    for o in analysis.names.occurrences:
        classified = classify(o, analysis)
        if classified is not None:
            found.append((o.start, o.end, *classified))
    data: list[int] = []
    line, column, last_end = 0, 0, -1
    for start, end, kind, modifiers in sorted(found):
        if start < last_end:
            continue  # inside the previous token
        new_start, new_end = map_offset(start, analysis.text, text), map_offset(end, analysis.text, text)
        if new_start is None or new_end is None:
            continue
        begin, finish = current.position(new_start, encoding), current.position(new_end, encoding)
        if begin.line != finish.line or finish.character <= begin.character:
            continue
        data += [begin.line - line, begin.character - (column if begin.line == line else 0),
                 finish.character - begin.character, TOKEN_TYPES.index(kind), modifiers]
        line, column, last_end = begin.line, begin.character, end
    return data


def folding_ranges(analysis: DocumentAnalysis, text: str, current: TextIndex) -> list[lsp.FoldingRange]:
    """Bodies that span lines, folded up to the line before their closing brace; runs of comment lines."""
    out = []
    for body in bodies(analysis.module):
        start, end = analysis.index.span_offsets(body.span)
        new_start, new_end = map_offset(start, analysis.text, text), map_offset(end, analysis.text, text)
        if new_start is None or new_end is None:
            continue
        first, last = current.position(new_start, "utf-32").line, current.position(new_end, "utf-32").line - 1
        if last > first:
            out.append(lsp.FoldingRange(first, last, kind=lsp.FoldingRangeKind.Region))
    for run in _COMMENT_RUN.finditer(text):
        first, last = current.position(run.start(), "utf-32").line, current.position(run.end() - 1, "utf-32").line
        out.append(lsp.FoldingRange(first, last, kind=lsp.FoldingRangeKind.Comment))
    return sorted(out, key=lambda r: (r.start_line, r.end_line))
