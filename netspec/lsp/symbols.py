"""The outline of a document: its lets, blocks and networks (with their labelled layers), and train recipes.

Read from the last check that parsed, its ranges carried into the text as it is now; a symbol inside lines
edited since is left out.
"""

from __future__ import annotations

from lsprotocol import types as lsp

from netspec.ground.errors import Span
from netspec.language import ast
from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.hovers import block_signature
from netspec.lsp.positions import TextIndex, map_offset
from netspec.semantics.binder import find_word


def document_symbols(analysis: DocumentAnalysis, text: str, encoding: str) -> list[lsp.DocumentSymbol]:
    """The outline of `analysis`'s document, whose text is now `text`."""
    current = TextIndex(text)

    def carried(start: int, end: int) -> lsp.Range | None:
        new_start, new_end = map_offset(start, analysis.text, text), map_offset(end, analysis.text, text)
        if new_start is None or new_end is None:
            return None
        return current.range(new_start, new_end, encoding)

    def symbol(name: str, kind: lsp.SymbolKind, span: Span, detail: str, children) -> lsp.DocumentSymbol | None:
        start, end = analysis.index.span_offsets(span)
        whole = carried(start, end)
        if whole is None:
            return None
        named = find_word(analysis.text, name.split()[-1], start, end)
        selection = (carried(*named) if named else None) or whole
        return lsp.DocumentSymbol(name, kind, whole, selection, detail, children=[c for c in children if c])

    def layers(statements: list) -> list:
        out = []
        for stmt in statements:
            steps = stmt.chain.steps if isinstance(stmt, ast.Assign) else \
                stmt.steps if isinstance(stmt, ast.Chain) else []
            for step in steps:
                inner = layers(step.core.body) if isinstance(step.core, ast.Group) else []
                if isinstance(step.label, str) and step.label_span is not None:
                    core = step.core.call if isinstance(step.core, ast.Spread) else step.core
                    detail = core.callee if isinstance(core, ast.Call) else "group"
                    out.append(symbol(step.label, lsp.SymbolKind.Field, step.span, detail, inner))
                else:
                    out += inner
            if isinstance(stmt, ast.For):
                out += layers(stmt.body)
        return out

    out = []
    for item in analysis.module.items:
        if isinstance(item, ast.Block):
            kind = lsp.SymbolKind.Class if item.is_network else lsp.SymbolKind.Function
            out.append(symbol(item.name, kind, item.span, block_signature(analysis, item), layers(item.body)))
        elif isinstance(item, ast.NetworkAlias):
            out.append(symbol(item.name, lsp.SymbolKind.Class, item.span, block_signature(analysis, item), []))
        elif isinstance(item, ast.Train):
            out.append(symbol(f"train {item.network}", lsp.SymbolKind.Event, item.span, "training recipe", []))
        elif isinstance(item, ast.Let):
            out.append(symbol(item.name, lsp.SymbolKind.Constant, item.span, "let", []))
    return [s for s in out if s]


def matches(query: str, name: str) -> bool:
    """`query`'s characters appear in `name` in order, whatever their case (`rb` finds `ResBlock`)."""
    at = 0
    lowered = name.lower()
    for c in query.lower():
        at = lowered.find(c, at) + 1
        if at == 0:
            return False
    return True


def definitions(module: ast.Module) -> list[tuple[str, lsp.SymbolKind, Span]]:
    """A file's blocks, networks, lets and train recipes: (name, kind, span)."""
    out = []
    for item in module.items:
        if isinstance(item, ast.Block):
            out.append((item.name, lsp.SymbolKind.Class if item.is_network else lsp.SymbolKind.Function, item.span))
        elif isinstance(item, ast.NetworkAlias):
            out.append((item.name, lsp.SymbolKind.Class, item.span))
        elif isinstance(item, ast.Let):
            out.append((item.name, lsp.SymbolKind.Constant, item.span))
    return out
