"""The spec library reproduces published parameter and MAC counts exactly."""

import pytest

import netspec

# spec -> (parameters, trainable, MACs per sample at the spec's input size, output shape)
PUBLISHED = {
    "lenet5": (60_840, 60_000, None, [10]),
    "lenet": (61_706, 61_706, None, [10]),
    "alexnet": (61_100_840, 61_100_840, 714_197_672, [1000]),
    "vgg11": (132_863_336, 132_863_336, 7_609_099_240, [1000]),
    "vgg16": (138_357_544, 138_357_544, 15_470_273_512, [1000]),
    "vgg19": (143_667_240, 143_667_240, 19_632_071_656, [1000]),
    "vgg11_bn": (132_868_840, 132_868_840, None, [1000]),
    "vgg16_bn": (138_365_992, 138_365_992, None, [1000]),
    "googlenet": (6_624_904, 6_624_904, 1_498_391_752, [1000]),
    "resnet18": (11_689_512, 11_689_512, 1_814_083_944, [1000]),
    "resnet34": (21_797_672, 21_797_672, 3_663_779_432, [1000]),
    "resnet50": (25_557_032, 25_557_032, 4_089_238_376, [1000]),
    "resnet101": (44_549_160, 44_549_160, 7_801_511_784, [1000]),
    "resnet152": (60_192_808, 60_192_808, 11_513_779_048, [1000]),
    "capsnet": (8_215_568, 8_215_568, 203_204_880, [10]),  # Sabour et al. 2017, with the decoder
    "resnet18_mnist": (11_172_810, 11_172_810, 455_810_442, [10]),  # CIFAR-style ResNet-18 less 2x64x9 stem weights
    "vgg_mnist": (585_066, 585_066, 29_425_802, [10]),
    "ensemble_vgg_resnet": (585_066 + 11_172_810, 585_066 + 11_172_810, 29_425_802 + 455_810_442, [10]),
    "ensemble_vgg_capsnet": (585_066 + 8_215_568, 585_066 + 8_215_568, 29_425_802 + 203_204_880, [10]),
}

# torchvision's documentation prints GFLOPS (which are MACs) to 3 significant decimals.
TORCHVISION_GMACS = {"resnet18": "1.814", "resnet50": "4.089", "resnet152": "11.514", "alexnet": "0.714",
                     "vgg16": "15.47", "googlenet": "1.498"}


def totals(name):
    return netspec.summarize(netspec.load(f"specs/{name}.net")).totals


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_counts(name, in_repo):
    params, trainable, macs, output = PUBLISHED[name]
    t = totals(name)
    assert t.params == params
    assert t.trainable == trainable
    assert t.non_trainable == params - trainable
    assert t.output_shape == output
    if macs is not None:
        assert t.macs == macs
        assert t.flops == 2 * macs


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_match_torchvision_to_printed_precision(name, in_repo):
    printed = TORCHVISION_GMACS[name]
    decimals = len(printed.split(".")[1])
    assert f"{totals(name).macs / 1e9:.{decimals}f}" == printed


def test_lenet5_layer_by_layer(in_repo):
    graph = netspec.load("specs/lenet5.net")
    layers = {n.name: (n.op, list(n.shape), n.params, n.trainable) for n in graph.nodes if n.params}
    assert layers == {
        "C1": ("conv", [6, 28, 28], 156, 156),
        "S2": ("subsample", [6, 14, 14], 12, 12),
        "C3": ("conv", [16, 10, 10], 1516, 1516),
        "S4": ("subsample", [16, 5, 5], 32, 32),
        "C5": ("conv", [120, 1, 1], 48120, 48120),
        "F6": ("linear", [84], 10164, 10164),
        "output": ("rbf", [10], 840, 0),
    }
    # C3 is sparse: 60 of the 96 possible S2->C3 connections, 25 weights each, plus 16 biases.
    assert graph.node("C3").macs == 60 * 25 * 10 * 10


def test_nin_count_by_hand(in_repo):
    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    def nin_block(cin, c, k):
        return conv(cin, c, k) + 2 * conv(c, c, 1)

    by_hand = nin_block(1, 96, 11) + nin_block(96, 256, 5) + nin_block(256, 384, 3) + nin_block(384, 10, 3)
    assert by_hand == 1_992_166
    t = totals("nin")
    assert t.params == by_hand
    assert t.output_shape == [10]


def test_resnet_names_follow_torchvision(in_repo):
    graph = netspec.load("specs/resnet50.net")
    names = [n.name for n in graph.nodes if n.params]
    assert names[:4] == ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1"]
    assert "layer2.0.downsample" in names and "layer2.1.downsample" not in names
    assert names[-1] == "fc"
    assert len([n for n in names if n.startswith("layer3.")]) == 6 * 6 + 1  # 6 units of 3 conv+BN, 1 projection


def test_resnet_batchnorm_buffers(in_repo):
    # running_mean + running_var per channel, plus one num_batches_tracked per BN (projections included)
    graph = netspec.load("specs/resnet18.net")
    bn_channels = sum(n.shape[0] for n in graph.nodes if n.op == "batchnorm")
    projections = [n for n in graph.nodes if n.op == "add" and n.params]
    bn_channels += sum(n.shape[0] for n in projections)
    bn_count = sum(1 for n in graph.nodes if n.op == "batchnorm") + len(projections)
    assert netspec.summarize(graph).totals.buffers == 2 * bn_channels + bn_count == 9620


def test_vgg_features_are_numbered_like_torchvision(in_repo):
    graph = netspec.load("specs/vgg16.net")
    convs = [n.name for n in graph.nodes if n.op == "conv"]
    assert convs == ["features.0", "features.2", "features.5", "features.7", "features.10", "features.12",
                     "features.14", "features.17", "features.19", "features.21", "features.24", "features.26",
                     "features.28"]
    assert [n.name for n in graph.nodes if n.op == "linear"] == ["classifier.0", "classifier.3", "classifier.6"]


def test_googlenet_inception_shapes(in_repo):
    graph = netspec.load("specs/googlenet.net")
    shapes = {n.name: list(n.shape) for n in graph.nodes}
    assert shapes["maxpool1"] == [64, 56, 56]  # ceil_mode
    assert shapes["inception3a.branch1.conv"] == [64, 28, 28]
    assert graph.node("inception3b.4").op == "concat"
    assert shapes["inception3b.4"] == [480, 28, 28]
    assert shapes["inception5b.4"] == [1024, 7, 7]


def test_network_parameters_can_be_overridden(in_repo):
    assert netspec.summarize(netspec.load("specs/resnet50.net", classes=10)).totals.params == 25_557_032 - 2048 * 990 - 990


@pytest.mark.parametrize("name", sorted(PUBLISHED) + ["nin"])
def test_graph_invariants_hold_after_every_pass(name, in_repo):
    from netspec.ir import validate
    from netspec.semantics.lower import lower
    from netspec.semantics.program import load_program
    from netspec.analysis.passes import PASSES

    graph = lower(load_program(f"specs/{name}.net"))
    validate(graph)
    for run_pass in PASSES:
        graph = run_pass(graph)
        validate(graph)
        assert not graph.diagnostics
    assert all(n.shape and n.params is not None and n.macs is not None for n in graph.nodes)


def test_capsnet_layer_by_layer(in_repo):
    """The paper's sizes: Conv1 20,992; PrimaryCaps 5,308,672 (1,152 8-D capsules); DigitCaps 1,474,560."""
    graph = netspec.load("specs/capsnet.net")
    layers = {n.name: (n.op, list(n.shape), n.params) for n in graph.nodes}
    assert layers["conv1"] == ("conv", [256, 20, 20], 20_992)
    assert layers["primary"] == ("conv", [256, 6, 6], 5_308_672)
    assert layers["3"] == ("capsules", [1152, 8], 0)
    assert layers["digits"] == ("capsule", [10, 16], 1_152 * 10 * 8 * 16)
    assert layers["7"] == ("capsule_length", [10], 0)
    # predictions, then 3 weighted sums and 2 agreements of 1,152 x 10 x 16 each
    assert graph.node("digits").macs == 1_474_560 + 5 * 184_320
    assert graph.outputs() == ["7", "decoder.8"] and graph.takes_labels()


def test_capsnet_decoder(in_repo):
    """16*10 -> 512 -> 1024 -> 784, reshaped to the image: 1,411,344 parameters; 6,804,224 without it."""
    graph = netspec.load("specs/capsnet.net")
    decoder = [(n.op, list(n.shape), n.params) for n in graph.nodes if n.scope == ("decoder",)]
    assert decoder == [("capsule_mask", [10, 16], 0), ("flatten", [160], 0), ("linear", [512], 82_432),
                       ("relu", [512], 0), ("linear", [1024], 525_312), ("relu", [1024], 0),
                       ("linear", [784], 803_600), ("sigmoid", [784], 0), ("reconstruction", [1, 28, 28], 0)]
    assert graph.node("decoder.8").inputs == ["decoder.7", "x"]  # the network's input: the shape to reproduce
    rows = {r.name: r.params for r in netspec.summarize(graph, depth=1).rows}
    assert rows["decoder"] == 1_411_344
    without = netspec.load("specs/capsnet.net", decoder=False)
    assert netspec.summarize(without).totals.params == 6_804_224
    assert without.outputs() == ["6"] and not without.takes_labels()


def test_check_shows_each_ensemble_member_and_the_total(in_repo):
    summary = netspec.summarize(netspec.load("specs/ensemble_vgg_resnet.net"), depth=1)
    rows = {r.name: (r.op, r.params) for r in summary.rows}
    assert rows == {"x": ("input", 0), "vgg": ("VGGMnist", 585_066), "resnet": ("ResNet18Mnist", 11_172_810),
                    "2": ("ensemble", 0)}
    assert summary.totals.params == 11_757_876
