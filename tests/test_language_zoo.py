"""The language features the torchvision zoo needs: functions, conditionals and slices in expressions,
computed labels, `for` loops and declared outputs."""

import pytest

import netspec
from netspec import NetspecError
from netspec.language.evaluate import make_divisible


def value_of(spec, expression):
    """The value of an expression, read back as a linear layer's width."""
    graph = netspec.load(spec(f"network N {{ input x: [4]  linear({expression}) }}"))
    return graph.nodes[-1].shape[0]


def only_error(spec, text):
    with pytest.raises(NetspecError) as excinfo:
        netspec.load(spec(text))
    [diagnostic] = excinfo.value.diagnostics
    return diagnostic


@pytest.mark.parametrize("expression, value", [
    ("min(7, 3, 5)", 3), ("max([2, 9, 4])", 9), ("sum([1, 2, 3])", 6), ("abs(-4)", 4),
    ("round(2.5)", 2), ("round(3.5)", 4), ("floor(7 / 2)", 3), ("ceil(7 / 2)", 4), ("int(9.9)", 9),
    ("len([1, 2, 3, 4])", 4), ("sum(range(5))", 10), ("len(range(2, 11, 3))", 3), ("max([1, 5, 2][1:])", 5),
    ("sum([1, 2, 3, 4][:2])", 3), ("8 if 2 > 1 else 9", 8), ("8 if false else 9", 9),
    ("ceil(3 * 1.4)", 5), ("sum([1, 2][:0]) + 4", 4), ("make_divisible(32 * 1.1, 8)", 32), ("make_divisible(16 * 0.75, 8)", 16),
])
def test_functions_conditionals_and_slices(spec, expression, value):
    assert value_of(spec, expression) == value


@pytest.mark.parametrize("value, divisor, min_value", [
    (32 * 1.1, 8, None), (24 * 0.5, 8, None), (1280 * 1.3, 8, None), (10, 8, None), (11.9, 8, None),
    (3.0, 8, 16), (96 * 0.75, 8, None), (100.0, 16, None), (4, 8, None),
])
def test_make_divisible_is_torchvisions(value, divisor, min_value):
    ops_misc = pytest.importorskip("torchvision.models._utils")
    assert make_divisible(value, divisor, min_value) == ops_misc._make_divisible(value, divisor, min_value)


@pytest.mark.parametrize("expression, code, message, col", [
    ("mx(1, 2)", "NS205", "unknown function 'mx'", 10),
    ("abs(1, 2)", "NS211", "abs takes 1 argument, got 2", 10),
    ("range(0, 10, 0)", "NS212", "range step must not be zero", 10),
    ("len(3)", "NS212", "len needs a list or a string, got 3", 10),
    ("max([])", "NS212", "max of nothing", 10),
    ("make_divisible(10, 0)", "NS212", "make_divisible's divisor must be positive, got 0", 10),
    ("make_divisible(10, 8, minimum=2)", "NS202", "make_divisible has no argument 'minimum'", 32),
    ("range(1000000)", "NS213", "range of 1,000,000 items (limit 100,000)", 10),
    ("[1, 2][\"a\":]", "NS212", "a slice bound must be an integer, got \"a\"", 17),
])
def test_function_mistakes_are_located(spec, expression, code, message, col):
    diagnostic = only_error(spec, f"network N {{\n  input x: [4]\n  linear({expression})\n}}")
    assert (diagnostic.code, diagnostic.message) == (code, message)
    assert (diagnostic.span.line, diagnostic.span.col) == (3, col)


def test_unknown_function_suggests_the_nearest(spec):
    diagnostic = only_error(spec, "network N { input x: [4]  linear(ceill(2.5)) }")
    assert diagnostic.hint == "did you mean 'ceil'?"


def test_computed_labels_and_for_loops_name_layers_like_torchvision(spec):
    graph = netspec.load(spec("""
        block Layer(growth) {
          input x
          norm1: batchnorm()
          conv1: conv(growth, kernel=3, padding=1, bias=false)
          x -> concat(conv1)
        }
        network DenseNet(layers=3) {
          input x: [4, 8, 8]
          features: {
            for block in range(1, 3) {
              "denseblock{block}": {
                for i in range(layers) { "denselayer{i + 1}": Layer(2 * block) }
              }
              "transition{block}": conv(4, kernel=1) if block < 2
            }
          }
        }"""))
    convs = [n.name for n in graph.nodes if n.op == "conv"]
    assert convs == ["features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer2.conv1",
                     "features.denseblock1.denselayer3.conv1", "features.transition1",
                     "features.denseblock2.denselayer1.conv1", "features.denseblock2.denselayer2.conv1",
                     "features.denseblock2.denselayer3.conv1"]
    assert graph.nodes[-1].shape == (4 + 3 * 4, 8, 8)


def test_a_hyphenated_label_and_a_numeric_label_setting_the_numbering(spec):
    graph = netspec.load(spec("""
        network N {
          input x: [4, 8, 8]
          "block1-0": conv(4, kernel=1)
          stage: { conv(4, kernel=1)  "2": batchnorm()  relu()  conv(4, kernel=1) }
        }"""))
    assert [n.name for n in graph.nodes[1:]] == ["block1-0", "stage.0", "stage.2", "stage.3", "stage.4"]


def test_loop_names_are_per_iteration_and_the_value_flows_through(spec):
    graph = netspec.load(spec("""
        network N {
          input x: [2, 8, 8]
          for c in [4, 6] {
            y = conv(c, kernel=1)
            y -> concat(y)
          }
        }"""))
    assert [n.shape[0] for n in graph.nodes if n.op in ("conv", "concat")] == [4, 8, 6, 12]


@pytest.mark.parametrize("label, message, col", [
    ('"a..b"', "'a..b' cannot name a layer: a label is letters, digits, '_' and '-'", 3),
    ('"layer{x}"', "undefined name 'x'", 10),
    ('"layer{1.5}"', "a label's {expression} must give an integer or a string, got 1.5", 10),
    ('"layer{"', "a label's '{' is not closed", 9),
    ('"layer{1 +}"', "unexpected end of file", None),
    ('"{}"', "empty {} in a label", 4),
])
def test_label_mistakes_are_located(spec, label, message, col):
    diagnostic = only_error(spec, f"network N {{\n  input x: [4]\n  {label}: linear(2)\n}}")
    assert diagnostic.message.startswith(message)
    assert diagnostic.span.line == 3
    if col is not None:
        assert diagnostic.span.col == col


def test_a_for_loop_over_a_number_is_refused(spec):
    diagnostic = only_error(spec, "network N {\n  input x: [4]\n  for i in 3 { relu() }\n}")
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.col) == ("NS203", 3, 12)
    assert diagnostic.message == "a for loop runs over a list, got 3"


AUX = """
network N(aux=true) {
  input x: [3, 8, 8]
  stem: conv(4, kernel=3, padding=1)
  stem -> head2: { global_avgpool() flatten() linear(5) } if aux
  stem -> body: conv(4, kernel=3, padding=1)
  body -> head1: { global_avgpool() flatten() linear(5) } if aux
  body -> global_avgpool() -> flatten() -> fc: linear(5)
  output fc, head1 if aux, head2 if aux
}
"""


def test_declared_outputs_follow_torchvisions_training_and_eval_rule(spec):
    torch = pytest.importorskip("torch")
    graph = netspec.load(spec(AUX))
    assert (graph.output, graph.aux_outputs) == ("fc", ["head1.2", "head2.2"])
    assert graph.output_names == ["fc", "head1", "head2"]
    model = netspec.compile(spec(AUX))
    x = torch.randn(2, 3, 8, 8)
    main, head1, head2 = model.train()(x)
    assert main.shape == head1.shape == head2.shape == (2, 5)
    assert torch.equal(model.eval()(x), main)  # no dropout or batch norm: the same main output
    pooled = model.body(model.stem(x)).mean((2, 3))
    assert torch.allclose(head1, model.get_submodule("head1.2")(pooled), atol=1e-6)
    without = netspec.load(spec(AUX), aux=False)
    assert (without.output, without.aux_outputs) == ("fc", [])
    assert not any(n.name.startswith("head") for n in without.nodes)


@pytest.mark.parametrize("text, code, message, line", [
    ("network N { input x: [4]\n  linear(2)\n  output y\n}", "NS205", "undefined name 'y'", 3),
    ("network N { input x: [4]\n  y = linear(2)\n  output y\n  relu()\n}", "NS203",
     "`output` must be the last statement of the network", 3),
    ("network N { input x: [4]\n  g: {\n    y = relu()\n    output y\n  }\n}", "NS203",
     "`output` lists a block's or network's outputs: it belongs in its own body, not in a group or loop", 4),
    ("network N { input x: [4]\n  y = linear(2)\n  output y, y\n}", "NS206", "'y' is listed as an output twice", 3),
])
def test_output_mistakes_are_located(spec, text, code, message, line):
    diagnostic = only_error(spec, text)
    assert (diagnostic.code, diagnostic.message, diagnostic.span.line) == (code, message, line)


def test_output_remains_a_label(spec):
    graph = netspec.load(spec("network N { input x: [4]\n  output: linear(2)\n}"))
    assert graph.output == "output"


def test_keywords_that_torchvision_uses_as_module_names_can_label(spec):
    graph = netspec.load(spec("""
        block Unit(c) {
          input x: [4, 8, 8]
          conv(c, kernel=1)
          block: { conv(c, kernel=3, padding=1) }
        }
        network N {
          input x: [4, 8, 8]
          relu()
          block: Unit(4)
          output: relu()
        }"""))
    assert [n.name for n in graph.nodes[1:]] == ["0", "block.0", "block.block.0", "output"]


FIRE = """block Fire(squeeze, expand) {
  input x
  squeeze: conv(squeeze, kernel=1)
  conv(expand, kernel=9)
}

block Stage(c) {
  input x
  fire: Fire(4, c)
}

network N(c=8) {
  input x: [3, 8, 8]
  stage1: Stage(c)
}
"""


def test_a_mistake_inside_a_block_names_the_calls_that_led_to_it_and_the_set_values(spec):
    path = spec(FIRE)
    with pytest.raises(NetspecError) as excinfo:
        netspec.load(path, c=16)
    [diagnostic] = excinfo.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.col) == ("NS302", 4, 3)
    assert diagnostic.notes == (
        "at layer 'stage1.fire.1' (conv), whose input is [4, 8, 8]",
        f"in block Fire ('stage1.fire') called at {path}:9:9",
        f"in block Stage ('stage1') called at {path}:14:11",
        "the network's arguments include c=16, given with --set (or to netspec.load), not in the spec",
    )


def test_a_lowering_mistake_inside_a_block_names_its_call_sites(spec):
    path = spec(FIRE.replace("squeeze: conv(squeeze, kernel=1)", "squeeze: conv(squeeze, kernal=1)"))
    with pytest.raises(NetspecError) as excinfo:
        netspec.load(path)
    first = excinfo.value.diagnostics[0]
    assert (first.code, first.span.line) == ("NS202", 3)
    assert first.notes == (f"in block Fire called at {path}:9:9", f"in block Stage called at {path}:14:11")


def test_imports_resolve_against_the_search_path_after_their_own_folder(tmp_path, monkeypatch, capsys):
    from netspec.cli import main

    library = tmp_path / "library"
    (library / "blocks").mkdir(parents=True)
    (library / "blocks" / "unit.net").write_text("block Unit(c) { conv(c, kernel=1) -> relu() }\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "net.net").write_text('import "blocks/unit.net"\nnetwork N { input x: [3, 4, 4]  Unit(5) }\n')

    assert main(["check", str(project / "net.net")]) == 1
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "error[NS209]: file not found: " in printed and "blocks/unit.net" in printed

    assert main(["check", str(project / "net.net"), "--import-path", str(library)]) == 0
    assert "Params:      20 " in capsys.readouterr().out

    monkeypatch.setenv("NETSPEC_PATH", str(tmp_path / "elsewhere") + ":" + str(library))
    assert main(["check", str(project / "net.net")]) == 0
    capsys.readouterr()

    # Its own folder comes first: a local copy shadows the library's.
    (project / "blocks").mkdir()
    (project / "blocks" / "unit.net").write_text("block Unit(c) { conv(c, kernel=3, padding=1) }\n")
    assert main(["check", str(project / "net.net")]) == 0
    assert "Params:      140 " in capsys.readouterr().out


def test_a_missing_import_lists_where_it_looked(tmp_path):
    from netspec.ground.limits import Limits

    (tmp_path / "a").mkdir()
    (tmp_path / "net.net").write_text('import "unit.net"\nnetwork N { input x: [3, 4, 4]  relu() }\n')
    with pytest.raises(NetspecError) as excinfo:
        netspec.load(tmp_path / "net.net", limits=Limits(import_search=(tmp_path / "a",)))
    [diagnostic] = excinfo.value.diagnostics
    assert (diagnostic.code, diagnostic.message, diagnostic.span.line) == ("NS209", "file not found: unit.net", 1)
    assert diagnostic.hint == "add the folder that holds it with --import-path DIR (or NETSPEC_PATH)"
    assert diagnostic.notes[0].startswith("looked in: ") and diagnostic.notes[0].count("/") >= 2


def test_a_block_passed_as_an_argument_is_the_one_visible_where_it_is_passed(tmp_path):
    (tmp_path / "blocks.net").write_text("block ConvNormAct(c, norm) { conv(c, kernel=1) -> norm() }\n")
    (tmp_path / "net.net").write_text(
        'import "blocks.net"\n'
        "block TinyNorm() { batchnorm(eps=0.001) }\n"
        "network N(hs=true) {\n"
        "  input x: [3, 4, 4]\n"
        "  ConvNormAct(8, norm=TinyNorm)\n"
        "  ConvNormAct(8, norm=hardswish if hs else relu)\n"
        "}\n")
    graph = netspec.load(tmp_path / "net.net")
    assert [(n.name, n.op) for n in graph.nodes[1:]] == [("0.0", "conv"), ("0.1.0", "batchnorm"),
                                                         ("1.0", "conv"), ("1.1", "hardswish")]
    assert graph.node("0.1.0").args.eps == 0.001
