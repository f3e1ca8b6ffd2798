"""`netspec import` (netspec/importer/): a PyTorch module becomes a spec whose compiled module has the original's
parameters, state_dict keys, shapes and order, and computes its outputs. torchvision and torch are the oracles:
every check below compares with the original module, not with the importer's own report. All 68 torchvision
classification CNNs are imported here on the meta device; bench/import_zoo.py also runs their outputs and their
ONNX exports."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
import torchvision.models as tv  # noqa: E402
from torch import nn  # noqa: E402

import netspec  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from netspec.cli.main import main  # noqa: E402
from netspec.importer import ImportFailed, import_module, load_target  # noqa: E402
from test_zoo import builder_on_meta, perturbed  # noqa: E402

# Every torchvision classification CNN, built as torchvision builds it (GoogLeNet and Inception-v3 with their
# auxiliary classifiers, which run only while training: test_auxiliary_classifiers_become_auxiliary_outputs).
CNNS = sorted(n for n in tv.list_models(module=tv) if not n.startswith(("vit_", "swin_", "maxvit_")))


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run small convolutions, which one thread computes fastest; on a loaded machine torch's
    threads wait on each other (mobilenet_v3_small at 32x32: 0.1 s with one thread, 3 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec_module(text: str, tmp_path, device: str = "cpu"):
    path = tmp_path / "imported.net"
    path.write_text(text)
    graph = netspec.load(path)
    with torch.device(device):
        return graph, to_module(graph, seed=0)


def keys_and_shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")  # GoogLeNet's, Inception's
def test_the_cnns_are_torchvisions_68():
    assert len(CNNS) == 68


@pytest.mark.parametrize("name", CNNS)
def test_every_torchvision_cnn_imports_with_its_state_dict_and_parameters(name, tmp_path):
    size = 299 if name == "inception_v3" else 224
    original = builder_on_meta(name)
    # the importer's own verification (check=True) is what this test does against the original: once is enough
    imported = import_module(original, (3, size, size), name, check=False)
    graph, module = spec_module(imported.text, tmp_path, "meta")
    assert keys_and_shapes(module) == keys_and_shapes(original)
    assert sum(n.params for n in graph.nodes) == sum(p.numel() for p in original.parameters())
    assert graph.input_shape == (3, size, size)


def test_a_module_named_as_a_keyword_of_the_language_gets_a_quoted_label(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register = nn.Conv2d(3, 4, 3)  # `register` and `train` begin statements in a spec
            self.train_ = nn.ReLU()

        def forward(self, x):
            return self.train_(self.register(x))

    original = Net()
    imported = import_module(original, (3, 8, 8), "Net")
    assert '  "register": conv(4, kernel=3) -> train_: relu()' in imported.text.splitlines()
    _, module = spec_module(imported.text, tmp_path)
    assert keys_and_shapes(module) == keys_and_shapes(original)


def test_resnet50_reads_like_the_hand_written_resnet(tmp_path):
    imported = import_module(builder_on_meta("resnet50"), (3, 224, 224), "resnet50")
    lines = imported.text.splitlines()
    assert imported.blocks == 1 and len(lines) == 27
    assert lines[0] == "block Bottleneck(conv1_out, conv3_out, conv2_stride=1) {"
    assert '  downsample: add(x, project="auto") -> relu()' in lines
    assert "  layer1: { Bottleneck(64, 256) * 3 }" in lines
    assert "    Bottleneck(256, 1024) * 5" in lines


def small_densenet():
    return tv.DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, num_classes=10)


def small_convnext():
    from torchvision.models.convnext import CNBlockConfig

    return tv.ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], stochastic_depth_prob=0.1,
                       num_classes=10)


# Real seeded weights: torchvision's small builders, and DenseNet and ConvNeXt built small (their families' every
# construct: dense concatenation, channels-last layer norms, layer scale, stochastic depth).
WITH_WEIGHTS = {"resnet18": tv.resnet18, "mobilenet_v3_small": tv.mobilenet_v3_small,
                "shufflenet_v2_x0_5": tv.shufflenet_v2_x0_5, "densenet": small_densenet, "convnext": small_convnext}


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_outputs_equal_the_originals_with_its_weights(name, tmp_path):
    torch.manual_seed(0)
    original = perturbed(WITH_WEIGHTS[name]())
    imported = import_module(original, (3, 32, 32), name)
    _, module = spec_module(imported.text, tmp_path)
    module.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = original(x), module.eval()(x)
    assert got.shape == want.shape and want.shape[0] == 2
    assert (got - want).abs().max().item() <= 1e-5 * max(want.abs().max().item(), 1.0)
    assert imported.verification.outputs_compared and imported.verification.ok


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """A small U-Net: each decoder step concatenates the encoder's map at its resolution."""

    def __init__(self, width: int = 8, classes: int = 3):
        super().__init__()
        self.inc = DoubleConv(3, width)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(width, 2 * width))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * width, 4 * width))
        self.up1 = Up(4 * width, 2 * width)
        self.up2 = Up(2 * width, width)
        self.outc = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        return self.outc(self.up2(self.up1(x3, x2), x1))


class Generator(nn.Module):
    """DCGAN's generator (Radford et al. 2016) at 32x32: a latent vector up to an image."""

    def __init__(self, latent: int = 16, width: int = 8):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent, width * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(width * 4), nn.ReLU(True),
            nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(True),
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z.view(z.size(0), -1, 1, 1))


def check_exact(original: nn.Module, shape, tmp_path):
    torch.manual_seed(0)
    original = perturbed(original)
    imported = import_module(original, shape)
    _, module = spec_module(imported.text, tmp_path)
    assert keys_and_shapes(module) == keys_and_shapes(original)
    module.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = original(x), module.eval()(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(want.abs().max().item(), 1.0)
    return imported


def test_a_unet_imports_with_its_skips_as_named_values(tmp_path):
    imported = check_exact(UNet(), (3, 32, 32), tmp_path)
    assert imported.verification.params == sum(p.numel() for p in UNet().parameters()) == 29_643
    lines = imported.text.splitlines()
    # torch.cat([skip, up(x)]): the skip continues the chain, the upsampled map is named; Up takes two tensors,
    # so it is written in place with dotted labels (up1.up, up1.conv: the original's keys)
    assert '  down1 -> concat(conv_transpose) -> "up1.conv": DoubleConv(16)' in lines
    assert '  inc -> concat(conv_transpose_1) -> "up2.conv": DoubleConv(8) -> outc: conv(3, kernel=1)' in lines


def test_a_dcgan_generator_imports_exactly(tmp_path):
    imported = check_exact(Generator(), (16,), tmp_path)
    assert "reshape([16, 1, 1])" in imported.text and "tanh()" in imported.text
    assert imported.verification.params == sum(p.numel() for p in Generator().parameters())


class Erf(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.erf(self.conv(x))


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Erf()

    def forward(self, x):
        return self.body(x)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.gate(x)
        if y.sum() > 0:
            return y
        return -y


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage = nn.Sequential(nn.ReLU(), DataDependent())

    def forward(self, x):
        return self.stage(x)


def test_an_op_the_registry_lacks_is_refused_naming_it_the_module_and_the_line():
    with pytest.raises(ImportFailed) as caught:
        import_module(Wrapper(), (3, 8, 8))
    message = str(caught.value)
    assert message.startswith("cannot import function torch.erf in module 'body'")
    assert "module 'body'" in message and "test_import.py" in message and "return torch.erf(self.conv(x))" in message
    assert caught.value.exit_code == 1


def test_data_dependent_control_flow_is_refused_naming_the_module_and_the_line():
    with pytest.raises(ImportFailed) as caught:
        import_module(Outer(), (3, 8, 8))
    message = str(caught.value)
    assert "module 'stage.1'" in message and "if y.sum() > 0:" in message and "test_import.py" in message


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
def test_auxiliary_classifiers_become_auxiliary_outputs_where_torchvision_registers_them():
    """GoogLeNet's aux1 and aux2 run only while training, after inception4a and 4d, and are registered after
    inception5b: traced in training mode, written after inception5b, and given as outputs after the logits."""
    imported = import_module(builder_on_meta("googlenet"), (3, 224, 224), "googlenet")
    lines = imported.text.splitlines()
    assert lines[-6:-4] == ["  inception4a -> aux1: InceptionAux()", "  inception4d -> aux2: InceptionAux()"]
    assert lines[-7].startswith("  inception5b: Inception(384, 192, 384, 48, 128")
    assert lines[-2] == "  output fc, aux2, aux1"
    assert imported.verification.keys_equal and imported.verification.params == 13_004_888


class NeverCalled(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 4, 1)
        self.spare = nn.Linear(4, 4)

    def forward(self, x):
        return self.used(x)


def test_a_module_the_forward_never_calls_is_refused():
    with pytest.raises(ImportFailed, match=r"2 state_dict entries are not used.*'spare.weight' \(module 'spare'\)"):
        import_module(NeverCalled(), (3, 4, 4))


def test_builders_are_called_with_literal_keywords_only():
    model, name = load_target("test_import:Generator(latent=4, width=2)")
    assert name == "Generator" and model.main[0].in_channels == 4 and model.main[0].out_channels == 8
    for target, said in [("test_import:Generator(latent=__import__('os'))", "not a Python literal"),
                         ("test_import:Generator(4)", "must be keywords"), ("test_import:Nothing", "no callable"),
                         ("no_such_module_here:Net", "cannot import the Python module"),
                         ("resnet50", "MODULE:CALLABLE")]:
        with pytest.raises(ImportFailed, match=said):
            load_target(target)


def test_the_cli_imports_then_check_reads_the_spec_and_the_weights_load(tmp_path, capsys):
    out, weights = tmp_path / "unet.net", tmp_path / "unet.pt"
    assert main(["import", "test_import:UNet(width=4)", "-o", str(out), "--input", "3,16,16",
                 "--weights", str(weights)]) == 0
    printed = capsys.readouterr().out
    assert "state_dict: 66 keys, names, shapes and order equal" in printed and "outputs equal" in printed
    assert main(["check", str(out)]) == 0
    from netspec.backends.torch.module import read_weights_file

    state = read_weights_file(weights)["model"]
    module = to_module(netspec.load(out))
    module.load_state_dict(state, strict=True)
    assert main(["import", "test_import:Wrapper", "-o", str(tmp_path / "erf.net"), "--input", "3,8,8"]) == 1
    assert "cannot import" in capsys.readouterr().err and not (tmp_path / "erf.net").exists()
    assert main(["import", "test_import:UNet", "-o", str(out), "--input", "3,x"]) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx's TorchScript exporter, as netspec export uses
def test_an_onnx_export_imports_with_its_initialiser_names_and_agrees_with_onnxruntime(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from netspec.importer import import_onnx

    torch.manual_seed(0)
    original = perturbed(tv.resnet18(num_classes=10))
    path = tmp_path / "resnet18.onnx"
    # PRESERVE keeps batch norm as its own node, so each initialiser keeps its module's name
    torch.onnx.export(original, torch.zeros(1, 3, 32, 32), path, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    imported = import_onnx(path)
    assert "  layer2: { Block(128, conv1_stride=2) -> Block(128) }" in imported.text.splitlines()
    _, module = spec_module(imported.text, tmp_path)
    assert keys_and_shapes(module) == keys_and_shapes(original)
    module.load_state_dict(imported.weights, strict=True)
    import onnxruntime

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        got = module.eval()(x)
        assert (got - original(x)).abs().max().item() <= 1e-5 * max(got.abs().max().item(), 1.0)
    assert (got - want).abs().max().item() <= 1e-5 * max(want.abs().max().item(), 1.0)
    # the CLI takes the .onnx file and writes the initialisers as the checkpoint
    out, weights = tmp_path / "from_onnx.net", tmp_path / "from_onnx.pt"
    assert main(["import", str(path), "-o", str(out), "--weights", str(weights)]) == 0
    assert "outputs equal onnxruntime's" in capsys.readouterr().out
    assert main(["check", str(out)]) == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("opset", [17, None])  # GELU spelt out with erf before opset 20, one Gelu node after
def test_a_convnext_export_imports_its_channels_last_layers_and_agrees_with_onnxruntime(opset, tmp_path):
    pytest.importorskip("onnxruntime")
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    from netspec.importer import import_onnx

    torch.manual_seed(0)
    original = perturbed(ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 2)], num_classes=5))
    with torch.no_grad():
        for name, parameter in original.named_parameters():
            if name.endswith("layer_scale"):  # away from 1e-6, so that the blocks count in the outputs
                parameter.copy_(torch.rand(parameter.shape, generator=torch.Generator().manual_seed(2)))
    path = tmp_path / "convnext.onnx"
    torch.onnx.export(original, torch.zeros(1, 3, 32, 32), path, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      **({"opset_version": opset} if opset else {}))
    imported = import_onnx(path)  # raises unless onnxruntime agrees
    lines = imported.text.splitlines()
    assert '    linear(block_out, over="channels") -> gelu() -> linear(cin, over="channels")' in lines
    assert "  layer_scale: layer_scale() -> add(x)" in lines
    _, module = spec_module(imported.text, tmp_path)
    assert sorted(keys_and_shapes(module)) == sorted(keys_and_shapes(original))  # ONNX keeps no module order
    module.load_state_dict(imported.weights, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = original.eval()(x), module.eval()(x)
    assert (got - want).abs().max().item() <= 1e-5 * max(want.abs().max().item(), 1.0)


def test_an_onnx_node_without_an_op_is_refused_by_name(tmp_path):
    onnx = pytest.importorskip("onnx")
    from netspec.importer import import_onnx

    node = onnx.helper.make_node("Erf", ["x"], ["y"], name="/body/Erf")
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1, 3, 4, 4])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1, 3, 4, 4])])
    path = tmp_path / "erf.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(ImportFailed, match=r"cannot import ONNX node '/body/Erf' \(Erf\): netspec has no op"):
        import_onnx(path)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


def test_weights_shared_between_two_calls_are_refused():
    with pytest.raises(ImportFailed, match="cannot import a second call of module 'conv' in module 'conv'.*shared"):
        import_module(Shared(), (3, 8, 8))


def test_a_family_is_one_file_whose_networks_share_a_block_and_are_each_exact(tmp_path):
    """resnet18 and resnet34 imported together: one BasicBlock (the stride a parameter with its default), two
    networks; each, loaded from the one file by name, has its original's state_dict and parameters."""
    from netspec.importer import import_family, module_source

    originals = {name: builder_on_meta(name) for name in ("resnet18", "resnet34")}
    family = import_family([module_source(model, (3, 64, 64), name) for name, model in originals.items()])
    lines = family.text.splitlines()
    assert family.blocks == 1 and [line for line in lines if line.startswith("block ")] == [
        "block BasicBlock(conv1_out, conv1_stride=1) {"]
    assert [line for line in lines if line.startswith("network ")] == ["network resnet18 {", "network resnet34 {"]
    assert "  layer3: { BasicBlock(256, conv1_stride=2) -> BasicBlock(256) }" in lines  # resnet18's
    assert "    BasicBlock(256) * 5" in lines  # resnet34's
    assert len(lines) == 37  # imported apart, 17 + 26 lines: BasicBlock written twice
    path = tmp_path / "resnets.net"
    path.write_text(family.text)
    for network, (name, original) in zip(family.networks, originals.items()):
        graph = netspec.load(f"{path}:{name}")
        with torch.device("meta"):
            module = to_module(graph)
        assert keys_and_shapes(module) == keys_and_shapes(original)
        assert sum(n.params for n in graph.nodes) == sum(p.numel() for p in original.parameters())
        assert network.name == name and network.verification.params == {"resnet18": 11_689_512,
                                                                         "resnet34": 21_797_672}[name]


def test_the_cli_imports_several_models_into_one_file_or_writes_nothing(tmp_path, capsys):
    out = tmp_path / "unets.net"
    assert main(["import", "test_import:UNet(width=4)", "test_import:UNet(width=8)", "-o", str(out),
                 "--input", "3,16,16"]) == 0
    printed = capsys.readouterr().out
    assert "imported 2 networks into one file: 27 lines, 1 block" in printed
    assert printed.count("outputs equal the module's on a seeded input") == 2
    text = out.read_text()
    assert text.count("block DoubleConv(conv_out) {") == 1 and text.count("block ") == 1
    assert "network UNet_width_4 {" in text and "network UNet_width_8 {" in text
    for name, width in [("UNet_width_4", 4), ("UNet_width_8", 8)]:
        graph = netspec.load(f"{out}:{name}")
        assert sum(n.params for n in graph.nodes) == sum(p.numel() for p in UNet(width=width).parameters())
    # --input once per model: a U-Net on images and a DCGAN generator on latent vectors
    mixed = tmp_path / "mixed.net"
    assert main(["import", "test_import:UNet(width=4)", "test_import:Generator", "-o", str(mixed),
                 "--input", "3,16,16", "--input", "16"]) == 0
    assert capsys.readouterr().out.count("outputs equal the module's on a seeded input") == 2
    assert [netspec.load(f"{mixed}:{name}").input_shape for name in ("UNet", "Generator")] == [(3, 16, 16), (16,)]
    # a model that cannot be imported fails the whole command, named, and nothing is written
    failed = tmp_path / "failed.net"
    assert main(["import", "test_import:UNet", "test_import:Wrapper", "-o", str(failed), "--input", "3,8,8"]) == 1
    err = capsys.readouterr().err
    assert "test_import:Wrapper: cannot import function torch.erf in module 'body'" in err
    assert "nothing was written" in err and not failed.exists()
    assert main(["import", "test_import:UNet", "test_import:Generator", "-o", str(failed), "--name", "n"]) == 1
    assert "--name names a single model's network" in capsys.readouterr().err and not failed.exists()


class Tail(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Tailed(nn.Module):
    """DoubleConv, then, optionally, a Tail."""

    def __init__(self, width: int = 4, tail: bool = False):
        super().__init__()
        self.inc = DoubleConv(3, width)
        self.tail = Tail(width) if tail else nn.Identity()

    def forward(self, x):
        return self.tail(self.inc(x))


def test_a_body_only_one_call_of_a_family_has_is_written_in_place():
    """DoubleConv is called by both networks: one block. Tail is called once in the family: a group, not a
    block; both networks are verified with seeded weights (outputs compared)."""
    from netspec.importer import import_family, module_source

    torch.manual_seed(0)
    family = import_family([module_source(Tailed(4), (3, 8, 8), "plain"),
                            module_source(Tailed(8, tail=True), (3, 8, 8), "tailed")])
    assert family.blocks == 1 and family.text.count("block ") == 1
    assert family.text.endswith("network tailed {\n  input x: [3, 8, 8]\n  inc: DoubleConv(8)\n"
                                "  tail: { conv: conv(2, kernel=1) -> relu() }\n}\n")
    assert [n.verification.outputs_compared and n.verification.ok for n in family.networks] == [True, True]
    assert [n.verification.params for n in family.networks] == [
        sum(p.numel() for p in Tailed(4).parameters()), sum(p.numel() for p in Tailed(8, tail=True).parameters())]
