"""Dotted labels: the module paths torch code makes with nn.ModuleList and nn.ModuleDict (`stage2.0.branches.1`,
`convs.0` ... used interleaved with `bns.0` ...). A torch module written here is the oracle for the state_dict's
keys, shapes and order and for the outputs; the generated Python must define the same module."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import netspec  # noqa: E402
from netspec import NetspecError, Sources  # noqa: E402
from netspec.backends.torch import to_module, to_python  # noqa: E402
from netspec.backends.torch.module import ModulePathError  # noqa: E402


def keys_and_shapes(module):
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def generated(graph):
    """The module `netspec compile` writes for `graph`, built from its source, and the source."""
    source = to_python(graph)
    namespace = {}
    exec(compile(source, "generated.py", "exec"), namespace)
    return namespace[graph.name]().eval(), source


class Interleaved(nn.Module):
    """The oracle: two nn.ModuleLists whose members run in turns, conv0, bn0, conv1, bn1, ..."""

    def __init__(self, channels=4, depth=3):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1)
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(depth)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(depth)])
        self.head = nn.Linear(channels, 5)

    def forward(self, x):
        x = self.stem(x)
        for conv, bn in zip(self.convs, self.bns):
            x = torch.relu(bn(conv(x)))
        return self.head(x.mean((2, 3)))


INTERLEAVED = """
network Interleaved(depth=3) {
  input x: [3, 8, 8]
  stem: conv(4, kernel=1)
  for i in range(depth) {
    "convs.{i}": conv(4, kernel=3, padding=1, bias=false)
    "bns.{i}": batchnorm()
    relu()
  }
  reduce_mean() -> flatten() -> head: linear(5)
}
"""


def test_module_lists_used_interleaved_keep_torchs_container_order(spec):
    graph = netspec.load(spec(INTERLEAVED))
    assert [n.name for n in graph.nodes if n.op in ("conv", "batchnorm")] == [
        "stem", "convs.0", "bns.0", "convs.1", "bns.1", "convs.2", "bns.2"]  # the order they run in
    torch.manual_seed(0)
    oracle = Interleaved().eval()
    for bn in oracle.bns:  # statistics other than 0 and 1, so that loading them matters
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    ours = to_module(graph, seed=1).eval()
    assert keys_and_shapes(ours) == keys_and_shapes(oracle)  # stem, convs.0-2, bns.0-2, head: container order
    ours.load_state_dict(oracle.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(ours(x), oracle(x))
    written, source = generated(graph)
    assert keys_and_shapes(written) == keys_and_shapes(oracle)
    written.load_state_dict(oracle.state_dict())
    with torch.no_grad():
        assert torch.equal(written(x), oracle(x))
    assert "        self.convs = nn.ModuleList([\n" in source
    assert "        self.bns = nn.ModuleList([nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.BatchNorm2d(4)])\n" in source
    assert "        x = self.convs[1](x)\n        x = self.bns[1](x)\n" in source


class Fusion(nn.Module):
    """HRNet's layout: stage2 (a Sequential) of modules whose `branches` is an nn.ModuleList."""

    class Unit(nn.Module):
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList([nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)])

    def __init__(self):
        super().__init__()
        self.stage2 = nn.Sequential(self.Unit())

    def forward(self, x):
        unit = self.stage2[0]
        return unit.branches[0](x) + unit.branches[1](x)


def test_a_dotted_label_gives_the_state_dict_keys_of_torchs_containers(spec):
    graph = netspec.load(spec("""
        network Fusion {
          input x: [4, 6, 6]
          a = x -> "stage2.0.branches.0": conv(4, kernel=1)
          x -> "stage2.0.branches.1": conv(4, kernel=3, padding=1) -> add(a)
        }"""))
    oracle = Fusion().eval()
    ours = to_module(graph, seed=0).eval()
    assert [key for key, _ in keys_and_shapes(ours)] == [
        "stage2.0.branches.0.weight", "stage2.0.branches.0.bias", "stage2.0.branches.1.weight",
        "stage2.0.branches.1.bias"]
    assert keys_and_shapes(ours) == keys_and_shapes(oracle)
    ours.load_state_dict(oracle.state_dict())
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        assert torch.equal(ours(x), oracle(x))
    written, source = generated(graph)
    written.load_state_dict(oracle.state_dict())
    with torch.no_grad():
        assert torch.equal(written(x), oracle(x))
    assert "self.stage2 = nn.ModuleList([\n            nn.ModuleDict(OrderedDict([" in source
    assert "self.stage2[0].branches[1](x)" in source and "from collections import OrderedDict" in source


def test_keys_that_are_not_0_1_2_make_a_module_dict(spec):
    graph = netspec.load(spec("""
        network Keys {
          input x: [2, 5, 5]
          "blocks.first": conv(2, kernel=1)
          "blocks.2": conv(2, kernel=1)
          "blocks.b-3": conv(2, kernel=1)
          "blocks.class_": conv(2, kernel=1)
        }"""))
    ours = to_module(graph, seed=0).eval()
    assert [k for k in ours.state_dict() if k.endswith("weight")] == [
        "blocks.first.weight", "blocks.2.weight", "blocks.b-3.weight", "blocks.class_.weight"]
    written, source = generated(graph)
    assert list(written.state_dict()) == list(ours.state_dict())
    assert "self.blocks = nn.ModuleDict(OrderedDict([" in source
    forward = source[source.index("    def forward(self, x):\n        x = self.blocks.first"):]
    assert ['self.blocks["2"]', 'self.blocks["b-3"]', "self.blocks.class_"] == [
        line.split("(x)")[0].split(" = ")[1] for line in forward.splitlines()[2:5]]
    written.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, 5, 5)
    with torch.no_grad():
        assert torch.equal(written(x), ours(x))


def test_block_instances_share_a_class_whose_containers_take_their_arguments(spec):
    graph = netspec.load(spec("""
        block Twice(c) {
          input x
          for i in range(2) {
            "convs.{i}": conv(c, kernel=3, padding=1)
            "acts.{i}": relu()
          }
          "scales.0": layer_scale(0.5)
        }

        network Stages {
          input x: [3, 6, 6]
          "layers.0": Twice(4)
          "layers.1": Twice(8)
        }"""))
    ours = to_module(graph, seed=0).eval()
    assert list(ours.state_dict())[:6] == [
        "layers.0.convs.0.weight", "layers.0.convs.0.bias", "layers.0.convs.1.weight", "layers.0.convs.1.bias",
        "layers.0.scales.0", "layers.1.convs.0.weight"]  # scales: a container registered after convs
    written, source = generated(graph)
    assert source.count("class Twice(nn.Module):") == 1 and "def __init__(self, in_channels, out_channels):" in source
    assert ("self.layers = nn.ModuleList([\n            Twice(in_channels=3, out_channels=4),\n"
            "            Twice(in_channels=4, out_channels=8),\n        ])") in source
    assert "self.scales = nn.ParameterList([nn.Parameter(torch.full((out_channels, 1, 1), 0.5))])" in source
    assert "self.acts = nn.ModuleList([nn.ReLU(), nn.ReLU()])" in source  # a dotted activation keeps its place
    assert "x * self.scales[0]" in source
    assert keys_and_shapes(written) == keys_and_shapes(ours)
    written.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(written(x), ours(x))


def test_a_dotted_network_exports_to_onnx_and_agrees(spec, tmp_path):
    pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    sources = Sources()
    graph = netspec.load(spec(INTERLEAVED), sources)
    report = export(graph, sources, tmp_path / "interleaved.onnx")
    assert report.ok and [c.batch for c in report.comparisons] == [1, 3], report.comparisons
    assert report.ops["Conv"] == 4


@pytest.mark.parametrize("lines, message", [
    (['a: conv(2, kernel=1)', '"a.b": conv(2, kernel=1)'],
     "the label 'a.b' puts a layer inside 'a', which is a layer of its own; the parts before a dot name containers "
     "that only dotted labels make"),
    (['g: { conv(2, kernel=1) }', '"g.5": conv(2, kernel=1)'],
     "the label 'g.5' puts a layer inside 'g', which is a block or group of its own; the parts before a dot name "
     "containers that only dotted labels make"),
    (['"convs.keys": conv(2, kernel=1)'],
     "the label 'convs.keys' has the part 'keys', which torch's containers (nn.ModuleList, nn.ModuleDict) already "
     "have as an attribute; choose another name"),
    (['"training.0": conv(2, kernel=1)'],
     "the label 'training.0' has the part 'training', which torch's containers (nn.ModuleList, nn.ModuleDict) "
     "already have as an attribute; choose another name"),
    (['"blocks.class": conv(2, kernel=1)'],
     "the label 'blocks.class' has the part 'class', a Python keyword, which the compiled module's generated forward "
     "cannot name; choose another name"),
    (['"s.0": layer_scale()', '"s.1": conv(2, kernel=1)'],
     "'s' would hold both a bare parameter ('s.0') and a layer ('s.1'), which neither nn.ModuleList nor "
     "nn.ParameterList can; give the parameter a container of its own, or put both in a block"),
])
def test_paths_the_containers_cannot_take_are_refused_by_check_and_both_backends(lines, message, spec):
    from netspec.analysis.passes import infer_shapes
    from netspec.semantics.lower import lower
    from netspec.semantics.program import load_program

    body = "\n".join(f"  {line}" for line in lines)
    path = spec(f"network P {{\n  input x: [2, 4, 4]\n{body}\n}}\n")
    with pytest.raises(NetspecError) as caught:
        netspec.load(path)
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.message) == ("NS203", message)
    assert diagnostic.span.line == 3 + next(k for k, line in enumerate(lines) if line.startswith('"'))  # the dotted one
    graph = infer_shapes(lower(load_program(path)))  # built without check's passes: the backends refuse it too
    for backend in (to_module, to_python):
        with pytest.raises(ModulePathError) as caught:
            backend(graph)
        assert str(caught.value) == message


@pytest.mark.parametrize("label", ['"a..b"', '"a."', '"a._b"', '".a"', '"a.b c"'])
def test_labels_that_are_no_module_path_are_located_errors(label, spec):
    with pytest.raises(NetspecError) as caught:
        netspec.load(spec(f"network P {{\n  input x: [2, 4, 4]\n  {label}: conv(2, kernel=1)\n}}\n"))
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.col) == ("NS203", 3, 3)
    assert diagnostic.message == (f"'{label[1:-1]}' cannot name a layer: a label is letters, digits, '_' and '-', in "
                                  "parts joined by single dots, each part after a dot starting with a letter or digit")
    assert diagnostic.hint == 'e.g. "block1-0", "denselayer{i + 1}" or "stage2.0.branches.1"'
