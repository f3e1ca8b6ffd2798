"""The server: open documents, the queue of checks, publishing diagnostics, and the requests' handlers.

Checks run one at a time on a worker thread, newest text first, so a request never waits for one: hover,
definition, completion, inlay hints, references, rename and the outline read the last check whose text parsed,
with positions carried across the lines edited since. Documents are synchronised incrementally (edits of
ranges). A failure inside a request is logged and answered with nothing (a null result); a request whose
parameters do not fit the protocol (a negative position, a missing document) is answered with an InvalidParams
error, where pygls would log it and answer nothing at all; a rename the server refuses (to a keyword) is
answered with RequestFailed and the reason.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cattrs import transform_error
from cattrs.errors import ClassValidationError
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import from_fs_path

from netspec.ground.errors import NetspecError
from netspec.ground.version import __version__
from netspec.language import ast
from netspec.ground.limits import limits_from_environment
from netspec.lsp.actions import code_actions, net_files
from netspec.lsp.checking import DocumentAnalysis, check_document
from netspec.lsp.completion import completion
from netspec.lsp.diagnostics import file_diagnostics
from netspec.lsp.hovers import Hovers
from netspec.lsp.inlays import MODES, inlay_hints
from netspec.lsp.positions import TextIndex, map_offset, resolved, uri_path
from netspec.lsp.references import files_to_search, places, rename_refusal, renamable, workspace_sources
from netspec.lsp.signatures import signature_help
from netspec.lsp.symbols import definitions, document_symbols, matches
from netspec.lsp.tokens import LEGEND, folding_ranges, semantic_tokens
from netspec.semantics.binder import Binding, Occurrence, find_word, name_offsets
from netspec.semantics.program import oversized


POLL_SECONDS = 1.0  # how often imported files are looked at where the client watches none


class JsonRpcRequestFailed(JsonRpcException):
    """The LSP's RequestFailed: a valid request the server cannot do (a rename to a keyword)."""

    CODE = -32803
    MESSAGE = "Request Failed"


class AlreadyAnswered:
    """A request that was answered with an error while it was read: there is nothing left to handle."""

    jsonrpc = "answered"


class AnsweringProtocol(LanguageServerProtocol):
    """pygls's protocol, but every request gets a response: one whose parameters cannot be read into the
    protocol's types gets InvalidParams (pygls logs it and answers nothing, so the client waits for ever), and
    one that comes after `shutdown` gets InvalidRequest, as the protocol asks (pygls drops it)."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as err:
            if "method" not in data or "id" not in data:
                raise  # a notification or a response: nothing to answer
            request_id = data["id"] if isinstance(data["id"], (int, str)) else None
            if isinstance(err.__cause__, ClassValidationError):  # say which parameter, and what was wrong
                err = JsonRpcInvalidParams("invalid params: " + "; ".join(transform_error(err.__cause__)))
            self._send_response(request_id, error=err.to_response_error())
            return AlreadyAnswered()

    def handle_message(self, message):
        if isinstance(message, AlreadyAnswered):
            return
        if self._shutdown and getattr(message, "method", None) not in (None, lsp.EXIT) \
                and getattr(message, "id", None) is not None:
            self._send_response(message.id, error=JsonRpcInvalidRequest(
                "the server is shutting down").to_response_error())
            return
        super().handle_message(message)


class NetspecServer(LanguageServer):
    def __init__(self):
        super().__init__("netspec", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
                         protocol_cls=AnsweringProtocol)
        self.inlay_mode = MODES[0]  # the setting `inlayHints`: "shapes+params", "shapes" or "off"
        self.texts: dict[str, tuple[str, int | None]] = {}  # open documents: uri -> (text, version)
        self.latest: dict[str, DocumentAnalysis] = {}  # the last check of each open document
        self.good: dict[str, DocumentAnalysis] = {}  # the last check whose text parsed
        self.pending: dict[str, None] = {}  # documents waiting for a check, in order
        self.unpublished: set[str] = set()  # checked, waiting for the checks of files that read them
        self.indexes: dict[str, TextIndex] = {}  # open documents' current texts, indexed on first use
        self.worker: asyncio.Task | None = None
        self.poller: asyncio.Task | None = None  # looks at imported files where the client watches none
        self.stamps: dict[Path, tuple | None] = {}  # the files it looks at, as they were when last seen
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netspec-check")
        self.parsed: dict[Path, tuple] = {}  # workspace files: path -> (stat, tree, text index)

    # checking

    @property
    def encoding(self) -> str:
        try:
            return self.workspace.position_encoding or lsp.PositionEncodingKind.Utf16
        except RuntimeError:
            return lsp.PositionEncodingKind.Utf16

    @property
    def root(self) -> Path | None:
        """The workspace's folder (its first, where the client named several), resolved; None without one."""
        try:
            folders = [uri_path(f.uri) for f in self.workspace.folders.values()]
            root = folders[0] if folders else Path(self.workspace.root_path) if self.workspace.root_path else None
        except RuntimeError:  # not initialized
            return None
        return resolved(str(root)) if root is not None else None

    def dependents(self, uri: str) -> list[str]:
        """Open documents whose last check read this one."""
        path = resolved(str(uri_path(uri)))
        return [u for u, a in self.latest.items() if u != uri and path in a.files]

    def schedule(self, uris: list[str]) -> None:
        for uri in uris:
            self.pending[uri] = None
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self.work())

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            uri = next(iter(self.pending))
            del self.pending[uri]
            if uri not in self.texts:
                continue
            text, version = self.texts[uri]
            buffers = {resolved(str(uri_path(u))): t for u, (t, _) in self.texts.items()}
            try:
                analysis = await loop.run_in_executor(self.executor, check_document, uri, uri_path(uri), text,
                                                      version, buffers)
            except Exception:  # a bug in netspec: say so, and keep serving
                self.report(f"checking {uri}")
                continue
            if uri not in self.texts:
                continue
            self.latest[uri] = analysis
            if self.poller is not None:  # the files as this check read them, for the poller to compare
                for path in analysis.files - self.stamps.keys():
                    self.stamps[path] = self.stamp(path)
            if analysis.module is not None:
                self.good[uri] = analysis
            if self.texts[uri][1] != version:
                continue  # edited meanwhile: its next check is queued
            self.publish_after(uri, analysis)
            if not self.pending:  # the diagnostics are out: index it for requests, unless a check is waiting
                try:
                    await loop.run_in_executor(self.executor, analysis.index_all)
                except Exception:
                    self.report(f"indexing {uri}")
            self.refresh()  # the hints and tokens the client holds are the previous check's
        for uri in list(self.unpublished):  # deferred for checks that did not run (their files were closed)
            self.publish(uri)

    @staticmethod
    def stamp(path: Path) -> tuple | None:
        """A file's time of change and size (None when it is gone), never opening it."""
        try:
            stat = path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def poll_files(self) -> None:
        """Where the client watches no files: every POLL_SECONDS, the files the open documents' checks read
        and the editor does not hold are looked at (their size and time of change, as when they were read), and
        the documents that read a changed one are checked again."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            held = {resolved(str(uri_path(u))) for u in self.texts}
            files = {f for a in self.latest.values() for f in a.files} - held
            changed = set()
            for path in files:
                now = self.stamp(path)
                if path in self.stamps and self.stamps[path] != now:
                    changed.add(path)
                self.stamps[path] = now
            for path in set(self.stamps) - files:
                del self.stamps[path]
            if changed:
                self.schedule([u for u, a in self.latest.items() if a.files & changed and u in self.texts])

    def refresh(self) -> None:
        """Ask the client to ask again for inlay hints and semantic tokens (which it asked for while the check
        ran, and got from the check before), where it can be asked."""
        workspace = self.client_capabilities.workspace
        asks = [(workspace and workspace.inlay_hint and workspace.inlay_hint.refresh_support,
                 self.workspace_inlay_hint_refresh_async),
                (workspace and workspace.semantic_tokens and workspace.semantic_tokens.refresh_support,
                 self.workspace_semantic_tokens_refresh_async)]
        for supported, ask in asks:
            if supported:
                asyncio.get_running_loop().create_task(self.quietly(ask(None)))

    @staticmethod
    async def quietly(request) -> None:
        """A request to the client whose answer does not matter (nor whether it has one)."""
        try:
            await request
        except Exception:
            pass

    def publish_after(self, uri: str, analysis: DocumentAnalysis) -> None:
        """A file is published once the queued checks of the files reading it are done: they may find more
        mistakes in it (an imported block's, made where they instantiate it)."""
        if self.read_by_pending(uri):
            self.unpublished.add(uri)
        else:
            self.publish(uri)
        for other in self.texts:
            if other != uri and other not in self.pending and not self.read_by_pending(other) \
                    and resolved(str(uri_path(other))) in analysis.files:
                self.publish(other)

    def read_by_pending(self, uri: str) -> bool:
        path = resolved(str(uri_path(uri)))
        return any(path in self.latest[u].files for u in self.pending if u in self.latest and u != uri)

    def report(self, what: str) -> None:
        self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error,
                                                     f"netspec lsp: internal error {what}:\n{traceback.format_exc()}"))

    def publish(self, uri: str) -> None:
        self.unpublished.discard(uri)
        if uri not in self.texts:
            return
        try:
            own = self.latest.get(uri)
            diagnostics = file_diagnostics(own, self.latest, self.encoding, self.root) if own is not None else []
        except Exception:  # a bug in netspec: say so, and keep serving
            self.report(f"publishing the diagnostics of {uri}")
            return
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, diagnostics, self.texts[uri][1]))

    # requests

    def current_index(self, uri: str) -> TextIndex:
        """The index of an open document's current text, made once per text: a request converts positions
        without reading the whole text again."""
        text = self.texts[uri][0]
        index = self.indexes.get(uri)
        if index is None or index.text is not text:
            index = self.indexes[uri] = TextIndex(text)
        return index

    def context(self, uri: str) -> tuple[DocumentAnalysis, str] | None:
        """The last check of the document that parsed, and the document's current text."""
        if uri not in self.texts or uri not in self.good:
            return None
        return self.good[uri], self.texts[uri][0]

    def occurrence(self, uri: str, position: lsp.Position) -> tuple[DocumentAnalysis, Occurrence] | None:
        """(analysis, the name occurrence under the cursor), or None where there is none."""
        found = self.context(uri)
        if found is None:
            return None
        analysis, text = found
        offset = map_offset(self.current_index(uri).from_position(position, self.encoding), text, analysis.text)
        o = analysis.names.at(offset) if offset is not None else None
        return None if o is None else (analysis, o)

    def location(self, analysis: DocumentAnalysis, file: str, start: int, end: int) -> lsp.Location | None:
        """Offsets of a file as `analysis` read it, in the file as it is now (open in the editor, or on disk)."""
        uri = from_fs_path(str(resolved(file)))
        index = analysis.text_index(file)
        if index is None:
            return None
        open_uri = next((u for u in self.texts if resolved(str(uri_path(u))) == resolved(file)), None)
        current = self.texts[open_uri][0] if open_uri is not None else None
        if current is not None and current != index.text:
            new_start, new_end = map_offset(start, index.text, current), map_offset(end, index.text, current)
            if new_start is None or new_end is None:
                return None
            index, start, end = self.current_index(open_uri), new_start, new_end
        return lsp.Location(uri, index.range(start, end, self.encoding))

    def binding_location(self, analysis: DocumentAnalysis, binding: Binding) -> lsp.Location | None:
        index = analysis.text_index(binding.file)
        if index is None:
            return None
        return self.location(analysis, binding.file, *name_offsets(binding, index))

    def others(self, analysis: DocumentAnalysis) -> list[DocumentAnalysis]:
        """Checks of other documents that read this one's text as it was checked."""
        path, text = resolved(analysis.name), analysis.text.lstrip("\ufeff")
        return [a for u, a in self.latest.items()
                if u != analysis.uri and path in a.files and a.read_text_of(path) == text]

    def hover(self, uri: str, position: lsp.Position) -> lsp.Hover | None:
        found = self.occurrence(uri, position)
        if found is None:
            return None
        analysis, o = found
        text = Hovers(analysis, self.others(analysis)).occurrence(o)
        if not text:
            return None
        location = self.location(analysis, analysis.name, o.start, o.end)
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, text), location.range if location else None)

    def definition(self, uri: str, position: lsp.Position) -> list[lsp.Location] | None:
        found = self.occurrence(uri, position)
        if found is None:
            return None
        analysis, o = found
        if o.kind == "import":
            target = self.imported(analysis, o.node)
            return [lsp.Location(from_fs_path(str(target)), lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)))] \
                if target else None
        if o.kind in ("label", "call") or o.binding is None:
            return None
        location = self.binding_location(analysis, o.binding)
        return [location] if location else None

    @staticmethod
    def imported(analysis: DocumentAnalysis, item: ast.Import) -> Path | None:
        folder = resolved(analysis.name).parent
        for base in [folder, *limits_from_environment().import_search]:
            candidate = resolved(str(Path(base) / item.path))
            if candidate in analysis.files or candidate.is_file():
                return candidate
        return None

    def completion(self, uri: str, position: lsp.Position) -> lsp.CompletionList | None:
        if uri not in self.texts:
            return None
        text = self.texts[uri][0]
        return completion(self.good.get(uri), text, self.current_index(uri).from_position(position, self.encoding))

    def configure(self, settings) -> bool:
        """Read the settings (initializationOptions, or `netspec` of workspace/didChangeConfiguration); True
        when the inlay hints' mode changed."""
        if isinstance(settings, dict) and isinstance(settings.get("netspec"), dict):
            settings = settings["netspec"]
        mode = settings.get("inlayHints") if isinstance(settings, dict) else None
        if mode is False:
            mode = "off"
        if mode not in MODES or mode == self.inlay_mode:
            return False
        self.inlay_mode = mode
        return True

    def apply_changes(self, uri: str, changes: list) -> str:
        """An open document's text after `changes`: whole texts, or edits of ranges (incremental sync)."""
        text = self.texts.get(uri, ("", None))[0]
        for change in changes:
            if isinstance(change, lsp.TextDocumentContentChangePartial):
                index = TextIndex(text)
                start = index.from_position(change.range.start, self.encoding)
                end = max(start, index.from_position(change.range.end, self.encoding))
                text = text[:start] + change.text + text[end:]
            else:
                text = change.text
        return text

    def inlay_hints(self, uri: str, range_: lsp.Range) -> list[lsp.InlayHint] | None:
        found = self.context(uri)
        if found is None:
            return None
        analysis, text = found
        return inlay_hints(analysis, self.others(analysis), text, self.current_index(uri), range_, self.inlay_mode,
                           self.encoding)

    def bound_here(self, uri: str, position: lsp.Position, workspace: bool = False):
        """(analysis, the occurrence under the cursor, what it is bound to, every place of that binding in
        the files the open documents read, and with `workspace` in the workspace's files importing its file),
        or None."""
        found = self.occurrence(uri, position)
        target = renamable(found[1]) if found is not None else None
        if target is None:
            return None
        analysis, o = found
        analyses = [analysis] + [a for u, a in self.good.items() if u != uri and u in self.texts]
        sources = files_to_search(analyses)
        if workspace:
            known = {resolved(n): (n, t) for a in analyses for n, t in a.trees.items()}
            sources += workspace_sources(self.workspace_trees(), known, {resolved(s.file) for s in sources},
                                         resolved(target.file))
        return analysis, o, target, places(target, sources)

    def place_location(self, p) -> lsp.Location | None:
        if p.source.analysis is not None:
            return self.location(p.source.analysis, p.source.file, p.start, p.end)
        return lsp.Location(from_fs_path(str(resolved(p.source.file))), p.source.index.range(p.start, p.end,
                                                                                            self.encoding))

    def references(self, uri: str, position: lsp.Position, declaration: bool) -> list[lsp.Location] | None:
        found = self.bound_here(uri, position, workspace=True)
        if found is None:
            return None
        return [loc for p in found[3] if declaration or not p.definition
                if (loc := self.place_location(p)) is not None]

    def highlights(self, uri: str, position: lsp.Position) -> list[lsp.DocumentHighlight] | None:
        found = self.bound_here(uri, position)
        if found is None:
            return None
        analysis = found[0]
        path = resolved(analysis.name)
        out = []
        for p in found[3]:
            loc = self.place_location(p) if resolved(p.source.file) == path else None
            if loc is not None:
                kind = lsp.DocumentHighlightKind.Write if p.definition else lsp.DocumentHighlightKind.Read
                out.append(lsp.DocumentHighlight(loc.range, kind))
        return out

    def prepare_rename(self, uri: str, position: lsp.Position) -> lsp.PrepareRenamePlaceholder | None:
        found = self.bound_here(uri, position)
        if found is None:
            return None
        analysis, o, target, _ = found
        location = self.location(analysis, analysis.name, o.start, o.end)
        if location is None or analysis.text[o.start:o.end] != target.name:
            return None
        return lsp.PrepareRenamePlaceholder(location.range, target.name)

    def rename(self, uri: str, position: lsp.Position, new_name: str) -> lsp.WorkspaceEdit | None:
        found = self.bound_here(uri, position, workspace=True)
        if found is None:
            return None
        target, where = found[2], found[3]
        refusal = rename_refusal(target, new_name)
        if refusal is not None:
            raise JsonRpcRequestFailed(f"cannot rename '{target.name}': {refusal}")
        changes: dict[str, list[lsp.TextEdit]] = {}
        for p in where:
            loc = self.place_location(p)
            if loc is None:
                raise JsonRpcRequestFailed(f"cannot rename '{target.name}': a file using it is being edited and "
                                           "does not parse")
            changes.setdefault(loc.uri, []).append(lsp.TextEdit(loc.range, new_name))
        return lsp.WorkspaceEdit(changes=changes)

    def code_actions(self, uri: str, range_: lsp.Range) -> list[lsp.CodeAction] | None:
        """Fixes of the diagnostics of the document's last check (parsed or not) that meet `range_`."""
        if uri not in self.texts or uri not in self.latest:
            return None
        analysis = self.latest[uri]
        return code_actions(analysis, self.others(analysis), self.texts[uri][0], self.current_index(uri), range_,
                            self.encoding, uri, self.root)

    def signature_help(self, uri: str, position: lsp.Position) -> lsp.SignatureHelp | None:
        if uri not in self.texts:
            return None
        return signature_help(self.good.get(uri), self.texts[uri][0],
                              self.current_index(uri).from_position(position, self.encoding))

    def semantic_tokens(self, uri: str) -> lsp.SemanticTokens | None:
        found = self.context(uri)
        if found is None:
            return None
        return lsp.SemanticTokens(semantic_tokens(*found, self.current_index(uri), self.encoding))

    def folding(self, uri: str) -> list[lsp.FoldingRange] | None:
        found = self.context(uri)
        return folding_ranges(*found, self.current_index(uri)) if found is not None else None

    def workspace_trees(self) -> list[tuple[str, ast.Module, TextIndex]]:
        """The syntax trees of the .net files in the workspace's folders that no open document read, each
        parsed once per change on disk (files larger than a spec may be, pipes and devices are left out)."""
        from netspec.language.parse import parse

        roots = [uri_path(f.uri) for f in self.workspace.folders.values()] or \
            ([Path(self.workspace.root_path)] if self.workspace.root_path else [])
        limit = limits_from_environment().file_bytes
        out = []
        for root in roots:
            for path in net_files(root):
                try:
                    stat = path.stat()
                    key = (stat.st_mtime_ns, stat.st_size)
                    if self.parsed.get(path, (None,))[0] != key:
                        tree = index = None
                        if stat.st_size <= limit:
                            try:
                                text = path.read_text("utf-8")
                                tree, index = parse(text, str(path)), TextIndex(text)
                            except (NetspecError, UnicodeDecodeError):
                                pass
                        self.parsed[path] = (key, tree, index)
                except OSError:
                    continue
                if self.parsed[path][1] is not None:
                    out.append((str(path), *self.parsed[path][1:]))
        return out

    def workspace_symbols(self, query: str) -> list[lsp.SymbolInformation]:
        """Blocks, networks and lets whose names match `query`: in the files the open documents' checks read
        (where they are as the editor has them), then in the rest of the workspace's .net files."""
        out, seen = [], set()
        analyses = [a for u, a in self.good.items() if u in self.texts]
        for source in files_to_search(analyses):
            analysis, name, index = source.analysis, source.file, source.index
            seen.add(resolved(name))
            for symbol, kind, span in definitions(analysis.trees[name]):
                if matches(query, symbol):
                    found = find_word(index.text, symbol, *index.span_offsets(span))
                    location = self.location(analysis, name, *found) if found else None
                    if location is not None:
                        out.append(lsp.SymbolInformation(location, symbol, kind, container_name=Path(name).name))
        for name, tree, index in self.workspace_trees():
            if resolved(name) in seen:
                continue
            for symbol, kind, span in definitions(tree):
                if matches(query, symbol):
                    found = find_word(index.text, symbol, *index.span_offsets(span))
                    if found is not None:
                        location = lsp.Location(from_fs_path(str(resolved(name))), index.range(*found, self.encoding))
                        out.append(lsp.SymbolInformation(location, symbol, kind, container_name=Path(name).name))
        return out

    def symbols(self, uri: str) -> list[lsp.DocumentSymbol] | None:
        found = self.context(uri)
        return document_symbols(*found, self.encoding) if found is not None else None

    def formatting(self, text: str, uri: str) -> list[lsp.TextEdit] | None:
        """One edit to the whole text, or none when it is formatted already, does not parse or is larger than
        a spec may be."""
        from netspec.fmt import format_text

        if oversized(text, limits_from_environment().file_bytes) is not None:
            return None  # the diagnostics say so
        try:
            formatted = format_text(text, str(uri_path(uri)))
        except NetspecError:
            return None  # it does not parse: the diagnostics say where
        if formatted == text:
            return []
        index = TextIndex(text)
        return [lsp.TextEdit(index.range(0, len(text), self.encoding), formatted)]
def build_server() -> NetspecServer:
    server = NetspecServer()

    def guarded(handler):
        """A request that fails answers nothing rather than an error, and the failure is logged."""
        def run(ls: NetspecServer, params):
            try:
                return handler(ls, params)
            except JsonRpcException:  # an answer the protocol has: the client is told why
                raise
            except Exception:
                ls.report(f"in {handler.__name__}")
                return None
        run.__name__ = handler.__name__
        return run

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetspecServer, params: lsp.DidOpenTextDocumentParams):
        doc = params.text_document
        ls.texts[doc.uri] = (doc.text, doc.version)
        ls.schedule([doc.uri] + ls.dependents(doc.uri))

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NetspecServer, params: lsp.DidChangeTextDocumentParams):
        uri = params.text_document.uri
        ls.texts[uri] = (ls.apply_changes(uri, params.content_changes), params.text_document.version)
        ls.schedule([uri] + ls.dependents(uri))

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetspecServer, params: lsp.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        dependents = ls.dependents(uri)
        for store in (ls.texts, ls.latest, ls.good, ls.pending, ls.indexes):
            store.pop(uri, None)
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))
        ls.schedule(dependents)  # they read the file on disk again

    @server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def files_changed(ls: NetspecServer, params: lsp.DidChangeWatchedFilesParams):
        changed = {resolved(str(uri_path(c.uri))) for c in params.changes}
        ls.schedule([u for u, a in ls.latest.items() if a.files & changed and u not in
                     {c.uri for c in params.changes}])

    @server.feature(lsp.SHUTDOWN)
    def shutdown(ls: NetspecServer, params):
        """No more checks: `exit` then ends the process without waiting for queued ones."""
        ls.pending.clear()
        if ls.poller is not None:
            ls.poller.cancel()
        ls.executor.shutdown(wait=False, cancel_futures=True)

    @server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def configuration(ls: NetspecServer, params: lsp.DidChangeConfigurationParams):
        if ls.configure(params.settings):
            ls.refresh()

    @server.feature(lsp.INITIALIZE)
    def initialize(ls: NetspecServer, params: lsp.InitializeParams):
        ls.configure(params.initialization_options)

    @server.feature(lsp.INITIALIZED)
    async def initialized(ls: NetspecServer, params: lsp.InitializedParams):
        watched = ls.client_capabilities.workspace and ls.client_capabilities.workspace.did_change_watched_files
        if watched and watched.dynamic_registration:  # imports edited outside the editor re-check their users
            try:
                await ls.client_register_capability_async(lsp.RegistrationParams([lsp.Registration(
                    "netspec-watch", lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                    lsp.DidChangeWatchedFilesRegistrationOptions([lsp.FileSystemWatcher("**/*.net")]))]))
                return
            except Exception as err:  # the client declined: the server looks at the files itself
                ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info,
                                                           f"netspec lsp: no file watching ({err}); polling"))
        ls.poller = asyncio.get_running_loop().create_task(ls.poll_files())

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    @guarded
    def hover(ls: NetspecServer, params: lsp.HoverParams):
        return ls.hover(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    @guarded
    def definition(ls: NetspecServer, params: lsp.DefinitionParams):
        return ls.definition(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ",", " "]))
    @guarded
    def completion(ls: NetspecServer, params: lsp.CompletionParams):
        return ls.completion(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
    @guarded
    def inlay_hint(ls: NetspecServer, params: lsp.InlayHintParams):
        return ls.inlay_hints(params.text_document.uri, params.range)

    @server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION, lsp.CodeActionOptions([lsp.CodeActionKind.QuickFix]))
    @guarded
    def code_action(ls: NetspecServer, params: lsp.CodeActionParams):
        return ls.code_actions(params.text_document.uri, params.range)

    @server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
    @guarded
    def references(ls: NetspecServer, params: lsp.ReferenceParams):
        return ls.references(params.text_document.uri, params.position, params.context.include_declaration)

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_HIGHLIGHT)
    @guarded
    def highlight(ls: NetspecServer, params: lsp.DocumentHighlightParams):
        return ls.highlights(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
    @guarded
    def prepare_rename(ls: NetspecServer, params: lsp.PrepareRenameParams):
        return ls.prepare_rename(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_RENAME, lsp.RenameOptions(prepare_provider=True))
    @guarded
    def rename(ls: NetspecServer, params: lsp.RenameParams):
        return ls.rename(params.text_document.uri, params.position, params.new_name)

    @server.feature(lsp.TEXT_DOCUMENT_SIGNATURE_HELP, lsp.SignatureHelpOptions(trigger_characters=["(", ","],
                                                                               retrigger_characters=["="]))
    @guarded
    def signature_help(ls: NetspecServer, params: lsp.SignatureHelpParams):
        return ls.signature_help(params.text_document.uri, params.position)

    @server.feature(lsp.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL, LEGEND)
    @guarded
    def tokens(ls: NetspecServer, params: lsp.SemanticTokensParams):
        return ls.semantic_tokens(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_FOLDING_RANGE)
    @guarded
    def folding(ls: NetspecServer, params: lsp.FoldingRangeParams):
        return ls.folding(params.text_document.uri)

    @server.feature(lsp.WORKSPACE_SYMBOL)
    @guarded
    def workspace_symbols(ls: NetspecServer, params: lsp.WorkspaceSymbolParams):
        return ls.workspace_symbols(params.query)

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @guarded
    def symbols(ls: NetspecServer, params: lsp.DocumentSymbolParams):
        return ls.symbols(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    async def formatting(ls: NetspecServer, params: lsp.DocumentFormattingParams):
        """On a thread of its own: a 1,000-block spec takes half a second, and hovers go on meanwhile."""
        uri = params.text_document.uri
        if uri not in ls.texts:
            return None
        try:
            return await asyncio.get_running_loop().run_in_executor(None, ls.formatting, ls.texts[uri][0], uri)
        except Exception:
            ls.report("in formatting")
            return None

    return server


def serve() -> None:
    """Run the server on stdin and stdout until the client says exit.

    A check of a large spec makes hundreds of thousands of objects; with the collector's default thresholds a
    collection runs every 700 of them, each walking what the kept checks hold. Fewer collections, and the
    objects of the imports frozen out of them, take a quarter off a 1,000-block check (bench/lsp_latency.py)."""
    logging.basicConfig(level=logging.WARNING)
    server = build_server()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    server.start_io()
