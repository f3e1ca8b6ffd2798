"""The torchvision zoo (specs/torchvision/): every classification CNN builder and the Vision Transformers, checked
against torchvision.

Each spec file there defines networks named after torchvision's builders (`network resnet18 ...`). For every
builder: the parameter count equals torchvision's (its weights' published `num_params`), the MACs equal its
published GFLOPS at their printed precision (docs/zoo.md says where and how torchvision counts differently),
and the compiled state_dict has the builder's keys, shapes and order (on the meta device). One member of each
family also computes what torchvision computes, in PyTorch and in onnxruntime.
"""

from pathlib import Path
from unittest import mock

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
import torchvision.models as tv  # noqa: E402

import netspec  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from netspec.ground.errors import Sources  # noqa: E402
from netspec.semantics.program import load_program  # noqa: E402

ZOO = ROOT / "specs" / "torchvision"
TRANSFORMERS = ()  # torchvision's transformers: ViT (vit.net), Swin (swin.net), MaxViT (maxvit.net)


def zoo_networks() -> dict[str, Path]:
    """builder name -> the spec file that defines it."""
    found = {}
    for path in sorted(ZOO.glob("*.net")):
        for name in load_program(path).root.networks:
            found[name] = path
    return found


NETWORKS = zoo_networks()
BUILDERS = sorted(n for n in tv.list_models(module=tv) if not n.startswith(TRANSFORMERS))

# Builders whose default construction differs from the one their published weights describe: the arguments
# that make the spec match the weights' metadata (the default spec matches the builder's default model).
AS_PUBLISHED = {"googlenet": {"aux_logits": False}}  # torchvision drops the auxiliary classifiers with weights

# Where torchvision's published GFLOPS do not equal netspec's MACs at their precision: builder -> (the
# published figure, why). docs/zoo.md explains each.
MACS_DIFFER: dict[str, tuple[float, str]] = {
    # torchvision counted only aten.convolution and aten.addmm (weights x positions; 3,176,482,752 by
    # torch.utils.flop_counter); netspec also counts batch norm's 2C (66,160) and fc's bias (1,000):
    # 3,176,549,912, which rounds to 3.177.
    "regnet_y_3_2gf": (3.176, "batch norm (66,160) and fc bias (1,000) counted: 3,176,549,912 vs 3,176,482,752"),
    # torchvision counted Inception-v3's eval-mode forward (5,713,216,096 by torch.utils.flop_counter), which
    # skips the auxiliary classifier its weights include; netspec counts every layer, AuxLogits' 5,683,200
    # included (5,718,937,520; 5,713,251,528 with aux_logits=false, batch norm and biases making the rest).
    "inception_v3": (5.713, "the auxiliary classifier (5,683,200) counted: 5,718,937,520 vs the eval-mode "
                            "forward's 5,713,216,096"),
    # The same for ConvNeXt-Large: torchvision 34,361,433,600; netspec adds layer norm's 2C (60,288), layer
    # scale's C (27,072) and the classifier's bias (1,000): 34,361,521,960, which rounds to 34.362.
    "convnext_large": (34.361, "layer norm (60,288), layer scale (27,072) and classifier bias (1,000) counted: "
                               "34,361,521,960 vs 34,361,433,600"),
    # The same rule for MNASNet and EfficientNet: netspec's batch norm 2C and classifier bias tip the rounding.
    "mnasnet0_75": (0.215, "batch norm (29,808) and classifier bias (1,000) counted: 215,523,912 vs 215,493,104"),
    "efficientnet_b5": (10.266, "batch norm (172,736) and classifier bias (1,000) counted: "
                                "10,266,558,488 vs 10,266,384,752"),
    "efficientnet_v2_m": (24.582, "batch norm (292,032) and classifier bias (1,000) counted: "
                                  "24,582,753,416 vs 24,582,460,384"),
    # And for ResNet-101 (its batch norms: 97,664 in the units, 7,680 in the downsample projections) and
    # DenseNet-201: 7,801,511,784 rounds to 7.802 and 4,291,595,944 to 4.292.
    "resnet101": (7.801, "batch norm (105,344) and fc bias (1,000) counted: 7,801,511,784 vs 7,801,405,440"),
    "densenet201": (4.291, "batch norm (229,056) and classifier bias (1,000) counted: "
                           "4,291,595,944 vs 4,291,365,888"),
}

# One member per family: outputs compared with torchvision's, in PyTorch and onnxruntime.
REPRESENTATIVES = ["alexnet", "vgg11_bn", "resnet18", "resnext50_32x4d", "wide_resnet50_2", "squeezenet1_1",
                   "densenet121", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5",
                   "shufflenet_v2_x0_5", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf",
                   "regnet_y_400mf", "convnext_tiny", "vit_b_32", "maxvit_t", "swin_t"]
# The ONNX check takes one member of each torchvision model file; AlexNet, VGG, ResNet and GoogLeNet are
# exported from specs/ in tests/test_onnx.py and tests/test_outputs.py, so they are not repeated here; ViT's family
# spec is exported at a small size, with torchvision's VisionTransformer's weights, in tests/test_vit.py.
EXPORTED = ["resnext50_32x4d", "squeezenet1_1", "densenet121", "inception_v3", "mobilenet_v2", "mobilenet_v3_small",
            "mnasnet0_5", "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny"]


def spec_of(name: str) -> str:
    return f"{NETWORKS[name]}:{name}"


def builder_on_meta(name: str, **kwargs):
    """The builder's model with meta tensors. RegNet's builder derives its stage widths with tensors and reads
    them back (`.tolist()`), which meta tensors cannot do, so that arithmetic runs on the CPU."""
    from_init_params = tv.regnet.BlockParams.from_init_params

    def block_params_on_cpu(**settings):
        with torch.device("cpu"):
            return from_init_params(**settings)

    with torch.device("meta"), mock.patch.object(tv.regnet.BlockParams, "from_init_params", block_params_on_cpu):
        return tv.get_model(name, weights=None, **kwargs)


def published(name: str, size: int):
    """The builder's weights at the spec's input size (their metadata holds the published figures)."""
    weights = [w for w in tv.get_model_weights(name) if w.transforms().crop_size == [size]]
    assert weights, f"{name}: no published weights at {size}x{size}"
    return weights[0]


def test_the_zoo_covers_every_torchvision_cnn_builder_and_vit():
    assert len(BUILDERS) == 80 and len([b for b in BUILDERS if b.startswith("vit_")]) == 5
    assert len([b for b in BUILDERS if b.startswith("swin_")]) == 6
    assert sorted(NETWORKS) == BUILDERS


@pytest.mark.parametrize("name", BUILDERS)
def test_counts_match_the_published_figures(name):
    if name not in NETWORKS:
        pytest.fail(f"no spec defines {name}")
    graph = netspec.load(spec_of(name), **AS_PUBLISHED.get(name, {}))
    totals = netspec.summarize(graph).totals
    weights = published(name, graph.input_shape[1])
    assert totals.params == weights.meta["num_params"]
    printed = MACS_DIFFER.get(name, (weights.meta["_ops"], ""))[0]
    assert printed == weights.meta["_ops"]
    if name not in MACS_DIFFER:
        decimals = len(str(printed).split(".")[1])
        assert f"{totals.macs / 1e9:.{decimals}f}" == f"{printed:.{decimals}f}"


@pytest.mark.parametrize("name", BUILDERS)
def test_state_dict_keys_shapes_and_order_match_the_builder(name):
    if name not in NETWORKS:
        pytest.fail(f"no spec defines {name}")
    graph = netspec.load(spec_of(name))
    with torch.device("meta"):
        ours = to_module(graph).state_dict()
    theirs = builder_on_meta(name).state_dict()
    ours, theirs = [(k, tuple(v.shape)) for k, v in ours.items()], [(k, tuple(v.shape)) for k, v in theirs.items()]
    assert ours == theirs
    assert sum(n.params for n in graph.nodes) == sum(p.numel() for p in builder_on_meta(name).parameters())


def weight_macs(node) -> int:
    """The part of a node's MACs that multiplies weights: what torch.utils.flop_counter counts (convolutions and
    matrix products, no bias). netspec's rule adds biases of linear layers and 2C per normalisation (docs/zoo.md)."""
    if node.op in ("conv", "conv_transpose"):
        return node.macs
    if node.op == "linear":  # over channels and over tokens count no bias
        over_features_bias = node.args.bias and node.args.over == "features" and len(node.shape) == 1
        return node.macs - (node.args.out_features if over_features_bias else 0)
    if node.op in ("self_attention", "partition_attention"):  # projections and two matrix products, no bias
        return node.macs
    if node.op == "window_attention":  # the same within windows, and v2's position-bias MLP (no bias)
        return node.macs
    if node.op == "patch_merging":  # the reduction's 4C x 2C weights at each position; its norm's 2C do not count
        return node.macs - (node.params - 2 * node.shape[0] ** 2)
    if node.op == "add" and node.args.project_bn:  # projection convs count; their batch norms' 2C each do not
        channels = node.shape[0]
        projected = node.buffers // (2 * channels + 1)  # each projection's batch norm keeps 2C + 1 buffers
        return node.macs - 2 * channels * projected
    if node.op == "add":
        return node.macs
    return 0


@pytest.mark.parametrize("name", BUILDERS)
def test_weight_macs_equal_torchs_flop_counter_exactly(name):
    """The exact form of the published-GFLOPS check: torchvision computed its figures with this counter."""
    from torch.utils.flop_counter import FlopCounterMode

    if name not in NETWORKS:
        pytest.fail(f"no spec defines {name}")
    graph = netspec.load(spec_of(name))
    # GoogLeNet's and Inception-v3's auxiliary classifiers run only while training, and netspec counts every
    # layer: count those builders training, on two samples (batch norm on Inception-v3's 1x1 auxiliary map
    # needs more than one value per channel).
    batch = 2 if graph.aux_outputs else 1
    model = builder_on_meta(name).train(bool(graph.aux_outputs))
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(batch, *graph.input_shape, device="meta"))
    assert sum(weight_macs(n) for n in graph.nodes) * 2 * batch == counter.get_total_flops()


def perturbed(model):
    """Seeded random weights, with batch-norm statistics moved off the identity so they are exercised (and ViT's
    class token and head, which torchvision starts at zero, drawn at random)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if isinstance(model, tv.VisionTransformer):
            for parameter in (model.class_token, model.heads.head.weight, model.heads.head.bias):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def reference_and_compiled(name: str):
    torch.manual_seed(0)
    reference = perturbed(tv.get_model(name, weights=None))
    graph = netspec.load(spec_of(name))
    ours = to_module(graph).eval()
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_outputs_equal_torchvisions_with_its_weights(name):
    graph, reference, ours = reference_and_compiled(name)
    x = torch.randn(2, *graph.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert got.shape == want.shape == (2, *graph.node(graph.output).shape)
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_agrees_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    graph, _, ours = reference_and_compiled(name)
    weights = tmp_path / "weights.pt"
    torch.save(ours.state_dict(), weights)  # torchvision's weights, perturbed statistics included
    report = export(graph, Sources(), tmp_path / f"{name}.onnx", weights=weights)
    assert report.ok, report  # onnxruntime agreed with PyTorch at batch 1 and 3, every output
    assert [c.batch for c in report.comparisons] == [1, 3]


# ViT's weights at higher resolutions (SWAG, fine-tuned end to end): the same builders at another image size.
VIT_SIZES = [("vit_b_16", 384), ("vit_l_16", 512), ("vit_h_14", 518)]


@pytest.mark.parametrize("name, size", VIT_SIZES)
def test_vit_at_the_sizes_of_its_swag_weights_matches_their_published_figures(name, size):
    graph = netspec.load(spec_of(name), size=size)
    totals = netspec.summarize(graph).totals
    weights = published(name, size)
    assert totals.params == weights.meta["num_params"]
    assert f"{totals.macs / 1e9:.3f}" == f"{weights.meta['_ops']:.3f}"
    with torch.device("meta"):
        ours = to_module(graph).state_dict()
    theirs = builder_on_meta(name, image_size=size).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]


def test_the_readmes_zoo_table_is_generated_from_the_specs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "bench" / "zoo_table.py")
    zoo_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo_table)
    readme = (ROOT / "README.md").read_text()
    assert zoo_table.readme_with_table(readme) == readme, "run: python bench/zoo_table.py --write"
    assert len(zoo_table.rows()) == len(BUILDERS)
