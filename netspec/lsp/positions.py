"""Where things are: offsets of a text as LSP positions and back, offsets carried across edits, file names.

The parser counts lines ending at "\\n" only; LSP counts "\\n", "\\r\\n" and "\\r", with columns in the client's
units (UTF-16 unless it asked for UTF-8 or UTF-32). Paths are compared resolved, whichever way a file was
reached.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
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
    return len(text) + len(_ASTRAL.findall(text))


# Characters that take more than one unit of an encoding: UTF-16 needs two units past U+FFFF, UTF-8 two to four
# bytes past U+007F. Searched by a regular expression, so a long line of plain text costs no Python loop.
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")
_NOT_ASCII = re.compile("[^\x00-\x7f]")


def _wide(encoding: str) -> re.Pattern | None:
    """What finds the characters wider than one unit of `encoding` (compared by value: a client may name it
    with a plain string)."""
    if encoding == lsp.PositionEncodingKind.Utf32:
        return None
    return _NOT_ASCII if encoding == lsp.PositionEncodingKind.Utf8 else _ASTRAL


def _extra_units(character: str, encoding: str) -> int:
    """How many units past one `character` takes."""
    if encoding != lsp.PositionEncodingKind.Utf8:
        return 1
    code = ord(character)
    return 1 if code < 0x800 else 2 if code < 0x10000 else 3


class TextIndex(SourceOffsets):
    """One text's offsets, the parser's line:column and LSP positions.

    Converting a column costs a bisection, not a walk along the line: each line's wide characters (those
    that take more than one unit) are found once, on first use, with the units they add up to."""

    def __init__(self, text: str):
        super().__init__(text)
        self.lsp_lines = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
        self.wide: dict[tuple[int, str], tuple[list[int], list[int]]] = {}

    def line_end(self, line: int) -> int:
        """The offset where LSP line `line` (0-based) ends, before its line break."""
        if line + 1 < len(self.lsp_lines):
            end = self.lsp_lines[line + 1]
            return end - (2 if self.text[end - 2:end] == "\r\n" else 1)
        return len(self.text)

    def wide_characters(self, line: int, encoding: str) -> tuple[list[int], list[int]]:
        """The offsets of line `line`'s wide characters, and the extra units up to and including each."""
        key = (line, encoding)
        if key not in self.wide:
            offsets: list[int] = []
            extra: list[int] = []
            total = 0
            for match in _wide(encoding).finditer(self.text, self.lsp_lines[line], self.line_end(line)):
                total += _extra_units(match.group(), encoding)
                offsets.append(match.start())
                extra.append(total)
            self.wide[key] = offsets, extra
        return self.wide[key]

    def column(self, line: int, offset: int, encoding: str) -> int:
        """Units from the start of line `line` to `offset` (on that line)."""
        counted = offset - self.lsp_lines[line]
        if _wide(encoding) is None:
            return counted
        offsets, extra = self.wide_characters(line, encoding)
        before = bisect_left(offsets, offset)
        return counted + (extra[before - 1] if before else 0)

    def position(self, offset: int, encoding: str) -> lsp.Position:
        offset = min(max(offset, 0), len(self.text))
        line = bisect_right(self.lsp_lines, offset) - 1
        offset = min(offset, self.line_end(line))
        return lsp.Position(line, self.column(line, offset, encoding))

    def range(self, start: int, end: int, encoding: str) -> lsp.Range:
        return lsp.Range(self.position(start, encoding), self.position(end, encoding))

    def from_position(self, position: lsp.Position, encoding: str) -> int:
        """The offset of `position`: the first whose column reaches it (inside a wide character, the offset
        after it), the line's end past it."""
        line = min(max(position.line, 0), len(self.lsp_lines) - 1)
        start, end = self.lsp_lines[line], self.line_end(line)
        wanted = max(position.character, 0)
        if _wide(encoding) is None:
            return min(start + wanted, end)
        low, high = start, end  # the column grows with the offset: bisect for the first that reaches it
        while low < high:
            middle = (low + high) // 2
            if self.column(line, middle, encoding) >= wanted:
                high = middle
            else:
                low = middle + 1
        return low


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
