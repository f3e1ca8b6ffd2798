"""Layer, group and instance norm, layer scale, stochastic depth and linear over channels (issue 19: ConvNeXt,
EfficientNet): torch.nn and torchvision are the oracles, for outputs, state_dict keys and counts."""

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import netspec  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec import Sources  # noqa: E402
from netspec.backends.torch import load_foreign_state_dict, to_module, to_python  # noqa: E402


def torchvision():
    try:
        import torchvision.models.convnext
        import torchvision.ops
    except Exception as err:  # a torchvision built for another torch fails at import
        pytest.skip(f"torchvision is not importable: {err}")
    return torchvision


def spec(tmp_path, body, shape):
    """A network over an input of `shape` whose body starts on line 3, column 3."""
    path = tmp_path / "n.net"
    path.write_text(f"network N {{\n  input x: {shape}\n  {body}\n}}\n")
    return path


def compiled(tmp_path, body, shape):
    graph = netspec.load(spec(tmp_path, body, shape))
    module = to_module(graph, seed=0).eval()
    with torch.no_grad():  # random affine parameters, so a wrong scale or shift shows
        for parameter in module.parameters():
            parameter.normal_()
    return graph, module


def own_state(module, prefix):
    return {k.removeprefix(prefix): v for k, v in module.state_dict().items()}


# Outputs equal the references' ------------------------------------------------------------------------------

@pytest.mark.parametrize("body, shape, reference", [
    ("norm: layernorm(eps=1e-6)", "[12]", lambda: nn.LayerNorm(12, eps=1e-6)),
    ("norm: layernorm(affine=false)", "[12]", lambda: nn.LayerNorm(12, elementwise_affine=False)),
    ("norm: layernorm(eps=1e-6)", "[6, 5, 7]", lambda: torchvision().models.convnext.LayerNorm2d(6, eps=1e-6)),
    ("norm: layernorm(affine=false)", "[6, 5, 7]",
     lambda: torchvision().models.convnext.LayerNorm2d(6, elementwise_affine=False)),
    ("norm: groupnorm(3, eps=1e-4)", "[6, 5, 7]", lambda: nn.GroupNorm(3, 6, eps=1e-4)),
    ("norm: groupnorm(2, affine=false)", "[6]", lambda: nn.GroupNorm(2, 6, affine=False)),
    ("norm: instancenorm()", "[6, 5, 7]", lambda: nn.InstanceNorm2d(6)),
    ("norm: instancenorm(eps=1e-3, affine=true)", "[6, 5, 7]", lambda: nn.InstanceNorm2d(6, eps=1e-3, affine=True)),
])
def test_norms_equal_torch_with_the_same_state_dict(tmp_path, body, shape, reference):
    graph, module = compiled(tmp_path, body, shape)
    ref = reference().eval()
    assert {k: v.shape for k, v in own_state(module, "norm.").items()} == {k: v.shape for k, v in
                                                                          ref.state_dict().items()}
    ref.load_state_dict(own_state(module, "norm."))
    x = torch.randn(3, *graph.input_shape) * 4 + 1
    with torch.no_grad():
        assert torch.equal(module(x), ref(x))


def test_map_layernorm_normalises_the_channels_at_each_position(tmp_path):
    _, module = compiled(tmp_path, "norm: layernorm(affine=false)", "[6, 5, 7]")
    x = torch.randn(2, 6, 5, 7) * 3 - 2
    mean, var = x.mean(dim=1, keepdim=True), x.var(dim=1, unbiased=False, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(module(x), (x - mean) / torch.sqrt(var + 1e-5))
    assert isinstance(module.get_submodule("norm"), nn.LayerNorm)


def test_tracked_instancenorm_updates_and_uses_running_statistics_as_torch(tmp_path):
    _, module = compiled(tmp_path, "norm: instancenorm(affine=true, track_running_stats=true)", "[4, 6, 6]")
    ref = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    ref.load_state_dict(own_state(module, "norm."))
    module.train()
    x = torch.randn(5, 4, 6, 6) * 2 + 3
    with torch.no_grad():
        assert torch.equal(module(x), ref.train()(x))
        assert torch.equal(module.get_buffer("norm.running_mean"), ref.running_mean)
        assert float(module.get_buffer("norm.running_mean").abs().min()) > 0.1  # really updated from zeros
        assert torch.equal(module.eval()(x), ref.eval()(x))  # normalised by the running statistics


def test_linear_over_channels_is_a_linear_layer_at_every_position(tmp_path):
    graph, module = compiled(tmp_path, "fc: linear(5, over=\"channels\")", "[3, 4, 6]")
    (fc,) = [n for n in graph.nodes if n.op == "linear"]
    assert fc.shape == (5, 4, 6) and fc.params == 3 * 5 + 5 and fc.macs == 3 * 5 * 4 * 6
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {"fc.weight": (5, 3), "fc.bias": (5,)}
    layer = module.get_submodule("fc")
    assert isinstance(layer, nn.Linear)
    x = torch.randn(2, 3, 4, 6)
    with torch.no_grad():
        out = module(x)
        assert torch.equal(out, nn.functional.linear(x.permute(0, 2, 3, 1), layer.weight, layer.bias)
                           .permute(0, 3, 1, 2))
        torch.testing.assert_close(out, nn.functional.conv2d(x, layer.weight[:, :, None, None], layer.bias))


def test_linear_over_features_is_unchanged(tmp_path):
    graph, module = compiled(tmp_path, "fc: linear(5)", "[3]")
    assert graph.nodes[-1].macs == 3 * 5 + 5 and type(module.get_submodule("fc")) is nn.Linear


# Layer scale: a bare parameter on the enclosing module ---------------------------------------------------------

def test_layer_scale_is_a_parameter_named_by_its_label_on_the_enclosing_module(tmp_path):
    graph, module = compiled(tmp_path, "features: { conv(4, kernel=1) -> layer_scale: layer_scale(0.25) } "
                                       "-> flatten() -> top: layer_scale(3.0)", "[2, 3, 3]")
    fresh = to_module(graph, seed=0)
    own = dict(fresh.get_submodule("features").named_parameters(recurse=False))
    assert list(own) == ["layer_scale"] and "features.layer_scale" not in dict(fresh.named_modules())
    assert torch.equal(own["layer_scale"], torch.full((4, 1, 1), 0.25))
    assert torch.equal(fresh.get_parameter("top"), torch.full((36,), 3.0))
    assert [(n.name, n.params) for n in graph.nodes if n.op == "layer_scale"] == [("features.layer_scale", 4),
                                                                                 ("top", 36)]
    x = torch.randn(2, 2, 3, 3)
    with torch.no_grad():
        conv = module.get_submodule("features.0")(x)
        expected = (conv * module.get_parameter("features.layer_scale")).flatten(1) * module.get_parameter("top")
        assert torch.equal(module(x), expected)


def test_layer_scale_is_trained_unless_frozen(tmp_path):
    _, module = compiled(tmp_path, "a: layer_scale() -> b: layer_scale(frozen=true)", "[3]")
    module(torch.randn(4, 3)).sum().backward()
    assert module.get_parameter("a").grad is not None and module.get_parameter("b").grad is None
    assert not module.get_parameter("b").requires_grad


def test_generated_python_registers_the_same_parameters(tmp_path):
    graph = netspec.load(ROOT / "tests" / "ops" / "norm.net")
    namespace = {}
    exec(compile(to_python(graph), "generated", "exec"), namespace)
    generated = namespace[graph.name]().eval()
    module = to_module(graph, seed=0).eval()
    assert [(k, v.shape) for k, v in generated.state_dict().items()] == [(k, v.shape) for k, v in
                                                                         module.state_dict().items()]
    assert torch.equal(generated.get_parameter("unit.scale"), torch.full((8, 1, 1), 0.5))
    generated.load_state_dict(module.state_dict())
    x = torch.randn(2, 4, 10, 10)
    with torch.no_grad():
        assert torch.equal(generated(x), module(x))


# Stochastic depth ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_draws_as_torchvision_and_is_the_identity_in_eval(tmp_path, mode):
    _, module = compiled(tmp_path, f"stochastic_depth(0.3, mode=\"{mode}\")", "[4, 3, 3]")
    ref = torchvision().ops.StochasticDepth(0.3, mode)
    x = torch.randn(16, 4, 3, 3)
    assert torch.equal(module.eval()(x), x) and torch.equal(ref.eval()(x), x)
    module.train(), ref.train()
    for seed in range(5):
        torch.manual_seed(seed)
        ours = module(x)
        torch.manual_seed(seed)
        assert torch.equal(ours, ref(x))


def test_row_mode_zeroes_whole_samples_and_scales_the_survivors(tmp_path):
    _, module = compiled(tmp_path, "stochastic_depth(0.25)", "[3, 2, 2]")
    x = torch.rand(4000, 3, 2, 2) + 1  # no zeros of its own
    torch.manual_seed(0)
    out = module.train()(x)
    dropped = (out == 0).flatten(1).all(dim=1)
    kept = ~dropped
    assert torch.equal(dropped, (out == 0).flatten(1).any(dim=1))  # a sample is zeroed whole or not at all
    assert torch.equal(out[kept], x[kept] * (1 / 0.75))  # the mask holds 1 / (1 - p)
    assert abs(dropped.float().mean().item() - 0.25) < 0.03  # binomial, 4000 draws: sd 0.007


def test_batch_mode_zeroes_or_scales_the_whole_batch(tmp_path):
    _, module = compiled(tmp_path, "stochastic_depth(0.5, mode=\"batch\")", "[3]")
    x = torch.rand(8, 3) + 1
    torch.manual_seed(0)
    outcomes = []
    for _ in range(200):
        out = module.train()(x)
        assert torch.equal(out, torch.zeros_like(x)) or torch.equal(out, x / 0.5)
        outcomes.append(bool(out.any()))
    assert 70 < sum(outcomes) < 130  # p = 0.5 over 200 batches: sd 7


# Counts --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, shape, params, buffers, macs", [
    ("layernorm()", "[8, 5, 5]", 16, 0, 16),
    ("layernorm(affine=false)", "[8]", 0, 0, 0),
    ("groupnorm(4)", "[8, 5, 5]", 16, 0, 16),
    ("instancenorm()", "[8, 5, 5]", 0, 0, 0),
    ("instancenorm(track_running_stats=true)", "[8, 5, 5]", 0, 17, 0),
    ("instancenorm(affine=true, track_running_stats=true)", "[8, 5, 5]", 16, 17, 16),
    ("layer_scale()", "[8, 5, 5]", 8, 0, 8),
    ("stochastic_depth(0.1)", "[8, 5, 5]", 0, 0, 0),
    ("linear(32, over=\"channels\")", "[8, 5, 5]", 8 * 32 + 32, 0, 8 * 32 * 25),
    ("linear(32, over=\"channels\", bias=false)", "[8, 5, 5]", 8 * 32, 0, 8 * 32 * 25),
])
def test_counts_are_exact_and_match_the_module(tmp_path, body, shape, params, buffers, macs):
    graph, module = compiled(tmp_path, body, shape)
    node = graph.nodes[-1]
    assert (node.params, node.buffers, node.macs) == (params, buffers, macs)
    assert sum(p.numel() for p in module.parameters()) == params
    assert sum(b.numel() for b in module.buffers()) == buffers


# ConvNeXt's block, written in netspec, against torchvision's ----------------------------------------------------

CNBLOCK = """
# torchvision.models.convnext.CNBlock(dim, layer_scale=1e-6, stochastic_depth_prob=p)
block CNBlock(dim, p=0.1) {
  input x
  block: {
    conv(dim, kernel=7, padding=3, groups=dim)
    layernorm(eps=1e-6)
    linear(4 * dim, over="channels")
    gelu()
    linear(dim, over="channels")
  }
  layer_scale: layer_scale(1e-6)
  stochastic_depth: stochastic_depth(p)
  add(x)
}

network Block {
  input x: [16, 14, 14]
  ...CNBlock(16)  # spread: the block's layers at the top level, keyed as torchvision keys a lone CNBlock
}
"""


def test_convnext_block_loads_torchvisions_weights_and_agrees(tmp_path):
    path = tmp_path / "cnblock.net"
    path.write_text(CNBLOCK)
    graph = netspec.load(path)
    module = to_module(graph, seed=0)
    ref = torchvision().models.convnext.CNBlock(16, layer_scale=1e-6, stochastic_depth_prob=0.1)
    assert sum(n.params for n in graph.nodes) == sum(p.numel() for p in ref.parameters())
    with torch.no_grad():
        for parameter in ref.parameters():  # layer_scale too, or the branch would barely count
            parameter.normal_(std=0.2)
    # torchvision numbers its Sequential around two Permute modules (block.1, block.6) that a channels-first
    # layer norm and linear do not need, so the later layers sit one or two numbers lower; order and shapes agree.
    pairs = load_foreign_state_dict(module, ref.state_dict())
    assert pairs == [("layer_scale", "layer_scale"), ("block.0.weight", "block.0.weight"),
                     ("block.0.bias", "block.0.bias"), ("block.1.weight", "block.2.weight"),
                     ("block.1.bias", "block.2.bias"), ("block.2.weight", "block.3.weight"),
                     ("block.2.bias", "block.3.bias"), ("block.4.weight", "block.5.weight"),
                     ("block.4.bias", "block.5.bias")]
    x = torch.randn(4, 16, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(x), ref.eval()(x))
        torch.manual_seed(1)
        ours = module.train()(x)
        torch.manual_seed(1)
        torch.testing.assert_close(ours, ref.train()(x))  # the same samples dropped


def test_the_documented_convnext_stage_checks_as_the_text_says(tmp_path):
    section = (ROOT / "docs" / "language.md").read_text().split(
        "### Normalisation, layer scale and stochastic depth", 1)[1]
    path = tmp_path / "stage.net"
    path.write_text(section.split("```\n", 2)[1])
    graph = netspec.load(path)
    assert sum(n.params for n in graph.nodes) == 237_888 == 3 * 79_296
    first = [n for n in graph.nodes if n.name.startswith("stage.0.")]
    assert sum(n.macs for n in first) == 245_963_040
    assert sum(n.macs for n in first if n.op == "linear") == 231_211_008
    assert [n.args.p for n in graph.nodes if n.op == "stochastic_depth"] == [0.0, 0.1 / 17, 0.2 / 17]
    ref = torchvision().models.convnext.CNBlock(96, layer_scale=1e-6, stochastic_depth_prob=0.0)
    assert sum(p.numel() for p in ref.parameters()) == 79_296
    with torch.device("meta"):
        module = to_module(graph)
    assert list(module.state_dict())[:3] == ["stage.0.layer_scale", "stage.0.block.0.weight", "stage.0.block.0.bias"]


# Mistakes are located errors with a hint ------------------------------------------------------------------------

@pytest.mark.parametrize("body, shape, code, message, hint", [
    ("conv(6, kernel=1) -> groupnorm(4)", "[3, 5, 5]", "NS203",
     "groups=4 must divide the 6 channels of its input", "use a divisor of 6, e.g. groupnorm(3)"),
    ("conv(8, kernel=1) -> capsules(4) -> layer_scale()", "[3, 5, 5]", "NS305",
     "layer_scale expects a vector [F] or a feature map [C, H, W], got [50, 4]",
     "capsules have no channels; apply it to the feature map before capsules(...)"),
    ("flatten() -> instancenorm()", "[3, 5, 5]", "NS305", "instancenorm expects a feature map [C, H, W], got [75]",
     "a flattened vector cannot be convolved or pooled; move this layer before flatten()"),
    ("flatten() -> linear(4, over=\"channels\")", "[3, 5, 5]", "NS305",
     "linear(over=\"channels\") expects a feature map [C, H, W], got [75]", "over a vector, drop over: linear(4)"),
    ("conv(8, kernel=1) -> linear(4)", "[3, 5, 5]", "NS305", "linear expects a vector [F], got [8, 5, 5]",
     "insert flatten() before it, or apply it at every position with linear(4, over=\"channels\")"),
])
def test_shape_mistakes_are_located_with_a_hint(tmp_path, body, shape, code, message, hint):
    with pytest.raises(netspec.NetspecError) as caught:
        netspec.load(spec(tmp_path, body, shape))
    (error,) = caught.value.diagnostics
    assert (error.code, error.message, error.hint) == (code, message, hint)
    assert (error.span.line, error.span.col) == (3, 3 + body.rindex("-> ") + 3)


@pytest.mark.parametrize("body, value, code", [
    ("stochastic_depth(1.5)", "1.5", "NS203"),
    ("stochastic_depth(0.1, mode=\"column\")", "\"column\"", "NS203"),
    ("layer_scale(\"small\")", "\"small\"", "NS203"),
    ("groupnorm(0)", "0", "NS303"),
])
def test_bad_arguments_are_located_at_the_value(tmp_path, body, value, code):
    with pytest.raises(netspec.NetspecError) as caught:
        netspec.load(spec(tmp_path, body, "[4, 5, 5]"))
    (error,) = caught.value.diagnostics
    assert error.code == code and (error.span.line, error.span.col) == (3, 3 + body.index(value))


# ONNX ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tracked", [True, False])
def test_every_op_of_this_group_exports_to_onnx_and_agrees_with_pytorch(tmp_path, tracked):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    from netspec.backends.onnx import export

    text = (ROOT / "tests" / "ops" / "norm.net").read_text()
    assert "instancenorm(affine=true, track_running_stats=true)" in text
    path = tmp_path / "norm.net"
    path.write_text(text if tracked else text.replace("track_running_stats=true", "track_running_stats=false"))
    sources = Sources()
    report = export(netspec.load(path, sources), sources, tmp_path / "norm.onnx")
    assert report.ok, report.comparisons
    assert [c.batch for c in report.comparisons] == [1, 3]
    if tracked:
        # TorchScript's exporter cannot export an instance norm with running statistics for a dynamic batch (its
        # symbolic reshapes to [1, N*C, H, W] whatever the mode); the torch.export-based one then does.
        assert report.exporter.startswith("torch.export-based") and "instance_norm" in report.exporter
        return
    assert report.exporter == "torchscript"
    assert {"LayerNormalization", "InstanceNormalization", "MatMul", "Mul"} <= set(report.ops)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "norm.onnx").graph.initializer}
    assert weights["unit.scale"].shape == (8, 1, 1) and (weights["unit.scale"] == 0.5).all()
    assert weights["scale"].shape == (8,) and weights["unit.1.weight"].shape == (8,)  # the channel layer norm


def test_instancenorm_over_a_single_position_is_refused_as_torch_refuses_it(tmp_path):
    spec = tmp_path / "one.net"
    spec.write_text("network N {\n  input x: [2, 4, 4]\n  global_avgpool() -> instancenorm()\n}\n")
    with pytest.raises(netspec.NetspecError) as excinfo:
        netspec.load(spec)
    [error] = excinfo.value.diagnostics
    assert (error.code, error.span.line, error.span.col) == ("NS302", 3, 23)
    assert error.message == "instancenorm normalises each channel over its positions, but [2, 1, 1] has one position"
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        torch.nn.InstanceNorm2d(2).eval()(torch.randn(2, 2, 1, 1))
