"""Why a model cannot be imported: a user's model or argument, never netspec's bug (exit 1, no traceback)."""

from __future__ import annotations

from netspec.ground.errors import ToolError


class ImportFailed(ToolError):
    """The model cannot become a spec that computes what it computes: an op the registry lacks, control flow fx
    cannot trace, a builder that cannot be found or called. The message names the op, the module path and, where
    fx recorded it, the source line."""

    exit_code = 1


def located(what: str, path: str | None, source_line: str | None, hint: str) -> ImportFailed:
    """An ImportFailed naming the op or function, the module path it runs in and the source line."""
    where = f" in module '{path}'" if path else " in the model's own forward"
    line = f" ({source_line})" if source_line else ""
    return ImportFailed(f"cannot import {what}{where}{line}: {hint}")
