"""The concrete syntax: the grammar parsed with every token kept, and syntax trees compared.

The language's own parser drops punctuation and keywords; the formatter needs each of them, with its position,
to read the comments in the gaps between tokens and to print the tokens back in order. `same_tree` is the
check that a formatted file still means what it did: its syntax tree (`netspec.language.ast`) is the one the
original parses to, but for the spans.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from functools import lru_cache

from lark import Lark, Token, Tree

from netspec.language.parse import GRAMMAR, cache_file


@lru_cache(maxsize=1)
def concrete_parser() -> Lark:
    """The LALR parser of the language's grammar that keeps every token (`keep_all_tokens`), built once."""
    grammar = GRAMMAR.read_text()
    return Lark(grammar, start="module", parser="lalr", keep_all_tokens=True, maybe_placeholders=False,
                cache=cache_file(grammar + "\n// netspec fmt: keep_all_tokens"))


def tokens_in_order(tree: Tree) -> list[Token]:
    """The tokens of a concrete syntax tree in source order, without recursion."""
    tokens: list[Token] = []
    stack: list = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Token):
            tokens.append(node)
        else:
            stack.extend(reversed(node.children))
    return tokens


def same_tree(a, b) -> bool:
    """Syntax trees equal but for their spans (dataclass equality, without its recursion)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if is_dataclass(x):
            if type(x) is not type(y):
                return False
            stack.extend((getattr(x, f.name), getattr(y, f.name)) for f in fields(x) if f.compare)
        elif isinstance(x, (list, tuple)):
            if not isinstance(y, type(x)) or len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif type(x) is not type(y) or x != y:
            return False
    return True
