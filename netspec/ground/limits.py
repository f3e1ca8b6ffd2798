"""Ceilings on what a spec may ask for, so hostile or mistaken input ends in an error, not a hang.

Each is far above any real network (ResNet-152 has 515 layers and 60 M parameters; no spec in specs/
nests deeper than 3) and low enough that reaching it costs well under a second. docs/reliability.md lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    file_bytes: int = 4 * 1024 * 1024  # one spec file
    # Tokens of a spec and its imports together, {expressions} in label strings included: the parser costs
    # 15-50 us a token, so this bounds the parse to about 0.4 s (specs/ reach 1,516 in one file; the
    # 1,000-block benchmark: 6,105). Counted before Lark runs (netspec/prescan.py).
    tokens: int = 10_000
    nesting: int = 100  # operators, brackets and groups inside one another
    import_depth: int = 64  # files importing files
    block_depth: int = 64  # blocks instantiating blocks
    repeat: int = 10_000  # one `* n`
    # Layers, blocks and groups instantiated (bench/check_speed.py's 1,000 blocks: 8,004): 10,000 conv layers take
    # about 0.4 s to lower and check.
    instances: int = 10_000
    # Evaluation steps (an expression node, or a list item made, read or passed on) while loading the lets, and
    # again while lowering a network: arguments are evaluated once per instance (specs/ use at most 12,765, the
    # 1,000-block benchmark 9,011, 20,000 conv layers by repeats 59,608); 200,000 take about 0.3 s.
    evaluation_steps: int = 200_000
    elements: int = 2**40  # elements of one layer's output, per sample
    params: int = 10**11  # parameters of one network
    errors_shown: int = 50  # diagnostics printed; the rest are counted
    # Directories imports may read besides the main spec's own; None: anywhere (--allow-any-import).
    import_roots: tuple[Path, ...] | None = ()
    # Where an import is looked for after the importing file's own folder, in order (--import-path, NETSPEC_PATH).
    import_search: tuple[Path, ...] = ()


DEFAULT = Limits()


def search_path_from_environment() -> tuple[Path, ...]:
    """NETSPEC_PATH: folders to look for imports in, separated as PATH is (':' here)."""
    return tuple(Path(p) for p in os.environ.get("NETSPEC_PATH", "").split(os.pathsep) if p)


def limits_from_environment() -> Limits:
    """`netspec check`'s defaults without flags: imports read the spec's folder and the NETSPEC_PATH folders."""
    search = search_path_from_environment()
    return Limits(import_roots=search, import_search=search)
