"""`format_text`: a spec's text in the canonical layout, checked to parse to the same syntax tree.

The text is parsed by the language's parser first, so its errors and limits (nesting, literal sizes) are
reported as `netspec check` reports them; then again with every token kept, laid out, printed, and parsed once
more to compare. Newlines and spaces mean nothing to the grammar and the tokens come out in the same order (a
trailing comma is the only token dropped, and never one with a comment), so a difference is a bug of the
layout, and the text is refused rather than changed in meaning.
"""

from __future__ import annotations

from netspec.fmt.build import build_pieces, module_document
from netspec.fmt.printer import align_comments, render
from netspec.fmt.syntax import concrete_parser, same_tree
from netspec.ground.errors import Diagnostic, NetspecError, Span
from netspec.language.parse import parse


def format_text(text: str, file: str = "<string>") -> str:
    """`text` in the canonical layout; NetspecError (the parser's) if it does not parse.

    >>> format_text("network N{input x:[1,4,4] relu()}")
    'network N {\\n  input x: [1, 4, 4]\\n  relu()\\n}\\n'
    """
    text = text.lstrip("\ufeff")
    before = parse(text, file)  # the parser's own errors and limits (nesting, literal sizes) come first
    tree = concrete_parser().parse(text)
    items, end_comments = build_pieces(tree, text)
    lines = align_comments(render(module_document(items, end_comments)))
    while lines and not lines[-1]:
        lines.pop()
    out = "\n".join(lines) + "\n" if lines else ""
    try:
        same = same_tree(parse(out, file), before)
    except NetspecError:
        same = False
    if not same:  # a bug in the layout: never hand back a spec that means something else
        raise NetspecError(Diagnostic("NS100", "netspec fmt could not lay this file out without changing it; "
                                               "please report it", Span(file, 1, 1, 1, 2)))
    return out
