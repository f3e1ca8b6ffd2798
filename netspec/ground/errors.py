"""Errors are values: a code, a span and a message, rendered in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache


MAX_SHOWN = 120  # characters of a source line shown under an error


@dataclass(frozen=True)
class Span:
    """A region of a source file; lines and columns count from 1."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Related:
    """Another place that bears on a diagnostic, e.g. a call of the block the mistake is in."""

    span: Span
    message: str


ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Diagnostic:
    """A mistake (severity "error": the spec is rejected) or a warning (it checks, but likely does not do what its
    author meant; `netspec check --strict` rejects it too)."""

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: tuple[str, ...] = ()
    # The places behind some notes, as data for tools (the language server); rendered text and JSON show the notes.
    related: tuple[Related, ...] = ()
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_json(self) -> dict:
        where = None
        if self.span is not None:
            s = self.span
            where = {"file": s.file, "line": s.line, "col": s.col, "end_line": s.end_line, "end_col": s.end_col}
        return {"code": self.code, "severity": self.severity, "message": self.message, "span": where,
                "hint": self.hint, "notes": list(self.notes)}


def errors_in(diagnostics) -> list[Diagnostic]:
    return [d for d in diagnostics if d.is_error]


class NetspecError(Exception):
    """One or more diagnostics; the spec is rejected."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(f"{d.span or '<netspec>'}: {d.severity}[{d.code}]: {d.message}"
                                   for d in self.diagnostics))


class ShapeRuleError(Exception):
    """Raised by an op's hooks; the pass that called it attaches the node's span."""

    def __init__(self, code: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


@dataclass
class Sources:
    """The text of every file read, so any diagnostic can show its line."""

    texts: dict[str, str] = field(default_factory=dict)

    def line(self, file: str, number: int) -> str | None:
        text = self.texts.get(file)
        if text is None:
            return None
        lines = source_lines(text)
        if 1 <= number <= len(lines):
            return lines[number - 1].removesuffix("\r")
        return None


def source_lines(text: str) -> list[str]:
    """Lines as the parser counts them: only "\n" ends one (str.splitlines also splits at \r, \f, U+2028...)."""
    return text.split("\n")


# Control characters shown as their Unicode pictures (U+2400...), one column each, so the caret stays aligned.
_VISIBLE = {c: 0x2400 + c for c in range(0x20) if c != 0x09} | {0x7F: 0x2421}


def render(diagnostic: Diagnostic, sources: Sources | None = None) -> str:
    """`file:line:col: error[NSxxx]: message` (or `warning[...]`), the source line, a caret, then hint and notes."""
    d = diagnostic
    where = f"{d.span}: " if d.span else ""
    out = [f"{where}{d.severity}[{d.code}]: {d.message}"]
    if d.span and sources is not None:
        text = sources.line(d.span.file, d.span.line)
        if text is not None:
            text = text.expandtabs(1).translate(_VISIBLE)
            col = d.span.col
            width = 1
            if d.span.end_line == d.span.line and d.span.end_col > col:
                width = d.span.end_col - col
            width = max(1, min(width, len(text) - col + 1)) if len(text) >= col else 1
            if len(text) > MAX_SHOWN:  # keep a window around the caret so output stays bounded
                start = max(0, col - 1 - MAX_SHOWN // 2)
                text = ("..." if start else "") + text[start:start + MAX_SHOWN] + "..."
                col = col - start + (3 if start else 0)
                width = min(width, MAX_SHOWN - col + 1 + (3 if start else 0))
            gutter = str(d.span.line)
            pad = " " * len(gutter)
            out.append(f"{pad} |")
            out.append(f"{gutter} | {text}")
            out.append(f"{pad} | {' ' * (col - 1)}{'^' * max(1, width)}")
    for note in d.notes:
        out.append(f"  = note: {note}")
    if d.hint:
        out.append(f"  = hint: {d.hint}")
    return "\n".join(out)


def render_all(diagnostics: list[Diagnostic], sources: Sources | None = None, limit: int = 50) -> str:
    shown = [render(d, sources) for d in diagnostics[:limit]]
    if len(diagnostics) > limit:
        shown.append(f"... and {_counted(diagnostics[limit:], 'more ')}")
    shown.append(count_line(diagnostics))
    return "\n\n".join(shown[:-1]) + "\n" + shown[-1]


def count_line(diagnostics: list[Diagnostic]) -> str:
    """"2 errors found", "1 warning found", "1 error and 3 warnings found"."""
    return _counted(diagnostics) + " found"


def _counted(diagnostics: list[Diagnostic], more: str = "") -> str:
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    parts = [f"{n} {more}{word}{'s' if n != 1 else ''}" for n, word in ((errors, "error"), (warnings, "warning"))
             if n or (word == "error" and not warnings)]
    return " and ".join(parts)


def first_line(err: BaseException, limit: int = 240) -> str:
    """A library's exception as one readable line: ANSI colours and advice paragraphs dropped."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    line = (text.splitlines() or [type(err).__name__])[0]
    return line.split(" Please feel free to request support")[0].split("  [Caused by")[0][:limit]


def did_you_mean(name: str, candidates) -> str | None:
    return _closest(name, tuple(sorted(set(candidates))))


@lru_cache(maxsize=1024)  # a mistake inside a repeated block asks the same question many times
def _closest(name: str, candidates: tuple[str, ...]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class ToolError(Exception):
    """A command that cannot do what it was asked, for a reason outside the spec and outside netspec's code: a
    file, a setting, the data, the machine. The CLI prints `netspec COMMAND: message` and exits `exit_code`
    (1: the input is wrong, 2: the command was used wrongly); it is never reported as a bug."""

    exit_code = 1
