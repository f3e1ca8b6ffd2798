"""Resampling and shape ops (netspec/ops/resample.py, shape.py): shapes, parameters and MACs as the checker
computes them, outputs equal to torch's functional reference, ONNX parity, and located errors for bad inputs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netspec
from conftest import ROOT
from fuzz_inputs import check_front_door

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from netspec.backends.torch import to_module  # noqa: E402


def spec_file(tmp_path, shape, body):
    path = tmp_path / "op.net"
    path.write_text(f"network Op {{\n  input x: {list(shape)}\n  {body}\n}}\n")
    return path


def compiled(tmp_path, shape, body):
    """The analysed graph and its compiled module, in eval mode."""
    graph = netspec.load(spec_file(tmp_path, shape, body))
    return graph, to_module(graph, seed=0).eval()


def run(module, x):
    with torch.no_grad():
        return module(x)


def pair(value):
    return tuple(value) if isinstance(value, list) else (value, value)


# conv_transpose -------------------------------------------------------------------------------------------------

TRANSPOSED = [  # input [C, H, W], out_channels, kernel, stride, padding, output_padding, dilation, groups, bias
    ([4, 7, 7], 6, 3, 2, 1, 1, 1, 2, True),  # the usual x2 up-step with output_padding
    ([3, 5, 6], 5, [2, 3], [2, 1], [0, 1], [1, 0], 1, 1, True),  # rectangular everything
    ([4, 6, 5], 4, 3, 1, 0, 1, 2, 4, False),  # output_padding 1 allowed by dilation 2 at stride 1; depthwise
    ([16, 1, 1], 8, 4, 1, 0, 0, 1, 1, False),  # DCGAN's first step: [100, 1, 1] -> [.., 4, 4]
    ([2, 8, 8], 2, 4, 2, 1, 0, 1, 1, True),  # DCGAN's later steps: doubles the size exactly
    ([6, 4, 9], 3, [3, 1], 3, [2, 0], [2, 1], [1, 2], 3, True),
]


@pytest.mark.parametrize("shape,out,kernel,stride,padding,output_padding,dilation,groups,bias", TRANSPOSED)
def test_conv_transpose_equals_torch(tmp_path, shape, out, kernel, stride, padding, output_padding, dilation,
                                     groups, bias):
    body = (f"conv_transpose({out}, kernel={kernel}, stride={stride}, padding={padding}, "
            f"output_padding={output_padding}, dilation={dilation}, groups={groups}, "
            f"bias={str(bias).lower()})")
    graph, module = compiled(tmp_path, shape, body)
    layer = module.get_submodule("0")
    x = torch.randn(2, *shape)
    expected = F.conv_transpose2d(x, layer.weight, layer.bias, pair(stride), pair(padding), pair(output_padding),
                                  groups, pair(dilation))
    assert torch.equal(run(module, x), expected)
    node = graph.nodes[-1]
    assert node.shape == tuple(expected.shape[1:])
    (kh, kw), c = pair(kernel), shape[0]
    assert node.params == c * out // groups * kh * kw + (out if bias else 0) == sum(p.numel() for p in
                                                                                 module.parameters())
    # fvcore's and torch's flop counter: weights x input positions, no bias; FLOPs = 2 x MACs
    with FlopCounterMode(display=False) as counter:
        F.conv_transpose2d(x[:1], layer.weight, None, pair(stride), pair(padding), pair(output_padding), groups,
                           pair(dilation))
    assert node.macs == c * out // groups * kh * kw * shape[1] * shape[2]
    assert 2 * node.macs == counter.get_total_flops()


def test_conv_transpose_takes_the_init_and_frozen_of_conv(tmp_path):
    _, module = compiled(tmp_path, [2, 3, 3], 'conv_transpose(4, 3, init="zeros", frozen=true)')
    layer = module.get_submodule("0")
    assert isinstance(layer, torch.nn.ConvTranspose2d) and tuple(layer.weight.shape) == (2, 4, 3, 3)
    assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    assert not layer.weight.requires_grad


def checked_or_refused(tmp_path, shape, body):
    """The checker's output shape, or the codes of its errors."""
    try:
        return netspec.load(spec_file(tmp_path, shape, body)).nodes[-1].shape
    except netspec.NetspecError as err:
        return [d.code for d in err.diagnostics]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 4),
       op=st.integers(0, 3), d=st.integers(1, 3))
def test_conv_transpose_shape_is_torchs_or_refused_where_torch_has_no_output(tmp_path_factory, n, k, s, p, op, d):
    body = f"conv_transpose(1, kernel={k}, stride={s}, padding={p}, output_padding={op}, dilation={d})"
    got = checked_or_refused(tmp_path_factory.mktemp("t"), [1, n, n], body)
    try:
        out = F.conv_transpose2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p,
                                 output_padding=op, dilation=d)
    except RuntimeError:
        assert got in (["NS203"], ["NS303"])  # output_padding not below stride or dilation; a negative size
        return
    if out.numel() == 0:  # torch returns an empty map; netspec refuses a size of 0, as it does for an input
        assert got == ["NS303"]
        return
    assert got == tuple(out.shape[1:])


# upsample, pixel_shuffle --------------------------------------------------------------------------------------

UPSAMPLES = [  # netspec arguments, F.interpolate's
    ("upsample(2)", dict(scale_factor=2, mode="nearest")),
    ("upsample([2, 3])", dict(scale_factor=(2, 3), mode="nearest")),
    ("upsample(size=[7, 9])", dict(size=(7, 9), mode="nearest")),
    ("upsample(size=4)", dict(size=(4, 4), mode="nearest")),
    ('upsample(2, mode="bilinear")', dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ('upsample(3, mode="bilinear", align_corners=true)', dict(scale_factor=3, mode="bilinear", align_corners=True)),
    ('upsample(size=[5, 11], mode="bilinear", align_corners=true)',
     dict(size=(5, 11), mode="bilinear", align_corners=True)),
    ('upsample(size=[5, 11], mode="bilinear", align_corners=false)',
     dict(size=(5, 11), mode="bilinear", align_corners=False)),
]


@pytest.mark.parametrize("body,reference", UPSAMPLES)
def test_upsample_equals_interpolate(tmp_path, body, reference):
    graph, module = compiled(tmp_path, [3, 5, 6], body)
    x = torch.randn(2, 3, 5, 6)
    expected = F.interpolate(x, **reference)
    assert torch.equal(run(module, x), expected)
    assert graph.nodes[-1].shape == tuple(expected.shape[1:])
    assert graph.nodes[-1].params == graph.nodes[-1].macs == 0


@pytest.mark.parametrize("factor,channels", [(2, 8), (3, 18), (1, 5)])
def test_pixel_shuffle_equals_torch(tmp_path, factor, channels):
    graph, module = compiled(tmp_path, [channels, 4, 3], f"pixel_shuffle({factor})")
    x = torch.randn(2, channels, 4, 3)
    expected = F.pixel_shuffle(x, factor)
    assert torch.equal(run(module, x), expected)
    assert graph.nodes[-1].shape == tuple(expected.shape[1:]) == (channels // factor**2, 4 * factor, 3 * factor)


# center_crop ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,target", [
    ((9, 9), (4, 4)),  # offset round(2.5) = 2: Python's round, as torchvision's
    ((11, 10), (4, 7)),  # round(3.5) = 4 and round(1.5) = 2
    ((64, 64), (56, 56)),  # U-Net's first crop
    ((5, 6), (5, 6)),  # nothing to crop
])
def test_center_crop_equals_torchvision(tmp_path, size, target):
    from torchvision.transforms.functional import center_crop

    body = f"small = adaptive_avgpool({list(target)})\n  x -> center_crop(small)"
    graph, module = compiled(tmp_path, [3, *size], body)
    x = torch.randn(2, 3, *size)
    expected = center_crop(x, list(target))
    assert torch.equal(run(module, x), expected)
    assert graph.nodes[-1].shape == (3, *target)
    assert graph.nodes[-1].inputs == ["x", graph.nodes[1].name]  # the map, then the value it is cropped like


# reshape, chunk, channel_shuffle, reductions -------------------------------------------------------------------

def test_reshape_between_vectors_and_maps(tmp_path):
    graph, module = compiled(tmp_path, [100], "reshape([100, 1, 1]) -> conv_transpose(3, 4) -> reduce_max() "
                                              "-> reshape([3])")
    x = torch.randn(2, 100)
    layer = module.get_submodule("1")
    expected = F.conv_transpose2d(x.reshape(2, 100, 1, 1), layer.weight, layer.bias).amax((2, 3))
    assert torch.equal(run(module, x), expected)
    assert [n.shape for n in graph.nodes] == [(100,), (100, 1, 1), (3, 4, 4), (3, 1, 1), (3,)]


def test_reshape_takes_a_lone_integer_as_a_vector(tmp_path):
    graph = netspec.load(spec_file(tmp_path, [2, 3, 4], "reshape(24)"))
    assert graph.nodes[-1].shape == (24,)


@pytest.mark.parametrize("chunks,index", [(2, 0), (2, 1), (3, 2), (1, 0)])
def test_chunk_equals_torch(tmp_path, chunks, index):
    graph, module = compiled(tmp_path, [6, 3, 2], f"chunk({chunks}, {index})")
    x = torch.randn(2, 6, 3, 2)
    expected = torch.chunk(x, chunks, dim=1)[index]
    assert torch.equal(run(module, x), expected)
    assert graph.nodes[-1].shape == (6 // chunks, 3, 2)


@pytest.mark.parametrize("groups,channels", [(2, 8), (3, 12), (4, 4), (1, 5)])
def test_channel_shuffle_equals_torchvision(tmp_path, groups, channels):
    from torchvision.models.shufflenetv2 import channel_shuffle

    graph, module = compiled(tmp_path, [channels, 3, 2], f"channel_shuffle({groups})")
    x = torch.randn(2, channels, 3, 2)
    assert torch.equal(run(module, x), channel_shuffle(x, groups))
    assert graph.nodes[-1].shape == (channels, 3, 2)


@pytest.mark.parametrize("op,reference", [("reduce_mean", torch.mean), ("reduce_max", torch.amax),
                                          ("reduce_sum", torch.sum)])
@pytest.mark.parametrize("over,dims,shape", [("channels", (1,), (1, 4, 5)), ("positions", (2, 3), (3, 1, 1))])
def test_reductions_equal_torch_keeping_dims(tmp_path, op, reference, over, dims, shape):
    graph, module = compiled(tmp_path, [3, 4, 5], f'{op}(over="{over}")')
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(run(module, x), reference(x, dim=dims, keepdim=True))
    assert graph.nodes[-1].shape == shape and graph.nodes[-1].macs == 0


def test_reductions_default_to_positions(tmp_path):
    graph = netspec.load(spec_file(tmp_path, [3, 4, 5], "reduce_mean() -> reduce_max() -> reduce_sum()"))
    assert [n.shape for n in graph.nodes[1:]] == [(3, 1, 1)] * 3


# Bad inputs: located errors with a hint ----------------------------------------------------------------------

BAD = [  # input shape, body, code, part of the message
    ([4], "conv_transpose(4, 3)", "NS305", "conv_transpose expects a feature map [C, H, W], got [4]"),
    ([6, 5, 5], "conv_transpose(4, 3, groups=4)", "NS203", "groups=4 must divide both the input channels (6)"),
    ([2, 5, 5], "conv_transpose(4, 3, stride=2, output_padding=2)", "NS203",
     "output_padding 2 along the height must be smaller than the stride (2) or the dilation (1)"),
    ([2, 5, 5], "conv_transpose(4, 3, output_padding=[0, 1])", "NS203", "output_padding 1 along the width"),
    ([2, 1, 1], "conv_transpose(4, 1, padding=1)", "NS303",
     "conv_transpose output height is (1-1)*1 - 2*1 + 1*(1-1) + 0 + 1 = -1"),
    ([2, 5, 5], "upsample(2, size=[10, 10])", "NS203", "upsample takes exactly one of scale and size, got both"),
    ([2, 5, 5], "upsample()", "NS203", "upsample takes exactly one of scale and size, got neither"),
    ([2, 5, 5], "upsample(2, align_corners=true)", "NS203", 'align_corners applies to mode="bilinear" only'),
    ([4], "upsample(2)", "NS305", "upsample expects a feature map"),
    ([6, 5, 5], "pixel_shuffle(2)", "NS203", "pixel_shuffle(2) needs channels divisible by 2*2 = 4, got 6"),
    ([4], "pixel_shuffle(2)", "NS305", "pixel_shuffle expects a feature map"),
    ([2, 5, 5], "small = conv(2, 1)\n  x -> center_crop()", "NS203",
     "center_crop takes exactly one named value to crop like, got none"),
    ([2, 5, 5], "a = conv(2, 1)\n  b = conv(2, 1)\n  x -> center_crop(a, b)", "NS203",
     "center_crop takes exactly one named value to crop like, got 2"),
    ([2, 5, 5], "big = upsample(2)\n  x -> center_crop(big)", "NS302",
     "center_crop to 10x10 is larger than its input [2, 5, 5]"),
    ([2, 5, 5], "v = flatten()\n  x -> center_crop(v)", "NS305", "center_crop's reference expects a feature map"),
    ([2, 3, 3], "reshape([2, 5])", "NS301", "reshape cannot fit [2, 3, 3] (18 numbers) into [2, 5] (10 numbers)"),
    ([2, 3, 3], "reshape([1, 2, 3, 3])", "NS203", "reshape takes a shape of 1 to 3 dimensions"),
    ([5, 3, 3], "chunk(2, 0)", "NS203", "chunk(2) needs channels divisible by 2, got 5"),
    ([4, 3, 3], "chunk(2, 2)", "NS203", "chunk index 2 is out of range for 2 chunks"),
    ([4], "chunk(2, 0)", "NS305", "chunk expects a feature map"),
    ([6, 3, 3], "channel_shuffle(4)", "NS203", "channel_shuffle(4) needs channels divisible by 4, got 6"),
    ([6], "channel_shuffle(2)", "NS305", "channel_shuffle expects a feature map"),
    ([6], 'reduce_sum(over="channels")', "NS305", "reduce_sum expects a feature map"),
]


@pytest.mark.parametrize("shape,body,code,message", BAD, ids=[b for _, b, _, _ in BAD])
def test_bad_inputs_give_a_located_error_with_a_hint(tmp_path, shape, body, code, message):
    path = spec_file(tmp_path, shape, body)
    with pytest.raises(netspec.NetspecError) as err:
        netspec.load(path)
    [diagnostic] = err.value.diagnostics
    assert diagnostic.code == code and message in diagnostic.message, diagnostic.message
    assert diagnostic.hint
    last_line = len(body.splitlines()) + 2  # the op under test is on the body's last line
    assert diagnostic.span.file == str(path) and diagnostic.span.line == last_line
    assert check_front_door(path) == "error"  # and the command line reports it, no traceback


def test_center_crop_takes_names_not_expressions(tmp_path):
    with pytest.raises(netspec.NetspecError) as err:
        netspec.load(spec_file(tmp_path, [2, 5, 5], "center_crop(3)"))
    assert [d.code for d in err.value.diagnostics] == ["NS203"]
    assert "center_crop takes the names of values" in err.value.diagnostics[0].message


# The op spec, end to end -------------------------------------------------------------------------------------

def test_every_resampling_op_exports_to_onnx_and_agrees(tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec import Sources
    from netspec.backends.onnx import export

    sources = Sources()
    graph = netspec.load(ROOT / "tests" / "ops" / "resample.net", sources)
    report = export(graph, sources, tmp_path / "resample.onnx")
    assert report.ok, report.comparisons
    assert [c.batch for c in report.comparisons] == [1, 3]
    assert report.exporter == "torchscript"
    for onnx_op in ("ConvTranspose", "Resize", "DepthToSpace", "Transpose", "Slice", "ReduceMax", "ReduceMean",
                    "ReduceSum"):
        assert onnx_op in report.ops, onnx_op
    ops = {n.op for n in graph.nodes}
    assert {"conv_transpose", "upsample", "pixel_shuffle", "center_crop", "reshape", "chunk", "channel_shuffle",
            "reduce_mean", "reduce_max", "reduce_sum"} <= ops


def test_the_standalone_python_module_computes_the_same(tmp_path):
    from netspec.backends.torch import to_python

    graph = netspec.load(ROOT / "tests" / "ops" / "resample.net")
    module = to_module(graph, seed=0).eval()
    namespace = {}
    exec(to_python(graph), namespace)
    standalone = namespace["Resample"]().eval()
    standalone.load_state_dict(module.state_dict())
    x = torch.randn(2, 4, 20, 20)
    assert torch.equal(run(standalone, x), run(module, x))


def test_the_op_spec_counts(in_repo):
    graph = netspec.load("tests/ops/resample.net")
    by_op = {}
    for node in graph.nodes:
        by_op.setdefault(node.op, []).append(node)
    # [8, 7, 7] -> [8, 14, 14]: 8*8*2*2 weights + 8 biases, each weight met by each of the 7*7 inputs
    first = by_op["conv_transpose"][0]
    assert (first.shape, first.params, first.macs) == ((8, 14, 14), 264, 8 * 8 * 4 * 49)
    assert by_op["center_crop"][0].shape == (8, 14, 14)  # the [8, 18, 18] skip, offset 2
    assert graph.nodes[-1].shape == (784 + 16 + 784 + 98,)


def test_the_documented_unet_up_step_checks_as_its_comments_say(tmp_path):
    text = (ROOT / "docs" / "language.md").read_text()
    section = text.split("### Resampling, crops and reshapes", 1)[1]
    example = section.split("```\n", 2)[1]
    path = tmp_path / "upstep.net"
    path.write_text(example)
    graph = netspec.load(path)
    nodes = {n.op: n for n in graph.nodes}  # the last of each op
    up, crop = nodes["conv_transpose"], nodes["center_crop"]
    assert (up.shape, up.params, up.macs) == ((64, 58, 58), 32_832, 27_557_888)
    assert crop.shape == (64, 58, 58) and nodes["concat"].shape == (128, 58, 58)
    assert graph.nodes[-1].shape == (64, 56, 56)
    with torch.device("meta"):
        cropper = to_module(graph).get_submodule(crop.name)
    assert (cropper.top, cropper.left) == (4, 4)  # "rows and columns 4 to 61" of the [64, 66, 66] skip
