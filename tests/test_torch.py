"""The PyTorch backend: exact parameter counts and shapes for every spec, torchvision parity, codegen."""

import importlib.util
import sys

import pytest

torch = pytest.importorskip("torch")
from torch.fx.passes.shape_prop import ShapeProp  # noqa: E402

import netspec  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec.backends.torch import StateDictMismatch, load_foreign_state_dict, to_module, to_python  # noqa: E402
from netspec.cli import main  # noqa: E402

SPECS = ["lenet5", "lenet", "alexnet", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "nin", "googlenet",
         "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "capsnet",
         "vgg_mnist", "resnet18_mnist", "ensemble_vgg_resnet", "ensemble_vgg_capsnet"]
# Forward passes of these run on the meta device: shapes without the arithmetic (or the memory).
ON_META = {"vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "resnet101", "resnet152", "alexnet"}


def torchvision_models():
    try:
        import torchvision.models
    except Exception as err:  # a torchvision built for another torch fails at import
        pytest.skip(f"torchvision is not importable: {err}")
    return torchvision.models


def node_shapes(module, graph, device="cpu", batch=2):
    x = torch.randn(batch, *graph.input_shape, device=device)
    ShapeProp(module).propagate(x)
    return {n.meta["netspec_name"]: tuple(n.meta["tensor_meta"].shape[1:]) for n in module.graph.nodes
            if "netspec_name" in n.meta}


@pytest.mark.parametrize("name", SPECS)
def test_module_matches_the_checker(name, in_repo):
    graph = netspec.load(f"specs/{name}.net")
    device = "meta" if name in ON_META else "cpu"
    with torch.device(device):
        module = to_module(graph, seed=0)
    assert sum(p.numel() for p in module.parameters()) == sum(n.params for n in graph.nodes)
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == sum(n.trainable for n in graph.nodes)
    state = sum(v.numel() for v in module.state_dict().values())
    assert state - sum(n.params for n in graph.nodes) == sum(n.buffers for n in graph.nodes)  # BN statistics
    shapes = node_shapes(module, graph, device)
    assert shapes == {n.name: n.shape for n in graph.nodes}


@pytest.mark.parametrize("name, build", [("resnet18", "resnet18"), ("resnet50", "resnet50"), ("vgg16", "vgg16"),
                                         ("vgg16_bn", "vgg16_bn"), ("alexnet", "alexnet"),
                                         ("googlenet", "googlenet")])
def test_state_dict_keys_shapes_and_order_match_torchvision(name, build, in_repo):
    models = torchvision_models()
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        reference = getattr(models, build)(**kwargs).state_dict()
        ours = netspec.compile(f"specs/{name}.net").state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in reference.items()]


def test_resnet18_computes_exactly_what_torchvision_does(in_repo):
    models = torchvision_models()
    torch.manual_seed(0)
    reference = models.resnet18(num_classes=10).eval()
    ours = netspec.compile("specs/resnet18.net", classes=10).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_lenet5_sparse_table_stays_sparse_through_training(in_repo):
    graph = netspec.load("specs/lenet5.net")
    model = to_module(graph, seed=1)
    c3 = model.get_submodule("C3")
    assert sum(p.numel() for p in c3.parameters()) == 1516
    table = torch.tensor(graph.node("C3").args.table, dtype=torch.bool).t()  # [out, in]
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, target = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(3):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(-model(x), target)
        loss.backward()
        optimiser.step()
    dense = c3.dense_weight().detach()
    assert torch.count_nonzero(dense[~table]) == 0
    assert torch.count_nonzero(dense[table]) == 60 * 25
    assert torch.equal(model.get_submodule("output").weight.abs(), torch.ones(10, 84))  # frozen RBF centres


def test_seeds_make_weights_reproducible(in_repo):
    a = netspec.compile("specs/lenet.net", seed=3).state_dict()
    b = netspec.compile("specs/lenet.net", seed=3).state_dict()
    c = netspec.compile("specs/lenet.net", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


OP_SPECS = sorted((ROOT / "tests" / "ops").glob("*.net"))


@pytest.mark.parametrize("spec", OP_SPECS, ids=lambda p: p.stem)
def test_op_specs_build_and_run_with_the_checked_counts_and_shapes(spec):
    graph = netspec.load(spec)
    module = to_module(graph, seed=0)
    assert sum(p.numel() for p in module.parameters()) == sum(n.params for n in graph.nodes)
    assert node_shapes(module.eval(), graph) == {n.name: n.shape for n in graph.nodes}


def test_every_op_is_built_and_run_by_an_op_spec():
    used = {n.op for spec in OP_SPECS for n in netspec.load(spec).nodes}
    assert used == set(netspec.ops.OPS)


def test_classic_op_options_take_effect():
    graph = netspec.load(ROOT / "tests" / "ops" / "classic.net")
    module = to_module(graph, seed=0)
    first = {op: next(n.name for n in graph.nodes if n.op == op) for op in ("linear", "batchnorm", "conv")}
    assert torch.count_nonzero(module.get_submodule(first["linear"]).weight) == 0  # init="zeros"
    assert torch.count_nonzero(module.get_submodule(first["batchnorm"]).weight) == 0  # zero_init=true
    assert torch.count_nonzero(module.get_submodule(first["conv"]).bias) == 0  # init="kaiming" zeroes the bias


def load_generated(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, size", [("lenet5", 32), ("resnet18", 64), ("googlenet", 96), ("nin", 224),
                                        ("ensemble_vgg_capsnet", 28)])
def test_generated_python_defines_the_same_module(name, size, in_repo, tmp_path):
    graph = netspec.load(f"specs/{name}.net")
    path = tmp_path / f"gen_{name}.py"
    path.write_text(to_python(graph))
    assert [line for line in path.read_text().splitlines() if line.startswith(("import", "from"))] == [
        "import torch", "from torch import nn"]
    generated = getattr(load_generated(path, f"gen_{name}"), graph.name)().eval()
    compiled = to_module(graph, seed=0).eval()
    assert list(generated.state_dict()) == list(compiled.state_dict())
    generated.load_state_dict(compiled.state_dict())
    x = torch.randn(2, graph.input_shape[0], size, size)
    with torch.no_grad():
        ours, theirs = compiled(x), generated(x)
        if graph.takes_labels():  # (scores, reconstruction); the labels reach the generated forward too
            assert len(ours) == len(theirs) == 2
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
            labels = torch.tensor([3, 7])
            assert all(torch.equal(a, b) for a, b in zip(compiled(x, labels), generated(x, labels)))
        else:
            assert torch.equal(ours, theirs)


def test_foreign_state_dict_loads_by_order_and_reports_the_first_mismatch(in_repo):
    model = netspec.compile("specs/lenet.net", seed=0)
    source = netspec.compile("specs/lenet.net", seed=1).state_dict()
    renamed = {f"net.layer{i}": value for i, value in enumerate(source.values())}
    pairs = load_foreign_state_dict(model, renamed)
    assert pairs[0] == ("0.weight", "net.layer0")
    assert torch.equal(model.state_dict()["0.weight"], source["0.weight"])
    wrong = dict(renamed)
    wrong["net.layer2"] = torch.zeros(16, 3, 5, 5)
    with pytest.raises(StateDictMismatch) as err:
        load_foreign_state_dict(model, wrong)
    assert str(err.value) == ("'3.weight' has shape [16, 6, 5, 5] but the state_dict's entry in its place, "
                              "'net.layer2', has shape [16, 3, 5, 5]")


def test_compiling_a_bad_spec_raises_the_checkers_error(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network N { input x: [1, 8, 8]  conv(4, kernal=3) }")
    with pytest.raises(netspec.NetspecError) as err:
        netspec.compile(bad)
    assert [(d.code, d.span.line, d.span.col) for d in err.value.diagnostics] == [("NS202", 1, 41)]
    assert main(["compile", str(bad)]) == 1


def test_cli_writes_a_standalone_module(in_repo, tmp_path, capsys):
    out = tmp_path / "resnet18_gen.py"
    assert main(["compile", "specs/resnet18.net", "-o", str(out), "--set", "classes=10"]) == 0
    assert "class ResNet18, 11,181,642 parameters" in capsys.readouterr().out
    model = load_generated(out, "resnet18_gen").ResNet18()
    assert sum(p.numel() for p in model.parameters()) == 11_181_642


def test_trace_export_channels_last_and_autocast(in_repo):
    model = netspec.compile("specs/resnet18.net", seed=0, classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        traced = torch.jit.trace(model, x)
        assert torch.allclose(traced(x), expected, atol=1e-5)
        exported = torch.export.export(model, (x,))
        assert torch.allclose(exported.module()(x), expected, atol=1e-5)
        fast = model.to(memory_format=torch.channels_last)
        assert torch.allclose(fast(x.to(memory_format=torch.channels_last)), expected, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast(x).dtype == torch.bfloat16


def test_torch_compile_runs_the_module(in_repo):
    model = netspec.compile("specs/lenet.net", seed=0).eval()
    x = torch.randn(4, 1, 28, 28)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_reserved_labels_are_torchs_module_attributes():
    """The checker refuses these labels without importing torch; the list must follow torch's."""
    from netspec.semantics.reserved import CONTAINER_ATTRIBUTES, GRAPH_MODULE_ATTRIBUTES, MODULE_ATTRIBUTES

    def public(names):
        return {n for n in names if not n.startswith("_")}

    assert MODULE_ATTRIBUTES == public(dir(torch.nn.Module))
    containers = (torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.ParameterList, torch.nn.ParameterDict)
    assert CONTAINER_ATTRIBUTES == MODULE_ATTRIBUTES | {"training"} | {n for c in containers for n in public(dir(c))}
    graph_module = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph())
    assert GRAPH_MODULE_ATTRIBUTES == public(set(dir(torch.fx.GraphModule)) | set(vars(graph_module))) - public(
        dir(torch.nn.Module))


@pytest.mark.parametrize("label", ["training", "graph", "code", "meta", "recompile", "_modules", "_version",
                                   "all_outputs", "netspec_graph", "forward", "state_dict"])
def test_labels_that_would_clash_with_the_compiled_module_are_refused_by_check(label, tmp_path):
    spec = tmp_path / "clash.net"
    spec.write_text(f"network N {{\n  input x: [2, 4, 4]\n  {label}: conv(2, kernel=1)\n}}\n")
    with pytest.raises(netspec.NetspecError) as excinfo:
        netspec.load(spec)
    [diagnostic] = excinfo.value.diagnostics
    assert (diagnostic.code, diagnostic.span.line, diagnostic.span.col) == ("NS203", 3, 3)
    assert diagnostic.message.startswith(f"'{label}' cannot name a layer: ")
    assert diagnostic.hint == f"choose another label, e.g. '{label.lstrip('_')}_'"


def test_names_next_to_reserved_ones_compile_and_keep_their_keys(tmp_path):
    spec = tmp_path / "near.net"
    spec.write_text("network N {\n  input x: [2, 4, 4]\n  training_: conv(2, kernel=1)\n  graph1: relu()\n"
                    "  code_block: conv(3, kernel=1)\n}\n")
    model = netspec.compile(spec)
    assert list(model.state_dict()) == ["training_.weight", "training_.bias", "code_block.weight", "code_block.bias"]
    assert model(torch.randn(1, 2, 4, 4)).shape == (1, 3, 4, 4)


def test_capsule_routing_squashes_and_couples_to_one(in_repo):
    """Squashed capsules are shorter than 1; each input capsule's coupling coefficients sum to 1 over its
    parents; the routing logits are not parameters (only the 1,152 x 10 prediction matrices are)."""
    from netspec.backends.torch.layers import CapsuleRouting, squash

    s = torch.randn(4, 50, 8) * torch.logspace(-2, 2, 50).view(1, 50, 1)
    lengths = squash(s).norm(dim=-1)
    assert (lengths < 1).all() and (lengths > 0).all()
    expected = s.norm(dim=-1) ** 2 / (1 + s.norm(dim=-1) ** 2)
    torch.testing.assert_close(lengths, expected, rtol=1e-4, atol=1e-6)

    layer = CapsuleRouting(in_capsules=1152, in_dim=8, units=10, dim=16, iterations=3)
    assert [(n, tuple(p.shape)) for n, p in layer.named_parameters()] == [("weight", (1152, 10, 16, 8))]
    u = squash(torch.randn(2, 1152, 8))
    v, coupling = layer.route(u)
    assert v.shape == (2, 10, 16) and coupling.shape == (2, 1152, 10)
    torch.testing.assert_close(coupling.sum(dim=2), torch.ones(2, 1152))
    assert (v.norm(dim=-1) < 1).all()
    assert not torch.allclose(coupling, torch.full_like(coupling, 0.1))  # routing moved away from uniform
    one_pass = CapsuleRouting(1152, 8, 10, 16, iterations=1)
    one_pass.weight = layer.weight
    torch.testing.assert_close(one_pass.route(u)[1], torch.full_like(coupling, 0.1))  # first pass: uniform


def test_capsule_mask_keeps_the_labelled_capsule_else_the_longest():
    from netspec.backends.torch.layers import CapsuleMask

    caps = torch.tensor([[[0.1, 0.0], [0.0, 0.9], [0.3, 0.3]],
                         [[0.5, 0.5], [0.0, 0.2], [0.0, 0.0]]])  # longest: capsule 1, then capsule 0
    zero = torch.zeros(2)
    torch.testing.assert_close(CapsuleMask()(caps), torch.stack([torch.stack([zero, caps[0, 1], zero]),
                                                                 torch.stack([caps[1, 0], zero, zero])]))
    torch.testing.assert_close(CapsuleMask()(caps, torch.tensor([2, 1])),
                               torch.stack([torch.stack([zero, zero, caps[0, 2]]),
                                            torch.stack([zero, caps[1, 1], zero])]))


def test_capsules_group_channels_map_by_map(in_repo):
    from netspec.backends.torch.layers import Capsules

    x = torch.arange(2 * 16 * 3 * 3, dtype=torch.float32).view(2, 16, 3, 3)
    caps = Capsules(dim=8)(x)
    assert caps.shape == (2, 18, 8)
    # capsule 0: channels 0-7 at position (0, 0); capsule 9: channels 8-15 at (0, 0)
    torch.testing.assert_close(caps[0, 0], x[0, 0:8, 0, 0])
    torch.testing.assert_close(caps[1, 9], x[1, 8:16, 0, 0])
    torch.testing.assert_close(caps[0, 4], x[0, 0:8, 1, 1])


def test_ensemble_members_load_their_own_weights_and_average_probabilities(in_repo, tmp_path):
    """Each member trained as a network of its own loads into the ensemble with `member=path`; the ensemble
    outputs the mean of the members' softmax probabilities."""
    from netspec.backends.torch import WeightsError, load_weights

    members = {}
    for name, spec in (("vgg", "specs/vgg_mnist.net"), ("capsnet", "specs/capsnet.net")):
        members[name] = netspec.compile(spec, seed={"vgg": 1, "capsnet": 2}[name]).eval()
        torch.save({"model": members[name].state_dict()}, tmp_path / f"{name}.pt")  # as netspec train saves
    ensemble = netspec.compile("specs/ensemble_vgg_capsnet.net", seed=3).eval()
    load_weights(ensemble, [f"vgg={tmp_path / 'vgg.pt'}", f"capsnet={tmp_path / 'capsnet.pt'}"])
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        capsnet_scores, capsnet_reconstruction = members["capsnet"](x)
        expected = (members["vgg"](x).softmax(-1) + (10.0 * capsnet_scores).softmax(-1)) / 2
        got, reconstruction = ensemble(x)  # CapsNet's decoder stays: a reconstruction is a second output
    torch.testing.assert_close(reconstruction, capsnet_reconstruction)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(3))

    with pytest.raises(WeightsError, match="the network has no member 'resnet'; its top-level parts are vgg, "):
        load_weights(ensemble, [f"resnet={tmp_path / 'vgg.pt'}"])
    with pytest.raises(WeightsError, match=r"has no entry 'conv1.weight' \(shape \[256, 1, 9, 9\]\)"):
        load_weights(ensemble, [f"capsnet={tmp_path / 'vgg.pt'}"])
