"""`netspec fmt`: one canonical layout for .net files, every comment kept (docs/editors.md).

The file is parsed a second time with every token kept (`syntax`); the comments are read from the gaps between
tokens and attached to the token before them on the same line (trailing) or to the token after them (leading)
(`comments`). A document of text, line breaks, indents and groups (`document`) is built bottom-up from the
tree (`build`, with one layout per grammar rule in `layout`) and printed at WIDTH columns (`printer`), the way
Wadler's and Prettier's printers do: a group is printed on one line if it fits, else broken. `format_text`
(`canonical`) checks that the result parses to the same syntax tree; `format_paths` (`paths`) is the command
over files.

Every walk here is iterative: the deepest nesting the parser takes is hundreds of levels of Lark's tree (each
bracket holds an or_, an and_, a compare, ...), too deep for recursion.
"""

from netspec.fmt.canonical import format_text
from netspec.fmt.paths import format_paths
from netspec.fmt.printer import WIDTH
from netspec.fmt.syntax import concrete_parser

__all__ = ["WIDTH", "concrete_parser", "format_paths", "format_text"]
