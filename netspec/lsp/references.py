"""References, rename and document highlight: every occurrence of what the name under the cursor is bound to.

A binding is known by its file and place, so an occurrence found by binding one file matches the same binding
found by binding another (a block called in the file that imports it). The files searched are those the open
documents' last checks read (the documents themselves, what they import, and so the files that import a block
while they are open), and, for references and rename, the workspace's other .net files that import the
binding's file. A parameter's occurrences include the keyword arguments that pass it (`Unit(c, stride=2)`).
Everything comes from the compiler's binder (netspec.semantics.binder); nothing is resolved here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from netspec.highlight import KEYWORDS
from netspec.language import ast
from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.positions import resolved
from netspec.ops import OPS
from netspec.semantics.binder import Binding, FileNames, Occurrence, SourceOffsets, bind_names, name_offsets

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NOT_NAMES = frozenset(KEYWORDS) | {"true", "false", "none"}


def binding_key(binding: Binding) -> tuple:
    """The same for a binding however many binders found it."""
    w = binding.where
    return (resolved(w.file), w.line, w.col, w.end_line, w.end_col, binding.name)


@dataclass
class Source:
    """A file to search: its names as bound, its text's index, and the check that read it (None for a file of
    the workspace that no open document reads, bound from its text on disk)."""

    analysis: DocumentAnalysis | None
    file: str
    names: FileNames
    index: SourceOffsets


@dataclass
class Place:
    """One occurrence: the file (as `source` read it), its offsets, and whether it binds the name."""

    source: Source
    start: int
    end: int
    definition: bool


def renamable(o: Occurrence) -> Binding | None:
    """The binding an occurrence refers to, if it may be renamed from there."""
    b = o.binding
    if b is None or not b.name or o.kind in ("call", "import"):
        return None
    return b


def files_to_search(analyses: list[DocumentAnalysis]) -> list[Source]:
    """Each file read by `analyses` once (the first analyses first: the open documents' own checks)."""
    seen: set[Path] = set()
    out = []
    for analysis in analyses:
        for name in [analysis.name] + [n for n in analysis.sources.texts if n != analysis.name]:
            path = resolved(name)
            names = analysis.names_of(name) if path not in seen else None
            if names is not None:
                seen.add(path)
                out.append(Source(analysis, name, names, analysis.text_index(name)))
    return out


def workspace_sources(files: list[tuple[str, ast.Module, SourceOffsets]], known: dict[Path, tuple[str, ast.Module]],
                      skip: set[Path], target: Path) -> list[Source]:
    """The workspace's `files` (name, tree, text index) that import the file `target`, directly or through
    other imports, bound with the trees of what they import (from `known`, the trees the checks read, by
    path, else from `files`); those in `skip` are searched already."""
    trees = {resolved(name): (name, tree) for name, tree, _ in files}
    trees.update(known)
    out = []
    for name, tree, index in files:
        if resolved(name) in skip:
            continue
        imported: dict[Path, tuple[str, ast.Module]] = {}
        pending = [(name, tree)]
        while pending:
            file, module = pending.pop()
            for item in module.items:
                if isinstance(item, ast.Import):
                    path = resolved(str(Path(file).parent / item.path))
                    if path in trees and path not in imported:
                        imported[path] = trees[path]
                        pending.append(trees[path])
        if target in imported:
            visible = {name: tree, **dict(imported.values())}
            out.append(Source(None, name, bind_names(name, index, tree, visible), index))
    return out


def places(target: Binding, sources: list[Source]) -> list[Place]:
    """Every occurrence of `target` in `sources`."""
    key = binding_key(target)
    owner_block = target.owner.split(" ", 1)[1] if target.kind == "parameter" and target.owner else None
    owner_key = None
    found: list[Place] = []
    if owner_block is not None:  # the block whose parameter it is, to find the keyword arguments passing it
        for source in sources:
            if resolved(source.file) == key[0]:
                block = source.names.blocks.get(owner_block)
                owner_key = binding_key(block) if block is not None else None
    for source in sources:
        index = source.index
        for o in source.names.occurrences:
            if o.binding is None:
                continue
            if o.kind != "call" and binding_key(o.binding) == key:
                found.append(Place(source, o.start, o.end, resolved(o.binding.file) == resolved(source.file)
                                   and (o.start, o.end) == name_offsets(o.binding, index)))
            elif owner_key is not None and o.kind == "callee" and binding_key(o.binding) == owner_key:
                for arg in o.node.args:
                    if arg.name == target.name:
                        start = index.span_offsets(arg.span)[0]
                        found.append(Place(source, start, start + len(arg.name), False))
    unique = {(resolved(p.source.file), p.start): p for p in found}
    return sorted(unique.values(), key=lambda p: (str(resolved(p.source.file)), p.start))


def rename_refusal(target: Binding, new_name: str) -> str | None:
    """Why `target` cannot be renamed `new_name`, or None."""
    if not _IDENTIFIER.fullmatch(new_name):
        return f"'{new_name}' is not a name"
    if new_name in NOT_NAMES:
        return f"'{new_name}' is a keyword"
    if target.kind in ("block", "network") and new_name in OPS:
        return f"'{new_name}' is a layer of the registry: a call would mean the layer"
    return None
