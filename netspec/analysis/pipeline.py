"""The one way a spec is checked: load the program, lower each network asked for, run the passes.

`netspec.load` (and through it the CLI and the notebook) and the language server all call `analyse`; it never
raises a NetspecError for a mistake in the spec but returns every diagnostic with what could be built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.analysis.passes import PASSES
from netspec.ground.errors import Diagnostic, NetspecError, Sources
from netspec.ground.limits import DEFAULT, Limits
from netspec.ir import Graph
from netspec.language import ast
from netspec.semantics.lower import lower
from netspec.semantics.program import Program, load_program

ALL = "all"  # analyse every network of the file


@dataclass
class Analysis:
    """What checking a spec found: the loaded program (None when it did not load), a graph for each network that
    lowered, and every diagnostic (duplicates removed, in the order found)."""

    program: Program | None
    graphs: list[Graph]
    diagnostics: list[Diagnostic]
    sources: Sources
    trees: dict[str, ast.Module] = field(default_factory=dict)  # each file's syntax tree, even when loading failed


def analyse(path: str | Path, network: str | None = None, sources: Sources | None = None, limits: Limits = DEFAULT,
            overrides: dict[str, Any] | None = None, texts: dict[Path, str] | None = None) -> Analysis:
    """Check the spec at `path`: its network `network` (None: the file's only one; ALL: each in turn).

    `texts` gives files' texts by resolved path, read instead of the files (an editor's unsaved buffers).
    """
    sources = sources if sources is not None else Sources()
    trees: dict[str, ast.Module] = {}
    diagnostics: list[Diagnostic] = []
    graphs: list[Graph] = []
    try:
        program = load_program(path, sources, limits, texts=texts, trees=trees)
    except NetspecError as err:
        return Analysis(None, [], _unique(err.diagnostics), sources, trees)
    names = program.root.networks if network == ALL else [network]
    for name in names:
        try:
            graph = lower(program, name, overrides)
            for run_pass in PASSES:
                graph = run_pass(graph, limits)
        except NetspecError as err:
            diagnostics += err.diagnostics
            continue
        graphs.append(graph)
        diagnostics += graph.diagnostics
    return Analysis(program, graphs, _unique(diagnostics), sources, trees)


def _unique(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return list({(d.code, d.span, d.message): d for d in diagnostics}.values())
