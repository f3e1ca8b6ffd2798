"""Networks with several outputs (`output main, aux2 if aux_logits, ...`): GoogLeNet's auxiliary classifiers
against torchvision's, in PyTorch, onnxruntime, `check`, `graph` and `train`, and the statement's errors."""

import json

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
import torchvision.models as tv  # noqa: E402

import netspec  # noqa: E402
from netspec import NetspecError  # noqa: E402
from netspec.backends.torch import to_module  # noqa: E402
from netspec.cli import main  # noqa: E402
from conftest import ROOT  # noqa: E402
from netspec.ground.errors import Sources  # noqa: E402

GOOGLENET = f"{ROOT}/specs/torchvision/inception.net:googlenet"


@pytest.fixture(scope="module")
def googlenets():
    """torchvision's GoogLeNet with its auxiliary classifiers and the compiled spec, holding the same weights."""
    torch.manual_seed(0)
    reference = tv.googlenet(weights=None, aux_logits=True, init_weights=True)
    graph = netspec.load(GOOGLENET)
    ours = to_module(graph)
    ours.load_state_dict(reference.state_dict())
    return graph, reference, ours


def image(batch=2, seed=1):
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def test_training_returns_the_logits_and_both_auxiliary_logits_as_torchvision_does(googlenets):
    _, reference, ours = googlenets
    x = image()
    reference.train(), ours.train()
    # Dropout is on (p 0.2 and twice 0.7): torchvision draws aux1's mask, aux2's, then the classifier's, and the
    # compiled graph runs the classifiers in that order, so one seed gives both the same masks.
    torch.manual_seed(7)
    want = reference(x)
    torch.manual_seed(7)
    got = ours(x)
    assert type(want).__name__ == "GoogLeNetOutputs" and type(got) is tuple and len(got) == 3
    for ours_out, theirs in zip(got, (want.logits, want.aux_logits2, want.aux_logits1)):
        assert ours_out.shape == theirs.shape == (2, 1000)
        assert torch.equal(ours_out, theirs)
    # batch norm ran on batch statistics in both and moved their running statistics alike
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))
    torch.manual_seed(8)
    with torch.no_grad():
        reference(x)  # the same second step for both, so the running statistics stay equal for the next tests
        assert not torch.equal(ours(x)[1], got[1])  # the masks are live: another seed, other auxiliary logits


def test_eval_returns_the_logits_alone(googlenets):
    _, reference, ours = googlenets
    x = image()
    reference.eval(), ours.eval()
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 1000)
    assert torch.equal(got, want)


def test_onnx_export_has_the_three_named_outputs_and_agrees_in_onnxruntime(googlenets, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from netspec.backends.onnx import export

    graph, reference, ours = googlenets
    weights = tmp_path / "weights.pt"
    torch.save(ours.state_dict(), weights)
    report = export(graph, Sources(), tmp_path / "googlenet.onnx", weights=weights)
    assert report.ok, report  # onnxruntime agreed with the compiled module at batch 1 and 3, every output
    session = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [(o.name, o.shape[1]) for o in session.get_outputs()] == [("fc", 1000), ("aux2", 1000), ("aux1", 1000)]

    # torchvision runs its auxiliary classifiers only while training: in eval, apply them to the maps they read
    taps = {}
    hooks = [getattr(reference, name).register_forward_hook(lambda m, i, o, name=name: taps.__setitem__(name, o))
             for name in ("inception4a", "inception4d")]
    x = image(batch=2, seed=3)
    reference.eval()
    with torch.no_grad():
        logits = reference(x)
        want = [logits, reference.aux2(taps["inception4d"]), reference.aux1(taps["inception4a"])]
    for hook in hooks:
        hook.remove()
    got = session.run(None, {"x": x.numpy()})
    for ours_out, theirs in zip(got, want):
        scale = theirs.abs().max().item()
        assert abs(torch.from_numpy(ours_out) - theirs).max().item() <= 1e-4 * max(scale, 1.0)


def test_check_names_the_outputs(capsys):
    assert main(["check", GOOGLENET, "--collapse"]) == 0
    out = capsys.readouterr().out
    assert "Params:      13,004,888 (trainable 13,004,888, non-trainable 0)" in out
    assert "Outputs:     fc, then the auxiliary aux2, aux1 (while training)" in out
    assert main(["check", GOOGLENET, "--set", "aux_logits=false"]) == 0
    out = capsys.readouterr().out
    assert "Params:      6,624,904 (" in out and "Outputs:" not in out


def test_graph_draws_every_output_as_an_end_point(capsys):
    assert main(["graph", GOOGLENET, "--format", "dot"]) == 0
    text = capsys.readouterr().out
    ends = [line.strip() for line in text.splitlines() if "output" in line and "shape=oval" in line]
    assert [line.split('"')[1] for line in ends] == ["main output\\nfc", "auxiliary output (training)\\naux2",
                                                    "auxiliary output (training)\\naux1"]
    ids = {line.split('"')[1].split("\\n")[-1]: line.split()[0] for line in ends}
    boxes = {line.split('"')[1].split("\\n")[0]: line.split()[0] for line in text.splitlines() if '[label="' in line
             and "->" not in line}
    # each end point hangs off its own classifier: aux1 off the branch at inception4a, aux2 at inception4d
    assert f'{boxes["aux1"]} -> {ids["aux1"]} [label="[1000]"];' in text
    assert f'{boxes["aux2"]} -> {ids["aux2"]} [label="[1000]"];' in text
    assert f'{boxes["fc"]} -> {ids["fc"]} [label="[1000]"];' in text
    assert f'{boxes["inception4a"]} -> {boxes["aux1"]} [label="[512, 14, 14]"];' in text
    assert f'{boxes["inception4d"]} -> {boxes["aux2"]} [label="[528, 14, 14]"];' in text


def diagnostic(tmp_path, text):
    path = tmp_path / "outputs.net"
    path.write_text(text)
    with pytest.raises(NetspecError) as err:
        netspec.load(path)
    [found] = err.value.diagnostics
    return found.code, found.span.line, found.span.col, found.message


def test_an_output_naming_an_unknown_value_is_located(tmp_path):
    code, line, col, message = diagnostic(tmp_path, """network A {
  input x: [1, 8, 8]
  flatten() -> head: linear(3)
  x -> flatten() -> aux: linear(3)
  output head, axu
}""")
    assert (code, line, col, message) == ("NS205", 5, 16, "undefined name 'axu'")


def test_an_output_in_a_group_is_refused_where_it_is_written(tmp_path):
    code, line, col, message = diagnostic(tmp_path, """network A {
  input x: [1, 8, 8]
  g: {
    y: relu()
    output y
  }
  flatten() -> head: linear(3)
}""")
    assert (code, line, col) == ("NS203", 5, 5)
    assert message == ("`output` lists a block's or network's outputs: it belongs in its own body, not in a group "
                       "or loop")


def test_an_output_before_other_statements_is_refused(tmp_path):
    code, line, col, message = diagnostic(tmp_path, """network A {
  input x: [1, 8, 8]
  flatten() -> head: linear(3)
  output head
  relu()
}""")
    assert (code, line, col, message) == ("NS203", 4, 3, "`output` must be the last statement of the network")


TINY = """
network Tiny(classes=4) {{
  input x: [1, 8, 8]
  features: conv(4, kernel=3)
  relu()
  aux1: {{ flatten() -> linear(classes) }}
  features -> aux2: {{ maxpool(2) -> flatten() -> linear(classes) }}
  features -> flatten() -> fc: linear(classes)
  output fc, aux2, aux1
}}

train Tiny {{
  data = "synthetic"
  normalize = false
  aux_weight = {weight}
}}
"""


def test_train_adds_each_auxiliary_loss_times_aux_weight(tmp_path):
    """One step on the whole synthetic set (4,096 images in one batch): the epoch's training loss is the loss at
    the seeded initial weights, which the test recomputes."""
    from netspec.train.datasets import synthetic

    losses = {}
    for weight in (0.0, 0.3):
        spec = tmp_path / f"tiny_{weight}.net"
        spec.write_text(TINY.format(weight=weight))
        out = tmp_path / f"run_{weight}"
        assert main(["train", str(spec), "--epochs", "1", "--batch-size", "4096", "--device", "cpu", "--seed", "0",
                     "--validation", "0", "--no-progress", "--out", str(out)]) == 0
        epoch, test = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert (epoch["epoch"], test["split"]) == (1, "test")
        losses[weight] = epoch["train_loss"]

    graph = netspec.load(tmp_path / "tiny_0.0.net")
    data = synthetic((1, 8, 8), 4)
    model = to_module(graph, seed=0).train()
    with torch.no_grad():
        main_scores, aux2, aux1 = model(data.train_x.float() / 255)
    ce = torch.nn.functional.cross_entropy
    main_loss, aux_loss = ce(main_scores, data.train_y).item(), (ce(aux2, data.train_y) + ce(aux1, data.train_y)).item()
    assert losses[0.0] == pytest.approx(main_loss, rel=1e-6)
    assert losses[0.3] == pytest.approx(main_loss + 0.3 * aux_loss, rel=1e-6)
    assert losses[0.3] - losses[0.0] > 0.3 * 2  # two classifiers at chance over 4 classes: ~ln 4 each
