"""Channel slices (`slice`, `split`), zero-padded channels (`pad_channels`) and weight-standardised convolution
(`std_conv`): torch, a reference written from timm's ScaledStdConv2d, and onnxruntime are the oracles."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import netspec  # noqa: E402
from compiled import run  # noqa: E402
from conftest import ROOT, only_error  # noqa: E402
from netspec import Sources  # noqa: E402
from netspec.backends.torch import to_module, to_python  # noqa: E402


# slice ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, shape, reference", [
    ("slice(2, 6)", (4, 5, 7), lambda x: x[:, 2:6]),
    ("slice(0, 1)", (1, 5, 7), lambda x: x[:, 0:1]),
    ("slice(-4)", (4, 5, 7), lambda x: x[:, -4:]),  # the last four channels
    ("slice(3)", (7, 5, 7), lambda x: x[:, 3:]),
    ("slice(-6, -2)", (4, 5, 7), lambda x: x[:, -6:-2]),
    ("slice(1, -1)", (8, 5, 7), lambda x: x[:, 1:-1]),
    ("slice(0, 10)", (10, 5, 7), lambda x: x[:, 0:10]),
    ('slice(1, 4, axis="height")', (10, 3, 7), lambda x: x[:, :, 1:4]),
    ('slice(-3, axis="width")', (10, 5, 3), lambda x: x[:, :, :, -3:]),
])
def test_slice_equals_python_slicing_of_the_tensor(call, shape, reference, spec):
    graph, module, x, y = run(spec(f"network S {{ input x: [10, 5, 7]  cut: {call} }}"))
    node = graph.node("cut")
    assert (node.shape, node.params, node.macs) == (shape, 0, 0)
    assert list(module.state_dict()) == [] and torch.equal(y, reference(x))


def test_slice_and_split_cut_the_features_of_a_vector(spec):
    graph, module, x, y = run(spec("""
        network V {
          input x: [2, 3, 4]
          flat = x -> flatten()
          a = flat -> slice(5, 9)
          flat -> split([20, 4], 1) -> concat(a)
        }"""))
    assert [n.shape for n in graph.nodes[2:]] == [(4,), (4,), (8,)]
    assert torch.equal(y, torch.cat([x.flatten(1)[:, 20:], x.flatten(1)[:, 5:9]], dim=1))


@settings(max_examples=40, deadline=None)
@given(channels=st.integers(1, 6), start=st.integers(-8, 8), stop=st.one_of(st.none(), st.integers(-8, 8)))
def test_slice_keeps_what_python_keeps_or_is_refused_where_python_would_clamp_or_give_nothing(
        tmp_path_factory, channels, start, stop):
    path = tmp_path_factory.mktemp("slice") / "s.net"
    call = f"slice({start})" if stop is None else f"slice({start}, {stop})"
    path.write_text(f"network S {{ input x: [{channels}, 2, 2]  {call} }}")
    end = channels if stop is None else stop
    in_range = -channels <= start < channels and -channels <= end <= channels
    kept = torch.zeros(1, channels, 2, 2)[:, start:stop].shape[1]
    if in_range and kept > 0:
        assert netspec.load(path).nodes[-1].shape == (kept, 2, 2)
    else:
        assert only_error(path).code == ("NS203" if not in_range else "NS303")


OUT_OF_RANGE = ("start lies in -10 to 9 and stop in -10 to 10 (left out: the end); negative ones count from the end, "
                "as in Python")


@pytest.mark.parametrize("call, code, message, hint", [
    ("slice(2, 11)", "NS203", "slice(2, 11) is out of range for 10 channels",
     OUT_OF_RANGE),
    ("slice(10)", "NS203", "slice(10) is out of range for 10 channels",
     OUT_OF_RANGE),
    ("slice(-11, 2)", "NS203", "slice(-11, 2) is out of range for 10 channels",
     OUT_OF_RANGE),
    ("slice(5, 3)", "NS303", "slice(5, 3) of 10 channels is empty: it starts at 5 and stops at 3",
     "stop must come after start (negative ones count from the end); slice(5, 6) keeps one"),
    ("slice(-2, 8)", "NS303", "slice(-2, 8) of 10 channels is empty: it starts at 8 and stops at 8",
     "stop must come after start (negative ones count from the end); slice(8, 9) keeps one"),
    ('slice(0, 6, axis="height")', "NS203", "slice(0, 6) is out of range for 5 rows",
     "start lies in -5 to 4 and stop in -5 to 5 (left out: the end); negative ones count from the end, as in Python"),
    ("split([4, 4], 2)", "NS203", "split index 2 is out of range for 2 pieces", "pieces are numbered 0 to 1"),
    ("split([4, 4], 0)", "NS203", "split sizes 4 + 4 = 8 must add up to the 10 channels of its input",
     "e.g. split([4, 6], 0)"),
    ("split([6, 6], 1)", "NS203", "split sizes 6 + 6 = 12 must add up to the 10 channels of its input",
     "e.g. split([6, 4], 1)"),
    ("split([12, 1], 1)", "NS203", "split sizes 12 + 1 = 13 must add up to the 10 channels of its input",
     "the sizes must add up to the 10 channels of its input"),
])
def test_slice_and_split_mistakes_are_located_with_the_numbers(call, code, message, hint, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [10, 5, 7]\n  y = x -> {call}\n}}\n"))
    assert (diagnostic.code, diagnostic.message, diagnostic.hint) == (code, message, hint)
    assert (diagnostic.span.line, diagnostic.span.col) == (3, 12)


@pytest.mark.parametrize("call, code, message", [
    ('slice(0, 1, axis="width")', "NS305", 'slice(axis="width") expects a feature map [C, H, W], got [40]'),
    ("split([], 0)", "NS203", "invalid 'sizes' of split: "),
    ("split([4, 0], 0)", "NS303", "'sizes' of split must be positive, got 0"),
    ("slice(1.5, 2)", "NS203", "invalid 'start' of slice: expected an integer, got 1.5"),
    ("pad_channels(-1)", "NS303", "'after' of pad_channels must be non-negative, got -1"),
])
def test_bad_arguments_and_ranks_are_refused(call, code, message, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [10, 2, 2]\n  flatten() -> {call}\n}}\n"))
    assert diagnostic.code == code and diagnostic.message.startswith(message), diagnostic


# split ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, index", [([3, 4, 5], 0), ([3, 4, 5], 1), ([3, 4, 5], 2), ([12], 0), ([1, 11], 1)])
def test_split_is_the_index_th_piece_of_torch_split(sizes, index, spec):
    graph, module, x, y = run(spec(f"network S {{ input x: [12, 3, 3]  piece: split({sizes}, {index}) }}"))
    assert graph.node("piece").shape == (sizes[index], 3, 3)
    assert torch.equal(y, torch.split(x, sizes, dim=1)[index])


# pad_channels ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, before, after", [("pad_channels(3)", 0, 3), ("pad_channels(2, before=5)", 5, 2),
                                                 ("pad_channels(0, 4)", 4, 0), ("pad_channels(0)", 0, 0)])
def test_pad_channels_equals_f_pad_on_the_channels(call, before, after, spec):
    graph, module, x, y = run(spec(f"network P {{ input x: [4, 3, 5]  pad: {call} }}"))
    node = graph.node("pad")
    assert (node.shape, node.params, node.macs) == ((4 + before + after, 3, 5), 0, 0)
    assert torch.equal(y, F.pad(x, (0, 0, 0, 0, before, after)))
    assert torch.count_nonzero(y[:, :before]) == torch.count_nonzero(y[:, before + 4:]) == 0


def test_resnet_option_a_shortcut_replaces_the_mean_times_zero_trick(spec):
    """CIFAR ResNet's parameter-free shortcut: every second row and column, the new channels zero."""
    graph, module, x, y = run(spec("""
        network OptionA {
          input x: [16, 8, 8]
          shortcut = x -> maxpool(1, stride=2) -> pad: pad_channels(8, before=8)
          x -> conv(32, kernel=3, stride=2, padding=1, bias=false) -> add(shortcut)
        }"""))
    assert (graph.node("pad").shape, graph.node("pad").params) == ((32, 4, 4), 0)
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        assert torch.equal(y, conv(x) + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)))
    assert sum(n.params for n in graph.nodes) == 32 * 16 * 9


# std_conv -----------------------------------------------------------------------------------------------------

def timm_scaled_std_conv(x, weight, bias, gain, gamma, eps, stride=1, padding=0, dilation=1, groups=1):
    """timm's ScaledStdConv2d.forward, written out: the weight batch-normalised per output channel (biased
    variance, eps), times gain * gamma * fan_in ** -0.5."""
    out_channels = weight.shape[0]
    scale = gamma * weight[0].numel() ** -0.5
    standard = F.batch_norm(weight.reshape(1, out_channels, -1), None, None, weight=(gain * scale).view(-1),
                            training=True, momentum=0.0, eps=eps).reshape_as(weight)
    return F.conv2d(x, standard, bias, stride, padding, dilation, groups)


def timm_std_conv(x, weight, bias, eps, stride=1, padding=0, dilation=1, groups=1):
    """timm's StdConv2d.forward (Big Transfer): the standardised weight alone."""
    standard = F.batch_norm(weight.reshape(1, weight.shape[0], -1), None, None, training=True, momentum=0.0,
                            eps=eps).reshape_as(weight)
    return F.conv2d(x, standard, bias, stride, padding, dilation, groups)


@pytest.mark.parametrize("call, kwargs", [
    ("std_conv(8, kernel=3, padding=1)", dict(padding=1)),
    ("std_conv(8, kernel=3, stride=2, gamma=1.7139, eps=1e-5)", dict(stride=2, gamma=1.7139, eps=1e-5)),
    ("std_conv(8, kernel=[1, 3], groups=2, bias=false)", dict(groups=2)),
    ('std_conv(8, kernel=3, padding="same", dilation=2)', dict(padding="same", dilation=2)),
])
def test_std_conv_computes_timms_scaled_std_conv(call, kwargs, spec):
    graph, module, x, y = run(spec(f"network N {{ input x: [6, 9, 9]  conv: {call} }}"))
    layer = module.get_submodule("conv")
    state = module.state_dict()
    bias = "bias=false" not in call
    assert list(state) == (["conv.weight", "conv.bias", "conv.gain"] if bias else ["conv.weight", "conv.gain"])
    assert state["conv.gain"].shape == (8, 1, 1, 1) and torch.equal(state["conv.gain"], torch.ones(8, 1, 1, 1))
    with torch.no_grad():
        layer.gain.copy_(torch.rand(8, 1, 1, 1) + 0.5)  # a learnt gain, one per output channel
        if bias:
            layer.bias.copy_(torch.randn(8))
        gamma, eps = kwargs.pop("gamma", 1.0), kwargs.pop("eps", 1e-6)
        expected = timm_scaled_std_conv(x, layer.weight, layer.bias, layer.gain, gamma, eps, **kwargs)
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


def test_std_conv_without_gain_is_timms_std_conv(spec):
    graph, module, x, y = run(spec("network N { input x: [6, 9, 9]  conv: std_conv(4, 3, gain=false, eps=1e-8) }"))
    layer = module.get_submodule("conv")
    assert list(module.state_dict()) == ["conv.weight", "conv.bias"]
    assert (graph.node("conv").params, graph.node("conv").macs) == (6 * 4 * 9 + 4, 6 * 4 * 9 * 7 * 7)
    with torch.no_grad():
        torch.testing.assert_close(y, timm_std_conv(x, layer.weight, layer.bias, 1e-8), rtol=1e-5, atol=1e-5)


def test_std_conv_counts_weights_bias_and_gain_and_the_macs_of_a_convolution(spec):
    graph = netspec.load(spec("""
        network N {
          input x: [16, 14, 14]
          down = x -> a: std_conv(32, kernel=3, stride=2, padding=1)
          x -> b: std_conv(32, kernel=3, groups=4, bias=false)
          x -> c: conv(32, kernel=3, groups=4, bias=false) -> add(b) -> maxpool(2, padding=1) -> add(down)
        }"""))
    a, b, c = graph.node("a"), graph.node("b"), graph.node("c")
    assert (a.shape, a.params, a.macs) == ((32, 7, 7), 16 * 32 * 9 + 32 + 32, 16 * 32 * 9 * 7 * 7)
    assert (b.shape, b.params, b.macs) == ((32, 12, 12), 4 * 32 * 9 + 32, 4 * 32 * 9 * 12 * 12)
    assert (b.macs, b.params - 32) == (c.macs, c.params)  # a convolution's MACs; the gain adds a parameter a map
    module = to_module(graph, seed=0)
    assert sum(p.numel() for p in module.parameters()) == a.params + b.params + c.params


@pytest.mark.parametrize("call, code, message, hint", [
    ("std_conv(4, kernel=1, groups=4)", "NS203",
     "std_conv standardises the weights of each output channel, but each has one "
     "(in_channels / groups x kernel = 4 / 4 x 1x1 = 1): standardised, it is 0",
     "use conv() for a depthwise 1x1 convolution, or a larger kernel"),
    ("std_conv(6, kernel=3, groups=4)", "NS203",
     "groups=4 must divide both the input channels (4) and out_channels (6)", None),
    ("std_conv(4, kernel=9)", "NS302",
     "std_conv kernel 9 is larger than its input height 6: (6 + 2*0 - 1*(9-1) - 1) // 1 + 1 = -2",
     "reduce the kernel, add padding, or remove a downsampling layer before it"),
])
def test_std_conv_mistakes_are_located(call, code, message, hint, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [4, 6, 6]\n  y = x -> {call}\n}}\n"))
    assert (diagnostic.code, diagnostic.message, diagnostic.hint) == (code, message, hint)
    assert (diagnostic.span.line, diagnostic.span.col) == (3, 12)


@pytest.mark.parametrize("call, message", [
    ("std_conv(4, 3, gain=false, gamma=2.0)",
     "invalid 'std_conv': gamma scales the learnt gain; with gain=false (timm's StdConv2d) there is none"),
    ('std_conv(4, 3, stride=2, padding="same")', "invalid 'std_conv': padding='same' needs stride 1"),
    ("std_conv(4, 3, eps=0.0)", "invalid 'eps' of std_conv: "),
])
def test_std_conv_arguments_that_contradict_each_other_are_refused(call, message, spec):
    diagnostic = only_error(spec(f"network E {{\n  input x: [4, 6, 6]\n  {call}\n}}\n"))
    assert diagnostic.code == "NS203"
    assert diagnostic.message.replace("invalid std_conv", "invalid 'std_conv'").startswith(message), diagnostic


# The op spec, end to end -------------------------------------------------------------------------------------

def test_the_channel_ops_export_to_onnx_and_agree_with_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    sources = Sources()
    graph = netspec.load(ROOT / "tests" / "ops" / "channels.net", sources)
    assert {"slice", "split", "pad_channels", "std_conv"} <= {n.op for n in graph.nodes}
    report = export(graph, sources, tmp_path / "channels.onnx")
    assert report.ok and report.exporter == "torchscript", report.comparisons
    assert [c.batch for c in report.comparisons] == [1, 3]
    assert {"Slice", "Split", "Pad", "Conv", "ReduceMean", "Sqrt"} <= set(report.ops)


def test_the_standalone_python_module_computes_the_same(tmp_path):
    graph = netspec.load(ROOT / "tests" / "ops" / "channels.net")
    module = to_module(graph, seed=0).eval()
    namespace = {}
    exec(to_python(graph), namespace)
    standalone = namespace["Channels"]().eval()
    assert list(standalone.state_dict()) == list(module.state_dict())
    standalone.load_state_dict(module.state_dict())
    x = torch.randn(2, 12, 7, 7)
    with torch.no_grad():
        assert torch.equal(standalone(x), module(x))


def test_the_documented_channel_example_checks_as_the_text_says(tmp_path):
    section = (ROOT / "docs" / "language.md").read_text().split("### Channels: slices, splits and padding", 1)[1]
    example, _, error = section.split("```\n", 4)[1:4]
    path = tmp_path / "channels.net"
    path.write_text(example)
    graph = netspec.load(path)
    ghost = [n for n in graph.nodes if n.name.startswith("ghost.")]
    assert sum(n.params for n in ghost) == 377 and ghost[-1].shape == (25, 32, 32)
    assert [n.shape for n in ghost if n.op == "concat"] == [(26, 32, 32)]  # 13 + 13 maps
    conv = graph.node("conv")
    assert (conv.params, conv.macs) == (25 * 32 * 9 + 32 + 32, 25 * 32 * 9 * 16 * 16) == (7_264, 1_843_200)
    assert [n.shape for n in graph.nodes if n.op == "pad_channels"] == [(32, 16, 16)]
    assert sum(n.params for n in graph.nodes) == 7_641 and graph.nodes[-1].shape == (16, 16, 16)
    path.write_text(example.replace("split([8, 8, 16], 2)", "split([8, 8, 8], 2)"))
    diagnostic = only_error(path)
    assert error == f"error[{diagnostic.code}]: {diagnostic.message}\n  = hint: {diagnostic.hint}\n"
