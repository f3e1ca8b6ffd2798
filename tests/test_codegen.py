"""`netspec compile -o net.py`: readable PyTorch source that defines to_module's module (netspec/backends/torch/source.py).

Every network in specs/ and tests/ops/ is generated, imported and compared with the compiled module: the same
state_dict keys, shapes and order, the same trainable flags and, for the small ones, the same outputs for the same
weights (the big ones are built on the meta device). A property test holds the promise of `netspec check`: a spec
it accepts compiles, and both modules run with the checked shapes.
Golden files (tests/golden/compile/) pin the exact text written for a few specs.
"""

import ast
import difflib

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import netspec  # noqa: E402
from conftest import ROOT, regenerate  # noqa: E402
from fuzz_inputs import fixed_budget as bounded  # noqa: E402
from fuzz_inputs import agrees_with_torch, mutated_spec, random_network  # noqa: E402
from netspec.backends.torch import layers as torch_layers  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from netspec.backends.torch.source import to_python  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.ground.errors import NetspecError  # noqa: E402
from netspec.semantics.program import load_program  # noqa: E402


def networks():
    """Every network of every spec file in specs/ (torchvision's included) and tests/ops/, as `file:Network`."""
    files = [p for p in sorted((ROOT / "specs").rglob("*.net")) if "blocks" not in p.parts]
    files += sorted((ROOT / "tests" / "ops").glob("*.net"))
    return [f"{path.relative_to(ROOT)}:{name}" for path in files for name in load_program(path).root.networks]


def generated(graph, device="cpu"):
    """The class that to_python writes for `graph`, instantiated (on `device`), and its source."""
    source = to_python(graph)
    namespace = {}
    exec(compile(source, f"<generated {graph.name}>", "exec"), namespace)
    with torch.device(device):
        return namespace[graph.name](), source


def small(graph) -> bool:
    """Small enough to build with real weights on a 2-core CI runner (the forward is cut down by `sample`)."""
    return sum(n.params for n in graph.nodes) <= 15_000_000


def sample(graph, module):
    """Two inputs of the spec's shape, or of 64 x 64 where the network takes any size (adaptive pooling)."""
    channels, height, width = (*graph.input_shape, None, None)[:3]
    if width is not None and height * width > 64 * 64:
        x = torch.randn(2, channels, 64, 64)
        try:
            with torch.no_grad():
                module.eval()(x)
            return x
        except RuntimeError:  # a linear layer sized for the declared input
            pass
    return torch.randn(2, *graph.input_shape)


def top_level(source):
    return [node.name for node in ast.parse(source).body if isinstance(node, (ast.ClassDef, ast.FunctionDef))]


def used_elsewhere(source, name):
    """The names that the file's other top-level definitions use."""
    return {n.id for node in ast.parse(source).body if getattr(node, "name", None) != name
            for n in ast.walk(node) if isinstance(n, ast.Name)}


def outputs(value):
    return value if isinstance(value, tuple) else (value,)


def eval_shapes(graph):
    """The checked shapes of what the module returns in eval: every output but the auxiliary ones."""
    return [graph.node(name).shape for name in graph.outputs() if name not in graph.aux_outputs]


def assert_same_module(ours, theirs):
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert [(k, p.requires_grad) for k, p in ours.named_parameters()] == [
        (k, p.requires_grad) for k, p in theirs.named_parameters()]


# The bar: ResNet-18 --------------------------------------------------------------------------------------------

BASIC_BLOCK_FORWARD = """\
    def forward(self, x):
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            out = self.downsample(out, x)
        else:
            out = out + x
        out = self.relu(out)
        return out
"""


def test_resnet18_is_a_short_file_with_a_basic_block_class_that_loads_torchvisions_weights_by_key(
        in_repo, tmp_path, capsys):
    try:
        import torchvision.models
    except Exception as err:  # a torchvision built for another torch fails at import
        pytest.skip(f"torchvision is not importable: {err}")
    out = tmp_path / "resnet18.py"
    assert main(["compile", "specs/resnet18.net", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: class ResNet18, 11,689,512 parameters\n"
    source = out.read_text()
    assert len(source.splitlines()) < 150
    assert top_level(source) == ["ProjectedAdd", "BasicBlock", "Stage", "ResNet18"]  # the one helper it uses
    assert "class BasicBlock(nn.Module):\n    def __init__(self, in_channels, c, downsample, stride=1):\n" in source
    assert BASIC_BLOCK_FORWARD in source
    assert "        self.layer2 = Stage(in_channels=64, c=128, downsample=True, stride=2)\n" in source
    assert "getattr(" not in source
    namespace = {}
    exec(compile(source, str(out), "exec"), namespace)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    model = namespace["ResNet18"]().eval()
    model.load_state_dict(reference.state_dict())  # strict: by key, every key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_the_resnet18_shown_in_the_docs_is_what_compile_writes(in_repo):
    text = (ROOT / "docs" / "compile.md").read_text()
    shown = text.split("ResNet-18, `netspec compile specs/resnet18.net` (", 1)[1]
    lines, shown = shown.split(" lines)", 1)
    source = shown.split("```python\n", 1)[1].split("```\n", 1)[0]
    assert source == to_python(netspec.load("specs/resnet18.net"))
    assert int(lines) == len(source.splitlines())


def test_compile_writes_to_stdout_without_an_output(in_repo, capsys):
    assert main(["compile", "specs/lenet.net"]) == 0
    source = capsys.readouterr().out
    assert source == to_python(netspec.load("specs/lenet.net"))
    assert top_level(source) == ["LeNet"]  # no helper layer is needed, so none is copied



# Golden files ---------------------------------------------------------------------------------------------------

GOLDEN = ROOT / "tests" / "golden" / "compile"
# spec -> its golden file: a plain chain, residual blocks with a helper layer, a U-Net's skips, capsules (labels
# and many helpers), inception blocks (parameterised classes), auxiliary outputs, and OrderedDict children
GOLDEN_SPECS = {
    "specs/lenet5.net": "lenet5.py",
    "specs/resnet18.net": "resnet18.py",
    "specs/unet.net": "unet.py",
    "specs/capsnet.net": "capsnet.py",
    "specs/googlenet.net": "googlenet.py",
    "specs/torchvision/inception.net:googlenet": "torchvision_googlenet.py",
    "specs/torchvision/convnext.net:convnext_tiny": "torchvision_convnext_tiny.py",
}


@pytest.mark.parametrize("spec", GOLDEN_SPECS)
def test_generated_source_matches_its_golden_file(spec, in_repo):
    """to_python writes exactly tests/golden/compile/NAME.py for each spec, byte for byte.

    After a deliberate change of the generated source, rewrite the golden files with
    `NETSPEC_REGEN=1 pytest tests/test_codegen.py -k golden` and review the diff.
    """
    golden = GOLDEN / GOLDEN_SPECS[spec]
    source = to_python(netspec.load(spec))
    if regenerate():
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(source, encoding="utf-8", newline="\n")
    assert golden.exists(), f"{golden} is missing: run NETSPEC_REGEN=1 pytest tests/test_codegen.py -k golden"
    expected = golden.read_bytes().decode("utf-8")  # as bytes: a "\r" is not translated away
    if source != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), source.splitlines(keepends=True),
                                            f"{golden.relative_to(ROOT)} (expected)", f"to_python({spec})"))
        pytest.fail(f"the source generated for {spec} differs from {golden.relative_to(ROOT)}; if the change is "
                    f"intended, rerun with NETSPEC_REGEN=1 and review the diff:\n{diff[:6000]}",
                    pytrace=False)


def test_every_golden_file_belongs_to_a_spec():
    """A golden file left over from a removed spec would never be checked."""
    assert sorted(p.name for p in GOLDEN.glob("*.py")) == sorted(GOLDEN_SPECS.values())


# Every network -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", networks())
def test_every_network_generates_the_compiled_module(spec, in_repo):
    graph = netspec.load(spec)
    device = "cpu" if small(graph) else "meta"
    theirs = to_module(graph, seed=0) if device == "cpu" else None
    with torch.device(device):
        theirs = theirs if theirs is not None else to_module(graph)
    ours, source = generated(graph, device)
    assert_same_module(ours, theirs)
    for name in top_level(source):  # only the helper layers the network uses are copied
        assert name not in vars(torch_layers) or name in used_elsewhere(source, name), name
    assert "getattr(getattr(" not in source and "get_submodule" not in source
    if device == "meta":
        return
    ours.load_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = sample(graph, theirs)
    extra = (torch.tensor([1, 2]),) if graph.takes_labels() else ()
    with torch.no_grad():
        expected, got = outputs(theirs(x, *extra)), outputs(ours(x, *extra))
    assert len(got) == len(expected) == len(graph.outputs()) - len(graph.aux_outputs)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


# What the generated module keeps --------------------------------------------------------------------------------

def write(tmp_path, text):
    path = tmp_path / "net.net"
    path.write_text(text)
    return netspec.load(path)


def test_auxiliary_outputs_while_training_and_the_main_one_in_eval(tmp_path):
    graph = write(tmp_path, """
block Head(classes) {
  global_avgpool() -> flatten()
  dropout(0.5)
  fc: linear(classes)
}
network Aux(classes=3) {
  input x: [2, 8, 8]
  stem: conv(4, kernel=3, padding=1)
  aux: Head(classes)
  stem -> body: conv(6, kernel=3, stride=2) -> relu()
  head: Head(classes)
  output head, aux
}
""")
    theirs = to_module(graph, seed=0)
    ours, source = generated(graph)
    assert "class Head(nn.Module):\n    def __init__(self, in_features):\n" in source
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 8, 8)
    torch.manual_seed(1)
    expected = theirs.train()(x)
    torch.manual_seed(1)
    got = ours.train()(x)
    assert len(got) == len(expected) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, expected))  # the same dropout masks, drawn in the same order
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))
        ours.all_outputs = theirs.all_outputs = True
        assert all(torch.equal(a, b) for a, b in zip(ours(x), theirs(x)))
        assert [tuple(o.shape) for o in ours(x)] == [(4, 3), (4, 3)]


def test_labels_that_are_not_identifiers_keep_their_keys(tmp_path):
    graph = write(tmp_path, """
network Odd {
  input x: [3, 8, 8]
  "block1-0": conv(4, kernel=3)
  relu()
  "5": conv(4, kernel=1)
  stage: { "a-b": conv(4, kernel=1) -> relu() }
  flatten() -> linear(2)
}
""")
    theirs = to_module(graph, seed=0)
    ours, source = generated(graph)
    assert list(ours.state_dict()) == ["block1-0.weight", "block1-0.bias", "5.weight", "5.bias", "stage.a-b.weight",
                                       "stage.a-b.bias", "8.weight", "8.bias"]
    assert list(theirs.state_dict()) == list(ours.state_dict())
    assert '        self.add_module("block1-0", nn.Conv2d(3, 4, kernel_size=3))\n' in source
    assert '        x = getattr(self, "block1-0")(x)\n        x = self.relu(x)\n' in source
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_frozen_layers_init_functions_and_bare_parameters(tmp_path):
    graph = write(tmp_path, """
network Kept {
  input x: [3, 6, 6]
  conv(4, kernel=3, init="kaiming", frozen=true) -> batchnorm(zero_init=true)
  scale: layer_scale(0.25)
  still: layer_scale(frozen=true)
  flatten() -> linear(5, init="zeros")
}
""")
    theirs = to_module(graph, seed=0)
    torch.manual_seed(0)
    ours, source = generated(graph)
    assert_same_module(ours, theirs)
    assert [(k, p.requires_grad) for k, p in ours.named_parameters()] == [
        ("scale", True), ("still", False), ("0.weight", False), ("0.bias", False), ("1.weight", True),
        ("1.bias", True), ("5.weight", True), ("5.bias", True)]
    assert top_level(source) == ["init_kaiming", "init_zeros", "init_zero_gamma", "Kept"]
    assert torch.equal(ours.get_parameter("scale"), torch.full((4, 1, 1), 0.25))
    assert torch.equal(ours.get_parameter("still"), torch.full((4, 1, 1), 1e-6))
    assert torch.count_nonzero(ours.get_parameter("1.weight")) == 0  # zero_init: the batch norm's scale
    assert torch.count_nonzero(ours.get_parameter("5.weight")) == 0  # init="zeros"
    assert torch.count_nonzero(ours.get_parameter("0.bias")) == 0  # init="kaiming" zeroes the bias
    assert "        x = x * self.scale\n        x = x * self.still\n" in source


def test_a_block_is_one_class_whose_differing_values_are_its_own_parameters(in_repo):
    _, source = generated(netspec.load("specs/googlenet.net"))
    assert top_level(source) == ["BasicConv", "Inception", "GoogLeNet"]
    assert "class BasicConv(nn.Module):\n    def __init__(self, in_channels, c, kernel, stride=1, padding=0):\n" in source
    assert "class Inception(nn.Module):\n    def __init__(self, in_channels, c1, c3_reduce, c3, c5_reduce, c5, " \
           "pool_proj):\n" in source
    assert """
        self.branch2 = nn.Sequential(
            BasicConv(in_channels=in_channels, c=c3_reduce, kernel=1),
            BasicConv(in_channels=c3_reduce, c=c3, kernel=3, padding=1),
        )
""" in source
    assert """
    def forward(self, x):
        branch1 = self.branch1(x)
        branch2 = self.branch2(x)
        branch3 = self.branch3(x)
        branch4 = self.branch4(x)
        x = torch.cat([branch1, branch2, branch3, branch4], dim=1)
        return x
""" in source


def test_capsule_layers_take_the_labels_and_the_helpers_they_need(in_repo):
    graph = netspec.load("specs/capsnet.net")
    theirs = to_module(graph, seed=0)
    ours, source = generated(graph)
    assert top_level(source) == ["squash", "Capsules", "Squash", "CapsuleRouting", "CapsuleMask", "Reconstruction",
                                 "CapsuleLength", "Decoder", "CapsNet"]
    assert "    def forward(self, x, labels=None):\n" in source
    ours.load_state_dict(theirs.state_dict())
    x, labels = torch.randn(3, 1, 28, 28), torch.tensor([4, 0, 9])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ours.train()(x, labels), theirs.train()(x, labels)))


# Errors ---------------------------------------------------------------------------------------------------------

def test_a_failing_forward_leaves_the_report_to_netspec(tmp_path, capfd, monkeypatch):
    """docs/errors.md: a bug is one line, exit 3, never a traceback; torch.fx would print one of its own."""
    import operator

    from netspec.backends.torch import module as backend

    graph = write(tmp_path, "network Bug {\n  input x: [2, 4, 6]\n  y = conv(2, kernel=1)\n  x -> add(y)\n}\n")
    monkeypatch.setitem(backend.FUNCTIONS, "add", operator.matmul)  # a bug in the generated forward, on purpose
    module = to_module(graph, seed=0)
    with pytest.raises(RuntimeError) as caught:
        module(torch.randn(1, 2, 4, 6))
    assert capfd.readouterr().err == ""
    assert any(frame.name == "forward" for frame in caught.traceback)  # NETSPEC_DEBUG=1 still gets the traceback

    def broken(graph):
        raise RuntimeError("a bug")

    monkeypatch.setattr("netspec.backends.torch.to_python", broken)
    assert main(["compile", str(tmp_path / "net.net")]) == 3
    assert capfd.readouterr().err == ("netspec: internal error: RuntimeError: a bug\nThis is a bug in netspec; rerun "
                                      "with NETSPEC_DEBUG=1 for the traceback and report it.\n")


# check accepts => compiles and runs (item 1 of issue 18) ----------------------------------------------------------

@bounded(50)
@given(text=random_network())
def test_random_networks_that_check_compile_and_run_with_the_checked_shapes(text, workspace):
    path = workspace / "_network.net"
    path.write_text(text)
    try:
        graph = netspec.load(path)
    except NetspecError:
        return  # refused by check: nothing is promised
    agrees_with_torch(graph)  # to_module builds; its forward gives every node the checked shape
    theirs = to_module(graph, seed=0).eval()
    ours, _ = generated(graph)
    assert_same_module(ours, theirs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        got, expected = outputs(ours.eval()(x)), outputs(theirs(x))
    assert [tuple(o.shape[1:]) for o in got] == eval_shapes(graph)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@bounded(60)
@given(case=mutated_spec(), data=st.data())
def test_mutated_specs_that_check_compile_and_run_with_the_checked_shapes(case, data, workspace):
    name, blob = case
    path = (workspace / name).with_name("_mutated.net")
    path.write_bytes(blob)
    try:
        found = load_program(path).root.networks
        graph = netspec.load(f"{path}:{data.draw(st.sampled_from(found))}" if len(found) > 1 else path)
    except NetspecError:
        return
    # Mutations make networks of any size: built and run on the meta device, shapes without arithmetic.
    with torch.device("meta"):
        theirs = to_module(graph).eval()
        ours, _ = generated(graph, "meta")
    assert_same_module(ours, theirs)
    if len(graph.nodes) > 250:
        return  # built and equal; a forward on the meta device costs about a millisecond a layer
    with torch.device("meta"):
        x = torch.randn(2, *graph.input_shape)
        got, expected = outputs(ours.eval()(x)), outputs(theirs(x))
    assert [tuple(o.shape[1:]) for o in got] == eval_shapes(graph)
    assert [o.shape for o in got] == [o.shape for o in expected]
