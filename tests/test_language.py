"""Each language feature, on small specs written by the test."""

import pytest

import netspec
from netspec import NetspecError


def layers(graph):
    return [(n.name, n.op, list(n.shape)) for n in graph.nodes]


def codes(excinfo):
    return [d.code for d in excinfo.value.diagnostics]


def test_arrows_and_newlines_are_the_same_chain(spec):
    a = netspec.load(spec("network A { input x: [1, 8, 8]  conv(2, kernel=3) -> relu() -> flatten() }", "a.net"))
    b = netspec.load(spec("network A {\n input x: [1, 8, 8]\n conv(2, kernel=3)\n relu()\n flatten()\n}", "b.net"))
    assert layers(a) == layers(b) == [("x", "input", [1, 8, 8]), ("0", "conv", [2, 6, 6]), ("1", "relu", [2, 6, 6]),
                                      ("2", "flatten", [72])]


def test_repetition_numbers_like_sequential(spec):
    graph = netspec.load(spec("""
        block Unit(c) { conv(c, kernel=3, padding=1) -> relu() }
        network R {
          input x: [4, 8, 8]
          stage: Unit(4) * 3
          Unit(4) * 2
          relu() * 0
        }"""))
    assert [n.name for n in graph.nodes if n.op == "conv"] == ["stage.0.0", "stage.1.0", "stage.2.0", "1.0", "2.0"]
    assert graph.scopes["stage"].kind == "group" and graph.scopes["stage.1"].kind == "Unit"


def test_spread_continues_the_callers_numbering(spec):
    graph = netspec.load(spec("""
        block ConvReLU(c) { conv(c, kernel=3, padding=1) relu() }
        network S {
          input x: [3, 8, 8]
          features: { ...ConvReLU(8) * 2  maxpool(2)  ...ConvReLU(16) }
        }"""))
    assert [(n.name, n.op) for n in graph.nodes[1:]] == [
        ("features.0", "conv"), ("features.1", "relu"), ("features.2", "conv"), ("features.3", "relu"),
        ("features.4", "maxpool"), ("features.5", "conv"), ("features.6", "relu")]


def test_conditional_steps_and_arithmetic_arguments(spec):
    text = """
        block B(c, bn=false, mid=c // 2) {
          conv(mid, kernel=1, bias=not bn)
          batchnorm() if bn
          conv(c * 4, kernel=3, padding=1)
        }
        network N(bn=true) { input x: [8, 4, 4]  B(8, bn=bn) }"""
    with_bn = netspec.load(spec(text))
    assert [n.op for n in with_bn.nodes] == ["input", "conv", "batchnorm", "conv"]
    assert with_bn.node("0.0").shape == (4, 4, 4) and with_bn.node("0.2").shape == (32, 4, 4)
    assert with_bn.node("0.0").params == 8 * 4  # bias=not bn -> no bias
    without = netspec.load(spec(text), bn=False)
    assert [n.op for n in without.nodes] == ["input", "conv", "conv"]
    assert without.node("0.0").params == 8 * 4 + 4


def test_lets_lists_and_indexing(spec):
    graph = netspec.load(spec("""
        let widths = [16, 32, 64]
        let last = widths[-1] + 2 ** 3
        network L { input x: [3, 8, 8]  conv(widths[1], kernel=[3, 1], padding=[1, 0])  conv(last, kernel=1) }"""))
    assert graph.node("0").shape == (32, 8, 8)
    assert graph.node("0").params == 3 * 32 * 3 * 1 + 32
    assert graph.node("1").shape == (72, 8, 8)


def test_imports_resolve_relative_to_the_importing_file(spec):
    spec("block Head(classes) { global_avgpool() -> flatten() -> linear(classes) }", "lib/heads.net")
    spec('import "heads.net"\nblock Body(c) { conv(c, kernel=3) -> relu() }', "lib/body.net")
    graph = netspec.load(spec('import "lib/body.net"\nnetwork N { input x: [3, 9, 9]  Body(8)  Head(5) }'))
    assert graph.node("1.2").shape == (5,)
    assert graph.node("1.2").params == 8 * 5 + 5


def test_several_networks_are_selected_by_name(spec):
    path = spec("""
        network Small(classes=10) { input x: [1, 4, 4]  flatten() -> linear(classes) }
        network Large(classes=10) { input x: [1, 4, 4]  flatten() -> linear(100) -> linear(classes) }""")
    assert netspec.load(f"{path}:Large").name == "Large"
    assert netspec.load(f"{path}:Small", classes=3).node("1").shape == (3,)
    with pytest.raises(NetspecError) as err:
        netspec.load(path)
    assert codes(err) == ["NS210"] and "Small" in err.value.diagnostics[0].hint


def test_blocks_are_passed_as_arguments_and_networks_alias_blocks(spec):
    graph = netspec.load(spec("""
        block Plain(c) { conv(c, kernel=3, padding=1) }
        block Wide(c) { conv(2 * c, kernel=3, padding=1) }
        block Net(unit, c, size=8) { input x: [3, size, size]  a: unit(c)  b: unit(c) }
        network N = Net(Wide, 4, size=6)"""))
    assert [(n.name, list(n.shape)) for n in graph.nodes] == [("x", [3, 6, 6]), ("a.0", [8, 6, 6]),
                                                              ("b.0", [8, 6, 6])]


def test_projected_add_concat_and_scale(spec):
    graph = netspec.load(spec("""
        network M {
          input x: [16, 8, 8]
          a = x -> conv(32, kernel=3, stride=2, padding=1)
          auto: add(x, project="auto")
          a -> always: add(a, project=true, project_bn=false)
          a -> plain: add(a)
          a -> cat: concat(auto, plain)
          s: scale(0.5)
          t: scale(learnable=true)
        }"""))
    assert graph.node("auto").shape == (32, 4, 4)
    assert graph.node("auto").params == 16 * 32 + 2 * 32 and graph.node("auto").buffers == 2 * 32 + 1
    assert graph.node("always").params == 32 * 32 and graph.node("always").buffers == 0
    assert graph.node("plain").params == 0
    assert graph.node("cat").shape == (96, 4, 4)
    assert graph.node("s").params == 0 and graph.node("t").params == 1


def test_explicit_shortcut_branch(spec):
    graph = netspec.load(spec("""
        network E {
          input x: [16, 8, 8]
          shortcut = x -> conv(32, kernel=1, stride=2, bias=false) -> batchnorm()
          x -> conv(32, kernel=3, stride=2, padding=1) -> add(shortcut)
        }"""))
    assert graph.nodes[-1].shape == (32, 4, 4) and graph.nodes[-1].inputs == ["2", "1"]


def test_padding_same_dilation_groups_and_ceil_mode(spec):
    graph = netspec.load(spec("""
        network P {
          input x: [8, 15, 15]
          same: conv(8, kernel=5, padding="same")
          dilated: conv(8, kernel=3, dilation=2)
          grouped: conv(16, kernel=3, groups=4)
          floor: maxpool(2)
          x -> ceil: maxpool(2, ceil_mode=true)
        }"""))
    assert graph.node("same").shape == (8, 15, 15)
    assert graph.node("dilated").shape == (8, 11, 11)
    assert graph.node("grouped").params == 8 // 4 * 16 * 9 + 16
    assert graph.node("floor").shape == (16, 4, 4)
    assert graph.node("ceil").shape == (8, 8, 8)


def test_frozen_layers_count_as_non_trainable(spec):
    totals = netspec.summarize(netspec.load(spec(
        "network F { input x: [4] linear(3, frozen=true) linear(2) }"))).totals
    assert (totals.params, totals.trainable, totals.non_trainable) == (15 + 8, 8, 15)


def test_comments_crlf_and_byte_order_mark(spec):
    text = "\ufeff# a comment\r\nnetwork C { # trailing\r\n  input x: [1, 4, 4]\r\n  relu()  # done\r\n}\r\n"
    graph = netspec.load(spec(text))
    assert layers(graph) == [("x", "input", [1, 4, 4]), ("0", "relu", [1, 4, 4])]


def test_nodes_keep_the_span_of_their_source(spec):
    graph = netspec.load(spec("network S {\n  input x: [1, 4, 4]\n\n    conv(2, kernel=3)\n}"))
    span = graph.node("0").span
    assert (span.line, span.col, span.end_col) == (4, 5, 22)


def test_independent_errors_are_all_reported(spec):
    with pytest.raises(NetspecError) as err:
        netspec.load(spec("""network E {
          input x: [3, 8, 8]
          a = x -> conv(4, kernel=9)
          b = x -> linear(3)
          c = x -> relu(slope=2)
        }"""))
    assert codes(err) == ["NS302", "NS305", "NS202"]


def test_errors_after_a_broken_layer_are_not_noise(spec):
    with pytest.raises(NetspecError) as err:
        netspec.load(spec("network E { input x: [3, 8, 8]  cnov(4) -> relu() -> conv(4, kernel=3) -> flatten() }"))
    assert codes(err) == ["NS201"]


def test_a_label_on_a_reference_is_refused(spec):
    with pytest.raises(NetspecError) as err:
        netspec.load(spec("network E { input x: [3, 8, 8]  y = x -> relu()  out: y -> add(x) }"))
    assert codes(err) == ["NS203"] and err.value.diagnostics[0].hint == "put the label on the layer: `y -> out: ...`"
