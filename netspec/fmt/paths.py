"""`format_paths`: the `netspec fmt [--check] FILE...` command over files, folders and standard input.

Each file is read, formatted with `format_text` and written back atomically (or, with --check, only listed);
a file that does not parse is reported as `netspec check` reports it and left alone. A summary line goes to
standard error, and the exit status says whether anything was (or would be) changed or could not be read.
"""

from __future__ import annotations

import sys
from pathlib import Path

from netspec.fmt.canonical import format_text
from netspec.ground.errors import NetspecError, Sources, render_all
from netspec.ground.files import read_source, write_atomic


def _expand(paths: list[str]) -> list[str]:
    """Folders stand for the .net files inside them, in order."""
    out: list[str] = []
    for p in paths:
        folder = Path(p)
        out += sorted(str(f) for f in folder.rglob("*.net")) if p != "-" and folder.is_dir() else [p]
    return out


def format_paths(paths: list[str], check: bool) -> int:
    """`netspec fmt [--check] FILE...`: 0 when done (or nothing to change), 1 when --check finds files to
    reformat or a file does not parse, 2 when one cannot be read."""
    changed = unchanged = failed = 0
    status = 0
    for name in _expand(paths):
        sources = Sources()
        try:
            text = sys.stdin.read() if name == "-" else read_source(Path(name), sources=sources)
            sources.texts[name] = text
            formatted = format_text(text, name)
        except NetspecError as err:
            print(render_all(err.diagnostics, sources), file=sys.stderr)
            status = max(status, 2 if err.diagnostics[0].code == "NS209" else 1)
            failed += 1
            continue
        if name == "-":
            sys.stdout.write(formatted)
        if formatted == text:
            unchanged += 1
            continue
        changed += 1
        if check:
            print(f"would reformat {name}")
            status = max(status, 1)
        elif name != "-":
            try:
                write_atomic(name, formatted)
            except OSError as err:
                print(f"netspec fmt: cannot write {name}: {err.strerror}", file=sys.stderr)
                status, changed, failed = 2, changed - 1, failed + 1
                continue
            print(f"reformatted {name}")
    verb = "would be reformatted" if check else "reformatted"
    errors = f", {failed} not formatted (see above)" if failed else ""
    print(f"{changed} file{'s' if changed != 1 else ''} {verb}, {unchanged} left unchanged{errors}", file=sys.stderr)
    return status
