"""One check of one open document: what `netspec check` finds in its text, indexed for the editor's requests.

The check itself is the compiler's (`netspec.analysis.pipeline.analyse`, every network of the file, the open
documents' unsaved texts read instead of the files); this adds what requests look things up by: the file's
names and their bindings, the layers and block instances made at each span, and each file's text index. The
indexes are made on first use (`index_all` makes them on the checking thread once the diagnostics are out), so
a keystroke's diagnostics wait for the check only.
"""

from __future__ import annotations

import threading
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
    files: set[Path] = field(default_factory=set)  # every file read, resolved
    indexed: dict[str, object] = field(default_factory=dict)  # names, nodes, scopes: made on first use
    lock: threading.Lock = field(default_factory=threading.Lock)
    indexes: dict[str, TextIndex] = field(default_factory=dict)
    totals: dict[int, dict[str, tuple]] = field(default_factory=dict)  # per graph: scope -> its sums
    bound: dict[str, FileNames] = field(default_factory=dict)  # the names of the files it read, bound on use

    @property
    def names(self) -> FileNames:
        """The file's names and their bindings (the compiler's binder)."""
        return self.index_all()["names"]

    @property
    def nodes(self) -> dict[tuple, list[tuple[Graph, Node]]]:
        """The layers made at each span, by span_key."""
        return self.index_all()["nodes"]

    @property
    def scopes(self) -> dict[tuple, list[tuple[Graph, str]]]:
        """The block instances and groups made at each span, by span_key."""
        return self.index_all()["scopes"]

    def index_all(self) -> dict[str, object]:
        """Bind the file's names and index the graphs' layers and scopes by span, once (from any thread)."""
        with self.lock:
            if not self.indexed:
                nodes: dict[tuple, list] = {}
                scopes: dict[tuple, list] = {}
                for graph in self.graphs:
                    for node in graph.nodes:
                        if node.span is not None:
                            nodes.setdefault(span_key(node.span), []).append((graph, node))
                    for scope in graph.scopes.values():
                        if scope.span is not None:
                            scopes.setdefault(span_key(scope.span), []).append((graph, scope.path))
                names = bind_names(self.name, self.index, self.module, self.trees) if self.module is not None \
                    else FileNames()
                self.indexed.update(names=names, nodes=nodes, scopes=scopes)
        return self.indexed

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

    def names_of(self, name: str) -> FileNames | None:
        """The names of a file this check read (its own, or one it imports), bound on first use."""
        if name == self.name:
            return self.names if self.module is not None else None
        if name not in self.bound:
            tree, index = self.trees.get(name), self.text_index(name)
            if tree is None or index is None:
                return None
            self.bound[name] = bind_names(name, index, tree, self.trees)
        return self.bound[name]

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
    return analysis
