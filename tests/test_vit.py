"""Token sequences and attention (issue 25, ViT): `tokens`, `class_token`, `position_embedding`, `self_attention`,
`token`, and layer norm and linear layers over tokens. torch.nn, torchvision's VisionTransformer, its FLOP counter
and onnxruntime are the oracles; the five torchvision builders themselves are checked in tests/test_zoo.py."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import netspec  # noqa: E402
from attention import exported, layer_spec, seeded, standalone as standalone_module  # noqa: E402,F401 (layer_spec: a fixture)
from conftest import ROOT, only_error  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402

VIT = ROOT / "specs" / "torchvision" / "vit.net"
# torchvision's VisionTransformer at a size a CPU runs in milliseconds, and the same family's spec at those settings
SMALL = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)


def vision_transformer():
    try:
        from torchvision.models.vision_transformer import VisionTransformer
    except Exception as err:  # a torchvision built for another torch fails at import
        pytest.skip(f"torchvision is not importable: {err}")
    return VisionTransformer


@pytest.fixture
def small_spec(tmp_path):
    """specs/torchvision/vit.net with a network for SMALL's settings, written with the family's block."""
    path = tmp_path / "vit.net"
    path.write_text(VIT.read_text() + "network small(classes=10) = ViT(8, 2, 2, 32, 64, classes=classes, size=32)\n")
    return f"{path}:small"


# The family's spec against torchvision's VisionTransformer ----------------------------------------------------

def small_pair(small_spec):
    torch.manual_seed(0)
    reference = seeded(vision_transformer()(**SMALL))
    graph = netspec.load(small_spec)
    ours = to_module(graph, seed=0).eval()
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


def test_the_small_vit_has_torchvisions_state_dict_keys_shapes_order_and_counts(small_spec):
    reference = vision_transformer()(**SMALL)
    graph = netspec.load(small_spec)
    ours = to_module(graph, seed=0)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    assert sum(n.params for n in graph.nodes) == sum(p.numel() for p in reference.parameters()) == 24_234
    assert list(ours.state_dict())[:4] == ["class_token", "conv_proj.weight", "conv_proj.bias",
                                           "encoder.pos_embedding"]


def test_the_small_vit_computes_what_torchvision_computes(small_spec):
    graph, reference, ours = small_pair(small_spec)
    x = torch.randn(3, *graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # eval without gradients: nn.MultiheadAttention's fast path, in both
        want, got = reference(x), ours(x)
    assert got.shape == (3, 10) and float(want.abs().max()) > 0.5
    assert torch.equal(got, want)
    assert torch.equal(ours(x), reference(x))  # with gradients: the plain path, in both


def test_the_weight_macs_equal_torchs_flop_counter(small_spec):
    """Convolution, linear layers and attention (projections, QK^T and AV), biases left out: what the counter of
    torchvision's published figures counts, with gradients on (under no_grad the fused fast path is not counted),
    on the meta device (on the CPU, attention runs a fused kernel the counter does not count either)."""
    from torch.utils.flop_counter import FlopCounterMode

    graph = netspec.load(small_spec)
    with torch.device("meta"):
        reference = vision_transformer()(**SMALL).eval()
        with FlopCounterMode(display=False) as counter:
            reference(torch.empty(2, *graph.input_shape))
    heads_bias = 10
    assert sum(n.macs for n in graph.nodes if n.op in ("conv", "linear", "self_attention")) - heads_bias == \
        counter.get_total_flops() // 4  # two samples, two FLOPs a multiply-accumulate


def test_the_standalone_python_module_computes_the_same_and_reads_as_torchvision(small_spec):
    graph, reference, ours = small_pair(small_spec)
    source, standalone = standalone_module(graph)
    assert "x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)" in source
    assert "x = x + self.pos_embedding" in source
    assert "self.pos_embedding = nn.Parameter(torch.normal(0.0, 0.02, size=(1, 17, 32)))" in source
    assert "self.self_attention = SelfAttention(32, 2)" in source
    assert "class SelfAttention(nn.MultiheadAttention):" in source
    assert list(standalone.state_dict()) == list(reference.state_dict())
    standalone.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(standalone(x), reference(x))


def test_the_small_vit_exports_to_onnx_and_agrees_in_onnxruntime(small_spec, tmp_path):
    pytest.importorskip("onnxruntime")
    graph, _, ours = small_pair(small_spec)
    report = exported(graph, ours, tmp_path)
    assert {"Conv", "MatMul", "Softmax", "LayerNormalization", "Erf"} <= set(report.ops)


# Each op against torch ------------------------------------------------------------------------------------------

def test_tokens_are_the_positions_of_the_map_row_by_row(layer_spec):
    graph = netspec.load(layer_spec("t: tokens()", "[5, 3, 4]"))
    assert graph.node("t").shape == (12, 5) and graph.node("t").params == graph.node("t").macs == 0
    module = to_module(graph)
    x = torch.randn(2, 5, 3, 4)
    assert torch.equal(module(x), x.reshape(2, 5, 12).permute(0, 2, 1))


def test_class_token_is_a_bare_parameter_put_in_front_of_every_sample(layer_spec):
    graph = netspec.load(layer_spec("tokens() -> cls: class_token(init=0.5)", "[6, 2, 2]"))
    node = graph.node("cls")
    assert (node.shape, node.params, node.macs) == ((5, 6), 6, 0)
    module = to_module(graph)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {"cls": (1, 1, 6)}
    assert torch.equal(module.get_parameter("cls"), torch.full((1, 1, 6), 0.5))
    x = torch.randn(3, 6, 2, 2)
    out = module(x)
    assert torch.equal(out[:, 0], torch.full((3, 6), 0.5))
    assert torch.equal(out[:, 1:], x.flatten(2).transpose(1, 2))


def test_position_embedding_adds_a_parameter_per_position_drawn_as_torchvision_draws_it(layer_spec):
    graph = netspec.load(layer_spec("tokens() -> pos: position_embedding()", "[32, 10, 10]"))
    node = graph.node("pos")
    assert (node.shape, node.params, node.macs) == ((100, 32), 3_200, 0)
    module = to_module(graph, seed=0)
    embedding = module.get_parameter("pos")
    assert tuple(embedding.shape) == (1, 100, 32)
    assert abs(float(embedding.detach().std()) - 0.02) < 0.002 and abs(float(embedding.detach().mean())) < 0.002
    x = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        assert torch.equal(module(x), x.flatten(2).transpose(1, 2) + embedding)


@pytest.mark.parametrize("call, heads, bias", [("self_attention(4)", 4, True), ("self_attention(1)", 1, True),
                                               ("self_attention(8, bias=false)", 8, False)])
def test_self_attention_is_nn_multihead_attention_with_its_state_dict(layer_spec, call, heads, bias):
    graph = netspec.load(layer_spec(f"tokens() -> attn: {call}", "[16, 3, 5]"))
    node = graph.node("attn")
    n, d = 15, 16
    assert node.shape == (n, d)
    assert node.params == 4 * d * d + (4 * d if bias else 0)
    assert node.macs == 4 * d * d * n + 2 * n * n * d == 22_560
    module = seeded(to_module(graph))
    reference = nn.MultiheadAttention(d, heads, bias=bias, batch_first=True).eval()
    names = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"] if bias else \
        ["in_proj_weight", "out_proj.weight"]
    assert [k.removeprefix("attn.") for k in module.state_dict()] == list(reference.state_dict()) == names
    reference.load_state_dict({k.removeprefix("attn."): v for k, v in module.state_dict().items()})
    x = torch.randn(2, 16, 3, 5)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        assert torch.equal(module(x), reference(tokens, tokens, tokens, need_weights=False)[0])


def test_self_attention_macs_equal_the_flop_counters_projections_and_two_matrix_products(layer_spec):
    from torch.utils.flop_counter import FlopCounterMode

    graph = netspec.load(layer_spec("tokens() -> attn: self_attention(4, bias=false)", "[16, 3, 5]"))
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        to_module(graph)(torch.empty(1, 16, 3, 5))
    assert counter.get_total_flops() == 2 * graph.node("attn").macs


def test_token_takes_one_token_of_each_sample(layer_spec):
    x = torch.randn(2, 4, 2, 3)
    for call, index in [("token()", 0), ("token(2)", 2), ("token(-1)", 5)]:
        graph = netspec.load(layer_spec(f"tokens() -> {call}", "[4, 2, 3]"))
        assert graph.nodes[-1].shape == (4,) and graph.nodes[-1].params == graph.nodes[-1].macs == 0
        assert torch.equal(to_module(graph)(x), x.flatten(2).transpose(1, 2)[:, index])


def test_layernorm_and_linear_work_token_by_token(layer_spec):
    graph = netspec.load(layer_spec("tokens() -> norm: layernorm(eps=1e-6) -> fc: linear(7)", "[6, 2, 5]"))
    norm, fc = graph.node("norm"), graph.node("fc")
    assert (norm.shape, norm.params, norm.macs) == ((10, 6), 12, 12)
    assert (fc.shape, fc.params, fc.macs) == ((10, 7), 6 * 7 + 7, 6 * 7 * 10)  # weights x tokens, no bias
    module = seeded(to_module(graph))
    assert type(module.get_submodule("norm")) is nn.LayerNorm and type(module.get_submodule("fc")) is nn.Linear
    x = torch.randn(2, 6, 2, 5)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        want = module.get_submodule("fc")(nn.functional.layer_norm(
            tokens, (6,), module.get_parameter("norm.weight"), module.get_parameter("norm.bias"), 1e-6))
        assert torch.equal(module(x), want)


# Mistakes ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, shape, code, message, hint", [
    ("tokens() -> self_attention(5)", "[12, 2, 2]", "NS203",
     "self_attention(5) shares each token's 12 numbers among 5 heads, but 5 does not divide 12",
     "use a number of heads that divides 12, e.g. self_attention(4)"),
    ("self_attention(2)", "[8, 2, 2]", "NS305", "self_attention expects tokens [N, D], got [8, 2, 2]",
     "make tokens of the feature map first: tokens() turns [C, H, W] into [H*W, C]"),
    ("class_token()", "[8]", "NS305", "class_token expects tokens [N, D], got [8]",
     "a vector is one token's numbers, not a sequence; apply it before the layer that took one token"),
    ("tokens() -> tokens()", "[8, 2, 2]", "NS305", "tokens expects a feature map [C, H, W], got [4, 8]",
     "tokens() turns a map's positions into tokens; apply it after the patch convolution"),
    ("tokens() -> token(4)", "[8, 2, 2]", "NS203", "token(4) is out of range for 4 tokens",
     "tokens are numbered 0 to 3, or -4 to -1 from the end"),
    ("tokens() -> position_embedding(std=-1.0)", "[8, 2, 2]", "NS203", None, None),
])
def test_mistakes_are_located_with_the_numbers(layer_spec, body, shape, code, message, hint):
    diagnostic = only_error(layer_spec(f"y = x -> {body}", shape))
    assert diagnostic.code == code and diagnostic.span.line == 3
    if message is not None:
        assert (diagnostic.message, diagnostic.hint) == (message, hint)


# docs/language.md ----------------------------------------------------------------------------------------------

def test_the_documented_small_vit_checks_as_the_text_says(tmp_path):
    section = (ROOT / "docs" / "language.md").read_text().split("### Tokens and attention", 1)[1]
    example, _, error = section.split("```\n", 4)[1:4]
    path = tmp_path / "tiny.net"
    path.write_text(example)
    graph = netspec.load(path)
    totals = netspec.summarize(graph).totals
    assert (totals.params, totals.macs) == (81_226, 1_385_994)
    attention = graph.node("layers.0.self_attention")
    assert (attention.shape, attention.params, attention.macs) == ((17, 64), 16_640, 315_520)
    assert graph.node("class_token").shape == (17, 64) and graph.nodes[-1].shape == (10,)
    # torchvision's VisionTransformer with the same settings has the same state_dict, less its encoder/heads levels
    reference = vision_transformer()(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                                     mlp_dim=128, num_classes=10)
    renamed = [k.replace("encoder.layers.encoder_layer_", "layers.").replace("encoder.", "").replace("heads.", "")
               .replace("mlp.3", "mlp.2") for k in reference.state_dict()]
    ours = to_module(graph).state_dict()
    assert sorted(ours) == sorted(renamed)
    assert sum(v.numel() for v in ours.values()) == sum(p.numel() for p in reference.parameters())
    path.write_text(example.replace("Encoder(4, 128)", "Encoder(5, 128)"))
    diagnostic = only_error(path)
    assert error == f"error[{diagnostic.code}]: {diagnostic.message}\n  = hint: {diagnostic.hint}\n"
