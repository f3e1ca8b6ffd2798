"""Code actions: each diagnostic whose hint names a fix offers it as an edit.

- a did-you-mean (an unknown layer, block, argument or name): the name replaced by the one meant;
- an ambiguous chain modifier (NS215): both rewrites the hint gives, braces around the chain or the layer on a
  line of its own; a label read before its chain ends (NS215): `name = chain`, or the chain ended after it;
- a layer that needs a vector after a feature map: `flatten()` inserted before it;
- an `add` of operands of different shapes: `project="auto"`;
- an unknown block defined in a file near this one: its import.

The diagnostics are those the document's last check found in it (its own, and those the checks of the files
importing it found there); the edits are made on the text the check read, carried into the text as it is now.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lsprotocol import types as lsp

from netspec.ground.errors import Diagnostic, Span
from netspec.language import ast
from netspec.lsp.checking import DocumentAnalysis
from netspec.lsp.diagnostics import convert
from netspec.lsp.positions import TextIndex, map_offset, resolved, span_key
from netspec.lsp.walk import chains, core_call
from netspec.semantics.binder import find_word

_DID_YOU_MEAN = re.compile(r"did you mean '([^']+)'\?")
_QUOTED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")
FILES_SEARCHED = 2000  # entries looked at, at most, for a file defining a missing block
FOLDER_DEPTH = 3


class Fixes:
    """The fixes of one document's diagnostics, as edits of the text its check read."""

    def __init__(self, analysis: DocumentAnalysis, text: str, current: TextIndex, encoding: str):
        self.a = analysis
        self.text = text  # the document's text now
        self.current = current
        self.encoding = encoding
        self.steps = {}  # span_key -> (chain, position), of steps, their calls and modifiers
        for chain in chains(analysis.module) if analysis.module is not None else []:
            for position, step in enumerate(chain.steps):
                call = core_call(step)
                for node in (step, call, step.condition, step.repeat):
                    if node is not None:
                        self.steps.setdefault(span_key(node.span), (chain, position))
                if step.label_span is not None:
                    self.steps.setdefault(("label",) + span_key(step.label_span), (chain, position))

    def offsets(self, span: Span) -> tuple[int, int]:
        return self.a.index.span_offsets(span)

    def edit(self, start: int, end: int, new_text: str) -> lsp.TextEdit | None:
        """An edit of the checked text, in the text as it is now (None inside lines edited since)."""
        new_start, new_end = map_offset(start, self.a.text, self.text), map_offset(end, self.a.text, self.text)
        if new_start is None or new_end is None:
            return None
        return lsp.TextEdit(self.current.range(new_start, new_end, self.encoding), new_text)

    def indent(self, offset: int) -> str:
        line_start = self.a.text.rfind("\n", 0, offset) + 1
        line = self.a.text[line_start:]
        return line[:len(line) - len(line.lstrip(" \t"))]

    def starts_line(self, offset: int) -> bool:
        return self.a.text[self.a.text.rfind("\n", 0, offset) + 1:offset].strip() == ""

    def fixes(self, d: Diagnostic, folder: Path) -> list[tuple[str, list[tuple[int, int, str]], bool]]:
        """(title, edits as (start, end, new text) of the checked text, preferred) for diagnostic `d`."""
        hint = d.hint or ""
        start, end = self.offsets(d.span)
        out = []
        meant = _DID_YOU_MEAN.search(hint)
        if meant:
            for wrong in _QUOTED.findall(d.message):
                found = find_word(self.a.text, wrong, start, end)
                if found is not None:
                    out.append((f"Replace '{wrong}' with '{meant.group(1)}'", [(*found, meant.group(1))], True))
                    break
        if d.code == "NS215" and hint.startswith("write `{"):
            out += self.modifier(d)
        elif d.code == "NS215" and hint.startswith("to name the chain's result"):
            out += self.early_label(d)
        if "insert flatten() before it" in hint:
            out += self.flatten(d)
        if 'project="auto"' in hint:
            out += self.project(d)
        if d.code == "NS201" and not meant:
            out += self.missing_import(d, folder)
        return out

    def modifier(self, d: Diagnostic) -> list:
        found = self.steps.get(span_key(d.span))
        if found is None:
            return []
        chain, position = found
        step = chain.steps[position]
        expr = step.condition if step.condition is not None and span_key(step.condition.span) == span_key(d.span) \
            else step.repeat
        modifier = "if" if expr is step.condition else "*"
        chain_start = self.offsets(chain.span)[0]
        core_start, core_end = self.offsets(step.core.span)
        expr_start, expr_end = self.offsets(expr.span)
        written = f"{modifier} {self.a.text[expr_start:expr_end]}"
        out = [(f"Apply `{written}` to the whole chain", [(chain_start, chain_start, "{ "),
                                                          (core_end, core_end, " }")], False)]
        if position > 0:
            previous_end = self.offsets(chain.steps[position - 1].span)[1]
            step_start = self.offsets(step.span)[0]
            layer = self.a.text[core_start:core_end]
            out.append((f"Put `{layer} {written}` on a line of its own",
                        [(previous_end, step_start, "\n" + self.indent(chain_start))], False))
        return out

    def early_label(self, d: Diagnostic) -> list:
        found = self.steps.get(("label",) + span_key(d.span))
        if found is None:
            return []
        chain, position = found
        step = chain.steps[position]
        label_start, _ = self.offsets(step.label_span)
        core_start = self.offsets(step.core.span)[0]
        out = []
        if position == 0:
            out.append((f"Name the chain's result: `{step.label} = ...`",
                        [(label_start, core_start, f"{step.label} = ")], False))
        if position + 1 < len(chain.steps):
            step_end = self.offsets(step.span)[1]
            next_start = self.offsets(chain.steps[position + 1].span)[0]
            out.append((f"End the chain after `{step.label}`",
                        [(step_end, next_start, "\n" + self.indent(self.offsets(chain.span)[0]))], False))
        return out

    def flatten(self, d: Diagnostic) -> list:
        found = self.steps.get(span_key(d.span))
        if found is None:
            return []
        chain, position = found
        start = self.offsets(chain.steps[position].span)[0]
        inserted = "flatten()\n" + self.indent(start) if self.starts_line(start) else "flatten() -> "
        return [("Insert flatten() before it", [(start, start, inserted)], True)]

    def project(self, d: Diagnostic) -> list:
        found = self.steps.get(span_key(d.span))
        call = core_call(found[0].steps[found[1]]) if found is not None else None
        if call is None or call.callee != "add":
            return []
        given = next((arg for arg in call.args if arg.name == "project"), None)
        if given is not None:
            edit = (*self.offsets(given.value.span), '"auto"')
        else:
            _, call_end = self.offsets(call.span)
            close = self.a.text.rfind(")", 0, call_end)
            edit = (close, close, ', project="auto"' if call.args else 'project="auto"')
        return [('Project the shortcut: project="auto"', [edit], True)]

    def missing_import(self, d: Diagnostic, folder: Path) -> list:
        named = _QUOTED.search(d.message)
        if named is None:
            return []
        name = named.group(1)
        defines = re.compile(rf"^[ \t]*(?:block|network)[ \t]+{re.escape(name)}\b", re.MULTILINE)
        imports = [i for i in (self.a.module.items if self.a.module else []) if isinstance(i, ast.Import)]
        already = {resolved(str(folder / i.path)) for i in imports}
        at = self.offsets(imports[-1].span)[1] if imports else 0
        out = []
        for path in net_files(folder):
            if resolved(str(path)) in already or resolved(str(path)) == resolved(self.a.name):
                continue
            try:
                if path.stat().st_size > 4 * 2**20 or not defines.search(path.read_text("utf-8", "replace")):
                    continue
            except OSError:
                continue
            shown = path.relative_to(folder).as_posix()
            line = f'import "{shown}"'
            out.append((f"Import {shown} (it defines {name})",
                        [(at, at, "\n" + line) if imports else (0, 0, line + "\n\n")], False))
        return out


def net_files(folder: Path) -> list[Path]:
    """The regular .net files in `folder` and its folders (not hidden ones), a few levels down, a bounded
    number of entries looked at: pipes, devices and links to them are never opened."""
    found, seen = [], 0
    pending = [(folder, 0)]
    while pending and seen < FILES_SEARCHED:
        where, depth = pending.pop(0)
        try:
            entries = sorted(os.scandir(where), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False) and depth < FOLDER_DEPTH:
                    pending.append((Path(entry.path), depth + 1))
                elif entry.name.endswith(".net") and entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
            except OSError:
                continue
    return found


def code_actions(analysis: DocumentAnalysis, others: list[DocumentAnalysis], text: str, current: TextIndex,
                 within: lsp.Range, encoding: str, uri: str, root: Path | None = None) -> list[lsp.CodeAction]:
    """The fixes of the diagnostics of the document on the lines of `within`."""
    fixes = Fixes(analysis, text, current, encoding)
    path = resolved(analysis.name)
    seen: set[tuple] = set()
    out = []
    for source in [analysis] + others:
        for d in source.diagnostics:
            if d.span is None or resolved(d.span.file) != path or (d.code, span_key(d.span), d.message) in seen:
                continue
            seen.add((d.code, span_key(d.span), d.message))
            start, end = fixes.offsets(d.span)
            edit = fixes.edit(start, end, "")
            if edit is None or edit.range.end.line < within.start.line or edit.range.start.line > within.end.line:
                continue  # on the lines asked about (a cursor asks about its line)
            shown = convert(d, analysis.index, encoding, root=root)
            shown.range = edit.range
            for title, edits, preferred in fixes.fixes(d, analysis.path.parent):
                carried = [fixes.edit(*e) for e in edits]
                if any(e is None for e in carried):
                    continue
                out.append(lsp.CodeAction(title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[shown],
                                          is_preferred=preferred or None,
                                          edit=lsp.WorkspaceEdit(changes={uri: carried})))
    return out
