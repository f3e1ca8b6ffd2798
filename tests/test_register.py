"""`register a, b, ...`: the order in which the compiled module (to_module's and the generated Python's) registers
a body's labelled children, torch's `__init__` order where it differs from the order they run; nothing else
changes. Its errors, fmt, the language server's references and rename of the labels it lists, and instance
copies (lowering copies identical block instances, with their orders)."""

import re

import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec.backends.torch import to_module, to_python  # noqa: E402
from netspec.fmt.canonical import format_text  # noqa: E402
from netspec.ground.errors import NetspecError, Sources  # noqa: E402
from netspec.highlight import NetspecLexer  # noqa: E402
from netspec.semantics.lower import lower  # noqa: E402
from netspec.semantics.program import load_program  # noqa: E402

POST_NORM = """block Post(c) {
  input x: [n, c]
  register norm1, attn, norm2, mlp
  attn: linear(c)
  norm1: layernorm()
  attended = add(x)
  mlp: { linear(2 * c) -> gelu() -> linear(c) }
  norm2: layernorm() if c > 0
  add(attended)
}

network N(repeat=2) {
  input x: [5, 4]
  Post(4) * repeat
  head: { register fc, norm
          norm: layernorm()
          fc: linear(3) }
}
"""
# torch's order: each block's norms before what they follow, the head's fc before its norm
ORDER = ["0.norm1", "0.attn", "0.norm2", "0.mlp.0", "0.mlp.2", "1.norm1", "1.attn", "1.norm2", "1.mlp.0",
         "1.mlp.2", "head.fc", "head.norm"]


def write(tmp_path, text, name="n.net"):
    path = tmp_path / name
    path.write_text(text)
    return path


def children(state_dict) -> list[str]:
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in state_dict))


def test_the_module_registers_in_the_listed_order_and_computes_what_it_would_without(tmp_path):
    graph = netspec.load(write(tmp_path, POST_NORM))
    plain = netspec.load(write(tmp_path, POST_NORM.replace("  register norm1, attn, norm2, mlp\n", "").replace(
        "{ register fc, norm\n          ", "{ "), "plain.net"))
    assert [n.name for n in graph.nodes] == [n.name for n in plain.nodes]  # what runs: unchanged
    assert [(n.shape, n.params, n.macs) for n in graph.nodes] == [(n.shape, n.params, n.macs) for n in plain.nodes]
    assert (graph.scopes["0"].registration, graph.scopes["head"].registration) == (
        ("norm1", "attn", "norm2", "mlp"), ("fc", "norm"))
    ours, reference = to_module(graph, seed=0).eval(), to_module(plain, seed=0).eval()
    assert children(ours.state_dict()) == ORDER
    assert children(reference.state_dict())[:3] == ["0.attn", "0.norm1", "0.mlp.0"]  # the order they run
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_the_generated_python_registers_in_the_listed_order(tmp_path):
    graph = netspec.load(write(tmp_path, POST_NORM))
    source = to_python(graph)
    # __init__ in torch's order; forward as the layers run; parameters named as without `register`
    assert re.search(r"self\.norm1 = .*\n\s+self\.attn = .*\n\s+self\.norm2 = .*\n\s+self\.mlp = ", source)
    assert re.search(r"out = self\.attn\(x\)\n\s+out = self\.norm1\(out\)", source)
    # an nn.Sequential registers its children in the order they run: the head is a class of its own
    assert "class Head(nn.Module):" in source and "self.fc = nn.Linear(4, 3)\n        self.norm = " in source
    namespace = {}
    exec(source, namespace)
    standalone = namespace["N"]().eval()
    module = to_module(graph, seed=0).eval()
    assert children(standalone.state_dict()) == ORDER
    standalone.load_state_dict(module.state_dict())
    x = torch.randn(3, 5, 4)
    with torch.no_grad():
        assert torch.equal(standalone(x), module(x))


def test_the_network_body_registers_its_children_in_the_listed_order(tmp_path):
    text = ("network R {\n  input x: [3, 8, 8]\n  register bn, conv\n  conv: conv(4, kernel=3)\n"
            "  bn: batchnorm()\n  relu()\n  fc: { flatten() -> linear(2) }\n}\n")
    graph = netspec.load(write(tmp_path, text))
    assert graph.registration == ("bn", "conv")
    assert children(to_module(graph).state_dict()) == ["bn", "conv", "fc.1"]
    namespace = {}
    exec(to_python(graph), namespace)
    assert children(namespace["R"]().state_dict()) == ["bn", "conv", "fc.1"]


def errors_of(tmp_path, body: str) -> list[tuple[str, str, int, int, str | None]]:
    text = f"block B(c) {{\n  input x\n{body}}}\nnetwork N {{\n  input x: [4, 5]\n  B(4)\n}}\n"
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    return [(d.code, d.message, d.span.line, d.span.col, d.hint) for d in caught.value.diagnostics]


def test_a_label_the_body_does_not_make_is_a_located_error_with_a_hint(tmp_path):
    assert errors_of(tmp_path, "  register norm1, atn\n  attn: layernorm()\n  norm1: layernorm()\n") == [
        ("NS205", "'atn' is not a label of this body", 3, 19, "did you mean 'attn'?")]
    assert errors_of(tmp_path, "  register other\n  attn: layernorm()\n") == [
        ("NS205", "'other' is not a label of this body", 3, 12, "its labels are attn")]
    assert errors_of(tmp_path, "  register fc\n  linear(3)\n") == [
        ("NS205", "'fc' is not a label of this body", 3, 12, "label a layer of this body (`fc: ...`) to register it")]


def test_a_value_a_label_listed_twice_a_second_register_and_one_in_a_loop_are_errors(tmp_path):
    body = ("  register norm1, y, norm1\n  y = linear(c)\n  norm1: layernorm()\n"
            "  for i in range(1) {\n    register norm1\n  }\n  register norm1\n")
    assert errors_of(tmp_path, body) == [
        ("NS203", "'y' names a value, not a labelled layer: `register` orders the layers, groups and block "
                  "instances this body makes by their labels", 3, 19, "label the layer that makes it: `y: ...`"),
        ("NS203", "'norm1' is listed twice in `register`", 3, 22, "list each label once"),
        ("NS203", "`register` belongs in a block's, network's or group's body, not in a for loop", 7, 5,
         "write it once, after the loop, in the body around it"),
        ("NS203", "a body has one `register` statement", 9, 3, "list every label in the first one (line 3)")]


def test_a_spread_block_whose_register_orders_its_callers_body_cannot_meet_a_second_one(tmp_path):
    text = ("block Pair {\n  input x\n  b: relu()\n  a: relu()\n  register a, b\n}\n"
            "network N {\n  input x: [3, 4, 4]\n  c: relu()\n  ...Pair()\n  register c, a\n}\n")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    assert [(d.code, d.message, d.span.line, d.span.col, d.notes) for d in caught.value.diagnostics] == [
        ("NS203", "a body has one `register` statement, and this one orders a body ordered already", 11, 3,
         (f"the other is at {tmp_path / 'n.net'}:5:3",))]


def test_labels_made_in_a_loop_or_after_the_statement_count_and_a_label_not_made_is_left_out(tmp_path):
    text = ("block B(c) {\n  input x\n  register b1, a, skipped\n  a: linear(c)\n"
            "  for i in [1] {\n    \"b{i}\": layernorm()\n  }\n  skipped: layernorm() if c > 100\n}\n"
            "network N {\n  input x: [4, 5]\n  B(4)\n}\n")
    graph = netspec.load(write(tmp_path, text))
    assert graph.scopes["0"].registration == ("b1", "a")  # a label filled in ("b{i}") counts as made
    assert children(to_module(graph).state_dict()) == ["0.b1", "0.a"]


def test_fmt_lays_it_out_and_keeps_its_meaning_and_the_lexer_knows_the_keyword():
    text = "block B { input x\n register   norm ,attn\n attn: relu() norm: relu() }\n"
    formatted = format_text(text)
    assert formatted == "block B {\n  input x\n  register norm, attn\n  attn: relu()\n  norm: relu()\n}\n"
    assert format_text(formatted) == formatted
    tokens = [(str(kind), value) for kind, value in NetspecLexer().get_tokens(formatted) if value == "register"]
    assert tokens == [("Token.Keyword", "register")]


def test_copied_block_instances_keep_their_order_as_lowered_afresh(tmp_path):
    path = write(tmp_path, POST_NORM)
    graphs = [lower(load_program(path, Sources()), "N", {"repeat": 5}, reuse_instances=reuse) for reuse in (1, 0)]
    assert graphs[0].model_dump() == graphs[1].model_dump()
    assert [graphs[0].scopes[str(k)].registration for k in range(5)] == [("norm1", "attn", "norm2", "mlp")] * 5
    assert "registration" in graphs[0].model_dump()["scopes"]["4"]


def test_the_example_of_language_md_checks_and_registers_as_it_says(tmp_path):
    section = (ROOT / "docs" / "language.md").read_text().split("## Registration order: `register`", 1)[1]
    example = re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)
    graph = netspec.load(write(tmp_path, example))
    assert graph.warnings == []
    assert children(to_module(graph).state_dict()) == [
        "0.norm1", "0.attn", "0.norm2", "0.mlp.0", "0.mlp.2", "1.norm1", "1.attn", "1.norm2", "1.mlp.0", "1.mlp.2"]


# The language server: the names in `register` are references to the labels ---------------------------------------

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from lsprotocol import types as lsp  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402
from test_lsp import SERVER, at, close, doc, publish, span  # noqa: E402
from test_lsp_features import applied, places  # noqa: E402


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, tmp_path):
    lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)(lambda ls, params: None)
    lsp_client.feature(lsp.WORKSPACE_SEMANTIC_TOKENS_REFRESH)(lambda ls, params: None)
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=tmp_path.as_uri()))
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio
async def test_references_definition_hover_and_rename_of_a_label_reach_the_register_statement(client, tmp_path):
    path = tmp_path / "post.net"
    assert await publish(client, path, POST_NORM) == []
    found = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=doc(path), position=at(4, 3), context=lsp.ReferenceContext(True)))  # on `norm1:`
    assert places(found) == [("post.net", span(2, 11, 16)), ("post.net", span(4, 2, 7))]
    found = await client.text_document_definition_async(lsp.DefinitionParams(doc(path), at(2, 20)))  # on `attn`
    assert [(d.range if hasattr(d, "range") else d.target_range) for d in found] == [span(3, 2, 6)]
    hover = await client.text_document_hover_async(lsp.HoverParams(doc(path), at(2, 20)))
    assert hover.contents.value.startswith("`attn`: the layer labelled at post.net:4\n\nN(repeat=2):\n"
                                           "- `0.attn` → `[5, 4]`, 20 params, 80 MACs\n")
    edit = await client.text_document_rename_async(lsp.RenameParams(doc(path), at(2, 13), "post_norm"))
    assert applied(POST_NORM, edit.changes[path.as_uri()]) == POST_NORM.replace(
        "register norm1,", "register post_norm,").replace("norm1: layernorm()", "post_norm: layernorm()")
    close(client, path)
