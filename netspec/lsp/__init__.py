"""`netspec lsp`: the language server (docs/editors.md), over stdin and stdout, built on pygls.

Every open document is checked as `netspec check` checks it: parsed with its imports (an open file's unsaved
text read instead of the file on disk), each of its networks instantiated with its default arguments and
analysed. Diagnostics are published per file: a mistake inside an imported block shows in the block's file
(when it is open) and at the call in the file that instantiated it. Every other feature is a thin handler over
that check and the compiler's name binder (netspec.semantics.binder).

The package, one job a module: positions (offsets, LSP positions, paths), checking (one check of a document),
walk (the chains and bodies of a syntax tree), diagnostics, hovers, completion, signatures (signature help),
inlays (inlay hints: shapes and parameters), actions (code actions from the diagnostics' hints), references
(references, rename, document highlight), tokens (semantic tokens, folding ranges), symbols (the outline,
workspace symbols), server (documents, the check queue, the handlers). Only pygls and lsprotocol are needed
beyond `netspec check`'s own imports.
"""

from netspec.lsp.checking import DocumentAnalysis, check_document
from netspec.lsp.completion import call_context
from netspec.lsp.positions import TextIndex
from netspec.lsp.server import NetspecServer, build_server, serve

__all__ = ["DocumentAnalysis", "NetspecServer", "TextIndex", "build_server", "call_context", "check_document",
           "serve"]
