"""`netspec lsp`'s editing features end to end (pytest-lsp): inlay hints, code actions, references and rename,
document highlight, signature help, semantic tokens, folding ranges, workspace symbols, incremental sync.

One server serves the module; each test opens its own files in a temporary folder.
"""

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_lsp import BLOCKS, NET, SERVER, at, close, diagnostics_of, doc, publish, span

import netspec

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lsp_features")
    (root / "blocks.net").write_text(BLOCKS)
    (root / "net.net").write_text(NET)
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, folder):
    lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)(lambda ls, params: None)
    refreshed = []
    lsp_client.feature(lsp.WORKSPACE_SEMANTIC_TOKENS_REFRESH)(lambda ls, params: refreshed.append(params))
    lsp_client.refreshed = refreshed  # the server asks after each check
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=folder.as_uri(),
        initialization_options={"inlayHints": "shapes+params"}))
    yield
    await lsp_client.shutdown_session()


async def hints(client, path, first=0, last=1000) -> list[tuple[int, int, str]]:
    found = await client.text_document_inlay_hint_async(lsp.InlayHintParams(doc(path), lsp.Range(at(first, 0),
                                                                                                 at(last, 0))))
    return [(h.position.line, h.position.character, h.label) for h in found or []]


# Inlay hints ---------------------------------------------------------------------------------------------------------

async def test_inlay_hints_give_every_layer_lines_output_shape_and_parameters(client, folder):
    net = folder / "net.net"
    assert await publish(client, net) == []
    graph = netspec.load(net)
    rows = {row.name: row for row in netspec.summarize(graph, depth=1).rows}
    assert await hints(client, net) == [
        (6, 44, "→ [16, 32, 32], 448 params"),
        (7, 29, f"→ [16, 32, 32], {rows['stage1'].params:,} params"),  # the group of the two instances
        (8, 35, f"→ [32, 16, 16], {rows['stage2'].params:,} params"),
        (9, 24, "→ [32, 1, 1]"),  # no parameters: none shown
        (10, 11, "→ [32]"),
        (11, 21, "→ [10], 330 params")]
    assert await hints(client, net, 8, 9) == [(8, 35, f"→ [32, 16, 16], {rows['stage2'].params:,} params")]


async def test_inlay_hints_in_an_imported_block_show_each_shape_it_is_instantiated_with(client, folder):
    net, blocks = folder / "net.net", folder / "blocks.net"
    await publish(client, net)
    await publish(client, blocks)
    found = await hints(client, blocks)
    assert found[:2] == [(5, 64, "→ [16, 32, 32] | [32, 16, 16]"), (6, 18, "→ [16, 32, 32] | [32, 16, 16]")]
    assert found[-1] == (11, 8, "→ [16, 32, 32] | [32, 16, 16]")
    close(client, blocks)


async def test_inlay_hints_follow_the_setting_and_stop_before_a_trailing_comment(client, folder):
    path = folder / "hinted.net"
    text = "network H {\n  input x: [1, 8, 8]\n  conv(4, kernel=3)  # a comment\n  relu() -> flatten()\n}\n"
    assert await publish(client, path, text) == []
    assert await hints(client, path) == [(2, 19, "→ [4, 6, 6], 40 params"), (3, 21, "→ [144]")]
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams({"netspec": {"inlayHints": "shapes"}}))
    assert await hints(client, path) == [(2, 19, "→ [4, 6, 6]"), (3, 21, "→ [144]")]
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams({"netspec": {"inlayHints": "off"}}))
    assert await hints(client, path) == []
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
        {"netspec": {"inlayHints": "shapes+params"}}))
    assert len(await hints(client, path)) == 2
    close(client, path)


# Code actions --------------------------------------------------------------------------------------------------------

def applied(text: str, edits: list) -> str:
    """`text` with `edits` (ranges of the text, in UTF-16 units on ASCII lines) made, last first."""
    lines = text.split("\n")
    offset = lambda p: sum(len(x) + 1 for x in lines[:p.line]) + p.character  # noqa: E731
    for e in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


async def actions(client, path, text, line) -> dict[str, tuple[str, list, bool | None]]:
    """The code actions offered on line `line`: title -> (diagnostic code, the text once applied, preferred)."""
    found = await client.text_document_code_action_async(lsp.CodeActionParams(
        doc(path), lsp.Range(at(line, 0), at(line, 0)), lsp.CodeActionContext([])))
    return {a.title: ([d.code for d in a.diagnostics], applied(text, a.edit.changes[path.as_uri()]), a.is_preferred)
            for a in found}


async def test_a_did_you_mean_is_a_one_click_replacement_of_the_name_or_argument(client, folder):
    path = folder / "typos.net"
    text = "network T {\n  input x: [3, 8, 8]\n  conv(4, kernal=3)\n  linar(10)\n}\n"
    assert sorted(d.code for d in await publish(client, path, text)) == ["NS201", "NS202"]
    assert await actions(client, path, text, 2) == {
        "Replace 'kernal' with 'kernel'": (["NS202"], text.replace("kernal", "kernel"), True)}
    assert await actions(client, path, text, 3) == {
        "Replace 'linar' with 'linear'": (["NS201"], text.replace("linar", "linear"), True)}
    assert await actions(client, path, text, 1) == {}
    text = "network T {\n  input x: [3, 8, 8]\n  wide = conv(4, kernel=3)\n  add(widr)\n}\n"
    assert [d.code for d in await publish(client, path, text)] == ["NS205"]
    assert await actions(client, path, text, 3) == {
        "Replace 'widr' with 'wide'": (["NS205"], text.replace("widr", "wide"), True)}
    close(client, path)


async def test_an_ambiguous_modifier_offers_both_rewrites_of_the_hint(client, folder):
    path = folder / "ambiguous.net"
    text = ("network A {\n  input x: [3, 8, 8]\n  conv(4, kernel=3) -> relu() * 2\n"
            "  y: conv(4, kernel=1) -> relu()\n  y -> relu()\n}\n")
    found = await publish(client, path, text)
    assert [d.code for d in found] == ["NS215", "NS215"]
    assert "\nnote: 'y' is read at ambiguous.net:5:3\n" in found[1].message  # relative to the workspace
    assert await actions(client, path, text, 2) == {
        "Apply `* 2` to the whole chain": (["NS215"], text.replace(
            "conv(4, kernel=3) -> relu() * 2", "{ conv(4, kernel=3) -> relu() } * 2"), None),
        "Put `relu() * 2` on a line of its own": (["NS215"], text.replace(
            "conv(4, kernel=3) -> relu() * 2", "conv(4, kernel=3)\n  relu() * 2"), None)}
    assert await actions(client, path, text, 3) == {
        "Name the chain's result: `y = ...`": (["NS215"], text.replace("y: conv(4, kernel=1)", "y = conv(4, kernel=1)"),
                                               None),
        "End the chain after `y`": (["NS215"], text.replace("y: conv(4, kernel=1) -> relu()",
                                                            "y: conv(4, kernel=1)\n  relu()"), None)}
    close(client, path)


async def test_flatten_and_project_auto_are_inserted_where_the_hint_says(client, folder):
    path = folder / "shapes.net"
    text = "network S {\n  input x: [3, 8, 8]\n  conv(4, kernel=3)\n  fc: linear(10)\n}\n"
    assert [d.code for d in await publish(client, path, text)] == ["NS305"]
    assert await actions(client, path, text, 3) == {
        "Insert flatten() before it": (["NS305"], text.replace("  fc:", "  flatten()\n  fc:"), True)}
    text = "network S {\n  input x: [3, 8, 8]\n  conv(4, kernel=3) -> linear(10)\n}\n"
    assert [d.code for d in await publish(client, path, text)] == ["NS305"]
    assert (await actions(client, path, text, 2))["Insert flatten() before it"][1] == text.replace(
        "-> linear", "-> flatten() -> linear")

    text = ("network S {\n  input x: [3, 8, 8]\n  y = conv(4, kernel=3, padding=1)\n  y -> conv(8, kernel=1)\n"
            "  add(y)\n}\n")
    assert [d.code for d in await publish(client, path, text)] == ["NS301"]
    assert await actions(client, path, text, 4) == {
        'Project the shortcut: project="auto"': (["NS301"], text.replace("add(y)", 'add(y, project="auto")'), True)}
    text = text.replace("add(y)", "add(y, project=false)")
    await publish(client, path, text)
    assert (await actions(client, path, text, 4))['Project the shortcut: project="auto"'][1] == text.replace(
        "project=false", 'project="auto"')
    close(client, path)


async def test_an_unknown_block_defined_in_a_file_nearby_offers_its_import(client, folder):
    (folder / "more").mkdir()
    (folder / "more" / "fancy.net").write_text("block Fancy(c) {\n  input x\n  conv(c, kernel=1)\n}\n")
    path = folder / "needs_import.net"
    text = "network N {\n  input x: [3, 8, 8]\n  Fancy(4)\n}\n"
    assert [d.code for d in await publish(client, path, text)] == ["NS201"]
    assert await actions(client, path, text, 2) == {
        "Import more/fancy.net (it defines Fancy)": (["NS201"], 'import "more/fancy.net"\n\n' + text, None)}
    text = 'import "blocks.net"\n' + text
    await publish(client, path, text)
    fixed = text.replace('"blocks.net"\n', '"blocks.net"\nimport "more/fancy.net"\n')
    assert await actions(client, path, text, 3) == {
        "Import more/fancy.net (it defines Fancy)": (["NS201"], fixed, None)}
    assert await publish(client, path, fixed) == []
    close(client, path)


# References, rename, highlight ---------------------------------------------------------------------------------------

def places(found) -> list[tuple[str, lsp.Range]]:
    key = lambda p: (p[0], p[1].start.line, p[1].start.character)  # noqa: E731
    return sorted(((Path(lsp_uri_path(loc.uri)).name, loc.range) for loc in found or []), key=key)


def lsp_uri_path(uri: str) -> str:
    from pygls.uris import to_fs_path

    return to_fs_path(uri)


async def references(client, path, line, character, declaration=True):
    return places(await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc(path), position=at(line, character), context=lsp.ReferenceContext(declaration))))


async def test_references_of_a_block_reach_across_the_import_both_ways(client, folder):
    net, blocks = folder / "net.net", folder / "blocks.net"
    await publish(client, net)
    unit = [("blocks.net", span(3, 6, 10)), ("net.net", span(7, 10, 14)), ("net.net", span(8, 10, 14))]
    assert await references(client, net, 7, 11) == unit
    assert await references(client, net, 7, 11, declaration=False) == unit[1:]
    await publish(client, blocks)
    assert await references(client, blocks, 3, 7) == unit  # from the definition, the open file importing it
    # A parameter: its uses in the body, and the keyword argument passing it at a call.
    assert await references(client, blocks, 3, 16) == [
        ("blocks.net", span(3, 14, 20)), ("blocks.net", span(5, 34, 40)), ("net.net", span(8, 26, 32))]
    assert await references(client, blocks, 10, 6) == [("blocks.net", span(4, 8, 9)), ("blocks.net", span(10, 6, 7))]
    assert await references(client, net, 6, 9) == []  # an op: nothing bound
    close(client, blocks)


async def test_document_highlight_marks_the_binding_as_written_and_its_uses_as_read(client, folder):
    net = folder / "net.net"
    await publish(client, net)
    found = await client.text_document_document_highlight_async(lsp.DocumentHighlightParams(doc(net), at(7, 16)))
    assert [(h.range, h.kind) for h in found] == [
        (span(2, 4, 10), lsp.DocumentHighlightKind.Write), (span(6, 13, 19), lsp.DocumentHighlightKind.Read),
        (span(7, 15, 21), lsp.DocumentHighlightKind.Read), (span(8, 15, 21), lsp.DocumentHighlightKind.Read)]
    found = await client.text_document_document_highlight_async(lsp.DocumentHighlightParams(doc(net), at(11, 17)))
    assert [(h.range, h.kind) for h in found] == [
        (span(4, 14, 21), lsp.DocumentHighlightKind.Write), (span(11, 13, 20), lsp.DocumentHighlightKind.Read)]


async def test_rename_edits_every_file_and_refuses_what_is_not_a_name(client, folder):
    net, blocks = folder / "net.net", folder / "blocks.net"
    await publish(client, net)
    await publish(client, blocks)
    prepared = await client.text_document_prepare_rename_async(lsp.PrepareRenameParams(doc(blocks), at(3, 17)))
    assert (prepared.range, prepared.placeholder) == (span(3, 14, 20), "stride")
    assert await client.text_document_prepare_rename_async(lsp.PrepareRenameParams(doc(blocks), at(5, 11))) is None
    edit = await client.text_document_rename_async(lsp.RenameParams(doc(blocks), at(3, 17), "step"))
    assert {Path(lsp_uri_path(u)).name: applied(Path(lsp_uri_path(u)).read_text(), e)
            for u, e in edit.changes.items()} == {
        "blocks.net": BLOCKS.replace("Unit(c, stride=1)", "Unit(c, step=1)").replace("stride=stride", "stride=step"),
        "net.net": NET.replace("stride=2", "step=2")}
    edit = await client.text_document_rename_async(lsp.RenameParams(doc(net), at(7, 11), "Residual"))
    assert {Path(lsp_uri_path(u)).name: applied(Path(lsp_uri_path(u)).read_text(), e)
            for u, e in edit.changes.items()} == {
        "blocks.net": BLOCKS.replace("block Unit", "block Residual"), "net.net": NET.replace("Unit(", "Residual(")}
    for name, why in (("for", "'for' is a keyword"), ("2x", "'2x' is not a name"),
                      ("conv", "'conv' is a layer of the registry: a call would mean the layer")):
        with pytest.raises(Exception) as failed:
            await client.text_document_rename_async(lsp.RenameParams(doc(net), at(7, 11), name))
        assert str(failed.value).endswith(f"cannot rename 'Unit': {why}")
    close(client, blocks)


async def test_rename_of_a_loop_variable_a_body_let_a_label_and_an_exported_value(client, folder):
    path = folder / "locals.net"
    text = ("block B(n=2) {\n  input x\n  let w = n * 2\n  for i in range(n) {\n    conv(w + i, kernel=1)\n  }\n"
            "  { s: relu()\n    export s }\n  t: relu()\n  add(s, t)\n}\n"
            "network M {\n  input x: [3, 8, 8]\n  B()\n}\n")
    assert await publish(client, path, text) == []

    async def renamed(line, character, name):
        edit = await client.text_document_rename_async(lsp.RenameParams(doc(path), at(line, character), name))
        return applied(text, edit.changes[path.as_uri()])

    assert await renamed(4, 13, "k") == text.replace("for i in", "for k in").replace("w + i", "w + k")
    assert await renamed(2, 6, "wide") == text.replace("let w =", "let wide =").replace("(w + i", "(wide + i")
    assert await renamed(9, 6, "skip") == text.replace("s: relu()", "skip: relu()").replace(
        "export s", "export skip").replace("add(s,", "add(skip,")
    assert await renamed(8, 2, "u") == text.replace("t: relu()", "u: relu()").replace(", t)", ", u)")
    assert await renamed(2, 10, "m") == text.replace("B(n=2)", "B(m=2)").replace("n * 2", "m * 2").replace(
        "range(n)", "range(m)")
    close(client, path)


# Signature help ------------------------------------------------------------------------------------------------------

async def test_signature_help_shows_the_op_or_block_and_the_argument_being_typed(client, folder):
    path = folder / "signing.net"
    text = 'import "blocks.net"\n\nnetwork T {\n  input x: [3, 8, 8]\n  conv(16, kernel=1)\n  Unit(8, stride=2)\n}\n'
    assert await publish(client, path, text) == []

    async def help_at(line, character):
        found = await client.text_document_signature_help_async(lsp.SignatureHelpParams(doc(path),
                                                                                        at(line, character)))
        if found is None:
            return None
        [s] = found.signatures
        return s.label, [s.label[a:b] for a, b in (p.label for p in s.parameters)], found.active_parameter

    conv = netspec.ops.base.signature(netspec.ops.OPS["conv"])
    names = ["out_channels", "kernel", "stride=[1, 1]", "padding=[0, 0]", "dilation=[1, 1]", "groups=1", "bias=true",
             "table=none", 'init="default"']
    assert await help_at(4, 7) == (conv, names, 0)  # the first positional: out_channels
    assert await help_at(4, 11) == (conv, names, 1)  # after one: kernel
    assert await help_at(4, 18) == (conv, names, 1)  # typing `kernel=`
    assert await help_at(5, 15) == ("Unit(c, stride=1)", ["c", "stride=1"], 1)
    found = await client.text_document_signature_help_async(lsp.SignatureHelpParams(doc(path), at(5, 7)))
    assert found.signatures[0].documentation.value == "A basic residual unit.\n\nDefined at blocks.net:4."
    add = await client.text_document_signature_help_async(lsp.SignatureHelpParams(doc(path), at(4, 2)))
    assert add is None  # outside any call
    close(client, path)


# Semantic tokens, folding ranges, workspace symbols ------------------------------------------------------------------

async def test_semantic_tokens_tell_ops_blocks_values_parameters_and_lets_apart(client, folder):
    net = folder / "net.net"
    client.refreshed.clear()
    await publish(client, net, NET + "\n")
    for _ in range(600):  # asked for after the check, with the diagnostics
        if client.refreshed:
            break
        await asyncio.sleep(0.05)
    assert client.refreshed
    found = await client.text_document_semantic_tokens_full_async(lsp.SemanticTokensParams(doc(net)))
    legend = ["function", "class", "variable", "parameter"]
    modifiers = ["declaration", "readonly", "defaultLibrary"]
    tokens, line, column = [], 0, 0
    for n in range(0, len(found.data), 5):
        dl, dc, length, kind, bits = found.data[n:n + 5]
        line, column = line + dl, (column + dc if dl == 0 else dc)
        tokens.append((line, NET.split("\n")[line][column:column + length], legend[kind],
                       [m for b, m in enumerate(modifiers) if bits & (1 << b)]))
    assert tokens[:12] == [
        (2, "widths", "variable", ["declaration", "readonly"]),
        (4, "Small", "class", ["declaration"]), (4, "classes", "parameter", ["declaration"]),
        (5, "x", "variable", ["declaration"]),
        (6, "stem", "variable", ["declaration"]), (6, "conv", "function", ["defaultLibrary"]),
        (6, "widths", "variable", ["readonly"]),
        (7, "stage1", "variable", ["declaration"]), (7, "Unit", "class", []), (7, "widths", "variable", ["readonly"]),
        (8, "stage2", "variable", ["declaration"]), (8, "Unit", "class", [])]
    assert (11, "classes", "parameter", []) in tokens and (14, "Small", "class", []) in tokens


async def test_folding_ranges_are_bodies_groups_loops_and_comment_runs(client, folder):
    path = folder / "folding.net"
    text = ("# one\n# two\nblock B(n=2) {\n  input x\n  for i in range(n) {\n    relu()\n  }\n  {\n    relu()\n"
            "  }\n}\nnetwork M {\n  input x: [1, 4, 4]\n  B()\n}\n")
    assert await publish(client, path, text) == []
    found = await client.text_document_folding_range_async(lsp.FoldingRangeParams(doc(path)))
    assert [(r.start_line, r.end_line, r.kind) for r in found] == [
        (0, 1, lsp.FoldingRangeKind.Comment), (2, 9, lsp.FoldingRangeKind.Region),
        (4, 5, lsp.FoldingRangeKind.Region), (7, 8, lsp.FoldingRangeKind.Region),
        (11, 13, lsp.FoldingRangeKind.Region)]
    close(client, path)


async def test_workspace_symbols_come_from_open_documents_their_imports_and_the_workspace(client, folder):
    net = folder / "net.net"
    await publish(client, net)
    (folder / "elsewhere.net").write_text("# not open, not imported\nblock UnitLike(c) {\n  input x\n  relu()\n}\n")
    found = await client.workspace_symbol_async(lsp.WorkspaceSymbolParams("unit"))
    assert sorted((s.name, s.kind, Path(lsp_uri_path(s.location.uri)).name, s.location.range) for s in found) == [
        ("Unit", lsp.SymbolKind.Function, "blocks.net", span(3, 6, 10)),
        ("UnitLike", lsp.SymbolKind.Function, "elsewhere.net", span(1, 6, 14))]
    found = await client.workspace_symbol_async(lsp.WorkspaceSymbolParams("sml"))
    assert [(s.name, s.kind, s.location.range) for s in found] == [("Small", lsp.SymbolKind.Class, span(4, 8, 13))]


# Incremental sync ----------------------------------------------------------------------------------------------------

async def test_edits_of_ranges_are_applied_to_the_open_text(client, folder):
    path = folder / "incremental.net"
    text = "# 😀\nnetwork I {\n  input x: [3, 8, 8]\n  conv(4, kernel=3)\n}\n"
    assert await publish(client, path, text) == []
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    edits = [lsp.TextDocumentContentChangePartial(span(3, 17, 18), "30"),  # kernel 3 -> 30: too large
             lsp.TextDocumentContentChangePartial(span(0, 2, 4), "x"),  # the emoji is two UTF-16 units
             lsp.TextDocumentContentChangePartial(span(4, 1, 1), "\n\n")]
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(version=50, uri=uri), edits))
    found = await diagnostics_of(client, uri)
    assert [(d.code, d.range) for d in found] == [("NS302", span(3, 2, 20))]
    formatted = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc(path), lsp.FormattingOptions(2, True)))
    assert formatted[0].range == lsp.Range(at(0, 0), at(7, 0))  # the text is now "# x\n...}\n\n\n"
    assert formatted[0].new_text == "# x\nnetwork I {\n  input x: [3, 8, 8]\n  conv(4, kernel=30)\n}\n"
    close(client, path)


# A client that watches no files --------------------------------------------------------------------------------------

async def test_an_import_changed_on_disk_is_seen_without_file_watching(tmp_path):
    from test_lsp import RawClient

    (tmp_path / "blocks.net").write_text(BLOCKS)
    (tmp_path / "net.net").write_text(NET)
    process = await asyncio.create_subprocess_exec(*SERVER, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        server = RawClient(process)
        await server.request("initialize", {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}})
        server.send({"method": "initialized", "params": {}})
        uri = (tmp_path / "net.net").as_uri()
        server.send({"method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": "netspec", "version": 1, "text": NET}}})
        assert await server.diagnostics(uri) == []
        server.notifications.clear()
        (tmp_path / "blocks.net").write_text(BLOCKS.replace("conv2: conv(c, kernel=3,", "conv2: conv(c, kernel=0,"))
        [found] = await server.diagnostics(uri)  # no notice from the client: the server looked
        assert (found["code"], found["range"]["start"]) == ("NS303", {"line": 7, "character": 10})
        server.notifications.clear()
        (tmp_path / "blocks.net").write_text(BLOCKS)
        assert await server.diagnostics(uri) == []
        await server.request("shutdown", ...)
        server.send({"method": "exit"})
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_references_and_rename_reach_workspace_files_that_import_the_block_unopened(client, folder):
    blocks = folder / "blocks.net"
    (folder / "user.net").write_text('import "blocks.net"\n\nnetwork User {\n  input x: [8, 4, 4]\n'
                                     '  Unit(8, stride=1)\n}\n')
    (folder / "other.net").write_text("block Unit(c) {\n  input x\n  relu()\n}\n")  # another Unit: not this one
    close(client, folder / "net.net")  # every file importing blocks.net is closed: found on disk
    await publish(client, blocks)
    found = await references(client, blocks, 3, 7)
    assert [(name, r) for name, r in found if name in ("user.net", "other.net")] == [("user.net", span(4, 2, 6))]
    edit = await client.text_document_rename_async(lsp.RenameParams(doc(blocks), at(3, 16), "step"))
    changed = {Path(lsp_uri_path(u)).name: e for u, e in edit.changes.items()}
    assert applied((folder / "user.net").read_text(), changed["user.net"]).endswith("Unit(8, step=1)\n}\n")
    assert "other.net" not in changed
    (folder / "user.net").unlink()
    (folder / "other.net").unlink()
    close(client, blocks)


MODERN = """\
block Up(c) {
  input x
  input skip: [cs, hs, ws]
  let wide = 2 * c
  conv_transpose(c, kernel=2, stride=2)
  concat(skip)
  conv(wide, kernel=3, padding=1)
}

block Branches(c) {
  input x
  high: conv(c, kernel=3, padding=1)
  low = x -> conv(2 * c, kernel=3, stride=2, padding=1)
  output high, low
}

block Tree(levels, c) {
  input x
  left: conv(c, kernel=3, padding=1) -> relu()
  sub: Tree(levels - 1, c) if levels > 1
  concat(x)
}

network Modern {
  input x: [8, 32, 32]
  enc = x -> conv(8, kernel=3, padding=1)
  maxpool(2) -> conv(8, kernel=1)
  up: Up(8, skip=enc)
  high, low = up -> split: Branches(8)
  low -> upsample(2) -> conv(8, kernel=1) -> add(high)
  stem: {
    skip: relu()
    export skip
    conv(8, kernel=1)
  }
  add(skip)
  { conv(8, kernel=1) -> relu() } * 2
  tree: Tree(2, 8)
}
"""


async def test_every_request_at_every_position_of_a_spec_with_the_new_constructs_answers(client, folder):
    """Several inputs and outputs, sizes bound by an input, lets, exports, recursion and a repeated group: each
    method answers at each position (no error response), and the spec itself checks cleanly."""
    path = folder / "modern.net"
    found = await publish(client, path, MODERN)
    assert found == []
    uri = doc(path)
    lines = MODERN.split("\n")
    for line, text in enumerate(lines):
        for character in range(0, len(text) + 1, 3):
            where = at(line, character)
            await client.text_document_hover_async(lsp.HoverParams(uri, where))
            await client.text_document_definition_async(lsp.DefinitionParams(uri, where))
            await client.text_document_references_async(lsp.ReferenceParams(
                context=lsp.ReferenceContext(include_declaration=True), text_document=uri, position=where))
            await client.text_document_signature_help_async(lsp.SignatureHelpParams(uri, where))
            await client.text_document_completion_async(lsp.CompletionParams(uri, where))
            await client.text_document_prepare_rename_async(lsp.PrepareRenameParams(uri, where))
    whole = lsp.Range(at(0, 0), at(len(lines), 0))
    assert await client.text_document_inlay_hint_async(lsp.InlayHintParams(uri, whole))
    assert (await client.text_document_semantic_tokens_full_async(lsp.SemanticTokensParams(uri))).data
    assert await client.text_document_folding_range_async(lsp.FoldingRangeParams(uri))
    broken = MODERN.replace("Up(8, skip=enc)", "Up(8, enc)")  # a tensor passed by position
    [diagnostic] = await publish(client, path, broken)
    assert diagnostic.code == "NS203"
    await client.text_document_code_action_async(lsp.CodeActionParams(
        uri, diagnostic.range, lsp.CodeActionContext(diagnostics=[diagnostic])))
    close(client, path)
