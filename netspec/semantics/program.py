"""Loading a program: a spec file and every file it imports, parsed into definitions (blocks, networks, lets,
training recipes), with imports kept inside the folders the limits allow."""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspec.ground.errors import Diagnostic, NetspecError, Sources, Span, did_you_mean
from netspec.ground.files import read_source
from netspec.ground.limits import DEFAULT, Limits
from netspec.language import ast
from netspec.language.evaluate import POISONED, evaluate, step_limit
from netspec.language.parse import parse
from netspec.language.prescan import prescan


@dataclass
class Definitions:
    """What one file can see: its own blocks, networks and lets, and those of its imports."""

    file: str
    blocks: dict[str, ast.Block | ast.NetworkAlias] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)  # defined in this file itself, in order
    lets: dict[str, Any] = field(default_factory=dict)
    trains: dict[str, ast.Train] = field(default_factory=dict)  # training recipes, by network, of this file
    homes: dict[str, Definitions] = field(default_factory=dict)  # block name -> the file that defines it


@dataclass
class Program:
    root: Definitions
    sources: Sources
    limits: Limits = DEFAULT


@dataclass
class _Loader:
    sources: Sources
    limits: Limits
    roots: tuple[Path, ...] | None  # where imports may read; None: anywhere
    loaded: dict[Path, Definitions] = field(default_factory=dict)
    texts: dict[Path, str] = field(default_factory=dict)  # read instead of the file at that (resolved) path
    trees: dict[str, ast.Module] | None = None  # filled with each file's syntax tree, by file name
    tokens: int = 0  # read so far, over all the files: Limits.tokens bounds the spec with its imports


def load_program(path: str | Path, sources: Sources | None = None, limits: Limits = DEFAULT,
                 texts: dict[Path, str] | None = None, trees: dict[str, ast.Module] | None = None) -> Program:
    """Parse a file and everything it imports.

    Imports stay inside the main file's folder and `limits.import_roots` (docs/reliability.md). `texts` gives
    files' texts by resolved path, read instead of the files (an editor's unsaved buffers, netspec.lsp);
    `trees`, when given, gets each file's syntax tree, even when loading fails later.
    """
    sources = sources if sources is not None else Sources()
    path = Path(path)
    roots = None
    if limits.import_roots is not None:
        allowed = (*limits.import_roots, *limits.import_search)  # a folder to search is a folder to read
        roots = (_resolved(path, None).parent, *(_folder(Path(r)) for r in allowed))
    with step_limit(limits.evaluation_steps):  # the lets
        root = _load_file(path, _Loader(sources, limits, roots, texts=texts or {}, trees=trees), [], None)
    return Program(root, sources, limits)


def oversized(text: str, max_bytes: int) -> int | None:
    """The size in UTF-8 bytes of a text larger than `max_bytes` (an editor's buffer, read instead of its
    file, is held to a file's limit); None when it fits. Only a text that might not fit is encoded."""
    if len(text) * 4 <= max_bytes:
        return None
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > max_bytes else None


def _resolved(path: Path, span: Span | None) -> Path:
    """`path` with its links followed; NS209 when that cannot be done (a loop of links, a NUL in the name)."""
    try:
        return path.resolve()
    except RuntimeError:  # Python 3.11 and 3.12 say a loop of links this way
        reason = "a loop of symbolic links"
    except OSError as err:
        reason = "a loop of symbolic links" if err.errno == errno.ELOOP else err.strerror or str(err)
    except ValueError as err:
        raise NetspecError(Diagnostic("NS209", f"cannot read {str(path)!r}: {err}", span)) from None
    raise NetspecError(Diagnostic("NS209", f"cannot read {path}: {reason}", span)) from None


def _folder(path: Path) -> Path:
    """An allowed import folder, resolved where it can be: one that cannot (a loop of links) holds no file."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return path.absolute()


def _shown(path: Path) -> str:
    """A path as the user would type it from here."""
    return os.path.relpath(path)


def _find_import(folder: Path, item: ast.Import, search: tuple[Path, ...]) -> Path:
    """The importing file's folder first, then each folder of the search path; NS209 names where it looked."""
    candidates = [folder / item.path] + [Path(root) / item.path for root in search]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except (OSError, ValueError):  # a NUL byte or an over-long name: reported when read
            return candidate
    for candidate in candidates:  # a FIFO, a device or a broken link by that name: reading it says what it is
        if (candidate.exists() or candidate.is_symlink()) and not candidate.is_dir():
            return candidate
    if len(candidates) == 1:
        return candidates[0]  # read_source reports it as before
    raise NetspecError(Diagnostic("NS209", f"file not found: {item.path}", item.span,
                                  "add the folder that holds it with --import-path DIR (or NETSPEC_PATH)",
                                  (f"looked in: {', '.join(_shown(c.parent) + '/' for c in candidates)}",)))


# Syntax trees of the texts parsed last, by file name, text and nesting limit: a language server checks a spec again
# at every keystroke, and the files it imports have not changed (parsing is half of a check). Trees are never
# changed once built, so they are shared. Small texts only, and few, so the cache stays a few megabytes.
_PARSED: OrderedDict[tuple[str, str, int], tuple[ast.Module, int]] = OrderedDict()
_PARSED_ENTRIES, _PARSED_TEXT_CHARS = 32, 256 * 1024
_PARSED_LOCK = threading.Lock()  # checks may run in several threads (the language server's queue)


def _parsed(loader: _Loader, name: str, text: str) -> ast.Module:
    """`text` parsed (the file `name`), its tokens counted against the spec's limit as if scanned again."""
    limits = loader.limits
    key = (name, text, limits.nesting)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
        if cached is not None:
            _PARSED.move_to_end(key)
    if cached is not None and loader.tokens + cached[1] <= limits.tokens:
        loader.tokens += cached[1]
        return cached[0]
    before = loader.tokens
    loader.tokens = prescan(loader.sources.texts[name], name, limits.nesting, limits.tokens, loader.tokens)
    module = parse(text, name, limits.nesting, max_tokens=None)  # scanned just above
    if len(text) <= _PARSED_TEXT_CHARS:
        with _PARSED_LOCK:
            _PARSED[key] = (module, loader.tokens - before)
            while len(_PARSED) > _PARSED_ENTRIES:
                _PARSED.popitem(last=False)
    return module


def _load_file(path: Path, loader: _Loader, chain: list[Path], span: Span | None) -> Definitions:
    key = _resolved(path, span)
    if chain and loader.roots is not None and not any(key.is_relative_to(r) for r in loader.roots):
        raise NetspecError(Diagnostic(
            "NS214", f"this import reads {_shown(key)}, outside the folders imports may read", span,
            "imports stay inside the main spec's folder; allow another with --import-path DIR "
            "(or any with --allow-any-import)",
            (f"allowed: {', '.join(_shown(r) + '/' for r in loader.roots)}",)))
    if key in chain:
        cycle = " -> ".join(p.name for p in chain[chain.index(key):] + [key])
        raise NetspecError(Diagnostic("NS208", f"import cycle: {cycle}", span))
    if key in loader.loaded:
        return loader.loaded[key]
    limits = loader.limits
    if len(chain) >= limits.import_depth:
        raise NetspecError(Diagnostic("NS213", f"imports nest deeper than {limits.import_depth} files", span))
    name = str(path)
    text = loader.texts.get(key)
    if text is None:
        text = read_source(path, span, limits.file_bytes, loader.sources)
    elif (size := oversized(text, limits.file_bytes)) is not None:  # as read_source says it of a file
        raise NetspecError(Diagnostic("NS213", f"{path} is {size:,} bytes; specs are limited to "
                                               f"{limits.file_bytes:,}", span))
    loader.sources.texts[name] = text.lstrip("\ufeff")
    module = _parsed(loader, name, text)
    if loader.trees is not None:
        loader.trees[name] = module
    defs = Definitions(name)
    errors: list[Diagnostic] = []
    first_seen: dict[str, Span] = {}

    for item in module.items:
        if isinstance(item, ast.Train):
            if item.network in defs.trains:
                errors.append(Diagnostic("NS206", f"network '{item.network}' has two training recipes", item.span))
            defs.trains[item.network] = item
            continue
        if isinstance(item, ast.Import):
            try:
                found = _find_import(path.parent, item, loader.limits.import_search)
                imported = _load_file(found, loader, chain + [key], item.span)
            except NetspecError as err:
                errors.extend(err.diagnostics)
                continue
            for block_name, block in imported.blocks.items():
                defs.blocks.setdefault(block_name, block)
                defs.homes.setdefault(block_name, imported.homes[block_name])
            for let_name, value in imported.lets.items():
                defs.lets.setdefault(let_name, value)
            continue
        if item.name in first_seen:
            errors.append(Diagnostic("NS206", f"'{item.name}' is defined twice in this file", item.span,
                                     notes=(f"first defined at {first_seen[item.name]}",)))
            continue
        first_seen[item.name] = item.span
        if isinstance(item, ast.Let):
            try:
                defs.lets[item.name] = evaluate(item.value, defs.lets.__getitem__, lambda: list(defs.lets))
            except NetspecError as err:
                errors.extend(err.diagnostics)
                defs.lets[item.name] = POISONED
        else:
            defs.blocks[item.name] = item
            defs.homes[item.name] = defs
            if isinstance(item, ast.NetworkAlias) or item.is_network:
                defs.networks.append(item.name)
    for network, section in defs.trains.items():
        if network not in defs.networks:
            errors.append(Diagnostic("NS210", f"a training recipe for '{network}', which this file does not define "
                                              "as a network", section.span, did_you_mean(network, defs.networks)))
    if errors:
        raise NetspecError(errors)
    loader.loaded[key] = defs
    return defs


def select_network(program: Program, name: str | None) -> str:
    defs = program.root
    if name is not None:
        if name not in defs.blocks or not (isinstance(defs.blocks[name], ast.NetworkAlias)
                                           or defs.blocks[name].is_network):
            hint = did_you_mean(name, defs.networks) or (
                f"networks in this file: {', '.join(defs.networks)}" if defs.networks else None)
            raise NetspecError(Diagnostic("NS210", f"{defs.file} defines no network '{name}'", None, hint))
        return name
    if not defs.networks:
        raise NetspecError(Diagnostic("NS210", f"{defs.file} defines no network", None,
                                      "declare one with `network Name { input x: [C, H, W] ... }`"))
    if len(defs.networks) > 1:
        raise NetspecError(Diagnostic("NS210", f"{defs.file} defines several networks; choose one",
                                      None, "name it after the file: " + ", ".join(
                                          f"{defs.file}:{n}" for n in defs.networks)))
    return defs.networks[0]
