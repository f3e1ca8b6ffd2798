"""MaxViT (issue 25): `partition_attention`, block and grid attention with a relative position bias, and the family
spec specs/torchvision/maxvit.net at a small size. torchvision's MaxVit and its partition and attention modules,
torch's FLOP counter and onnxruntime are the oracles; maxvit_t itself is checked in tests/test_zoo.py."""

import shutil

import pytest

torch = pytest.importorskip("torch")

import netspec  # noqa: E402
from attention import exported, layer_spec, standalone as standalone_module  # noqa: E402,F401 (layer_spec: a fixture)
from conftest import ROOT, only_error  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402

ZOO = ROOT / "specs" / "torchvision"
# torchvision's MaxVit at a size a CPU runs in milliseconds: 32x32 images, maps of 8x8 and 4x4 in the two stages,
# 2x2 partitions (the 8x8 map's grids are not its windows), and the family's spec at those settings.
SMALL = dict(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 2],
             head_dim=4, stochastic_depth_prob=0.2, num_classes=10)
SMALL_NETWORK = ("network small(classes=10) = MaxVit(8, [8, 16], [1, 2], 4, 0.2, partition_size=2, classes=classes, "
                 "size=32)\n")


def maxvit_module():
    try:
        from torchvision.models import maxvit
    except Exception as err:  # a torchvision built for another torch fails at import
        pytest.skip(f"torchvision is not importable: {err}")
    return maxvit


@pytest.fixture
def small_spec(tmp_path):
    """specs/torchvision/maxvit.net (beside the blocks it imports) with a network for SMALL's settings."""
    shutil.copytree(ZOO / "blocks", tmp_path / "blocks")
    path = tmp_path / "maxvit.net"
    path.write_text((ZOO / "maxvit.net").read_text() + SMALL_NETWORK)
    return f"{path}:small"


def perturbed(model):
    """Seeded random weights everywhere, batch-norm statistics off the identity, eval mode."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.1 if parameter.dim() > 1 else 1.0))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def small_pair(small_spec):
    torch.manual_seed(0)
    reference = perturbed(maxvit_module().MaxVit(**SMALL))
    graph = netspec.load(small_spec)
    ours = to_module(graph, seed=0).eval()
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


# The family's spec against torchvision's MaxVit ------------------------------------------------------------------

def test_the_small_maxvit_has_torchvisions_state_dict_keys_shapes_order_and_counts(small_spec):
    reference = maxvit_module().MaxVit(**SMALL)
    graph = netspec.load(small_spec)
    ours = to_module(graph, seed=0)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    totals = netspec.summarize(graph).totals
    assert totals.params == sum(p.numel() for p in reference.parameters()) == 24_142
    assert totals.buffers == sum(b.numel() for b in reference.buffers()) == 826
    attention = "blocks.1.layers.1.layers.grid_attention.attn_layer.1"
    assert [k.removeprefix(attention + ".") for k in ours.state_dict() if k.startswith(attention)] == [
        "relative_position_bias_table", "relative_position_index", "to_qkv.weight", "to_qkv.bias", "merge.weight",
        "merge.bias"]
    assert torch.equal(ours.get_buffer(attention + ".relative_position_index"),
                       reference.get_buffer(attention + ".relative_position_index"))


def test_the_small_maxvit_computes_what_torchvision_computes(small_spec):
    graph, reference, ours = small_pair(small_spec)
    x = torch.randn(3, *graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert got.shape == (3, 10) and float(want.abs().max()) > 0.5
    # torchvision normalises and projects the partitioned tokens, netspec the map's positions (the same numbers in
    # another memory order), so the sums may round differently in the last bit
    assert torch.allclose(got, want, rtol=0, atol=1e-6)


def test_the_weight_macs_equal_torchs_flop_counter(small_spec):
    """Convolutions, linear layers and attention (projections, QK^T and AV), biases left out: what the counter of
    torchvision's published figures counts; the classifier's hidden linear layer has the one bias netspec counts."""
    from torch.utils.flop_counter import FlopCounterMode

    graph = netspec.load(small_spec)
    with torch.device("meta"):
        reference = maxvit_module().MaxVit(**SMALL).eval()
        with FlopCounterMode(display=False) as counter:
            reference(torch.empty(2, *graph.input_shape))
    weighted = ("conv", "linear", "partition_attention")
    hidden_bias = 16  # classifier.3's, counted by netspec on a vector as torchvision's CNN classifiers are
    assert sum(n.macs for n in graph.nodes if n.op in weighted) - hidden_bias == counter.get_total_flops() // 4 \
        == 722_464  # two samples, two FLOPs a multiply-accumulate


def test_the_standalone_python_module_computes_the_same_and_reads_as_torchvision(small_spec):
    graph, reference, ours = small_pair(small_spec)
    source, standalone = standalone_module(graph)
    assert "class PartitionAttention(nn.Module):" in source
    assert "scores = q @ (k * self.scale).transpose(-2, -1)" in source
    assert ", 4, size=2, partition=" in source  # PartitionAttention(channels, head_dim, size=2, partition=...)
    assert list(standalone.state_dict()) == list(reference.state_dict())
    standalone.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(standalone(x), ours(x))


def test_the_small_maxvit_exports_to_onnx_and_agrees_in_onnxruntime(small_spec, tmp_path):
    pytest.importorskip("onnxruntime")
    graph, _, ours = small_pair(small_spec)
    report = exported(graph, ours, tmp_path)
    assert {"Conv", "MatMul", "Softmax", "Gather", "Tanh"} <= set(report.ops)


# The op against torchvision's partitions and attention -----------------------------------------------------------

def torchvision_partition_attention(attention, x, size, partition):
    """torchvision's PartitionAttentionLayer.forward around `attention` alone: partition (and, for grids, swap
    the axes), attend, swap back and departition."""
    maxvit = maxvit_module()
    height, width = x.shape[2:]
    p = size if partition == "block" else height // size  # torchvision's p: window side, or grid spacing
    parts = maxvit.WindowPartition()(x, p)
    parts = parts.swapaxes(-2, -3) if partition == "grid" else parts
    attended = attention(parts)
    attended = attended.swapaxes(-2, -3) if partition == "grid" else attended
    return maxvit.WindowDepartition()(attended, p, height // p, width // p)


@pytest.mark.parametrize("partition, shape", [("block", (16, 12, 12)), ("grid", (16, 12, 12)),
                                              ("block", (16, 6, 15))])
def test_partition_attention_is_torchvisions_relative_positional_attention_within_the_partitions(
        layer_spec, partition, shape):
    graph = netspec.load(layer_spec(f'attn: partition_attention(3, 4, partition="{partition}")', list(shape)))
    node = graph.node("attn")
    channels, height, width = shape
    positions = height * width
    assert (node.shape, node.params, node.buffers) == (shape, 4 * 16 * 16 + 4 * 16 + 25 * 4, 81)
    assert node.macs == 4 * channels * channels * positions + 2 * positions * 9 * channels
    module = to_module(graph)
    reference = maxvit_module().RelativePositionalMultiHeadAttention(channels, 4, 9)
    with torch.no_grad():
        reference.relative_position_bias_table.normal_(generator=torch.Generator().manual_seed(2))
    assert [k.removeprefix("attn.") for k in module.state_dict()] == list(reference.state_dict())
    module.load_state_dict({f"attn.{k}": v for k, v in reference.state_dict().items()})
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(module(x), torchvision_partition_attention(reference, x, 3, partition))


def test_partition_attention_macs_equal_the_flop_counters_projections_and_two_matrix_products(layer_spec):
    from torch.utils.flop_counter import FlopCounterMode

    for partition in ("block", "grid"):
        graph = netspec.load(layer_spec(f'attn: partition_attention(2, 8, partition="{partition}")', "[32, 4, 6]"))
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            to_module(graph)(torch.empty(1, 32, 4, 6))
        # to_qkv and merge at 24 positions, then QK^T and AV within 6 partitions of 4 positions (the linear layers'
        # biases are added by addmm, which the counter does not count either)
        assert graph.node("attn").macs == 4 * 32 * 32 * 24 + 2 * 6 * (4 * 4 * 32) == 104_448
        assert counter.get_total_flops() == 2 * graph.node("attn").macs


def test_block_and_grid_partitions_are_windows_of_neighbours_and_spread_grids(layer_spec):
    """With the attention made the identity on values (V = x, merge = I) and the scores zero, each position
    becomes the mean of its partition: a 2x2 window of neighbours, or a 2x2 grid whose positions are half the
    map apart."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    for partition, want in [("block", [[2.5, 2.5, 4.5, 4.5], [2.5, 2.5, 4.5, 4.5],
                                       [10.5, 10.5, 12.5, 12.5], [10.5, 10.5, 12.5, 12.5]]),
                            ("grid", [[5.0, 6.0, 5.0, 6.0], [9.0, 10.0, 9.0, 10.0],
                                      [5.0, 6.0, 5.0, 6.0], [9.0, 10.0, 9.0, 10.0]])]:
        module = to_module(netspec.load(layer_spec(f'partition_attention(2, 1, partition="{partition}")', "[1, 4, 4]")))
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.zero_()
            attention = next(m for m in module.modules() if type(m).__name__ == "PartitionAttention")
            attention.to_qkv.weight[2] = 1.0  # V = x; Q = K = 0
            attention.merge.weight.fill_(1.0)
            assert torch.equal(module(x), torch.tensor(want).reshape(1, 1, 4, 4))


# Mistakes ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, shape, message, hint", [
    ("partition_attention(2, 5)", "[12, 4, 4]",
     "partition_attention(2, 5) splits the 12 channels into heads of 5, but 5 does not divide 12",
     "use a head_dim that divides 12, e.g. 4"),
    ("partition_attention(3, 4)", "[8, 6, 8]",
     "partition_attention(3, 4) cuts the 6x8 map into 3x3 windows, but 3 does not divide its width 8",
     "use a size that divides both 6 and 8 (1, 2), or an input whose map here is a multiple of 3"),
    ('partition_attention(4, 4, partition="grid")', "[8, 6, 6]",
     'partition_attention(4, 4, partition="grid") cuts the 6x6 map into 4x4 grids, but 4 does not divide its '
     "height 6", "use a size that divides 6 (1, 2, 3, 6), or an input whose map here is a multiple of 4"),
    ("tokens() -> partition_attention(2, 4)", "[8, 4, 4]",
     "partition_attention expects a feature map [C, H, W], got [16, 8]",
     "it partitions the map's positions; apply it before flatten() or tokens()"),
])
def test_mistakes_are_located_with_the_numbers(layer_spec, body, shape, message, hint):
    diagnostic = only_error(layer_spec(f"y = x -> {body}", shape))
    assert (diagnostic.code, diagnostic.span.line) == (("NS305" if "tokens" in body else "NS203"), 3)
    assert (diagnostic.message, diagnostic.hint) == (message, hint)


def test_maxvit_t_at_a_size_its_partitions_do_not_divide_is_refused_where_the_attention_is():
    diagnostic = only_error_with(ZOO / "maxvit.net", "maxvit_t", size=200)
    attention_line = next(number for number, line in enumerate((ZOO / "maxvit.net").read_text().splitlines(), 1)
                          if "partition_attention(" in line)
    assert diagnostic.code == "NS203" and diagnostic.span.line == attention_line
    assert diagnostic.message == ("partition_attention(7, 32) cuts the 50x50 map into 7x7 windows, but 7 does not "
                                  "divide its height 50")


def only_error_with(path, name, **arguments):
    with pytest.raises(netspec.NetspecError) as caught:
        netspec.load(f"{path}:{name}", **arguments)
    [diagnostic] = caught.value.diagnostics
    return diagnostic
