"""A Pygments lexer for .net specs, so Sphinx, Jupyter, `pygmentize` and anything else that uses Pygments
colour them. It is registered as the `pygments.lexers` entry point `netspec` (pyproject.toml).

It follows grammar/netspec.lark token for token; layer names come from the op registry (netspec.ops.OPS)
and function names from netspec.language.evaluate.FUNCTIONS, both read when the lexer is first used, not when
Pygments loads its plugins.
"""

from __future__ import annotations

from pygments.lexer import Future, RegexLexer, bygroups, include, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

__all__ = ["NetspecLexer"]

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORDS = ("import", "let", "block", "network", "train", "input", "output", "export", "register", "for", "in", "if", "else",
            "and", "or", "not")


class _Registry(Future):
    """A regex matching one of the registry's names, built at the lexer's first use."""

    def __init__(self, which: str):
        self.which = which

    def get(self) -> str:
        if self.which == "ops":
            from netspec.ops import OPS

            names = [name for name in OPS if name not in KEYWORDS]  # `input` is a statement, not a callable layer
        else:
            from netspec.language.evaluate import FUNCTIONS

            names = list(FUNCTIONS)
        return words(names, prefix=r"\b", suffix=r"\b").get()


class NetspecLexer(RegexLexer):
    """netspec architecture specs (.net files)."""

    name = "netspec"
    aliases = ["netspec"]
    filenames = ["*.net"]
    mimetypes = ["text/x-netspec"]

    tokens = {
        "root": [
            include("space"),
            # Definitions: the name after `block`, `network` and `train` is the thing being defined.
            (rf"\b(block|network)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (rf"\b(train)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (rf"\b(let)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Constant)),
            (r"\bimport\b", Keyword.Namespace),
            (rf"\b(input)(\s+)({NAME})", bygroups(Keyword, Whitespace, Name.Variable)),
            (rf"\b(for)(\s+)({NAME})(\s+)(in)\b", bygroups(Keyword, Whitespace, Name.Variable, Whitespace, Keyword)),
            # A label names the step after it: `conv1: conv(...)`; `output:` and `block:` are labels too.
            (rf"({NAME})(\s*)(:)", bygroups(Name.Label, Whitespace, Punctuation)),
            (r"\[", Punctuation, "brackets"),
            include("expression"),
        ],
        "space": [
            (r"\s+", Whitespace),
            (r"#[^\n]*", Comment.Single),
        ],
        # Inside [...] a name before `:` is a slice bound, not a label.
        "brackets": [
            include("space"),
            (r"\[", Punctuation, "#push"),
            (r"\]", Punctuation, "#pop"),
            (r":", Punctuation),
            include("expression"),
        ],
        "expression": [
            (words(("true", "false"), prefix=r"\b", suffix=r"\b"), Keyword.Constant),
            (words(KEYWORDS, prefix=r"\b", suffix=r"\b"), Keyword),
            (_Registry("ops"), Name.Builtin),
            (_Registry("functions"), Name.Builtin),
            (rf"{NAME}(?=\s*\()", Name.Function),  # a block instance
            (NAME, Name),
            (r"[0-9][0-9_]*\.[0-9_]*([eE][+-]?[0-9]+)?", Number.Float),
            (r"[0-9][0-9_]*[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9][0-9_]*", Number.Integer),
            (r'"', String.Double, "string"),
            (r"->|\.\.\.|\*\*|//|==|!=|<=|>=|[-+*/%<>=]", Operator),
            (r"[(){}\[\],:]", Punctuation),
        ],
        # A string's {expression} parts (computed labels such as "denselayer{i + 1}").
        "string": [
            (r'"', String.Double, "#pop"),
            (r'\{(?=[^"\n]*\})', String.Interpol, "interpolation"),
            (r'[^"{\n]+|\{', String.Double),
            (r"\n", Whitespace, "#pop"),  # unterminated: the parser reports it; colouring resumes on the next line
        ],
        "interpolation": [
            (r"\}", String.Interpol, "#pop"),
            (r"[ \t]+", Whitespace),
            include("expression"),
        ],
    }
