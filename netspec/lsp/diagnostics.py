"""The diagnostics published for a file: its own mistakes, those that checks of other open files found in it,
and mistakes in the files it imports, shown where it calls into them.

A mistake in another file is placed at the outermost call in this file that led to it (from the diagnostic's
`related` call sites), else at the import of its file, else at the top; it links to where the mistake is.
"""

from __future__ import annotations

import os
from pathlib import Path

from lsprotocol import types as lsp
from pygls.uris import from_fs_path

from netspec.ground.errors import Diagnostic, Span
from netspec.language import ast
from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.positions import TextIndex, resolved, short_location, span_key


def file_diagnostics(own: DocumentAnalysis, latest: dict[str, DocumentAnalysis], encoding: str,
                     root: Path | None = None) -> list[lsp.Diagnostic]:
    """The diagnostics of `own`'s file, from its check and from the `latest` checks of the other open
    documents that read the same text of it; paths inside the workspace `root` shown relative to it."""
    path = resolved(own.name)
    found: dict[tuple, lsp.Diagnostic] = {}
    for analysis in [own] + [a for u, a in latest.items() if u != own.uri]:
        if analysis is not own and (path not in analysis.files or
                                    analysis.read_text_of(path) != own.text.lstrip("\ufeff")):
            continue
        for d in analysis.diagnostics:
            if d.span is not None and resolved(d.span.file) == path:
                found.setdefault((d.code, span_key(d.span), d.message), convert(d, own.index, encoding, root=root))
            elif analysis is own:
                converted = elsewhere(d, own, encoding, root)
                found.setdefault((d.code, d.span and span_key(d.span), d.message), converted)
    return list(found.values())


def relative(text: str, root: Path | None) -> str:
    """`text` with the paths inside the workspace `root` written relative to it."""
    return text.replace(str(root).rstrip(os.sep) + os.sep, "") if root is not None else text


def convert(d: Diagnostic, index: TextIndex, encoding: str, message: str | None = None,
            related: list | None = None, root: Path | None = None) -> lsp.Diagnostic:
    """A diagnostic of the file `index` holds, its notes and hint below its message."""
    start, end = index.span_offsets(d.span) if d.span is not None else (0, 0)
    text = message or d.message
    text += "".join(f"\nnote: {n}" for n in d.notes) + (f"\nhint: {d.hint}" if d.hint else "")
    text = relative(text, root)
    severity = lsp.DiagnosticSeverity.Error if d.is_error else lsp.DiagnosticSeverity.Warning
    return lsp.Diagnostic(index.range(start, end, encoding), text, severity, d.code,
                          source="netspec", related_information=related)


def elsewhere(d: Diagnostic, own: DocumentAnalysis, encoding: str, root: Path | None = None) -> lsp.Diagnostic:
    """A mistake in another file (or none), shown in this one: at the call that led to it, else at the
    import of its file, else at the top."""
    where: Span | None = None
    calls_here = [r.span for r in d.related if resolved(r.span.file) == resolved(own.name)]
    if calls_here:  # innermost first: the last is the outermost call this file makes
        site = calls_here[-1]
        where = Span(own.name, site.line, site.col, site.line, site.col)
        start = own.index.offset(site.line, site.col)
        call = next((o for o in own.names.occurrences if o.kind == "callee" and o.start == start), None)
        if call is not None:  # the callee's name, as a mistake in this file would be shown
            where = call.node.callee_span
    imports = [i for i in (own.module.items if own.module else []) if isinstance(i, ast.Import)]
    if where is None and d.span is not None and imports:
        target = resolved(d.span.file)
        chosen = next((i for i in imports if resolved(str(own.path.parent / i.path)) == target), imports[0])
        where = chosen.span
    related = None
    message = d.message
    if d.span is not None:
        index = own.text_index(d.span.file)
        message = f"{d.message} (in {short_location(d.span, own.path)})"
        if index is not None:
            start, end = index.span_offsets(d.span)
            related = [lsp.DiagnosticRelatedInformation(
                lsp.Location(from_fs_path(str(resolved(d.span.file))), index.range(start, end, encoding)),
                "the mistake is here")]
    return convert(Diagnostic(d.code, message, where, d.hint, d.notes), own.index, encoding, message, related,
                   root)
