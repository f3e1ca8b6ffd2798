"""Inlay hints: the output shape at the end of every layer line, and its parameters where there are any: the
table `netspec check` prints, inside the editor.

A line's hint is its last step's output: a layer's shape, or a block instance's or group's (its last layer's
shape, its parameters summed), read from the document's last check and from the checks of the open files that
import it (which know the shapes an imported block is instantiated with). A step instantiated with several
shapes shows each, up to three.
"""

from __future__ import annotations

from bisect import bisect_right

from lsprotocol import types as lsp

from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.positions import TextIndex, map_offset, span_key
from netspec.lsp.walk import chains, core_call

MODES = ("shapes+params", "shapes", "off")  # what the setting `inlayHints` may be; the first is the default
SHAPES_SHOWN = 3


def shape_text(shape) -> str:
    return f"[{', '.join(map(str, shape))}]"


def step_outputs(analyses: list[DocumentAnalysis], step) -> list[tuple[tuple | None, int]]:
    """(output shape, parameters) of each instance a step made, from the first analysis that has any."""
    call = core_call(step)
    keys = [span_key(step.span)] + ([span_key(call.span)] if call is not None else [])
    for analysis in analyses:
        for key in keys:  # a group or block instance first: its output is its last layer's
            scopes = analysis.scopes.get(key, [])
            if scopes:
                out = []
                for graph, path in scopes:
                    params, _, last = analysis.scope_totals(graph).get(path, (0, 0, None))
                    out.append((last.shape if last is not None else None, params))
                return out
        for key in keys:
            nodes = analysis.nodes.get(key, [])
            if nodes:
                return [(node.shape, node.params or 0) for _, node in nodes]
    return []


def label(outputs: list[tuple[tuple | None, int]], mode: str) -> str | None:
    shapes = list(dict.fromkeys(tuple(s) if s is not None else None for s, _ in outputs))
    if not shapes or None in shapes:
        return None  # a shape the check could not find: the diagnostics say why
    if len(shapes) > 1:
        shown = " | ".join(shape_text(s) for s in shapes[:SHAPES_SHOWN])
        return f"→ {shown}" + (" | …" if len(shapes) > SHAPES_SHOWN else "")
    text = f"→ {shape_text(shapes[0])}"
    params = {p for _, p in outputs}
    if mode == "shapes+params" and len(params) == 1 and (count := params.pop()) > 0:
        text += f", {count:,} params"
    return text


def inlay_hints(analysis: DocumentAnalysis, others: list[DocumentAnalysis], text: str, current: TextIndex,
                within: lsp.Range, mode: str, encoding: str) -> list[lsp.InlayHint]:
    """The hints inside the range `within` of the document, whose text is now `text` (`current` its index)."""
    if mode == "off" or analysis.module is None:
        return []
    analyses = [analysis] + others
    ends: dict[int, tuple[int, object]] = {}  # parser line -> (end offset, its last step)
    for chain in chains(analysis.module):
        for step in chain.steps:
            if step.span.file != analysis.name:
                continue
            end = analysis.index.offset(step.span.end_line, step.span.end_col)
            line = step.span.end_line
            if line not in ends or end > ends[line][0]:
                ends[line] = (end, step)
    hints = []
    for line, (end, step) in sorted(ends.items()):
        moved = map_offset(end, analysis.text, text)
        if moved is None:
            continue  # inside the lines edited since the check
        line = bisect_right(current.lsp_lines, moved) - 1
        if not within.start.line <= line <= within.end.line:
            continue  # outside the lines asked about (an editor asks about those on screen)
        rest = current.text[moved:current.line_end(line)].split("#", 1)[0]  # before a trailing comment
        at = current.position(moved + len(rest.rstrip()), encoding)
        if not (within.start.line, within.start.character) <= (at.line, at.character) \
                <= (within.end.line, within.end.character):
            continue
        shown = label(step_outputs(analyses, step), mode)
        if shown is None:
            continue
        hints.append(lsp.InlayHint(at, shown, kind=lsp.InlayHintKind.Type, padding_left=True))
    return hints
