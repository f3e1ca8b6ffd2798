"""Comments: read from the gaps between tokens, attached to the laid-out pieces, and placed in the document.

The parser drops comments, so they are read from the source between one token and the next. A comment on the
same line as the token before it trails that token; any other leads the token after it. A laid-out subtree (a
`Piece`) carries the comments at its edges up to the largest node that starts or ends there, so a statement's
comment is printed above the statement, not inside its first call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lark import Token

from netspec.fmt.document import FRESHLINE, HARDLINE, Suffix

_COMMENT = re.compile(r"#[^\n]*")


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
    lines: tuple[int, int] = (0, 0)  # the source lines of its first and last token: where the author broke lines


def leading(comments: list[Comment]) -> list:
    """Comments printed before something in the middle of a line: each on a line of its own."""
    out: list = []
    for c in comments:
        out += [FRESHLINE, c.text, HARDLINE]
    return out


def trailing(comments: list[Comment]) -> list:
    return [Suffix(c.text) for c in comments]


def with_comments(piece: Piece) -> list:
    """A piece's own comments above it (a blank line kept where one was), then the piece and its trailing ones."""
    out = []
    for n, c in enumerate(piece.lead):
        out += [c.text, HARDLINE]
        following = piece.lead[n + 1].blank_before if n + 1 < len(piece.lead) else piece.blank
        if following:
            out.append(HARDLINE)
    return out + [piece.doc, *trailing(piece.trail)]


class Kids:
    """A node's children for its layout; `k[i]` is child i with the comments it keeps in place (those at the
    node's own edges are the node's, placed by the layout around it)."""

    def __init__(self, pieces: list[Piece]):
        self.pieces = pieces
        self.last = len(pieces) - 1

    def __len__(self) -> int:
        return len(self.pieces)

    def kind(self, i: int) -> str:
        return self.pieces[i].kind

    def __getitem__(self, i: int) -> list:
        piece = self.pieces[i]
        return ((leading(piece.lead) if i > 0 else []) + [piece.doc]
                + (trailing(piece.trail) if i < self.last else []))

    def commented(self, i: int) -> bool:
        return bool(self.pieces[i].lead or self.pieces[i].trail)


def attach_comments(text: str, tokens: list[Token]) -> tuple[dict[int, list[Comment]], dict[int, list[Comment]],
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
