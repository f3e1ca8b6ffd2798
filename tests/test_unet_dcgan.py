"""specs/unet.net (Ronneberger et al. 2015) and specs/dcgan.net (the PyTorch DCGAN tutorial's networks), against
plain PyTorch modules written here in the papers' / tutorial's layout: parameter counts, shapes, state_dict keys
and order, outputs with the same weights, and ONNX parity in onnxruntime.

U-Net at the paper's 572x572 costs 150 GMACs per tile, too much for the 2-core CI: at that size it runs on the
meta device (shapes only); its outputs are compared at the smallest size the spec's `size` allows, 188 (a 4x4
output), with the paper's channel widths and so all 31,030,658 of its parameters.
"""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import netspec  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec.ground.errors import Sources  # noqa: E402

UNET = f"{ROOT}/specs/unet.net"
GENERATOR = f"{ROOT}/specs/dcgan.net:Generator"
DISCRIMINATOR = f"{ROOT}/specs/dcgan.net:Discriminator"


# --- U-Net ------------------------------------------------------------------------------------------------

def double_conv(c_in, c, pool=False):
    """Two valid 3x3 convolutions with ReLU, after a 2x2 max pooling on the way down."""
    layers = [nn.MaxPool2d(2, stride=2)] if pool else []
    return nn.Sequential(*layers, nn.Conv2d(c_in, c, 3), nn.ReLU(), nn.Conv2d(c, c, 3), nn.ReLU())


def crop_like(skip, up):
    """The paper's "copy and crop": the centre of the skip connection's map, at the up-sampled map's size."""
    top, left = (skip.shape[2] - up.shape[2]) // 2, (skip.shape[3] - up.shape[3]) // 2
    return skip[:, :, top:top + up.shape[2], left:left + up.shape[3]]


class ReferenceUNet(nn.Module):
    def __init__(self, classes=2, channels=1):
        super().__init__()
        self.down1 = double_conv(channels, 64)
        self.down2 = double_conv(64, 128, pool=True)
        self.down3 = double_conv(128, 256, pool=True)
        self.down4 = double_conv(256, 512, pool=True)
        self.bottom = double_conv(512, 1024, pool=True)
        self.up4, self.conv4 = nn.ConvTranspose2d(1024, 512, 2, stride=2), double_conv(1024, 512)
        self.up3, self.conv3 = nn.ConvTranspose2d(512, 256, 2, stride=2), double_conv(512, 256)
        self.up2, self.conv2 = nn.ConvTranspose2d(256, 128, 2, stride=2), double_conv(256, 128)
        self.up1, self.conv1 = nn.ConvTranspose2d(128, 64, 2, stride=2), double_conv(128, 64)
        self.classifier = nn.Conv2d(64, classes, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        x = self.bottom(d4)
        for up, conv, skip in ((self.up4, self.conv4, d4), (self.up3, self.conv3, d3), (self.up2, self.conv2, d2),
                               (self.up1, self.conv1, d1)):
            x = up(x)
            x = conv(torch.cat([crop_like(skip, x), x], dim=1))
        return self.classifier(x)


def keys_and_shapes(module):
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def test_unet_has_the_papers_31_030_658_parameters_and_sizes():
    graph = netspec.load(UNET)
    assert netspec.summarize(graph).totals.params == 31_030_658
    assert graph.input_shape == (1, 572, 572) and graph.node(graph.output).shape == (2, 388, 388)
    # the feature maps of Fig. 1: what each level's block ends with, down and up
    sizes = {scope: [n for n in graph.nodes if n.name.startswith(scope + ".")][-1].shape
             for scope in ("down1", "down2", "down3", "down4", "bottom", "conv4", "conv3", "conv2", "conv1")}
    assert sizes == {"down1": (64, 568, 568), "down2": (128, 280, 280), "down3": (256, 136, 136),
                     "down4": (512, 64, 64), "bottom": (1024, 28, 28), "conv4": (512, 52, 52),
                     "conv3": (256, 100, 100), "conv2": (128, 196, 196), "conv1": (64, 388, 388)}
    with torch.device("meta"):
        ours, reference = to_module(graph), ReferenceUNet()
        out = ours(torch.empty(1, 1, 572, 572))
    assert tuple(out.shape) == (1, 2, 388, 388)
    assert keys_and_shapes(ours) == keys_and_shapes(reference)
    assert sum(p.numel() for p in reference.parameters()) == 31_030_658


def test_unet_sizes_follow_the_size_parameter():
    assert netspec.load(UNET, size=188).node("classifier").shape == (2, 4, 4)
    assert netspec.load(UNET, size=204).node("classifier").shape == (2, 20, 20)


@pytest.fixture(scope="module")
def small_unet():
    """The spec at size 188, holding a plain PyTorch U-Net's seeded weights."""
    torch.manual_seed(0)
    reference = ReferenceUNet().eval()
    graph = netspec.load(UNET, size=188)
    ours = to_module(graph).eval()
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


def test_unet_computes_what_the_plain_pytorch_unet_computes(small_unet):
    _, reference, ours = small_unet
    x = torch.randn(2, 1, 188, 188, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert got.shape == want.shape == (2, 2, 4, 4)
    assert (got - want).abs().max().item() <= 1e-5 * max(want.abs().max().item(), 1.0)


def test_unet_onnx_export_agrees_in_onnxruntime(small_unet, tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    graph, _, ours = small_unet
    weights = tmp_path / "weights.pt"
    torch.save(ours.state_dict(), weights)
    report = export(graph, Sources(), tmp_path / "unet.onnx", weights=weights)
    assert report.ok, report  # onnxruntime agreed with PyTorch at batch 1 and 3
    assert [c.batch for c in report.comparisons] == [1, 3]
    assert report.ops["ConvTranspose"] == 4 and report.ops["Concat"] == 4


# --- DCGAN: the tutorial's classes (its `ngpu` argument, for nn.parallel, left out) ----------------------------

nz, ngf, ndf, nc = 100, 64, 64, 3


class TutorialGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, input):
        return self.main(input)


class TutorialDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input):
        return self.main(input)


def weights_init(m):
    """The tutorial's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales, zero shifts."""
    if "Conv" in type(m).__name__:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif "BatchNorm" in type(m).__name__:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def tutorial_and_compiled(spec, cls):
    torch.manual_seed(0)
    reference = cls()
    reference.apply(weights_init)
    graph = netspec.load(spec)
    ours = to_module(graph)
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


@pytest.mark.parametrize("spec, cls, params, output", [
    (GENERATOR, TutorialGenerator, 3_576_704, (3, 64, 64)),
    (DISCRIMINATOR, TutorialDiscriminator, 2_765_568, (1, 1, 1)),
])
def test_dcgan_counts_shapes_and_state_dict_match_the_tutorial(spec, cls, params, output):
    graph, reference, ours = tutorial_and_compiled(spec, cls)
    assert netspec.summarize(graph).totals.params == params == sum(p.numel() for p in reference.parameters())
    assert graph.node(graph.output).shape == output
    assert keys_and_shapes(ours) == keys_and_shapes(reference)  # main.0.weight, main.1.weight, ..., in order


def sample(spec, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, nz, generator=generator) if spec == GENERATOR else \
        torch.rand(batch, nc, 64, 64, generator=generator) * 2 - 1  # images in the generator's range


@pytest.mark.parametrize("spec, cls", [(GENERATOR, TutorialGenerator), (DISCRIMINATOR, TutorialDiscriminator)])
def test_dcgan_outputs_equal_the_tutorials_in_training_and_eval(spec, cls):
    _, reference, ours = tutorial_and_compiled(spec, cls)
    x = sample(spec, 4, 1)
    # the tutorial's generator takes the latent vector as a [nz, 1, 1] map; the spec reshapes the vector itself
    reference_input = x.view(4, nz, 1, 1) if spec == GENERATOR else x
    for training in (True, False):  # batch statistics, then the running statistics the training step moved
        reference.train(training), ours.train(training)
        with torch.no_grad():
            want, got = reference(reference_input), ours(x)
        assert got.shape == want.shape == ((4, 3, 64, 64) if spec == GENERATOR else (4, 1, 1, 1))
        assert (got - want).abs().max().item() <= 1e-6
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("spec, cls", [(GENERATOR, TutorialGenerator), (DISCRIMINATOR, TutorialDiscriminator)])
def test_dcgan_onnx_export_agrees_in_onnxruntime(spec, cls, tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    graph, _, ours = tutorial_and_compiled(spec, cls)
    ours.train()
    with torch.no_grad():
        ours(sample(spec, 8, 2))  # move the batch-norm statistics off their initial values
    weights = tmp_path / "weights.pt"
    torch.save(ours.state_dict(), weights)
    report = export(graph, Sources(), tmp_path / "dcgan.onnx", weights=weights)
    assert report.ok, report  # onnxruntime agreed with PyTorch at batch 1 and 3
    assert [c.batch for c in report.comparisons] == [1, 3]
