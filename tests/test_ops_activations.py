"""Activations (relu6, silu, hardswish, hardsigmoid, mish, elu, prelu) and element-wise merges (mul, broadcasting
add, concat along height or width): torch's functional ops and onnxruntime are the oracles."""

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import netspec  # noqa: E402
from compiled import run  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec import NetspecError, Sources  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.ground.limits import Limits  # noqa: E402


@pytest.mark.parametrize("call, reference", [
    ("relu6()", F.relu6),
    ("silu()", F.silu),
    ("hardswish()", F.hardswish),
    ("hardsigmoid()", F.hardsigmoid),
    ("mish()", F.mish),
    ("elu()", F.elu),
    ("elu(0.3)", lambda x: F.elu(x, alpha=0.3)),
])
def test_activation_equals_the_torch_functional(call, reference, spec):
    graph, module, x, _ = run(spec(f"network A {{ input x: [3, 5, 5]  act: {call} }}"))
    assert graph.node("act").shape == (3, 5, 5) and graph.node("act").params == 0
    assert graph.node("act").macs == 0 and list(module.state_dict()) == []
    x = x * 4  # past every bend: relu6's 0 and 6, the hard ones' -3 and 3
    with torch.no_grad():
        assert torch.equal(module(x), reference(x))


@pytest.mark.parametrize("call, slopes, init", [("prelu()", 1, 0.25), ("prelu(per_channel=true)", 6, 0.25),
                                                ("prelu(per_channel=false, init=0.1)", 1, 0.1)])
def test_prelu_counts_its_slopes_and_equals_torch(call, slopes, init, spec):
    graph, module, x, y = run(spec(f"network P {{ input x: [6, 4, 4]  slope: {call} }}"))
    node = graph.node("slope")
    assert (node.params, node.macs) == (slopes, slopes)  # torchinfo: an element-wise layer's MACs are its params
    weight = module.get_submodule("slope").weight  # "slope.weight": nn.PReLU's key, as torchvision names it
    assert list(module.state_dict()) == ["slope.weight"] and torch.equal(weight, torch.full((slopes,), init))
    assert torch.equal(y, F.prelu(x, weight))
    with torch.no_grad():
        weight.copy_(torch.randn(slopes))  # distinct slopes: each channel must use its own
        assert torch.equal(module(x), F.prelu(x, weight))


def test_prelu_per_channel_on_vectors_learns_one_slope_per_feature(spec):
    graph, module, x, y = run(spec("network V { input x: [2, 3, 3]  flatten() -> prelu(per_channel=true) }"))
    assert graph.nodes[-1].params == 18 and module.state_dict()["1.weight"].shape == (18,)
    assert torch.equal(y, F.prelu(x.flatten(1), module.state_dict()["1.weight"]))


def test_mul_and_add_broadcast_sizes_of_one_like_torch(spec):
    graph, module, x, y = run(spec("""
        network B {
          input x: [4, 5, 5]
          gate = x -> pool: adaptive_avgpool(1)
          spot = x -> project: conv(1, kernel=1)
          outer = gate -> product: mul(spot)
          x -> gated: mul(gate, outer) -> plus_gate: add(gate) -> plus_spot: add(spot, spot)
        }"""))
    shapes = {n.name: n.shape for n in graph.nodes}
    assert shapes["pool"] == (4, 1, 1) and shapes["project"] == (1, 5, 5)
    assert shapes["product"] == (4, 5, 5)  # [4, 1, 1] * [1, 5, 5]: each operand spreads over the other
    assert shapes["gated"] == shapes["plus_gate"] == shapes["plus_spot"] == (4, 5, 5)
    assert sum(graph.node(name).params + graph.node(name).macs
               for name in ("product", "gated", "plus_gate", "plus_spot")) == 0
    with torch.no_grad():
        gate, spot = F.adaptive_avg_pool2d(x, 1), module.get_submodule("project")(x)
        assert torch.equal(y, x * gate * (gate * spot) + gate + spot + spot)
    assert "mul = pool * project" in module.code  # the generated forward reads as arithmetic


def test_a_single_number_broadcasts_over_a_vector_either_way_round(spec):
    graph, module, x, y = run(spec("""
        network V {
          input x: [4, 5, 5]
          flat = x -> flatten()
          one = flat -> weight: linear(1)
          one -> scaled: mul(flat) -> shifted: add(one)
        }"""))
    assert graph.node("weight").shape == (1,)
    assert graph.node("scaled").shape == graph.node("shifted").shape == (100,)
    with torch.no_grad():
        one = module.get_submodule("weight")(x.flatten(1))
        assert torch.equal(y, one * x.flatten(1) + one)


def test_concat_joins_along_height_or_width_like_torch_cat(spec):
    graph, module, x, y = run(spec("""
        network Wide {
          input x: [3, 4, 6]
          narrow = x -> maxpool([1, 2])
          x -> wide: concat(narrow, x, axis="width")
        }"""))
    assert graph.node("wide").shape == (3, 4, 15)
    assert torch.equal(y, torch.cat([x, F.max_pool2d(x, (1, 2)), x], dim=3))
    graph, module, x, y = run(spec("""
        network Tall {
          input x: [3, 4, 6]
          short = x -> maxpool([2, 1])
          short -> tall: concat(x, axis="height")
        }"""))
    assert graph.node("tall").shape == (3, 6, 6)
    assert torch.equal(y, torch.cat([F.max_pool2d(x, (2, 1)), x], dim=2))


RULE = ("operands broadcast between equal ranks where each size is equal or 1: a [C, 1, 1] gate scales each "
        "channel, a [1, H, W] map each position")


@pytest.mark.parametrize("lines, code, message, hint", [
    (["flat = x -> flatten()", "x -> mul(flat)"], "NS301",
     "mul needs operands of one rank, got [4, 6, 6] and [144]", f"{RULE}; reshape or pool the operand to 3 dimensions"),
    (["g = x -> conv(2, kernel=1) -> adaptive_avgpool(1)", "x -> mul(g)"], "NS301",
     "mul needs operands whose sizes are equal or 1, got [4, 6, 6] and [2, 1, 1]",
     f"{RULE}; here the channels differ, 4 and 2"),
    (["s = x -> maxpool(2) -> conv(1, kernel=1)", "x -> mul(s)"], "NS301",
     "mul needs operands whose sizes are equal or 1, got [4, 6, 6] and [1, 3, 3]",
     f"{RULE}; here the heights differ, 6 and 3"),
    (["flat = x -> flatten()", "g = flat -> linear(3)", "x -> mul(g)"], "NS301",
     "mul needs operands of one rank, got [4, 6, 6] and [3]", f"{RULE}; reshape or pool the operand to 3 dimensions"),
    (["flat = x -> flatten()", "x -> add(flat)"], "NS301",
     "add needs operands of one rank, got [4, 6, 6] and [144]", f"{RULE}; reshape or pool the operand to 3 dimensions"),
    (["g = x -> conv(2, kernel=1)", "x -> add(g)"], "NS301",  # the message and hint of before broadcasting
     "add needs operands of one shape, got [4, 6, 6] and [2, 6, 6]",
     'project the shortcut onto the other branch with add(..., project="auto")'),
    (["p = x -> maxpool(2)", "x -> concat(p, axis=\"width\")"], "NS301",
     "concat along width needs operands that agree in channels and height, got [4, 6, 6] and [4, 3, 3]",
     "only the width may differ; make the channels and height agree (pooling, convolutions or padding)"),
    (["p = x -> conv(2, kernel=1)", "x -> concat(p, axis=\"height\")"], "NS301",
     "concat along height needs operands that agree in channels and width, got [4, 6, 6] and [2, 6, 6]",
     "only the height may differ; make the channels and width agree (pooling, convolutions or padding)"),
    (["p = x -> maxpool(2)", "x -> concat(p)"], "NS301",  # along channels: unchanged
     "concat needs operands that differ only in channels, got [4, 6, 6] and [4, 3, 3]",
     "make the branches' spatial sizes agree (padding, strides or pooling)"),
    (["flat = x -> flatten()", "flat -> concat(flat, axis=\"width\")"], "NS305",
     'concat(axis="width") expects a feature map [C, H, W], got [144]',
     "a flattened vector cannot be convolved or pooled; move this layer before flatten()"),
])
def test_operands_that_do_not_fit_give_a_located_error_with_a_hint(lines, code, message, hint, spec):
    body = "\n".join(f"  {line}" for line in lines)
    with pytest.raises(NetspecError) as caught:
        netspec.load(spec(f"network E {{\n  input x: [4, 6, 6]\n{body}\n}}\n"))
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.message, diagnostic.hint) == (code, message, hint)
    last = lines[-1]
    assert (diagnostic.span.line, diagnostic.span.col) == (2 + len(lines), 3 + last.index(last.split("-> ")[-1]))


@pytest.mark.parametrize("call, message", [
    ('concat(x, axis="depth")', "invalid 'axis' of concat: input should be 'channels', 'height' or 'width', "
                                'got "depth"'),
    ("prelu(per_channel=1)", "invalid 'per_channel' of prelu: expected true or false, got 1"),
    ('elu(alpha="big")', "invalid 'alpha' of elu: "),
])
def test_bad_arguments_are_refused_where_they_are_written(call, message, spec):
    with pytest.raises(NetspecError) as caught:
        netspec.load(spec(f"network E {{\n  input x: [4, 6, 6]\n  {call}\n}}\n"))
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.code == "NS203" and diagnostic.message.startswith(message)
    assert (diagnostic.span.line, diagnostic.span.col) == (3, 3 + call.index("=") + 1)


def test_every_new_op_exports_to_onnx_and_agrees_with_pytorch(in_repo, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    sources = Sources()
    graph = netspec.load("tests/ops/activations.net", sources)
    new_ops = {"relu6", "silu", "hardswish", "hardsigmoid", "mish", "elu", "prelu", "mul", "add", "concat"}
    assert new_ops <= {n.op for n in graph.nodes}
    report = export(graph, sources, tmp_path / "activations.onnx")
    assert report.ok and [c.batch for c in report.comparisons] == [1, 3], report.comparisons
    assert {"HardSwish", "HardSigmoid", "Elu", "PRelu", "Mul", "Concat"} <= set(report.ops)
    assert max(c.max_abs for c in report.comparisons) < 1e-5


# The attention examples ----------------------------------------------------------

def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def basic_block(cin, c, attention):
    """Two 3x3 conv + batch norm pairs, the attention, and a projected shortcut when the channels change."""
    shortcut = cin * c + bn(c) if cin != c else 0
    return conv(cin, c, 3, False) + bn(c) + conv(c, c, 3, False) + bn(c) + attention + shortcut


def squeeze_excitation(c, squeeze):
    return conv(c, squeeze, 1) + conv(squeeze, c, 1)  # fc1, fc2


def cbam(c, reduction=16):
    return conv(c, c // reduction, 1) + conv(c // reduction, c, 1) + conv(2, 1, 7, False)  # shared MLP, 7x7 conv


ATTENTION_EXAMPLES = {
    "examples/attention/se.net": (conv(3, 16, 3, False) + bn(16)
                                  + 2 * basic_block(16, 16, squeeze_excitation(16, 4))
                                  + basic_block(16, 32, squeeze_excitation(32, 8))
                                  + basic_block(32, 64, squeeze_excitation(64, 16))
                                  + 64 * 10 + 10),
    "examples/attention/cbam.net": (conv(3, 32, 3, False) + bn(32)
                                    + 2 * basic_block(32, 32, cbam(32))
                                    + basic_block(32, 64, cbam(64))
                                    + basic_block(64, 128, cbam(128))
                                    + 128 * 10 + 10),
}


@pytest.mark.parametrize("path", sorted(ATTENTION_EXAMPLES))
def test_attention_examples_check_with_hand_computed_params(path, in_repo, capsys):
    assert main(["check", path]) == 0
    params = ATTENTION_EXAMPLES[path]
    assert f"Params:      {params:,} (trainable {params:,}, non-trainable 0)" in capsys.readouterr().out
    graph = netspec.load(path)
    module = to_module(graph, seed=0).eval()
    assert sum(p.numel() for p in module.parameters()) == params
    with torch.no_grad():
        assert module(torch.randn(2, *graph.input_shape)).shape == (2, 10)


def block_network(tmp_path, example, network):
    """A network of one block of an attention example, imported from it."""
    path = tmp_path / "block.net"
    path.write_text(f'import "{ROOT / "examples" / "attention" / example}"\n{network}\n')
    return netspec.load(path, limits=Limits(import_roots=(ROOT / "examples" / "attention",)))


def test_the_se_block_computes_what_torchvision_squeeze_excitation_does(tmp_path):
    try:
        from torchvision.ops import SqueezeExcitation
    except Exception as err:  # a torchvision built for another torch fails at import
        pytest.skip(f"torchvision is not importable: {err}")
    graph = block_network(tmp_path, "se.net", "network SE { input x: [16, 7, 7]  se: SqueezeExcitation(16, 4) }")
    torch.manual_seed(0)
    reference = SqueezeExcitation(16, 4).eval()
    ours = to_module(graph).eval()
    assert list(ours.state_dict()) == [f"se.{key}" for key in reference.state_dict()]
    ours.load_state_dict({f"se.{key}": value for key, value in reference.state_dict().items()})
    x = torch.randn(3, 16, 7, 7)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_cbam_shares_one_mlp_between_the_pooled_descriptors_as_the_paper_does(tmp_path):
    graph = block_network(tmp_path, "cbam.net", """
        network CBAM { input x: [32, 6, 6]  channel: ChannelAttention(32, 8) -> spatial: SpatialAttention() }""")
    module = to_module(graph, seed=0).eval()
    fc1, fc2 = module.get_submodule("channel.mlp.fc1"), module.get_submodule("channel.mlp.fc2")
    spatial_conv = next(m for m in module.get_submodule("spatial").children() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(3, 32, 6, 6)
    with torch.no_grad():
        def mlp(descriptor):
            return fc2(F.relu(fc1(descriptor)))

        refined = x * torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))
        maps = torch.cat([refined.mean(1, keepdim=True), refined.amax(1, keepdim=True)], dim=1)
        expected = refined * torch.sigmoid(spatial_conv(maps))
        torch.testing.assert_close(module(x), expected, rtol=1e-6, atol=1e-6)


def test_the_documented_gates_check_as_the_text_says(tmp_path):
    section = (ROOT / "docs" / "language.md").read_text().split("### Activations and element-wise products", 1)[1]
    example, _, error = section.split("```\n", 4)[1:4]
    path = tmp_path / "gates.net"
    path.write_text(example)
    graph = netspec.load(path)
    assert sum(n.params for n in graph.nodes) == 39_170 and graph.nodes[-1].params == 64
    assert graph.node("excite").shape == (64, 1, 1) and graph.nodes[-1].shape == (64, 28, 28)
    assert [n.shape for n in graph.nodes if n.op == "mul"] == [(64, 28, 28), (64, 28, 28)]
    path.write_text(example.replace("features -> mul(gate)", "features -> mul(squeeze)"))
    with pytest.raises(NetspecError) as caught:
        netspec.load(path)
    [diagnostic] = caught.value.diagnostics
    assert error == f"error[{diagnostic.code}]: {diagnostic.message}\n  = hint: {diagnostic.hint}\n"
