"""The document a spec is laid out as: text, possible line breaks, indents, groups and fills.

A document is a tree of these pieces (and plain strings and lists), built bottom-up from the syntax tree by
`netspec.fmt.layout` and printed by `netspec.fmt.printer`, the way Wadler's and Prettier's printers do: a group
is printed on one line if it fits, else broken. This module holds only the pieces and the constructors of
groups, which decide from their contents whether a group must break.
"""

from __future__ import annotations

from dataclasses import dataclass


class Line:
    """A possible line break: `flat` (a space, or nothing) when its group is flat, a newline when broken;
    `hard`: a newline always."""

    __slots__ = ("flat", "hard")

    def __init__(self, flat: str, hard: bool = False):
        self.flat, self.hard = flat, hard


LINE = Line(" ")  # a space, or a newline
SOFTLINE = Line("")  # nothing, or a newline
HARDLINE = Line("", hard=True)


class FreshLine:
    """A newline unless the line is still empty: where a comment that must start its own line goes."""


FRESHLINE = FreshLine()


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


def scan(doc) -> tuple[bool, bool, bool]:
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
        elif isinstance(d, (Suffix, FreshLine)):
            comment = forced = True
        elif isinstance(d, Line):
            forced = forced or d.hard
        elif isinstance(d, Group):
            forced = forced or d.forced
            braces = braces or d.braces
    return comment, forced, braces


def spans_lines(doc) -> bool:
    """Whether a newline is certain somewhere in `doc`, however wide the page."""
    return scan(doc)[1]


def group(contents) -> Group:
    """Breaks when it does not fit, or holds a comment of its own (not one inside a nested group)."""
    comment, forced, braces = scan(contents)
    return Group(contents, broken=comment, forced=forced or comment, braces=braces)


def brace_group(contents) -> Group:
    """`{ statement }`: broken when anything inside must break, or holds braces of its own."""
    _, forced, braces = scan(contents)
    return Group(contents, broken=forced or braces, forced=forced or braces, braces=True)


def broken_braces(contents) -> Group:
    return Group(contents, broken=True, forced=True, braces=True)
