"""Where things are: offsets of a text as LSP positions and back, offsets carried across edits, file names.

The parser counts lines ending at "\\n" only; LSP counts "\\n", "\\r\\n" and "\\r", with columns in the client's
units (UTF-16 unless it asked for UTF-8 or UTF-32). Paths are compared resolved, whichever way a file was
reached.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path

from lsprotocol import types as lsp
from pygls.uris import to_fs_path

from netspec.ground.errors import Span
from netspec.semantics.binder import SourceOffsets


def units(text: str, encoding: str) -> int:
    """The length of `text` in the client's position units."""
    if encoding == lsp.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == lsp.PositionEncodingKind.Utf32:
        return len(text)
    return len(text) + sum(ord(c) > 0xFFFF for c in text)


class TextIndex(SourceOffsets):
    """One text's offsets, the parser's line:column and LSP positions."""

    def __init__(self, text: str):
        super().__init__(text)
        self.lsp_lines = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]

    def line_end(self, line: int) -> int:
        """The offset where LSP line `line` (0-based) ends, before its line break."""
        if line + 1 < len(self.lsp_lines):
            end = self.lsp_lines[line + 1]
            return end - (2 if self.text[end - 2:end] == "\r\n" else 1)
        return len(self.text)

    def position(self, offset: int, encoding: str) -> lsp.Position:
        offset = min(max(offset, 0), len(self.text))
        line = bisect_right(self.lsp_lines, offset) - 1
        offset = min(offset, self.line_end(line))
        return lsp.Position(line, units(self.text[self.lsp_lines[line]:offset], encoding))

    def range(self, start: int, end: int, encoding: str) -> lsp.Range:
        return lsp.Range(self.position(start, encoding), self.position(end, encoding))

    def from_position(self, position: lsp.Position, encoding: str) -> int:
        line = min(max(position.line, 0), len(self.lsp_lines) - 1)
        start, end = self.lsp_lines[line], self.line_end(line)
        if encoding == lsp.PositionEncodingKind.Utf32:
            return min(start + position.character, end)
        counted = 0
        for offset in range(start, end):
            if counted >= position.character:
                return offset
            counted += units(self.text[offset], encoding)
        return end


def map_offset(offset: int, source: str, target: str) -> int | None:
    """Where `offset` of `source` is in `target`, for lines the edits between them left alone: those before
    the first changed line, and those after the last (moved up or down); None elsewhere."""
    if source == target:
        return offset
    a, b = source.split("\n"), target.split("\n")
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    line = source.count("\n", 0, offset)
    column = offset - (source.rfind("\n", 0, offset) + 1)
    if line < prefix:
        new_line = line
    elif line >= len(a) - suffix:
        new_line = line + len(b) - len(a)
    else:
        return None
    return sum(len(x) + 1 for x in b[:new_line]) + column


@lru_cache(maxsize=4096)
def resolved(name: str) -> Path:
    """A file name as one path, whichever way it was reached (`specs/x/../y.net`, a link)."""
    try:
        return Path(name).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, a loop of links
        return Path(name)


def span_key(span: Span) -> tuple:
    """A span as a key that is the same however its file was named."""
    return (resolved(span.file), span.line, span.col, span.end_line, span.end_col)


def uri_path(uri: str) -> Path:
    """The file a document's URI names; an untitled document gets a made-up name in the working folder."""
    path = to_fs_path(uri)
    return Path(path) if path else Path.cwd() / f"untitled-{abs(hash(uri))}.net"


def short_location(span: Span, relative_to: Path) -> str:
    """`blocks.net:4`: a span's file, relative to the folder of the file `relative_to`, and line."""
    try:
        shown = os.path.relpath(span.file, relative_to.parent)
    except ValueError:
        shown = span.file
    return f"{shown}:{span.line}"
