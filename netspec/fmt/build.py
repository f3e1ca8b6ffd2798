"""A whole file's document, built bottom-up from its concrete syntax tree with its comments attached.

Each node of the tree becomes a `Piece` (its document and the comments at its edges) once its children have;
a node of one child is that child. The top-level items are then laid out one after another, with the blank
lines between them decided here. The walk is iterative: the deepest nesting the parser takes is hundreds of
levels of Lark's tree (each bracket holds an or_, an and_, a compare, ...), too deep for recursion.
"""

from __future__ import annotations

from lark import Token, Tree

from netspec.fmt.comments import Comment, Kids, Piece, attach_comments, with_comments
from netspec.fmt.document import HARDLINE, spans_lines
from netspec.fmt.layout import layout_node
from netspec.fmt.syntax import tokens_in_order


def build_pieces(tree: Tree, text: str) -> tuple[list[Piece], list[Comment]]:
    """The top-level items laid out, and the comments after the last token."""
    tokens = tokens_in_order(tree)
    lead, trail, blank, end_comments = attach_comments(text, tokens)
    index = {id(t): i for i, t in enumerate(tokens)}

    def token_piece(tok: Token) -> Piece:
        i = index[id(tok)]
        return Piece(tok.type, str(tok), lead.get(i, []), trail.get(i, []), blank.get(i, False),
                     (tok.line, tok.end_line))

    done: list[Piece] = []
    work: list[tuple[Tree, bool]] = [(tree, False)]
    while work:
        node, children_done = work.pop()
        if not children_done:
            work.append((node, True))
            work.extend((c, False) for c in reversed(node.children) if isinstance(c, Tree))
            continue
        count = sum(isinstance(c, Tree) for c in node.children)
        finished = done[len(done) - count:] if count else []
        del done[len(done) - count:]
        finished.reverse()
        pieces = [token_piece(c) if isinstance(c, Token) else finished.pop() for c in node.children]
        if node is tree:
            return pieces, end_comments
        if len(pieces) == 1:  # `or_` of one `and_` of one ... `power`: the child itself
            done.append(pieces[0])
            continue
        doc = layout_node(node.data, Kids(pieces))
        first, last = pieces[0], pieces[-1]
        done.append(Piece(node.data, doc, first.lead, last.trail, first.blank, (first.lines[0], last.lines[1])))
    raise AssertionError("the tree has no root")


def module_document(items: list[Piece], end_comments: list[Comment]) -> list:
    """Items one after another: a blank line between them, save between consecutive items of one kind (imports,
    lets, one-line blocks, network aliases) that need not span lines, which keep the author's blank line or not."""
    out: list = []
    for j, item in enumerate(items):
        blank = item.lead[0].blank_before if item.lead else item.blank
        if j > 0:
            previous = items[j - 1]
            same = item.kind == previous.kind and not spans_lines(item.doc) and not spans_lines(previous.doc)
            out.append(HARDLINE)
            if blank or not same:
                out.append(HARDLINE)
        out += with_comments(item)
    for n, c in enumerate(end_comments):
        if out:
            out.append(HARDLINE)
            if c.blank_before:
                out.append(HARDLINE)
        out.append(c.text)
    return out
