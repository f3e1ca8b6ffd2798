"""`netspec lsp` end to end: a real LSP client (pytest-lsp) drives the server over stdin and stdout.

One server serves the module; each test opens its own files in a temporary folder. Diagnostics are awaited as
notifications, with generous timeouts and no timing asserts.
"""

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from fuzz_inputs import mutated_spec, syntax_valid
from hypothesis import HealthCheck, Phase, given, settings
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

import netspec
from netspec.fmt import format_text

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60  # seconds a diagnostics notification may take on a loaded machine before the test fails
pytestmark = pytest.mark.asyncio(loop_scope="module")

BLOCKS = """\
# Residual units.

# A basic residual unit. Two 3x3 convolutions and the shortcut.
block Unit(c, stride=1) {
  input x
  conv1: conv(c, kernel=3, stride=stride, padding=1, bias=false)
  bn1: batchnorm()
  relu()
  conv2: conv(c, kernel=3, padding=1, bias=false)
  bn2: batchnorm()
  add(x, project="auto")
  relu()
}
"""

NET = """\
import "blocks.net"

let widths = [16, 32]

network Small(classes=10) {
  input x: [3, 32, 32]
  stem: conv(widths[0], kernel=3, padding=1)
  stage1: Unit(widths[0]) * 2
  stage2: Unit(widths[1], stride=2)
  pool: global_avgpool()
  flatten()
  fc: linear(classes)
}

train Small { epochs = 2 }
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lsp")
    (root / "blocks.net").write_text(BLOCKS)
    (root / "net.net").write_text(NET)
    shutil.copytree(ROOT / "specs", root / "specs")
    return root


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-c", "import sys; from netspec.cli import main; sys.exit(main(['lsp']))"]))
async def client(lsp_client: LanguageClient, folder):
    registrations = []
    lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)(lambda ls, params: registrations.append(params))
    lsp_client.feature(lsp.WORKSPACE_SEMANTIC_TOKENS_REFRESH)(lambda ls, params: None)  # asked after each check
    await lsp_client.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                                             root_uri=folder.as_uri()))
    lsp_client.registrations = registrations
    yield
    await lsp_client.shutdown_session()


def doc(path: Path) -> lsp.TextDocumentIdentifier:
    return lsp.TextDocumentIdentifier(path.as_uri())


VERSIONS: dict[str, int] = {}


async def publish(client: LanguageClient, path: Path, text: str | None = None, *, close_first=False) -> list:
    """Open `path` (or send its new text) and return the diagnostics published for that text."""
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    if uri not in VERSIONS:
        VERSIONS[uri] = 1
        text = path.read_text() if text is None else text
        client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri, "netspec", 1, text)))
    else:
        VERSIONS[uri] += 1
        text = path.read_text() if text is None else text
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(version=VERSIONS[uri], uri=uri),
            [lsp.TextDocumentContentChangeWholeDocument(text)]))
    return await diagnostics_of(client, uri)


async def diagnostics_of(client: LanguageClient, uri: str) -> list:
    async def arrived():
        while uri not in client.diagnostics:
            await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        return list(client.diagnostics[uri])

    return await asyncio.wait_for(arrived(), WAIT)


def close(client: LanguageClient, path: Path) -> None:
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(doc(path)))
    VERSIONS.pop(path.as_uri(), None)


def at(line: int, character: int) -> lsp.Position:
    return lsp.Position(line, character)


def span(line: int, start: int, end: int) -> lsp.Range:
    return lsp.Range(at(line, start), at(line, end))


async def hover(client, path, line, character) -> str | None:
    found = await client.text_document_hover_async(lsp.HoverParams(doc(path), at(line, character)))
    return None if found is None else found.contents.value


async def test_the_server_asks_to_watch_net_files(client):
    for _ in range(WAIT * 20):
        if client.registrations:
            break
        await asyncio.sleep(0.05)
    assert [[(r.method, [w["globPattern"] for w in r.register_options["watchers"]]) for r in p.registrations]
            for p in client.registrations] == [[(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES, ["**/*.net"])]]


async def test_diagnostics_of_a_broken_spec_have_exact_ranges_codes_and_hints(client, folder):
    path = folder / "broken.net"
    text = ('network Broken {\n  input x: [3, 32, 32]\n  conv(16, kernel=3, init="😀")\n  linar(10)\n'
            '  conv(8, kernel=64)\n}\n')
    found = await publish(client, path, text)
    by_code = {d.code: d for d in found}
    assert sorted(by_code) == ["NS201", "NS203"] and len(found) == 2
    # The string "😀" is 3 characters but 4 UTF-16 units: the range ends at 30, not 29.
    assert by_code["NS203"].range == span(2, 26, 30)
    assert by_code["NS203"].message.startswith("invalid 'init' of conv: ")
    assert by_code["NS201"].range == span(3, 2, 7)
    assert by_code["NS201"].message == "unknown layer or block 'linar'\nhint: did you mean 'linear'?"
    assert {d.source for d in found} == {"netspec"}
    assert {d.severity for d in found} == {lsp.DiagnosticSeverity.Error}

    found = await publish(client, path, "network Broken {\n  input x: [3, 8, 8]\n  conv(16, kernel=3\n}\n")
    assert [(d.code, d.range, d.message) for d in found] == [
        ("NS100", span(3, 0, 1), "unexpected token '}'; expected ')' or ','\nhint: the '(' at 3:7 is not closed")]

    found = await publish(client, path, "network Fixed {\n  input x: [3, 8, 8]\n  conv(4, kernel=9)\n}\n")
    assert [(d.code, d.range) for d in found] == [("NS302", span(2, 2, 19))]
    assert found[0].message.startswith("conv kernel 9 is larger than its input height 8")
    close(client, path)


async def test_hover_on_a_layer_gives_its_scoped_name_shape_parameters_and_macs(client, folder):
    net = folder / "net.net"
    assert await publish(client, net) == []
    # stem: 3 -> 16 channels, 3x3, with bias: 16 * 3 * 9 + 16 = 448 parameters; 16 * 3 * 9 * 32 * 32 MACs.
    expected = ("Small(classes=10):\n- `stem` → `[16, 32, 32]`, 448 params, 442,368 MACs\n\n```netspec\n"
                + netspec.ops.base.signature(netspec.ops.OPS["conv"]) + "\n```\n" + netspec.ops.OPS["conv"].summary)
    assert await hover(client, net, 6, 3) == expected  # on the label
    assert await hover(client, net, 6, 9) == expected  # on the op's name
    assert await hover(client, net, 6, 33) == expected  # among its arguments


async def test_hover_on_a_block_instance_matches_the_checkers_collapsed_row(client, folder):
    net = folder / "net.net"
    await publish(client, net)
    graph = netspec.load(net)
    rows = {row.name: row for row in netspec.summarize(graph, depth=1).rows}
    stage2 = rows["stage2"]
    assert (stage2.shape, stage2.params) == ([32, 16, 16], 14_528)  # 4,608 + 64 + 9,216 + 64 + 512 + 64
    text = await hover(client, net, 8, 12)
    assert text == (f"Small(classes=10):\n- `stage2` (Unit) → `[32, 16, 16]`, {stage2.params:,} params, "
                    f"{stage2.macs:,} MACs\n\n```netspec\nblock Unit(c, stride=1)\n```\n"
                    "A basic residual unit.\n\nDefined at blocks.net:4.")
    # A labelled repeat is a group of its instances.
    assert (await hover(client, net, 7, 3)).startswith(
        f"Small(classes=10):\n- `stage1` (group) → `[16, 32, 32]`, {rows['stage1'].params:,} params")


async def test_hover_in_an_imported_file_lists_every_instance_from_the_file_that_imports_it(client, folder):
    net, blocks = folder / "net.net", folder / "blocks.net"
    await publish(client, net)
    assert await publish(client, blocks) == []
    graph = netspec.load(net)
    rows = [n for n in graph.nodes if n.name.endswith(".conv1")]
    assert [n.name for n in rows] == ["stage1.0.conv1", "stage1.1.conv1", "stage2.conv1"]
    text = await hover(client, blocks, 5, 4)
    assert text.split("\n\n")[0] == "Small(classes=10):\n" + "\n".join(
        f"- `{n.name}` → `[{', '.join(map(str, n.shape))}]`, {n.params:,} params, {n.macs:,} MACs" for n in rows)
    assert rows[2].shape == (32, 16, 16) and rows[2].params == 32 * 16 * 9  # stride 2, no bias
    close(client, blocks)


async def test_hover_on_a_name_says_where_it_is_bound(client, folder):
    net = folder / "net.net"
    await publish(client, net)
    assert await hover(client, net, 6, 14) == "`widths`: let = `[16, 32]` (net.net:3)"
    assert await hover(client, net, 11, 15) == "`classes`: parameter of network Small, default `10` (net.net:5)"
    assert "\n\n```netspec\nblock Unit(c, stride=1)\n```\nA basic residual unit." in await hover(client, net, 7, 11)
    assert await hover(client, net, 1, 0) is None  # a blank line
    assert await hover(client, net, 9, 0) is None  # the indent of a line in the network's body
    totals = netspec.summarize(netspec.load(net)).totals
    assert await hover(client, net, 4, 10) == (
        "```netspec\nnetwork Small(classes=10)\n```\nDefined at net.net:5.\n\nSmall(classes=10): input `[3, 32, 32]`, "
        f"output `[10]`, {totals.params:,} params, {totals.macs:,} MACs")


async def test_definition_of_an_imported_block_a_value_and_an_import(client, folder):
    net, blocks = folder / "net.net", folder / "blocks.net"
    await publish(client, net)

    async def definition(path, line, character):
        found = await client.text_document_definition_async(lsp.DefinitionParams(doc(path), at(line, character)))
        return [(Path(lsp_uri_path(loc.uri)).name, loc.range) for loc in found] if found else found

    assert await definition(net, 7, 11) == [("blocks.net", span(3, 6, 10))]  # Unit, in the file it imports
    assert await definition(net, 0, 10) == [("blocks.net", span(0, 0, 0))]  # the import itself
    assert await definition(net, 6, 14) == [("net.net", span(2, 4, 10))]  # let widths
    assert await definition(net, 11, 15) == [("net.net", span(4, 14, 21))]  # the parameter classes
    await publish(client, blocks)
    assert await definition(blocks, 10, 6) == [("blocks.net", span(4, 8, 9))]  # add(x): `input x`
    assert await definition(blocks, 5, 34) == [("blocks.net", span(3, 14, 20))]  # stride=stride
    close(client, blocks)


def lsp_uri_path(uri: str) -> str:
    from pygls.uris import to_fs_path

    return to_fs_path(uri)


async def test_completion_offers_arguments_with_defaults_then_ops_and_blocks(client, folder):
    path = folder / "typing.net"
    text = 'import "blocks.net"\n\nnetwork T {\n  input x: [3, 8, 8]\n  conv(16, \n}\n'
    assert await publish(client, path, text.replace("conv(16, ", "conv(16, kernel=1)")) == []
    assert [d.code for d in await publish(client, path, text)] == ["NS100"]  # being typed: the last parse serves
    found = await client.text_document_completion_async(lsp.CompletionParams(doc(path), at(4, 11)))
    items = {i.label: i for i in found.items}
    arguments = [i.label for i in found.items if i.kind == lsp.CompletionItemKind.Field]
    assert arguments == ["kernel", "stride", "padding", "dilation", "groups", "bias", "table", "init", "frozen"]
    assert (items["kernel"].detail, items["kernel"].insert_text) == ("kernel (required)", "kernel=")
    assert items["stride"].detail == "stride=[1, 1]" and items["init"].detail == 'init="default"'
    conv = netspec.ops.OPS["conv"]
    assert (items["conv"].detail, items["conv"].documentation) == (netspec.ops.base.signature(conv), conv.summary)
    assert items["Unit"].detail == "block Unit(c, stride=1)" and items["Unit"].documentation == "A basic residual unit."

    found = await client.text_document_completion_async(lsp.CompletionParams(doc(path), at(4, 2)))
    labels = {i.label for i in found.items}
    assert {"conv", "relu", "add", "Unit"} <= labels and "kernel" not in labels

    await publish(client, path, text.replace("conv(16, ", "Unit(8, "))
    found = await client.text_document_completion_async(lsp.CompletionParams(doc(path), at(4, 10)))
    assert [(i.label, i.detail) for i in found.items if i.kind == lsp.CompletionItemKind.Field] == [
        ("stride", "stride=1")]
    close(client, path)


async def test_document_symbols_are_networks_blocks_and_train_recipes(client, folder):
    net = folder / "net.net"
    await publish(client, net)
    found = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc(net)))
    assert [(s.name, s.kind, s.range, s.selection_range) for s in found] == [
        ("widths", lsp.SymbolKind.Constant, span(2, 0, 21), span(2, 4, 10)),
        ("Small", lsp.SymbolKind.Class, lsp.Range(at(4, 0), at(12, 1)), span(4, 8, 13)),
        ("train Small", lsp.SymbolKind.Event, span(14, 0, 26), span(14, 6, 11))]
    assert [(c.name, c.detail) for c in found[1].children] == [
        ("stem", "conv"), ("stage1", "Unit"), ("stage2", "Unit"), ("pool", "global_avgpool"), ("fc", "linear")]


async def test_formatting_returns_the_formatters_layout_as_one_edit(client, folder):
    path = folder / "messy.net"
    text = "network M{input x:[1,4,4]\nrelu() # a comment\n}"
    await publish(client, path, text)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc(path), lsp.FormattingOptions(2, True)))
    assert [(e.range, e.new_text) for e in edits] == [(lsp.Range(at(0, 0), at(2, 1)), format_text(text))]
    assert format_text(text) == "network M {\n  input x: [1, 4, 4]\n  relu()  # a comment\n}\n"
    await publish(client, path, "network M {\n  relu(\n}\n")  # does not parse: nothing to do
    assert await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc(path), lsp.FormattingOptions(2, True))) is None
    close(client, path)


async def test_a_spec_is_rechecked_when_a_file_it_imports_changes(client, folder):
    net, blocks = folder / "net.net", folder / "blocks.net"
    assert await publish(client, net) == []
    assert await publish(client, blocks) == []
    broken = BLOCKS.replace("conv2: conv(c, kernel=3,", "conv2: conv(c, kernel=0,")
    client.diagnostics.pop(net.as_uri(), None)
    mine = await publish(client, blocks, broken)  # edited, not saved: the importing spec reads the buffer
    assert [(d.code, d.range) for d in mine] == [("NS303", span(8, 24, 25))]
    theirs = await diagnostics_of(client, net.as_uri())
    assert [(d.code, d.range) for d in theirs] == [("NS303", span(7, 10, 14))]  # at the call of Unit
    assert theirs[0].message.startswith("'kernel' of conv must be positive, got 0 (in blocks.net:9)")
    assert theirs[0].related_information[0].location.uri == blocks.as_uri()
    client.diagnostics.pop(net.as_uri(), None)
    assert await publish(client, blocks, BLOCKS) == []
    assert await diagnostics_of(client, net.as_uri()) == []

    # Closed in the editor and changed on disk: the file watcher's notice re-checks the spec importing it.
    client.diagnostics.pop(net.as_uri(), None)
    close(client, blocks)
    assert await diagnostics_of(client, net.as_uri()) == []  # re-checked with the file on disk
    blocks.write_text(broken)
    client.diagnostics.pop(net.as_uri(), None)
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(
        [lsp.FileEvent(blocks.as_uri(), lsp.FileChangeType.Changed)]))
    assert [d.code for d in await diagnostics_of(client, net.as_uri())] == ["NS303"]
    blocks.write_text(BLOCKS)
    client.diagnostics.pop(net.as_uri(), None)
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(
        [lsp.FileEvent(blocks.as_uri(), lsp.FileChangeType.Changed)]))
    assert await diagnostics_of(client, net.as_uri()) == []


async def test_requests_read_the_last_parse_while_the_text_does_not_parse(client, folder):
    path = folder / "editing.net"
    assert await publish(client, path, NET) == []
    before = await hover(client, path, 6, 3)
    assert before.startswith("Small(classes=10):\n- `stem` → `[16, 32, 32]`, 448 params")
    typing = NET.replace("  fc: linear(classes)\n", "  fc: linear(classes\n  extra line\n")
    assert [d.code for d in await publish(client, path, typing)] == ["NS100"]
    assert await hover(client, path, 6, 3) == before  # above the edit: the same
    assert (await hover(client, path, 7, 12)).startswith("Small(classes=10):\n- `stage1` (group)")
    assert await hover(client, path, 12, 3) is None  # inside the edited lines: nothing claimed
    close(client, path)


def corpus() -> list[tuple[str, str]]:
    """A fixed sample of the fuzz suite's inputs: mutated specs and grammar sentences (tests/fuzz_inputs.py)."""
    found: list[tuple[str, str]] = []
    sample = settings(max_examples=24, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))

    @sample
    @given(mutated_spec())
    def mutated(case):
        name, data = case
        found.append((name, data.decode("utf-8", "replace")))

    @sample
    @given(syntax_valid())
    def sentences(text):
        found.append(("_sentence.net", text))

    mutated()
    sentences()
    return found + [("_nested.net", "let x = " + "(" * 120 + "1" + ")" * 120), ("_nul.net", "network \x00 {"),
                    ("_big.net", "network N { input x: [3, 2**62, 2**62] conv(8, 3) }")]


async def test_no_input_of_the_fuzz_suite_hangs_or_crashes_the_server(client, folder):
    cases = corpus()
    assert len(cases) >= 40
    answered = 0
    for name, text in cases:
        path = (folder / "specs" / name).with_name("_fuzz.net")
        await publish(client, path, text)
        lines = text.split("\n")
        for line in {0, len(lines) // 2, len(lines) - 1}:
            column = len(lines[line]) // 2
            answered += await hover(client, path, line, column) is not None
            await client.text_document_definition_async(lsp.DefinitionParams(doc(path), at(line, column)))
            await client.text_document_completion_async(lsp.CompletionParams(doc(path), at(line, column)))
        await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc(path)))
        await client.text_document_formatting_async(lsp.DocumentFormattingParams(
            doc(path), lsp.FormattingOptions(2, True)))
    for path in {(folder / "specs" / name).with_name("_fuzz.net") for name, _ in cases}:
        close(client, path)
    assert answered > 0
    assert [m.message for m in client.log_messages if m.type == lsp.MessageType.Error] == []
    # Still serving: the spec from the start answers as it did.
    assert (await hover(client, folder / "net.net", 6, 3)).startswith("Small(classes=10):\n- `stem` → `[16, 32, 32]`")


# Hostile files and requests ----------------------------------------------------------------------------------------

async def test_an_import_of_a_fifo_or_a_device_is_a_diagnostic_at_the_import(client, folder, tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    (tmp_path / "zero.net").symlink_to("/dev/zero")
    spec = tmp_path / "imports.net"
    text = 'import "pipe.net"\nimport "zero.net"\n\nnetwork N {\n  input x: [1, 8, 8]\n  stem: conv(2, kernel=1)\n}\n'
    found = await publish(client, spec, text)
    assert [(d.code, d.range) for d in found] == [("NS209", span(0, 0, 17)), ("NS214", span(1, 0, 17))]
    assert found[0].message == (f"{tmp_path / 'pipe.net'} is a FIFO (named pipe), not a regular file\n"
                                "hint: a spec is a file on disk; pipes and devices are not read")
    # Shown relative to the server's working folder.
    assert re.fullmatch(r"this import reads (\.\./)*dev/zero, outside the folders imports may read",
                        found[1].message.split("\n")[0])
    # Still answering: the server did not block on the pipe, nor read the device.
    assert (await hover(client, spec, 5, 9)).startswith("```netspec\nconv(")  # no graph: the op's signature
    close(client, spec)
    assert await publish(client, folder / "net.net") == []
    assert (await hover(client, folder / "net.net", 6, 3)).startswith("Small(classes=10):\n- `stem`")


async def test_a_document_larger_than_a_spec_may_be_is_one_error_and_not_checked(client, folder):
    path = folder / "huge.net"
    text = "network N {\n  input x: [1, 8, 8]\n  relu()\n}\n" + "#" * 10_000_000
    found = await publish(client, path, text)
    assert [(d.code, d.range, d.message) for d in found] == [
        ("NS213", span(0, 0, 0), f"{path.name} is {len(text):,} bytes; specs are limited to 4,194,304")]
    assert await hover(client, path, 2, 3) is None
    assert await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc(path))) is None
    assert await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        doc(path), lsp.FormattingOptions(2, True))) is None
    close(client, path)


async def test_a_hover_at_the_end_of_a_line_of_a_million_characters(client, folder):
    """Position conversion bisects over the line (bench/lsp_positions.py has its time); here, only that it
    answers, and right (tests/test_hostile_files.py checks the conversion against a walk along the line)."""
    path = folder / "long_line.net"
    padding = " " * 999_980
    text = f"# 😀😀\nnetwork N {{\n  input x: [1, 8, 8]\n{padding}stem: conv(8, kernel=1)\n}}\n"
    assert await publish(client, path, text) == []
    assert (await hover(client, path, 3, 999_990)).startswith("N:\n- `stem` → `[8, 8, 8]`, 16 params")
    found = await client.text_document_hover_async(lsp.HoverParams(doc(path), at(3, 999_987)))
    assert found.range == span(3, 999_986, 999_990)  # `conv`
    assert await hover(client, path, 0, 3) is None  # inside the first emoji: the comment
    close(client, path)


SERVER = [sys.executable, "-c", "import sys; from netspec.cli import main; sys.exit(main(['lsp']))"]


class RawClient:
    """A server of its own, spoken to in plain JSON-RPC: requests the typed client would refuse to send."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.next_id = 0
        self.notifications: list[dict] = []

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def receive(self) -> dict:
        length = None
        while (header := await self.process.stdout.readline()) not in (b"\r\n", b""):
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
        assert length is not None, "the server closed its output"
        return json.loads(await self.process.stdout.readexactly(length))

    async def request(self, method: str, params) -> dict:
        """The response to one request (an error or a result), the notifications meanwhile kept."""
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, **({} if params is ... else {"params": params})})

        async def answered():
            while True:
                message = await self.receive()
                if message.get("id") == self.next_id and "method" not in message:
                    return message
                self.notifications.append(message)

        return await asyncio.wait_for(answered(), WAIT)

    async def diagnostics(self, uri: str) -> list[dict]:
        async def published():
            while True:
                for message in self.notifications:
                    if message.get("method") == lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS and message["params"]["uri"] == uri:
                        return message["params"]["diagnostics"]
                self.notifications.append(await self.receive())

        return await asyncio.wait_for(published(), WAIT)


async def test_every_request_is_answered_even_malformed_and_exit_ends_the_server(tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    spec = tmp_path / "spec.net"
    spec.write_text('import "pipe.net"\nnetwork N {\n  input x: [1, 8, 8]\n  relu()\n}\n')
    process = await asyncio.create_subprocess_exec(*SERVER, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        server = RawClient(process)
        assert "result" in await server.request("initialize", {"processId": None, "rootUri": tmp_path.as_uri(),
                                                               "capabilities": {}})
        server.send({"method": "initialized", "params": {}})
        uri = spec.as_uri()
        server.send({"method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": "netspec", "version": 1, "text": spec.read_text()}}})
        [diagnostic] = await server.diagnostics(uri)
        assert (diagnostic["code"], diagnostic["range"]["start"]) == ("NS209", {"line": 0, "character": 0})

        document = {"uri": uri}
        malformed = [{"textDocument": document, "position": {"line": -1, "character": 2**31}},
                     {"position": {"line": 0, "character": 0}},  # no document
                     {"textDocument": document, "position": {"line": "one", "character": 0}},
                     {"textDocument": 5, "position": None}]
        for params in malformed:
            answer = await server.request("textDocument/hover", params)
            assert answer["error"]["code"] == -32602, (params, answer)
            assert answer["error"]["message"].startswith("invalid params: ")
        answer = await server.request("textDocument/definition", ...)  # no params at all
        assert answer["error"]["code"] in (-32602, -32603)
        answer = await server.request("textDocument/completion", [1, 2])
        assert answer["error"]["code"] in (-32602, -32603)
        assert (await server.request("netspec/nothing", {}))["error"]["code"] == -32601
        # Within the protocol's range, however far past the text: an answer, null.
        answer = await server.request("textDocument/hover", {"textDocument": document,
                                                             "position": {"line": 2**31 - 1, "character": 2**31 - 1}})
        assert answer == {"jsonrpc": "2.0", "id": server.next_id, "result": None}

        assert (await server.request("shutdown", ...))["result"] is None
        late = await server.request("textDocument/hover", {"textDocument": document,
                                                           "position": {"line": 0, "character": 0}})
        assert late["error"]["code"] == -32600
        server.send({"method": "exit"})
        assert await asyncio.wait_for(process.wait(), WAIT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_value_never_used_is_published_as_a_warning_and_a_size_from_the_input_is_defined(client, folder):
    path = folder / "warned.net"
    text = ("block Expand(t=4) {\n  input x: [cin, h, w]\n  let wide = cin * t\n  conv(wide, kernel=1)\n}\n"
            "network Warned {\n  input x: [3, 8, 8]\n  x -> conv(4, kernel=1)\n  x -> Expand()\n}\n")
    found = await publish(client, path, text)
    assert [(d.code, d.severity, d.range) for d in found] == [
        ("NS401", lsp.DiagnosticSeverity.Warning, span(7, 7, 24))]
    assert found[0].message.startswith("the result of '0' (conv) is never used")
    places = await client.text_document_definition_async(lsp.DefinitionParams(doc(path), at(2, 14)))
    assert [(p.uri, p.range) for p in places] == [(path.as_uri(), span(1, 12, 15))]
    assert await hover(client, path, 2, 14) == ("`cin`: a size of the input of block Expand, read from what reaches it "
                                               "(warned.net:2)")
    assert await hover(client, path, 3, 8) == "`wide`: let = `cin * t` in block Expand (warned.net:3)"
    close(client, path)
