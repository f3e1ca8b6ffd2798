"""ONNX export: every spec exports, passes onnx.checker, and onnxruntime agrees with PyTorch at batch 1 and 3."""

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

import netspec  # noqa: E402
from netspec import Sources  # noqa: E402
from netspec.backends import onnx as onnx_backend  # noqa: E402
from netspec.backends.onnx import ExportError, export  # noqa: E402
from netspec.backends.torch import WeightsError  # noqa: E402
from netspec.cli import main  # noqa: E402

# One spec per layout: the VGGs repeat AlexNet's layers (convolutions, max pooling, dropout and linear layers;
# VGG-11-BN adds the batch norms every ResNet here exports) and ResNet-34/101/152 ResNet-18's and ResNet-50's, at a
# 130-550 MB export (7-14 s) each; the zoo (tests/test_zoo.py) exports one member of every other family.
SPECS = ["lenet5", "lenet", "alexnet", "nin", "googlenet", "resnet18", "resnet50",
         "capsnet", "vgg_mnist", "resnet18_mnist", "ensemble_vgg_resnet", "ensemble_vgg_capsnet"]


def exported(spec, tmp_path, **options):
    sources = Sources()
    graph = netspec.load(spec, sources)
    out = tmp_path / "model.onnx"
    return graph, out, export(graph, sources, out, **options)


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_exports_and_agrees_with_pytorch(name, in_repo, tmp_path):
    graph, out, report = exported(f"specs/{name}.net", tmp_path)
    assert report.ok, report.comparisons
    assert [c.batch for c in report.comparisons] == [1, 3]  # the batch axis really is dynamic
    assert report.exporter == "torchscript" and report.provider == "CPUExecutionProvider"
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["netspec_parameters"] == str(sum(n.params for n in graph.nodes))
    assert metadata["netspec_network"] == graph.name and len(metadata["netspec_spec_sha256"]) == 64


def test_lenet5_sparse_table_exports_exact_zeros(in_repo, tmp_path):
    graph, out, report = exported("specs/lenet5.net", tmp_path)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    c3 = weights["C3.weight"]
    table = torch.tensor(graph.node("C3").args.table).t().numpy().astype(bool)  # [out, in]
    assert c3.shape == (16, 6, 5, 5)
    assert (c3[~table] == 0).all() and (c3[table] != 0).all()
    assert "Sub" in report.ops and "AveragePool" in report.ops and "Tanh" in report.ops  # RBF, S2/S4, squashing


def test_layer_names_survive_in_node_names(in_repo, tmp_path):
    _, out, _ = exported("specs/resnet18.net", tmp_path)
    names = [n.name for n in onnx.load(out).graph.node]
    assert "/layer2.0.conv1/Conv" in names and "/layer2.0.bn1/BatchNormalization" in names
    assert "/layer2.0.downsample.0/Conv" in names and "/fc/Gemm" in names
    model = onnx.load(out)
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["fc"]


def test_capsnet_reconstruction_is_a_second_output_masked_by_the_longest_capsule(in_repo, tmp_path):
    import onnxruntime

    graph, out, report = exported("specs/capsnet.net", tmp_path)
    model = onnx.load(out)
    assert [i.name for i in model.graph.input] == ["x"]  # no labels: inference masks by the prediction
    assert [o.name for o in model.graph.output] == ["output", "reconstruction"]
    assert report.ok and "ArgMax" in report.ops and "ScatterElements" in report.ops
    torch_model = netspec.compile("specs/capsnet.net", seed=0).eval()
    x = torch.rand(2, 1, 28, 28)
    scores, reconstruction = onnxruntime.InferenceSession(str(out)).run(None, {"x": x.numpy()})
    assert reconstruction.shape == (2, 1, 28, 28)
    with torch.no_grad():
        expected = torch_model(x, torch.from_numpy(scores.argmax(1)))  # told the predicted class
    torch.testing.assert_close(torch.from_numpy(reconstruction), expected[1], atol=1e-4, rtol=1e-3)


def test_trained_weights_are_exported(in_repo, tmp_path):
    weights = tmp_path / "weights.pt"
    trained = netspec.compile("specs/lenet.net", seed=7)
    torch.save({"model": trained.state_dict(), "epoch": 3}, weights)
    _, out, report = exported("specs/lenet.net", tmp_path, weights=weights)
    assert report.ok
    exported_weight = {i.name: numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}["0.weight"]
    assert (exported_weight == trained.state_dict()["0.weight"].numpy()).all()


def test_mismatched_weights_name_the_first_bad_key(in_repo, tmp_path):
    """A bad weights file is the backend's WeightsError (exit 1), as in `netspec eval`, not a usage error."""
    weights = tmp_path / "resnet.pt"
    torch.save(netspec.compile("specs/lenet.net").state_dict() | {"3.weight": torch.zeros(16, 3, 5, 5)}, weights)
    with pytest.raises(WeightsError, match=r"'3.weight' has shape \[16, 3, 5, 5\] in .* but \[16, 6, 5, 5\]"):
        exported("specs/lenet.net", tmp_path, weights=weights)
    torch.save(netspec.compile("specs/lenet5.net").state_dict(), weights)
    with pytest.raises(WeightsError, match=r"has no entry '0.weight' \(shape \[6, 1, 5, 5\]\)"):
        exported("specs/lenet.net", tmp_path, weights=weights)
    with pytest.raises(WeightsError, match="weights file not found"):
        exported("specs/lenet.net", tmp_path, weights=tmp_path / "missing.pt")
    assert not (tmp_path / "model.onnx").exists()


def test_an_opset_too_old_for_an_op_names_the_lowest_that_works(tmp_path):
    spec = tmp_path / "dilated.net"
    spec.write_text("network D { input x: [4, 12, 12]  maxpool(3, stride=2, dilation=2) }")
    with pytest.raises(ExportError) as err:
        exported(spec, tmp_path, opset=9)
    assert "max_pool2d, dilation" in str(err.value) and "the lowest opset that works is 10" in str(err.value)


def test_cli_refuses_to_overwrite_and_reports(in_repo, tmp_path, capsys):
    out = tmp_path / "lenet5.onnx"
    assert main(["export", "specs/lenet5.net", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "batch 1:" in text and "batch 3:" in text and "ok" in text and f"wrote {out}" in text
    before = out.read_bytes()
    assert main(["export", "specs/lenet5.net", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", "specs/lenet5.net", "-o", str(tmp_path / "no" / "x.onnx")]) == 2


def test_disagreement_fails_and_writes_nothing(in_repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_backend, "ATOL", -1.0)  # nothing can be that close
    out = tmp_path / "lenet.onnx"
    assert main(["export", "specs/lenet.net", "-o", str(out)]) == 1
    assert "disagrees with PyTorch" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())
