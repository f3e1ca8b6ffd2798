"""A spec means what it reads (docs/language.md, "What a spec means" and the block features after it).

The ambiguous forms are refused, the block features give the networks torch builds by hand (torch is the oracle:
parameters, state_dict keys and order, outputs), warnings are a severity of their own, and `netspec fmt` keeps
the author's line breaks where they carry the reading.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netspec
from netspec.fmt import format_text
from netspec.ground.errors import NetspecError

ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, text: str, name: str = "spec.net") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def codes(folder: Path, text: str) -> list[str]:
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(folder, text))
    return [d.code for d in caught.value.diagnostics]


def run_check(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netspec", "check", *arguments], capture_output=True, text=True,
                          timeout=120)


def generated_module(graph, folder: Path):
    """The module `netspec compile` writes for `graph`, imported from its file."""
    from netspec.backends.torch.naming import network_class_name
    from netspec.backends.torch.source import to_python

    path = folder / f"generated_{abs(hash(graph.name))}.py"
    path.write_text(to_python(graph))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, network_class_name(graph.name))()


def same_as_generated(graph, folder: Path) -> None:
    """The compiled module and the generated file's agree: state_dict keys in order, and outputs."""
    import torch

    from netspec.backends.torch import to_module

    compiled = to_module(graph, seed=0).eval()
    written = generated_module(graph, folder).eval()
    assert list(written.state_dict()) == list(compiled.state_dict())
    written.load_state_dict(compiled.state_dict())
    x = torch.randn(2, *graph.input_shape)
    torch.testing.assert_close(written(x), compiled(x), rtol=0, atol=0, equal_nan=True)  # log, sqrt of x < 0


# 1. No silent misreadings ----------------------------------------------------------------------------------------

TRAPS = {
    "if on a chain": "conv(16, kernel=1) -> batchnorm() -> relu6() if expand",
    "repeat on a chain": "conv(8, kernel=1) -> relu() * 3",
    "repeat of a block on a chain": "conv(8, kernel=1) -> Pair(8) * 2",
}


@pytest.mark.parametrize("line", TRAPS.values(), ids=TRAPS.keys())
def test_a_modifier_on_a_chain_of_layers_is_refused_with_both_rewrites(line, tmp_path):
    text = ("block Pair(c) {\n  conv(c, kernel=1)\n  relu()\n}\n"
            f"network N(expand=true) {{\n  input x: [3, 16, 16]\n  {line}\n}}\n")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    [d] = caught.value.diagnostics
    assert d.code == "NS215" and d.span.line == 7
    *chain, last = line.rsplit(" -> ", 1)
    layer, modifier = re.match(r"(.*\)) ((?:if|\*) .*)", last).groups()
    assert d.hint == (f"write `{{ {' -> '.join(chain)} -> {layer} }} {modifier}` if the whole chain is "
                      f"{'conditional' if modifier.startswith('if') else 'repeated'}, or put `{layer} {modifier}` "
                      f"on a line of its own if only {layer} is "
                      f"{'conditional' if modifier.startswith('if') else 'repeated'}")


def test_both_rewrites_of_a_conditional_chain_mean_what_they_read(tmp_path):
    whole = ("network N(expand=true) {\n  input x: [3, 16, 16]\n"
             "  { conv(16, kernel=1) -> batchnorm() -> relu6() } if expand\n  conv(4, kernel=1)\n}\n")
    path = write(tmp_path, whole)
    assert [n.op for n in netspec.load(path).nodes] == ["input", "conv", "batchnorm", "relu6", "conv"]
    assert [n.op for n in netspec.load(path, expand=False).nodes] == ["input", "conv"]
    alone = whole.replace("{ conv(16, kernel=1) -> batchnorm() -> relu6() } if expand",
                          "conv(16, kernel=1) -> batchnorm()\n  relu6() if expand")
    path = write(tmp_path, alone)
    assert [n.op for n in netspec.load(path, expand=False).nodes] == ["input", "conv", "batchnorm", "conv"]


def test_a_repeated_group_repeats_the_pair(tmp_path):
    path = write(tmp_path, "network N {\n  input x: [3, 8, 8]\n  { conv(8, kernel=1) -> relu() } * 3\n}\n")
    assert [n.op for n in netspec.load(path).nodes] == ["input"] + ["conv", "relu"] * 3


def test_modifiers_after_references_alone_read_one_way_and_are_accepted(tmp_path):
    text = ("network N(aux=true) {\n  input x: [3, 8, 8]\n  a: conv(4, kernel=1)\n"
            "  x -> b: conv(4, kernel=1) if aux\n  x -> conv(4, kernel=1) * 2\n  add(a, b)\n}\n")
    graph = netspec.load(write(tmp_path, text))
    assert [n.name for n in graph.nodes] == ["x", "a", "b", "2", "3", "4"]


def test_reading_a_label_that_its_chain_went_on_from_is_refused(tmp_path):
    text = ("block DoubleConv(c) {\n  conv(c, kernel=3, padding=1)\n  relu()\n}\n"
            "network N {\n  input x: [8, 32, 32]\n  enc2: maxpool(2) -> DoubleConv(16)\n  DoubleConv(16)\n"
            "  concat(enc2)\n}\n")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    [d] = caught.value.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("NS215", 7, 3)
    assert d.message == "'enc2' names the output of maxpool(2), but its chain goes on to DoubleConv(16)"
    assert "`enc2 = maxpool(2) -> DoubleConv(16)`" in d.hint
    # Named as the hint says, the skip is the DoubleConv's output: [16, 16, 16] twice, joined.
    fixed = text.replace("enc2: maxpool(2) -> DoubleConv(16)", "enc2 = maxpool(2) -> DoubleConv(16)")
    graph = netspec.load(write(tmp_path, fixed))
    assert graph.nodes[-1].op == "concat" and graph.nodes[-1].shape == (32, 16, 16)
    # A label that only names a module (LeNet-5's `C1: conv(...) -> lecun_tanh()`) is fine.
    assert netspec.load(ROOT / "specs" / "lenet5.net").nodes[1].name == "C1"


def test_a_value_never_used_is_a_warning_that_check_shows_and_strict_fails(tmp_path):
    path = ROOT / "tests" / "errors" / "unused_value.net"
    graph = netspec.load(f"{path}:DeadBranch")
    [w] = graph.warnings
    assert (w.code, w.severity, w.span.line, w.span.col) == ("NS401", "warning", 4, 19)
    assert w.message == "the result of '0.2' (conv) is never used"

    plain = run_check(f"{path}:DeadBranch")
    assert plain.returncode == 0 and "Params:" in plain.stdout
    assert plain.stderr.startswith(f"{path}:4:19: warning[NS401]: ") and plain.stderr.endswith("1 warning found\n")
    strict = run_check(f"{path}:DeadBranch", "--strict")
    assert strict.returncode == 1 and strict.stdout == "" and "warning[NS401]" in strict.stderr
    report = json.loads(run_check(f"{path}:DeadBranch", "--format", "json").stdout)
    assert report["ok"] is True
    assert [(w["code"], w["severity"], w["span"]["line"]) for w in report["warnings"]] == [("NS401", "warning", 4)]
    failed = json.loads(run_check(f"{path}:DeadBranch", "--format", "json", "--strict").stdout)
    assert failed["ok"] is False and failed["error_count"] == 0 and len(failed["warnings"]) == 1


def test_every_spec_in_the_repository_checks_without_warnings():
    from netspec.analysis.pipeline import ALL, analyse

    specs = sorted((ROOT / "specs").rglob("*.net")) + sorted((ROOT / "examples").rglob("*.net"))
    found = [(str(p), d.code, d.message) for p in specs for d in analyse(p, ALL).diagnostics]
    assert found == []


def test_warnings_are_not_shown_when_the_spec_has_errors(tmp_path):
    text = "network N {\n  input x: [3, 8, 8]\n  x -> conv(4, kernel=1)\n  x -> linar(3)\n}\n"
    assert codes(tmp_path, text) == ["NS201"]


# 2. Blocks that see and take what they need ------------------------------------------------------------------

INVERTED_RESIDUAL = """
block InvertedResidual(cout, t=6, stride=1) {
  input x: [cin, h, w]
  let hidden = cin * t
  conv(hidden, kernel=1, bias=false) -> batchnorm() -> relu6()
  conv(hidden, kernel=3, stride=stride, padding=1, groups=hidden, bias=false) -> batchnorm() -> relu6()
  conv(cout, kernel=1, bias=false) -> batchnorm()
  add(x) if stride == 1 and cin == cout
}

network Mobile {
  input x: [16, 32, 32]
  a: InvertedResidual(16)
  b: InvertedResidual(24, stride=2)
  c: InvertedResidual(24)
}
"""


def test_a_block_reads_its_input_width_so_the_residual_follows_the_real_channels(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.models.mobilenetv2 import InvertedResidual

    graph = netspec.load(write(tmp_path, INVERTED_RESIDUAL))
    adds = [n.name for n in graph.nodes if n.op == "add"]
    assert adds == ["a.8", "c.8"]  # b changes width and stride: no residual
    for block, (cin, cout, stride) in {"a": (16, 16, 1), "b": (16, 24, 2), "c": (24, 24, 1)}.items():
        expected = sum(p.numel() for p in InvertedResidual(cin, cout, stride, 6).parameters())
        assert sum(n.params for n in graph.nodes if n.name.startswith(f"{block}.")) == expected


def test_an_input_shape_names_sizes_and_checks_the_others(tmp_path):
    text = ("block Head(classes) {\n  input x: [c, 7, 7]\n  global_avgpool() -> flatten() -> linear(classes)\n}\n"
            "network N {\n  input x: [32, 14, 14]\n  conv(64, kernel=3, stride=2, padding=1)\n  Head(10)\n}\n")
    graph = netspec.load(write(tmp_path, text))
    assert graph.nodes[-1].params == 64 * 10 + 10
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text.replace("stride=2, ", "")))
    [d] = caught.value.diagnostics
    assert d.code == "NS306" and d.message == "block 'Head' declares input [64, 7, 7] but receives [64, 14, 14]"
    assert d.notes == (f"in block Head called at {tmp_path / 'spec.net'}:8:3",)


UNET_STEP = """
block Up(c) {
  input x
  input skip: [cs, hs, ws]
  conv_transpose(c, kernel=2, stride=2)
  concat(skip)
  conv(c, kernel=3, padding=1) -> relu()
}

network UNetStep {
  input x: [16, 32, 32]
  enc = x -> conv(16, kernel=3, padding=1) -> relu()
  maxpool(2) -> conv(32, kernel=3, padding=1) -> relu()
  up: Up(16, skip=enc)
}
"""


def test_a_block_takes_a_second_tensor_by_name_as_a_unet_up_step_does(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    from netspec.backends.torch import to_module

    class Up(nn.Module):  # the oracle, written as torch code has it
        def __init__(self):
            super().__init__()
            self.add_module("0", nn.ConvTranspose2d(32, 16, 2, stride=2))
            self.add_module("2", nn.Conv2d(32, 16, 3, padding=1))

        def forward(self, x, skip):
            x = torch.cat([getattr(self, "0")(x), skip], dim=1)
            return torch.relu(getattr(self, "2")(x))

    class UNetStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module("0", nn.Conv2d(16, 16, 3, padding=1))
            self.add_module("3", nn.Conv2d(16, 32, 3, padding=1))
            self.up = Up()

        def forward(self, x):
            enc = torch.relu(getattr(self, "0")(x))
            low = torch.relu(getattr(self, "3")(nn.functional.max_pool2d(enc, 2)))
            return self.up(low, enc)

    graph = netspec.load(write(tmp_path, UNET_STEP))
    compiled, oracle = to_module(graph, seed=0).eval(), UNetStep().eval()
    assert [(k, tuple(v.shape)) for k, v in compiled.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in oracle.state_dict().items()]
    oracle.load_state_dict(compiled.state_dict())
    x = torch.randn(2, 16, 32, 32)
    torch.testing.assert_close(compiled(x), oracle(x))
    assert graph.nodes[-1].shape == (16, 32, 32)
    same_as_generated(graph, tmp_path)


def test_a_missing_or_positional_tensor_input_says_how_to_pass_it(tmp_path):
    missing = UNET_STEP.replace("Up(16, skip=enc)", "Up(16)")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, missing))
    [d] = caught.value.diagnostics
    assert (d.code, d.message) == ("NS204", "block 'Up' needs the input 'skip'")
    assert d.hint == "pass it by name: `Up(..., skip=VALUE)`, VALUE a name bound before the call"
    positional = UNET_STEP.replace("Up(16, skip=enc)", "Up(16, enc)")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, positional))
    [d] = caught.value.diagnostics
    assert d.code == "NS203" and d.message.startswith("'enc' is a tensor (a value the network computes)")
    assert d.hint == "pass it as the block's input by name: `Up(..., skip=enc)`"


def test_a_tensor_where_a_number_goes_and_a_keras_style_call_are_explained(tmp_path):
    text = "network N {\n  input x: [3, 8, 8]\n  conv(x, 3)\n}\n"
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    [d] = caught.value.diagnostics
    assert d.message == ("'x' is a tensor (a value the network computes), but 'out_channels' of conv takes a "
                         "number, a word or a list")
    text = "network N {\n  input x: [3, 8, 8]\n  Dense(x)\n}\n"
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    [d] = caught.value.diagnostics
    assert d.code == "NS201" and d.notes[0].endswith("the chain passes it: `x -> Dense(...)`")


BRANCHES = """
block Branches(c) {
  input x
  high: conv(c, kernel=3, padding=1)
  low = x -> conv(2 * c, kernel=3, stride=2, padding=1)
  output high, low
}

network TwoResolutions {
  input x: [8, 32, 32]
  high, low = x -> split: Branches(8)
  low -> upsample(2) -> conv(8, kernel=1) -> add(high)
}
"""


def test_a_block_gives_several_outputs_and_the_caller_binds_each(tmp_path):
    torch = pytest.importorskip("torch")
    from netspec.backends.torch import to_module

    graph = netspec.load(write(tmp_path, BRANCHES))
    shapes = {n.name: n.shape for n in graph.nodes}
    assert shapes["split.high"] == (8, 32, 32) and shapes["split.1"] == (16, 16, 16)
    assert graph.nodes[-1].shape == (8, 32, 32) and graph.warnings == []
    module = to_module(graph, seed=0).eval()
    x = torch.randn(1, 8, 32, 32)
    split = module.get_submodule("split")
    high = split.high(x)
    low = getattr(split, "1")(x)
    expected = high + module.get_submodule("2")(torch.nn.functional.interpolate(low, scale_factor=2))
    torch.testing.assert_close(module(x), expected)
    same_as_generated(graph, tmp_path)
    from netspec.backends.torch.source import to_python
    assert re.search(r"\n        high, (\w+) = self\.split\(x\)\n        x = self\.upsample\(\1\)\n", to_python(graph))


def test_binding_more_names_than_a_chain_gives_is_an_error(tmp_path):
    wrong = BRANCHES.replace("high, low = x -> split: Branches(8)", "high, low, extra = x -> split: Branches(8)")
    assert codes(tmp_path, wrong) == ["NS203"]
    one = BRANCHES.replace("high, low = x -> split: Branches(8)", "high, low = x -> conv(8, kernel=1)")
    assert codes(tmp_path, one) == ["NS203"]


def test_lets_in_bodies_and_exports_from_groups(tmp_path):
    text = ("network Exported(c=8) {\n  input x: [8, 16, 16]\n  let wide = c * 2\n  stem: {\n"
            "    conv(wide, kernel=3, padding=1)\n    skip: relu()\n    export skip\n    conv(wide, kernel=3, padding=1)\n"
            "  }\n  add(skip)\n}\n")
    graph = netspec.load(write(tmp_path, text))
    add = graph.nodes[-1]
    assert add.op == "add" and add.inputs == ["stem.2", "stem.skip"] and add.shape == (16, 16, 16)
    same_as_generated(graph, tmp_path)
    assert graph.arguments == {"c": 8}  # a network's lets are not its arguments
    assert codes(tmp_path, text.replace("    export skip\n", "")) == ["NS205"]
    assert codes(tmp_path, text.replace("let wide = c * 2", "let wide = c * 2\n  let wide = 3")) == ["NS206"]
    assert codes(tmp_path, text.replace("  add(skip)", "  export skip")) == ["NS203"]


TREE = """
block Tree(levels, c) {
  input x
  left: conv(c, kernel=3, padding=1) -> relu()
  sub: Tree(levels - 1, c) if levels > 1
  concat(x)
}

network Aggregation {
  input x: [8, 16, 16]
  tree: Tree(3, 8)
}
"""


def test_a_block_calls_itself_until_its_condition_ends_the_recursion(tmp_path):
    graph = netspec.load(write(tmp_path, TREE))
    convs = [n for n in graph.nodes if n.op == "conv"]
    assert [n.name for n in convs] == ["tree.left", "tree.sub.left", "tree.sub.sub.left"]
    # every level's conv sees 8 channels; each concat adds the level's 8 input channels: 8 + 8, + 8, + 8
    assert [n.params for n in convs] == [8 * 8 * 9 + 8] * 3
    assert graph.nodes[-1].shape == (32, 16, 16)
    same_as_generated(graph, tmp_path)
    endless = TREE.replace("sub: Tree(levels - 1, c) if levels > 1", "sub: Tree(levels - 1, c)")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, endless))
    [d] = caught.value.diagnostics
    assert d.code == "NS207" and d.message.startswith("block 'Tree' calls itself without end (Tree -> Tree, ")
    assert d.hint.endswith("`Tree(levels - 1) if levels > 1`")
    assert d.span.line == 5 and len(d.notes) == 1  # at the recursive call; the network's call once, not 63 times


@pytest.mark.parametrize("merge", ["add", "mul", "sub", "div", "concat"])
def test_a_merge_with_nothing_to_join_is_refused(merge, tmp_path):
    text = f"network N {{\n  input x: [3, 8, 8]\n  conv(4, kernel=1)\n  {merge}()\n}}\n"
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    [d] = caught.value.diagnostics
    assert (d.code, d.span.line, d.message) == ("NS204", 4, f"{merge} needs the names of the values it joins with "
                                                              "the current one")


def test_repeat_counts_are_arithmetic_expressions(tmp_path):
    text = ("network N(depths=[1, 2], n=1) {\n  input x: [3, 8, 8]\n  conv(4, kernel=1) * depths[1]\n"
            "  relu() * n + 1\n}\n")
    assert [n.op for n in netspec.load(write(tmp_path, text)).nodes] == ["input", "conv", "conv", "relu", "relu"]


# 4. Errors that point at the real mistake, and names that compile -----------------------------------------------------

def test_the_unclosed_brace_hint_appears_only_for_a_brace_really_left_open(tmp_path):
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, "network N {\n  input x: [1, 8, 8]\n  conv(6, kernel=5) $ relu()\n}\n"))
    assert caught.value.diagnostics[0].hint is None
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, "network N {\n  input x: [1, 8, 8]\n  conv(6, kernel=5) -> relu(\n}\n"))
    assert caught.value.diagnostics[0].hint == "the '(' at 3:28 is not closed"


def test_a_mistyped_argument_passed_down_through_blocks_is_one_error_where_it_was_written(tmp_path):
    text = ("block Unit(c) {\n  conv(c, kernel=3, padding=1) -> batchnorm() -> relu()\n  conv(c, kernel=3, padding=1)\n}\n"
            "block Stage(c, n, stride=1) {\n  input x\n  conv(c, kernel=3, stride=stride, padding=1)\n  Unit(c) * n\n"
            "  linear(c, over=\"channels\")\n}\n"
            "network N(width=16) {\n  input x: [3, 32, 32]\n  s1: Stage(widht, 2)\n  s2: Stage(width * 2, 2, stride=2)\n}\n")
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    [d] = caught.value.diagnostics
    assert (d.code, d.message, d.span.line, d.span.col) == ("NS205", "undefined name 'widht'", 13, 13)
    assert d.hint == "did you mean 'width'?" and d.notes == ()


@pytest.mark.parametrize("text, cls", [
    ("network torch {\n  input x: [3, 8, 8]\n  a = x -> conv(4, kernel=1)\n  x -> conv(4, kernel=1) -> concat(a)\n}\n",
     "torch_network"),
    ("network nn {\n  input x: [3, 8, 8]\n  conv(4, kernel=3)\n}\n", "nn_network"),
    ("block __class__(c) {\n  input x\n  conv(c, kernel=1) -> relu() -> add(x)\n}\n"
     "network N {\n  input x: [4, 8, 8]\n  a: __class__(4)\n  b: __class__(4)\n}\n", "N"),
    ("block __init__(c) {\n  conv(c, kernel=1)\n  relu()\n}\nnetwork N {\n  input x: [3, 8, 8]\n  __init__(4)\n}\n", "N"),
    ("network N {\n  input self: [3, 8, 8]\n  conv(4, kernel=3)\n}\n", "N"),
    ("block B(c) {\n  input self\n  s: conv(c, kernel=1)\n  self -> conv(c, kernel=1) -> add(s)\n}\n"
     "network N {\n  input x: [4, 8, 8]\n  self: B(4)\n}\n", "N"),
], ids=["network torch", "network nn", "block __class__", "block __init__", "input self", "label self"])
def test_names_that_check_accepts_compile_and_generate_working_python(text, cls, tmp_path):
    pytest.importorskip("torch")
    from netspec.backends.torch.naming import network_class_name

    graph = netspec.load(write(tmp_path, text))
    assert network_class_name(graph.name) == cls
    same_as_generated(graph, tmp_path)


# fmt ---------------------------------------------------------------------------------------------------------------

def test_fmt_keeps_a_multi_line_body_and_breaks_a_wrapped_header_one_parameter_a_line():
    text = ("block Stage(c, n,\n            stride=1) {\n  input x\n  for i in range(n) {\n    conv(c, kernel=1) }\n"
            "  for i in range(n) { relu() }\n}\n")
    assert format_text(text) == ("block Stage(\n  c,\n  n,\n  stride=1\n) {\n  input x\n  for i in range(n) {\n"
                                 "    conv(c, kernel=1)\n  }\n  for i in range(n) { relu() }\n}\n")


def test_fmt_lays_out_the_new_statements_and_keeps_their_meaning():
    for text in (INVERTED_RESIDUAL, UNET_STEP, BRANCHES, TREE):
        formatted = format_text(text)
        assert format_text(formatted) == formatted
    assert format_text("network N {\n  input x: [3, 8, 8]\n  a , b=x->B(2)\n  export  a,b\n}\n") == \
        "network N {\n  input x: [3, 8, 8]\n  a, b = x -> B(2)\n  export a, b\n}\n"


# docs -----------------------------------------------------------------------------------------------------------

def test_the_examples_of_the_new_sections_of_language_md_check(tmp_path):
    text = (ROOT / "docs" / "language.md").read_text()
    start = text.index("## What a spec means")
    end = text.index("## Expressions")
    section = text[start:end]
    blocks = re.findall(r"```\n(.*?)```", section, re.DOTALL)
    networks = 0
    for n, block in enumerate(blocks):
        if "network " not in block:
            continue
        # a network's blocks may be in an earlier example of the section
        defined = "".join(b for b in blocks[:n] if "block " in b and "network " not in b)
        graph = netspec.load(write(tmp_path, defined + block, f"example{n}.net"))
        assert graph.warnings == [] and graph.nodes[-1].shape
        networks += 1
    assert networks == 5


# The property: check accepts => compile, forward and codegen succeed, with the checked shapes ----------------------

from hypothesis import given, strategies as st  # noqa: E402

from fuzz_inputs import agrees_with_torch, fixed_budget  # noqa: E402

EXPORTED = ("network Exported(c=8) {\n  input x: [8, 16, 16]\n  let wide = c * 2\n  stem: {\n"
            "    conv(wide, kernel=3, padding=1)\n    skip: relu()\n    export skip\n    conv(wide, kernel=3, padding=1)\n"
            "  }\n  add(skip)\n}\n")
MEANING_SEEDS = [INVERTED_RESIDUAL, UNET_STEP, BRANCHES, TREE, EXPORTED,
                 (ROOT / "specs" / "lenet5.net").read_text(), (ROOT / "specs" / "lenet.net").read_text(),
                 (ROOT / "specs" / "capsnet.net").read_text()]
NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")


@st.composite
def meaningful_mutation(draw) -> str:
    """A seed with a few edits a person makes: a number changed, a statement dropped or repeated, a label
    turned into an assignment or back, a name swapped for another name of the file."""
    text = draw(st.sampled_from(MEANING_SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["number", "number", "drop", "repeat", "label", "name"]))
        body = [i for i, line in enumerate(lines) if line.startswith("  ") and line.strip() not in ("}", "")]
        if not body:
            break
        i = draw(st.sampled_from(body))
        if kind == "number" and NUMBER.search(lines[i]):
            found = list(NUMBER.finditer(lines[i]))
            m = found[draw(st.integers(0, len(found) - 1))]
            lines[i] = lines[i][:m.start()] + str(draw(st.sampled_from([0, 1, 2, 3, 4, 7, 8, 16, 32]))) + \
                lines[i][m.end():]
        elif kind == "drop":
            del lines[i]
        elif kind == "repeat":
            lines.insert(i, lines[i])
        elif kind == "label":
            lines[i] = re.sub(r"^(\s+\w+):", r"\1 =", lines[i], count=1) if ":" in lines[i] else \
                re.sub(r"^(\s+\w+) =", r"\1:", lines[i], count=1)
        elif kind == "name":
            names = sorted(set(re.findall(r"\b[a-z_]\w*\b", text)))
            words = re.findall(r"\b[a-z_]\w*\b", lines[i])
            if words and names:
                old, new = draw(st.sampled_from(words)), draw(st.sampled_from(names))
                lines[i] = re.sub(rf"\b{old}\b", new, lines[i], count=1)
        text = "\n".join(lines)
    return text


def accepted_means_it_runs(text: str, folder: Path) -> bool:
    """True when check accepted and the network compiled, ran with the checked shapes and generated the same
    module; False when check refused it with located errors. Anything else fails the test."""
    path = write(folder, text, "mutated.net")
    try:
        graph = netspec.load(path)
    except NetspecError as err:
        assert all(d.span is not None and d.span.file == str(path) for d in err.diagnostics
                   if d.code not in ("NS209", "NS210")), err
        return False
    agrees_with_torch(graph)
    same_as_generated(graph, folder)
    return True


@fixed_budget(100)
@given(text=meaningful_mutation())
def test_a_mutated_spec_that_checks_compiles_runs_and_generates_the_same_module(text, tmp_path_factory):
    pytest.importorskip("torch")
    accepted_means_it_runs(text, tmp_path_factory.mktemp("mutated"))


@pytest.mark.parametrize("seed", range(len(MEANING_SEEDS)))
def test_every_seed_of_the_property_checks_and_runs(seed, tmp_path):
    pytest.importorskip("torch")
    assert accepted_means_it_runs(MEANING_SEEDS[seed], tmp_path)


@pytest.mark.parametrize("text, expected", [
    ("block B {\n  input x\n  y = relu()\n  output y, y\n}\nnetwork N {\n  input x: [3, 8, 8]\n  a, b = B()\n}\n",
     [("NS206", 4, "'y' is listed as an output twice")]),
    ("block Up(c) {\n  input x\n  input skip\n  concat(skip)\n}\nnetwork N = Up(4)\n",
     [("NS203", 6, "block 'Up' takes several inputs, and a network takes one")]),
    ("network N {\n  input a: [3, 8, 8]\n  input b: [3, 8, 8]\n  relu()\n}\n",
     [("NS203", 3, "network 'N' takes one input; 'b' is a second")]),
    ("block B {\n  input x\n  input y\n  add(y)\n}\nnetwork N {\n  input x: [3, 8, 8]\n  z = relu()\n  ...B(y=z)\n}\n",
     [("NS203", 9, "block 'B' takes several inputs, so it cannot be spread")]),
    ("block B {\n  input x: [c, h]\n  relu()\n}\nnetwork N {\n  input x: [3, 8, 8]\n  B()\n}\n",
     [("NS306", 2, "block 'B' declares a rank-2 input but receives [3, 8, 8]")]),
])
def test_mistakes_with_several_inputs_and_outputs_are_one_located_error_each(text, expected, tmp_path):
    with pytest.raises(NetspecError) as caught:
        netspec.load(write(tmp_path, text))
    assert [(d.code, d.span.line, d.message) for d in caught.value.diagnostics] == expected
