"""What the transformer tests (test_vit.py, test_swin.py, test_maxvit.py) share: a one-layer network's spec, seeded
weights for torchvision's reference, the standalone Python `netspec compile` writes, and the ONNX export checked in
onnxruntime."""

import pytest
import torch

from netspec import Sources
from netspec.backends.torch import to_python


@pytest.fixture
def layer_spec(tmp_path):
    """`layer_spec(body, shape)` writes `network N { input x: SHAPE  BODY }` and returns its path."""
    def write(body, shape):
        path = tmp_path / "n.net"
        path.write_text(f"network N {{\n  input x: {shape}\n  {body}\n}}\n")
        return path

    return write


def seeded(model):
    """Random weights everywhere (torchvision starts some at zero or one: ViT's head and class token, Swin v2's logit
    scale), seeded, in eval mode."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.1 if parameter.dim() > 1 else 1.0))
    return model.eval()


def standalone(graph, network: str = "small"):
    """The Python `netspec compile` writes for `graph`, and its network's module built from it (eval mode)."""
    source = to_python(graph)
    namespace: dict = {}
    exec(source, namespace)
    return source, namespace[network]().eval()


def exported(graph, module, folder):
    """`netspec export` of `graph` with `module`'s weights; asserts that onnxruntime agreed at batch 1 and 3."""
    from netspec.backends.onnx import export

    weights = folder / "weights.pt"
    torch.save(module.state_dict(), weights)
    report = export(graph, Sources(), folder / "small.onnx", weights=weights)
    assert report.ok, report.comparisons
    assert [c.batch for c in report.comparisons] == [1, 3]
    return report
