"""A network argument given outside the spec (`--set classes=10`, `%%netspec classes=10`), read as a spec
expression, never as Python."""

from __future__ import annotations

from typing import Any

from netspec.ground.errors import NetspecError
from netspec.language.evaluate import evaluate
from netspec.language.parse import parse


class OverrideError(ValueError):
    """`NAME=VALUE` that cannot be read; the message says why."""


def parse_override(text: str) -> tuple[str, Any]:
    """`classes=10` -> ("classes", 10)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise OverrideError(f"expected NAME=VALUE, got {text!r}")
    try:
        module = parse(f"let {key} = {value}", "--set")
        if len(module.items) != 1:
            raise OverrideError(f"cannot read --set {text}: the value must be one expression")
        return key, evaluate(module.items[0].value, {}.__getitem__, allow_symbol=True)
    except NetspecError as err:
        raise OverrideError(f"cannot read --set {text}: {err.diagnostics[0].message}") from None
