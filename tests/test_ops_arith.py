"""Element-wise arithmetic (`sub`, `div`, `sqrt`, `pow`, `exp`, `log`), the p-norm and softmax over any axis, per
group and across ResNeSt's radix splits: torch, references written from timm's code, and onnxruntime are the
oracles."""

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import netspec  # noqa: E402
from compiled import run  # noqa: E402
from conftest import ROOT, only_error  # noqa: E402
from netspec import Sources  # noqa: E402
from netspec.backends.torch import to_module, to_python  # noqa: E402


# sub and div ------------------------------------------------------------------------------------------------

def test_sub_and_div_broadcast_like_add_and_apply_left_to_right(spec):
    graph, module, x, y = run(spec("""
        network Arith {
          input x: [4, 5, 5]
          mean = x -> reduce_mean()
          spread = x -> pnorm(2)
          column = x -> reduce_max(over="channels")
          x -> centred: sub(mean, column) -> scaled: div(spread, spread)
        }"""))
    assert graph.node("centred").shape == graph.node("scaled").shape == (4, 5, 5)
    assert sum(graph.node(n).params + graph.node(n).macs for n in ("centred", "scaled")) == 0
    mean, column = x.mean((2, 3), keepdim=True), x.amax(1, keepdim=True)
    spread = torch.linalg.vector_norm(x, 2, dim=(2, 3), keepdim=True)
    assert torch.equal(y, (x - mean - column) / spread / spread)
    assert "sub = x - _0" in module.code and "truediv = sub_1 / _1" in module.code  # arithmetic, left to right
    source = to_python(graph)  # as a person writes it, one operator an operand
    assert "        x = x - out - out3\n        x = x / out2 / out2\n" in source


@pytest.mark.parametrize("lines, message, hint", [
    (["g = x -> conv(2, kernel=1) -> adaptive_avgpool(1)", "x -> sub(g)"],
     "sub needs operands whose sizes are equal or 1, got [4, 6, 6] and [2, 1, 1]", "here the channels differ, 4 and 2"),
    (["s = x -> maxpool(2)", "x -> div(s)"],
     "div needs operands whose sizes are equal or 1, got [4, 6, 6] and [4, 3, 3]", "here the heights differ, 6 and 3"),
    (["flat = x -> flatten()", "x -> div(flat)"],
     "div needs operands of one rank, got [4, 6, 6] and [144]", "reshape or pool the operand to 3 dimensions"),
])
def test_operands_that_do_not_fit_give_a_located_error(lines, message, hint, spec):
    body = "\n".join(f"  {line}" for line in lines)
    diagnostic = only_error(spec(f"network E {{\n  input x: [4, 6, 6]\n{body}\n}}\n"))
    assert (diagnostic.code, diagnostic.message) == ("NS301", message)
    assert diagnostic.hint.startswith("operands broadcast between equal ranks") and diagnostic.hint.endswith(hint)
    assert (diagnostic.span.line, diagnostic.span.col) == (2 + len(lines), 8)


def test_sub_and_div_take_names_not_expressions(spec):
    diagnostic = only_error(spec("network E {\n  input x: [4, 6, 6]\n  sub(2)\n}\n"))
    assert (diagnostic.code, diagnostic.message) == ("NS203",
                                                     "sub takes the names of values to join, got an expression")


# sqrt, pow, exp, log ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, reference", [
    ("sqrt()", torch.sqrt),
    ("exp()", torch.exp),
    ("log()", torch.log),
    ("pow(2)", lambda x: torch.pow(x, 2)),
    ("pow(3)", lambda x: x ** 3),
    ("pow(0.5)", lambda x: torch.pow(x, 0.5)),
    ("pow(-1.5)", lambda x: torch.pow(x, -1.5)),
])
def test_unary_arithmetic_equals_torch_and_counts_nothing(call, reference, spec):
    graph, module, x, y = run(spec(f"network U {{ input x: [3, 4, 4]  op: {call} }}"), positive=True)
    node = graph.node("op")
    assert (node.shape, node.params, node.macs, node.buffers) == ((3, 4, 4), 0, 0, 0)
    assert list(module.state_dict()) == [] and torch.equal(y, reference(x))


def test_pow_refuses_a_missing_or_non_numeric_exponent(spec):
    diagnostic = only_error(spec("network E {\n  input x: [4, 6, 6]\n  pow()\n}\n"))
    assert (diagnostic.code, diagnostic.message) == ("NS204", "pow needs argument 'p'")
    diagnostic = only_error(spec('network E {\n  input x: [4, 6, 6]\n  pow("two")\n}\n'))
    assert diagnostic.code == "NS203" and diagnostic.message.startswith("invalid 'p' of pow")


# pnorm ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, p, dims, shape", [
    ("pnorm()", 2, (2, 3), (6, 1, 1)),
    ("pnorm(1)", 1, (2, 3), (6, 1, 1)),
    ("pnorm(3, over=\"channels\")", 3, (1,), (1, 4, 5)),
    ("pnorm(0.5, \"positions\")", 0.5, (2, 3), (6, 1, 1)),
    ("pnorm(2, over=\"channels\")", 2, (1,), (1, 4, 5)),
])
def test_pnorm_equals_torch_vector_norm_and_counts_one_mac_per_input_number(call, p, dims, shape, spec):
    graph, module, x, y = run(spec(f"network N {{ input x: [6, 4, 5]  norm: {call} }}"))
    node = graph.node("norm")
    assert (node.shape, node.params, node.macs) == (shape, 0, 6 * 4 * 5)
    torch.testing.assert_close(y, torch.linalg.vector_norm(x, p, dim=dims, keepdim=True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, x.norm(p, dim=dims, keepdim=True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("call, code, message", [
    ("pnorm(0)", "NS303", "'p' of pnorm must be positive, got 0"),
    ("pnorm(-1.5)", "NS203", "invalid 'p' of pnorm: "),
    ('pnorm(2, over="features")', "NS203", "invalid 'over' of pnorm: "),
])
def test_pnorm_refuses_what_is_no_norm(call, code, message, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [4, 6, 6]\n  {call}\n}}\n"))
    assert diagnostic.code == code and diagnostic.message.startswith(message), diagnostic


def test_pnorm_needs_a_map(spec):
    diagnostic = only_error(spec("network E {\n  input x: [4, 6, 6]\n  flatten() -> pnorm()\n}\n"))
    assert (diagnostic.code, diagnostic.message) == ("NS305", "pnorm expects a feature map [C, H, W], got [144]")
    assert (diagnostic.span.line, diagnostic.span.col) == (3, 16)


# softmax ------------------------------------------------------------------------------------------------------

def test_softmax_without_arguments_is_unchanged_nn_softmax_over_dimension_1(spec):
    graph, module, x, y = run(spec("""
        network S { input x: [6, 3, 3]  maps: softmax()  flatten() -> vector: softmax() }"""))
    assert isinstance(module.get_submodule("maps"), torch.nn.Softmax) and module.get_submodule("maps").dim == 1
    assert isinstance(module.get_submodule("vector"), torch.nn.Softmax) and module.get_submodule("vector").dim == 1
    assert torch.equal(y, F.softmax(F.softmax(x, dim=1).flatten(1), dim=1))
    assert "nn.Softmax(dim=1)" in to_python(graph)


@pytest.mark.parametrize("call, reference", [
    ('softmax(axis="channels")', lambda x: F.softmax(x, dim=1)),
    ('softmax(axis="height")', lambda x: F.softmax(x, dim=2)),
    ('softmax(axis="width")', lambda x: F.softmax(x, dim=3)),
    ('softmax(axis="positions")', lambda x: F.softmax(x.flatten(2), dim=2).view(x.shape)),
    ("softmax(groups=3)", lambda x: F.softmax(x.view(2, 3, 2, 4, 5), dim=2).view(x.shape)),
    ("softmax(groups=6)", lambda x: torch.ones_like(x)),  # groups of one channel each
])
def test_softmax_over_an_axis_or_within_groups_equals_torch(call, reference, spec):
    graph, module, x, y = run(spec(f"network S {{ input x: [6, 4, 5]  soft: {call} }}"))
    node = graph.node("soft")
    assert (node.shape, node.params, node.macs) == ((6, 4, 5), 0, 0)
    torch.testing.assert_close(y, reference(x), rtol=1e-6, atol=1e-7)


def timm_radix_softmax(x, radix, cardinality):
    """timm's RadixSoftmax.forward (ResNeSt's rSoftMax), for radix > 1."""
    batch = x.size(0)
    x = x.view(batch, cardinality, radix, -1).transpose(1, 2)
    x = F.softmax(x, dim=1)
    return x.reshape(batch, -1)


@pytest.mark.parametrize("channels, groups, radix", [(8, 1, 2), (12, 2, 3), (16, 2, 4), (8, 4, 2), (6, 1, 6)])
def test_softmax_radix_is_resnests_rsoftmax(channels, groups, radix, spec):
    graph, module, x, y = run(spec(f"""
        network R {{ input x: [{channels}, 1, 1]  soft: softmax(groups={groups}, radix={radix}) }}"""))
    assert graph.node("soft").shape == (channels, 1, 1)
    torch.testing.assert_close(y.flatten(1), timm_radix_softmax(x, radix, groups), rtol=1e-6, atol=1e-7)
    # split i's weights are channels i*C/r to (i+1)*C/r, and they add up to 1 across the splits
    torch.testing.assert_close(y.view(2, radix, -1).sum(1), torch.ones(2, channels // radix))


def test_softmax_radix_on_a_map_and_on_a_vector(spec):
    graph, module, x, y = run(spec("network R { input x: [8, 3, 3]  maps: softmax(groups=2, radix=2) }"))
    reference = timm_radix_softmax(x, 2, 2).view(x.shape)  # timm's view(B, card, radix, -1) keeps the positions
    torch.testing.assert_close(y, reference, rtol=1e-6, atol=1e-7)
    graph, module, x, y = run(spec("network V { input x: [8]  soft: softmax(groups=2, radix=4) }"))
    torch.testing.assert_close(y, timm_radix_softmax(x, 4, 2), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("call, code, message, hint", [
    ("softmax(groups=4)", "NS203", "softmax groups=4 must divide the 6 channels of its input",
     "use a divisor of 6, e.g. groups=3"),
    ("softmax(radix=4)", "NS203", "softmax radix=4 must divide the 6 channels of each of its 1 group",
     "each group holds radix splits of equal size: 6 channels need groups x radix to divide 6"),
    ("softmax(groups=2, radix=2)", "NS203", "softmax radix=2 must divide the 3 channels of each of its 2 groups",
     "each group holds radix splits of equal size: 6 channels need groups x radix to divide 6"),
    ("softmax(radix=1)", "NS203", "softmax(radix=1) is 1 everywhere: a softmax across a single split",
     "ResNeSt's rSoftMax applies sigmoid() when the radix is 1"),
    ('softmax(axis="width", groups=2)', "NS203", 'softmax(axis="width") takes no groups or radix: they split the '
     "channels", 'leave axis="channels" (the default) to softmax within groups of channels'),
])
def test_softmax_groups_that_do_not_fit_are_located_with_a_hint(call, code, message, hint, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [6, 4, 4]\n  y = x -> {call}\n}}\n"))
    assert (diagnostic.code, diagnostic.message, diagnostic.hint) == (code, message, hint)
    assert (diagnostic.span.line, diagnostic.span.col) == (3, 12)


@pytest.mark.parametrize("call, code, message", [
    ('flatten() -> softmax(axis="height")', "NS305", 'softmax(axis="height") expects a feature map [C, H, W], '
     "got [96]"),
    ("capsules(2) -> softmax(groups=2)", "NS305",
     "softmax with groups or radix expects a vector [F] or a feature map [C, H, W], got [48, 2]"),
    ('softmax(axis="depth")', "NS203", "invalid 'axis' of softmax: "),
    ("softmax(groups=0)", "NS303", "'groups' of softmax must be positive, got 0"),
])
def test_softmax_axes_and_ranks_that_do_not_exist_are_refused(call, code, message, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [6, 4, 4]\n  {call}\n}}\n"))
    assert diagnostic.code == code and diagnostic.message.startswith(message), diagnostic


# The op spec and the documented example ---------------------------------------------------------------------

def test_the_arithmetic_op_spec_exports_to_onnx_and_agrees_with_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    sources = Sources()
    graph = netspec.load(ROOT / "tests" / "ops" / "arith.net", sources)
    assert {"sub", "div", "sqrt", "pow", "exp", "log", "pnorm", "softmax"} <= {n.op for n in graph.nodes}
    report = export(graph, sources, tmp_path / "arith.onnx")
    assert report.ok and report.exporter == "torchscript", report.comparisons
    assert [c.batch for c in report.comparisons] == [1, 3]
    assert {"Sub", "Div", "Sqrt", "Pow", "Exp", "Log", "ReduceL2", "Softmax", "Transpose"} <= set(report.ops)


def test_the_standalone_python_module_computes_the_same(tmp_path):
    graph = netspec.load(ROOT / "tests" / "ops" / "arith.net")
    module = to_module(graph, seed=0).eval()
    namespace = {}
    exec(to_python(graph), namespace)
    standalone = namespace["Arith"]().eval()
    standalone.load_state_dict(module.state_dict())
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.equal(standalone(x), module(x))


def timm_split_attention(module, prefix, x, radix, groups):
    """timm's SplitAttn.forward (ResNeSt), with the compiled block's own layers."""
    layer = module.get_submodule
    x = F.relu(layer(f"{prefix}.bn0")(layer(f"{prefix}.conv")(x)))
    batch, rc, height, width = x.shape
    x = x.reshape((batch, radix, rc // radix, height, width))
    x_gap = x.sum(dim=1).mean((2, 3), keepdim=True)
    x_gap = F.relu(layer(f"{prefix}.bn1")(layer(f"{prefix}.fc1")(x_gap)))
    x_attn = timm_radix_softmax(layer(f"{prefix}.fc2")(x_gap), radix, groups).view(batch, -1, 1, 1)
    return (x * x_attn.reshape((batch, radix, rc // radix, 1, 1))).sum(dim=1)


def test_the_documented_split_attention_is_timms_and_checks_as_the_text_says(tmp_path):
    section = (ROOT / "docs" / "language.md").read_text().split("### Arithmetic, norms and softmax", 1)[1]
    path = tmp_path / "attend.net"
    path.write_text(section.split("```\n", 2)[1])
    graph = netspec.load(path)
    block = [n for n in graph.nodes if n.name.startswith("attend.")]
    assert sum(n.params for n in block) == sum(n.params for n in graph.nodes) == 21_984
    assert graph.node("attend.fc1").shape == (32, 1, 1)  # make_divisible(64 * 2 * 0.25, 8, min_value=32), as timm
    assert [(n.shape, n.macs) for n in graph.nodes if n.op == "pnorm"] == [((1, 1, 1), 64)]
    module = to_module(graph, seed=0).eval()
    assert [k for k in module.state_dict() if k.endswith("weight")] == [
        "attend.conv.weight", "attend.bn0.weight", "attend.fc1.weight", "attend.bn1.weight", "attend.fc2.weight"]
    for name in ("attend.bn0", "attend.bn1"):  # statistics other than 0 and 1, so that they matter
        module.get_submodule(name).running_mean.uniform_(-0.1, 0.1)
        module.get_submodule(name).running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        attended = timm_split_attention(module, "attend", x, radix=2, groups=2)
        gem = attended.pow(3).mean((2, 3), keepdim=True).pow(1 / 3)
        torch.testing.assert_close(module(x), gem / gem.norm(2, dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
