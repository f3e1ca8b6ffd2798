"""One check of one open document: what `netspec check` finds in its text, indexed for the editor's requests.

The check itself is the compiler's (`netspec.analysis.pipeline.analyse`, every network of the file, the open
documents' unsaved texts read instead of the files); this adds what requests look things up by: the file's
names and their bindings, the layers and block instances made at each span, and each file's text index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from netspec.analysis.pipeline import ALL, analyse
from netspec.ground.errors import Diagnostic, Sources
from netspec.ground.limits import limits_from_environment
from netspec.ir import Graph, Node
from netspec.language import ast
from netspec.lsp.positions import TextIndex, resolved, span_key
from netspec.semantics.binder import FileNames, bind_names
from netspec.semantics.program import Program


@dataclass
class DocumentAnalysis:
    """One check of one document: its text, syntax tree, graphs, diagnostics and names."""

    uri: str
    path: Path
    name: str  # the file name its spans carry
    version: int | None
    text: str
    module: ast.Module | None  # None when the text does not parse
    program: Program | None
    graphs: list[Graph]
    diagnostics: list[Diagnostic]
    sources: Sources
    trees: dict[str, ast.Module]
    index: TextIndex
    names: FileNames = field(default_factory=FileNames)
    files: set[Path] = field(default_factory=set)  # every file read, resolved
    nodes: dict[tuple, list[tuple[Graph, Node]]] = field(default_factory=dict)  # by span_key
    scopes: dict[tuple, list[tuple[Graph, str]]] = field(default_factory=dict)  # block instances, by span_key
    indexes: dict[str, TextIndex] = field(default_factory=dict)
    totals: dict[int, dict[str, tuple]] = field(default_factory=dict)  # per graph: scope -> its sums

    def scope_totals(self, graph: Graph) -> dict[str, tuple]:
        """Each scope's parameters, MACs and last layer, summed in one pass over the graph (on first use)."""
        if id(graph) not in self.totals:
            sums: dict[str, list] = {}
            for node in graph.nodes:
                for path in node.scope:
                    entry = sums.setdefault(path, [0, 0, None])
                    entry[0] += node.params or 0
                    entry[1] += node.macs or 0
                    entry[2] = node
            self.totals[id(graph)] = {path: tuple(entry) for path, entry in sums.items()}
        return self.totals[id(graph)]

    def text_index(self, name: str) -> TextIndex | None:
        """The index of a file as this check read it."""
        if name == self.name:
            return self.index
        if name not in self.indexes:
            text = self.sources.texts.get(name)
            if text is None:
                return None
            self.indexes[name] = TextIndex(text)
        return self.indexes[name]

    def read_text_of(self, path: Path) -> str | None:
        """The text this check read for the file at (resolved) `path`, if it read it."""
        return self.sources.texts.get(next((name for name in self.sources.texts if resolved(name) == path), ""))


def check_document(uri: str, path: Path, text: str, version: int | None,
                   texts: dict[Path, str]) -> DocumentAnalysis:
    """Check `text` as the file at `path`, with the open documents' `texts`; never raises a NetspecError."""
    name = str(path)
    found = analyse(path, ALL, Sources(), limits_from_environment(), texts={**texts, resolved(name): text})
    analysis = DocumentAnalysis(uri, path, name, version, text, found.trees.get(name), found.program, found.graphs,
                                found.diagnostics, found.sources, found.trees, TextIndex(text))
    analysis.files = {resolved(f) for f in found.sources.texts}
    for graph in found.graphs:
        for node in graph.nodes:
            if node.span is not None:
                analysis.nodes.setdefault(span_key(node.span), []).append((graph, node))
        for scope in graph.scopes.values():
            if scope.span is not None:
                analysis.scopes.setdefault(span_key(scope.span), []).append((graph, scope.path))
    if analysis.module is not None:
        analysis.names = bind_names(name, analysis.index, analysis.module, found.trees)
    return analysis
