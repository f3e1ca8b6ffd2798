"""The server: open documents, the queue of checks, publishing diagnostics, and the requests' handlers.

Checks run one at a time on a worker thread, newest text first, so a request never waits for one: hover,
definition, completion and the outline read the last check whose text parsed, with positions carried across
the lines edited since. A failure inside a request is logged and answered with nothing (a null result); a
request whose parameters do not fit the protocol (a negative position, a missing document) is answered with an
InvalidParams error, where pygls would log it and answer nothing at all.
"""

from __future__ import annotations

import asyncio
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
from netspec.lsp.checking import DocumentAnalysis, check_document
from netspec.lsp.completion import completion
from netspec.lsp.diagnostics import file_diagnostics
from netspec.lsp.hovers import Hovers
from netspec.lsp.positions import TextIndex, map_offset, resolved, uri_path
from netspec.lsp.symbols import document_symbols
from netspec.semantics.binder import Binding, Occurrence, name_offsets
from netspec.semantics.program import oversized


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
        super().__init__("netspec", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Full,
                         protocol_cls=AnsweringProtocol)
        self.texts: dict[str, tuple[str, int | None]] = {}  # open documents: uri -> (text, version)
        self.latest: dict[str, DocumentAnalysis] = {}  # the last check of each open document
        self.good: dict[str, DocumentAnalysis] = {}  # the last check whose text parsed
        self.pending: dict[str, None] = {}  # documents waiting for a check, in order
        self.unpublished: set[str] = set()  # checked, waiting for the checks of files that read them
        self.indexes: dict[str, TextIndex] = {}  # open documents' current texts, indexed on first use
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netspec-check")

    # checking

    @property
    def encoding(self) -> str:
        try:
            return self.workspace.position_encoding or lsp.PositionEncodingKind.Utf16
        except RuntimeError:
            return lsp.PositionEncodingKind.Utf16

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
            if analysis.module is not None:
                self.good[uri] = analysis
            if self.texts[uri][1] != version:
                continue  # edited meanwhile: its next check is queued
            self.publish_after(uri, analysis)
        for uri in list(self.unpublished):  # deferred for checks that did not run (their files were closed)
            self.publish(uri)

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
            diagnostics = file_diagnostics(own, self.latest, self.encoding) if own is not None else []
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
        text = ls.texts.get(uri, ("", None))[0]
        for change in params.content_changes:  # whole texts: the server asks for full synchronisation
            text = change.text
        ls.texts[uri] = (text, params.text_document.version)
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
        ls.executor.shutdown(wait=False, cancel_futures=True)

    @server.feature(lsp.INITIALIZED)
    async def initialized(ls: NetspecServer, params: lsp.InitializedParams):
        watched = ls.client_capabilities.workspace and ls.client_capabilities.workspace.did_change_watched_files
        if watched and watched.dynamic_registration:  # imports edited outside the editor re-check their users
            try:
                await ls.client_register_capability_async(lsp.RegistrationParams([lsp.Registration(
                    "netspec-watch", lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                    lsp.DidChangeWatchedFilesRegistrationOptions([lsp.FileSystemWatcher("**/*.net")]))]))
            except Exception as err:  # the client declined: files saved in the editor still re-check their users
                ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Info,
                                                           f"netspec lsp: no file watching ({err})"))

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
    """Run the server on stdin and stdout until the client says exit."""
    logging.basicConfig(level=logging.WARNING)
    build_server().start_io()
