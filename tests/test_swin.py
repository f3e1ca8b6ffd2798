"""Swin Transformer v1 and v2 (issue 25): `window_attention` and `patch_merging`, and the family spec
specs/torchvision/swin.net at a small size. torchvision's SwinTransformer and its layers, its FLOP counter and
onnxruntime are the oracles; the six torchvision builders themselves are checked in tests/test_zoo.py."""

import pytest

torch = pytest.importorskip("torch")
swin = pytest.importorskip("torchvision.models.swin_transformer")

import netspec  # noqa: E402
from attention import exported, layer_spec, seeded, standalone as standalone_module  # noqa: E402,F401 (layer_spec: a fixture)
from conftest import ROOT, only_error  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402

SWIN = ROOT / "specs" / "torchvision" / "swin.net"
# A 40x40 image in 4x4 patches: maps of 10x10, 5x5 and 3x3 with 3x3 windows, so the first two stages pad to a
# multiple of the window (12x12, 6x6) and shift, patch merging pads 5 to 6, and the last window covers its map.
SMALL = dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2], num_heads=[2, 2, 4], window_size=[3, 3],
             stochastic_depth_prob=0.2, num_classes=10)
V2 = dict(block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2)


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory):
    """specs/torchvision/swin.net with a network for SMALL's settings, written with the family's block."""
    path = tmp_path_factory.mktemp("swin") / "swin.net"
    path.write_text(SWIN.read_text() + "network small(version=1) = Swin(16, [2, 2, 2], [2, 2, 4], 3, 0.2, "
                                       "version=version, classes=10, size=40)\n")
    return f"{path}:small"


def entries(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def close(got, want):
    """Equal up to float32 rounding: the window layers compute bit for bit what torchvision's do, but the
    channels-first layer norms and MLPs (LayerNorm2d, ChannelLinear) sum in another order than its channels-last
    ones."""
    return got.shape == want.shape and (got - want).abs().max().item() <= 1e-5 * max(want.abs().max().item(), 1.0)


def small_pair(small_spec, version):
    torch.manual_seed(0)
    reference = seeded(swin.SwinTransformer(**SMALL, **(V2 if version == 2 else {})))
    graph = netspec.load(small_spec, version=version)
    ours = to_module(graph, seed=0).eval()
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


# The family's spec against torchvision's SwinTransformer ---------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
def test_the_small_swin_has_torchvisions_state_dict_and_counts(small_spec, version):
    graph = netspec.load(small_spec, version=version)
    with torch.device("meta"):
        reference = swin.SwinTransformer(**SMALL, **(V2 if version == 2 else {}))
        ours = to_module(graph)
    assert entries(ours) == entries(reference)  # keys, shapes and order: v2's block by its `register` statement
    params = sum(p.numel() for p in reference.parameters())
    buffers = sum(b.numel() for b in reference.buffers())
    assert (sum(n.params for n in graph.nodes), sum(n.buffers for n in graph.nodes)) == (params, buffers)
    assert (params, buffers) == ((144_554, 486) if version == 1 else (161_386, 786))


@pytest.mark.parametrize("version", [1, 2])
def test_the_small_swin_computes_what_torchvision_computes(small_spec, version):
    graph, reference, ours = small_pair(small_spec, version)
    for (key, theirs), mine in zip(reference.state_dict().items(), map(ours.state_dict().get,
                                                                         reference.state_dict())):
        if key.endswith(("relative_position_index", "relative_coords_table")):
            assert torch.equal(mine, theirs), key  # the buffers are built as torchvision builds them
    x = torch.randn(3, *graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert got.shape == (3, 10) and want.abs().max().item() > 1.0
    assert close(got, want)


@pytest.mark.parametrize("version", [1, 2])
def test_the_weight_macs_equal_torchs_flop_counter(small_spec, version):
    """Convolution, linear layers, patch merging's reduction and window attention (qkv, proj, QK^T and AV on the
    padded map; v2's position-bias MLP once per call), biases and norms left out: what the counter of
    torchvision's published figures counts."""
    from torch.utils.flop_counter import FlopCounterMode

    graph = netspec.load(small_spec, version=version)
    with torch.device("meta"):
        reference = swin.SwinTransformer(**SMALL, **(V2 if version == 2 else {})).eval()
        with FlopCounterMode(display=False) as counter:
            reference(torch.empty(1, *graph.input_shape))
    weights = {"conv": lambda n: n.macs, "window_attention": lambda n: n.macs,
               "linear": lambda n: n.macs - (n.args.out_features if len(n.shape) == 1 else 0),
               "patch_merging": lambda n: n.macs - (n.params - 2 * n.shape[0] ** 2)}  # reduction's weights
    assert sum(weights[n.op](n) for n in graph.nodes if n.op in weights) == counter.get_total_flops() // 2
    # qkv and proj at every position of the padded maps (12x12, 6x6, 3x3), QK^T and AV within each window of 9;
    # v2 adds its position-bias MLP over the 5x5 offsets, once per block
    padded = [(16, 144), (32, 36), (64, 9)]
    attention = sum(2 * (4 * c * c * positions + 2 * positions * 9 * c) for c, positions in padded)
    bias_mlp = sum(2 * 25 * (2 * 512 + 512 * heads) for heads in (2, 2, 4))
    assert sum(n.macs for n in graph.nodes if n.op == "window_attention") == \
        (attention if version == 1 else attention + bias_mlp) == (1_029_888 if version == 1 else 1_388_288)


def test_the_standalone_python_module_computes_the_same_and_reads_as_torchvision(small_spec):
    graph, reference, ours = small_pair(small_spec, 2)
    source, standalone = standalone_module(graph)
    assert "class ShiftedWindowAttentionV2(ShiftedWindowAttention):" in source
    assert "class PatchMergingV2(PatchMerging):" in source
    assert "PatchMergingV2(16)," in source
    assert ("self.attn = ShiftedWindowAttentionV2(\n            dim, heads, window_size=[3, 3], "
            "shift_size=[shift, shift], height=height, width=height,\n        )") in source
    assert list(standalone.state_dict()) == list(ours.state_dict())
    standalone.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(standalone(x), ours(x))
        assert close(standalone(x), reference(x))


def test_the_small_swin_exports_to_onnx_and_agrees_in_onnxruntime(small_spec, tmp_path):
    pytest.importorskip("onnxruntime")
    graph, _, ours = small_pair(small_spec, 2)
    report = exported(graph, ours, tmp_path)
    assert {"Conv", "MatMul", "Softmax", "Gather", "Sigmoid", "LayerNormalization"} <= set(report.ops)


def test_swin_v2s_builders_register_the_norms_before_what_they_follow_as_torchvision_does():
    """SwinBlockV2's `register norm1, attn, stochastic_depth, norm2, mlp`: torchvision's __init__ order, so the
    builder's state_dict keys, shapes and order, while norm1 runs after attn and norm2 after mlp."""
    graph = netspec.load(f"{SWIN}:swin_v2_t")
    with torch.device("meta"):
        ours = entries(to_module(graph))
        theirs = entries(swin.swin_v2_t())
    assert ours == theirs
    children = [k.split(".")[3] for k, _ in ours if k.startswith("features.1.0.")]
    assert list(dict.fromkeys(children)) == ["norm1", "attn", "norm2", "mlp"]
    run = [n.name for n in graph.nodes if n.name.startswith("features.1.0.") and n.op != "add"]
    assert run.index("features.1.0.attn") < run.index("features.1.0.norm1")
    assert run.index("features.1.0.mlp.4") < run.index("features.1.0.norm2")


# Each layer against torchvision's ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version, map_shape, window, shift", [
    (1, (8, 5, 7), [3, 2], [1, 1]),  # padded to 6x8, shifted, a window that is not square
    (1, (8, 4, 4), [4, 4], [2, 2]),  # the window covers the map: no shift, as torchvision sets it
    (2, (8, 5, 7), [3, 2], [1, 1]),
    (2, (12, 6, 6), [3, 3], [0, 0]),
])
def test_window_attention_is_torchvisions_shifted_window_attention(layer_spec, version, map_shape, window, shift):
    heads = 2
    graph = netspec.load(layer_spec(f"attn: window_attention({heads}, {window}, {shift}, version={version})",
                              list(map_shape)))
    node = graph.node("attn")
    c, h, w = map_shape
    cls = swin.ShiftedWindowAttention if version == 1 else swin.ShiftedWindowAttentionV2
    reference = seeded(cls(c, window, shift, heads))
    module = to_module(graph).eval()
    assert [k.removeprefix("attn.") for k, _ in entries(module)] == list(reference.state_dict())
    assert node.shape == map_shape
    assert node.params == sum(p.numel() for p in reference.parameters())
    assert node.buffers == sum(b.numel() for b in reference.buffers())
    module.load_state_dict({f"attn.{k}": v for k, v in reference.state_dict().items()})
    x = torch.randn(2, *map_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # bit for bit: the same operations, channels-last inside
        assert torch.equal(module(x), reference(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        cls(c, window, shift, heads)(torch.empty(1, h, w, c))
    assert node.macs == counter.get_total_flops() // 2


def test_window_attention_counts_by_the_documented_rule(layer_spec):
    node = netspec.load(layer_spec("attn: window_attention(4, 7, 3)", "[96, 10, 10]")).node("attn")
    positions, tokens = 14 * 14, 49  # padded to a multiple of the window
    assert node.macs == 4 * 96 * 96 * positions + 2 * positions * tokens * 96 == 9_069_312
    assert node.params == 4 * 96 * 96 + 4 * 96 + 13 * 13 * 4 and node.buffers == 49 * 49
    v2 = netspec.load(layer_spec("attn: window_attention(4, 7, 3, version=2)", "[96, 10, 10]")).node("attn")
    assert v2.macs == node.macs + 13 * 13 * (2 * 512 + 512 * 4)  # the position-bias MLP, once
    assert v2.params == 4 * 96 * 96 + 4 * 96 + 4 + 3 * 512 + 512 * 4 and v2.buffers == 49 * 49 + 13 * 13 * 2


@pytest.mark.parametrize("version, map_shape", [(1, (6, 5, 7)), (2, (6, 5, 7)), (1, (4, 4, 2))])
def test_patch_merging_is_torchvisions(layer_spec, version, map_shape):
    graph = netspec.load(layer_spec(f"merge: patch_merging(version={version})", list(map_shape)))
    node = graph.node("merge")
    c, h, w = map_shape
    assert node.shape == (2 * c, (h + 1) // 2, (w + 1) // 2)
    normalised = 4 * c if version == 1 else 2 * c
    assert (node.params, node.macs) == (8 * c * c + 2 * normalised, 8 * c * c * node.shape[1] * node.shape[2]
                                        + 2 * normalised)
    reference = seeded((swin.PatchMerging if version == 1 else swin.PatchMergingV2)(c))
    module = to_module(graph).eval()
    assert [k.removeprefix("merge.") for k, _ in entries(module)] == list(reference.state_dict()) == \
        ["reduction.weight", "norm.weight", "norm.bias"]
    module.load_state_dict({f"merge.{k}": v for k, v in reference.state_dict().items()})
    x = torch.randn(2, *map_shape)
    with torch.no_grad():
        assert torch.equal(module(x), reference(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


# Mistakes ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, shape, code, message, hint", [
    ("window_attention(2, 7)", "[8, 5, 9]", "NS302", "window_attention's 7x7 window is larger than its input map 5x9",
     "use a window of at most 5x7, or a larger input (torchvision would attend to the padding)"),
    ("window_attention(5, 4)", "[12, 8, 8]", "NS203",
     "window_attention(5) shares each position's 12 channels among 5 heads, but 5 does not divide 12",
     "use a number of heads that divides 12, e.g. window_attention(4, ...)"),
    ("window_attention(2, 4, shift=4)", "[8, 8, 8]", "NS203",
     "window_attention's shift 4x4 is not smaller than its 4x4 window",
     "shift by less than the window: half of it, shift=[2, 2], as Swin does"),
    ("tokens() -> window_attention(2, 4)", "[8, 8, 8]", "NS305",
     "window_attention expects a feature map [C, H, W], got [64, 8]",
     "Swin's layers work on a feature map's grid: apply it before tokens() or flatten()"),
    ("flatten() -> patch_merging()", "[8, 8, 8]", "NS305", "patch_merging expects a feature map [C, H, W], got [512]",
     "Swin's layers work on a feature map's grid: move this layer before flatten()"),
    ("window_attention(2, [1, 4], version=2)", "[8, 8, 8]", "NS203",
     "window_attention(version=2) scales each offset by the window's side less one, but the 1x4 window has a side "
     "of 1", "use a window of at least 2x2 with version=2 (torchvision's table would be 0/0)"),
    ("window_attention(2, 4, version=3)", "[8, 8, 8]", "NS203", None, None),
])
def test_mistakes_are_located_with_the_numbers(layer_spec, body, shape, code, message, hint):
    diagnostic = only_error(layer_spec(f"y = x -> {body}", shape))
    assert diagnostic.code == code and diagnostic.span.line == 3
    if message is not None:
        assert (diagnostic.message, diagnostic.hint) == (message, hint)
