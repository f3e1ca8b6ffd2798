"""Printing a document (`netspec.fmt.document`) as lines of at most WIDTH columns, and aligning the trailing
comments of each paragraph in one column.

Groups are printed flat when they fit in the rest of the line, broken otherwise; a trailing comment ends its
line, so code after it goes on the next. The walk is iterative, as every walk of the formatter is: documents
nest as deeply as the syntax trees they come from.
"""

from __future__ import annotations

from netspec.fmt.document import Fill, FreshLine, Group, Indent, Line, Suffix

WIDTH = 120  # columns a line may fill before a group breaks
INDENT = 2

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
        elif isinstance(d, Line):
            if d.hard or mode == _BREAK:
                return True
            width -= len(d.flat)
        elif isinstance(d, (FreshLine, Suffix)):  # the line ends here
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
        elif isinstance(d, Line):
            if mode == _BREAK or d.hard:
                newline(indent)
            else:
                code.append(d.flat)
                column += len(d.flat)
        elif isinstance(d, FreshLine):
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
