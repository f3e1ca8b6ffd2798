"""The `netspec` command line (the top layer: it may import every other)."""

from netspec.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
