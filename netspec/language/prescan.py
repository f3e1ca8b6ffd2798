"""A cheap pass over spec text before Lark parses it: refuses too many tokens and too deep brackets at once.

Lark's LALR parser and the tree it builds cost 15-50 microseconds a token, and a 4 MiB file holds a million
tokens or more, so a limit checked on the finished tree (nesting) or after it (layers) could cost a minute.
This scan reads the text once with one regular expression (whitespace and comments are skipped inside it)
and stops at the first token past a limit, so its own work is bounded by the token limit, not the file size:
about 0.3 microseconds a token, 2 ms for the 1,000-block benchmark spec.

It tokenises as the grammar does (grammar/netspec.lark: strings hold no brackets, comments run to the end of
the line) but only as far as counting needs: what Lark would reject is counted as a token and left to Lark.
"""

from __future__ import annotations

import re

from netspec.ground.errors import Diagnostic, NetspecError, Span
from netspec.ground.limits import DEFAULT

# Whitespace (the grammar's WS) and comments: a comment runs to the end of its line.
_SKIP = r"[ \t\f\r\n]*(?:\#[^\n]*[ \t\f\r\n]*)*"  # `\#`: the pattern is verbose
_SKIPPED = re.compile(_SKIP)
# What is skipped, then one token; the fallback takes any other single character, so every match either ends
# the text or consumes a token, and nothing backtracks into the skipped part.
_TOKEN = re.compile(_SKIP + r"""
    (?: (?P<open> [(\[{] )
      | (?P<close> [)\]}] )
      | (?P<string> "[^"\n]*" )
      | (?P<end> \Z )
      | [A-Za-z_][A-Za-z0-9_]*
      | [0-9][0-9_]* (?: \.[0-9_]* )? (?: [eE][+-]?[0-9]+ )?
      | -> | \*\* | // | == | != | <= | >= | \.\.\.
      | [^ \t\f\r\n]
    )""", re.VERBOSE)

class _Scan:
    """Counters shared by a file and the {expression} parts of its label strings."""

    def __init__(self, text: str, file: str, max_depth: int, max_tokens: int, tokens_before: int):
        self.text, self.file = text, file
        self.max_depth, self.max_tokens = max_depth, max_tokens
        self.tokens = self.tokens_before = tokens_before

    def run(self, start: int = 0, stop: int | None = None) -> None:
        """Scan text[start:stop]; brackets are counted from zero inside it."""
        # An item's own braces or parameter list add no level to the syntax tree's measure, so one more
        # bracket than the limit may be open; plain parentheses count here, as they cost the parser a level.
        most_open = self.max_depth + 1
        depth = 0
        tokens, max_tokens = self.tokens, self.max_tokens
        scanner = _TOKEN.finditer(self.text, start) if stop is None else _TOKEN.finditer(self.text, start, stop)
        for match in scanner:
            kind = match.lastgroup
            if kind == "end":
                break
            tokens += 1
            if tokens > max_tokens:
                where = (f", {self.tokens_before:,} of them in the files read before this one" if self.tokens_before
                         else " in one file")
                self._refuse(match, f"more than {max_tokens:,} tokens{where}",
                             "write what repeats once: a block, `* n`, or a `for` loop (or raise the ceiling with "
                             "--max-tokens N)")
            if kind == "open":
                depth += 1
                if depth > most_open:
                    self._refuse(match, f"operators, brackets and groups nest more than {self.max_depth} levels "
                                        "deep here", "split the expression with `let`, or the body into blocks")
            elif kind == "close":
                depth = max(depth - 1, 0)
            elif kind == "string" and "{" in match["string"]:
                self.tokens = tokens
                self._template(match.start("string") + 1, match.end("string") - 1)
                tokens = self.tokens
        self.tokens = tokens

    def _template(self, start: int, stop: int) -> None:
        """A label such as "layer{i + 1}": its {expression} parts are parsed too, so they count."""
        text = self.text
        while True:
            opening = text.find("{", start, stop)
            if opening < 0:
                return
            closing = text.find("}", opening + 1, stop)
            if closing < 0:
                return  # the parser reports the unclosed '{'
            self.run(opening + 1, closing)
            start = closing + 1

    def _refuse(self, match: re.Match, message: str, hint: str) -> None:
        end = match.end()
        begin = _SKIPPED.match(self.text, match.start(), end).end()  # the token, past what was skipped
        line = self.text.count("\n", 0, begin) + 1
        column = begin - self.text.rfind("\n", 0, begin)
        raise NetspecError(Diagnostic("NS213", message, Span(self.file, line, column, line, column + end - begin),
                                      hint))


def prescan(text: str, file: str = "<string>", max_depth: int = DEFAULT.nesting,
            max_tokens: int = DEFAULT.tokens, tokens_before: int = 0) -> int:
    """Tokens read so far (`tokens_before`, from other files of the spec, and this text's); NS213 at the first
    token past `max_tokens` or the first bracket nested past the depth limit.

    >>> prescan("let a = [1, 2]")
    8
    >>> prescan("let a = " + "(" * 200 + "1" + ")" * 200)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    netspec.ground.errors.NetspecError: <string>:1:110: error[NS213]: operators, brackets and groups nest more than 100 ...
    """
    scan = _Scan(text, file, max_depth, max_tokens, tokens_before)
    scan.run()
    return scan.tokens
