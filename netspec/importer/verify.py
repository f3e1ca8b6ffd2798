"""Every import is checked before it is kept: the spec loads, counts the module's parameters, compiles to a module
that takes the original's state_dict strictly (same keys, shapes and order) and, with real weights, computes the
original's outputs on a seeded input."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import netspec
from netspec.backends.torch import to_module
from netspec.ground.errors import NetspecError, render_all
from netspec.importer.errors import ImportFailed

TOLERANCE = 1e-5  # relative to the largest output magnitude (at least 1)


@dataclass
class Verification:
    """What the check found; `lines()` is the short report the command prints."""

    params: int
    spec_params: int
    keys: int
    keys_equal: bool
    strict_load: bool
    outputs_compared: bool = False
    max_difference: float = 0.0
    scale: float = 1.0
    problems: list[str] = field(default_factory=list)
    ordered: bool = True
    reference: str = "the module's"  # ONNX keeps no module order: there the keys are compared as sets

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        outputs = (f"outputs equal {self.reference} on a seeded input: max |difference| {self.max_difference:.3g} "
                   f"(tolerance {TOLERANCE * max(self.scale, 1.0):.3g})" if self.outputs_compared
                   else "outputs not compared (meta tensors have no values)")
        return [f"parameters: {self.spec_params:,} in the spec, {self.params:,} in the module",
                f"state_dict: {self.keys} keys, names{', shapes and order' if self.ordered else ' and shapes'} "
                f"{'equal' if self.keys_equal else 'DIFFER'}",
                f"load_state_dict(strict=True): {'ok' if self.strict_load else 'FAILED'}",
                outputs, *self.problems]


def load_text(text: str, name: str):
    """The spec text's network `name` loaded as `netspec check FILE:NAME` would load it (a family's file holds
    several)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.net"
        path.write_text(text)
        try:
            return netspec.load(f"{path}:{name}")
        except NetspecError as err:
            raise ImportFailed("the imported spec does not check (netspec's importer wrote something it cannot "
                               f"read back):\n{render_all(err.diagnostics, netspec.Sources())}") from None


def verify(text: str, name: str, model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> Verification:
    """Check the spec text against the model it was imported from."""
    graph = load_text(text, name)
    theirs = model.state_dict()
    on_meta = any(t.is_meta for t in theirs.values()) or any(p.is_meta for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    spec_params = sum(n.params for n in graph.nodes)
    if on_meta:
        with torch.device("meta"):
            compiled = to_module(graph)
    else:
        compiled = to_module(graph, seed=seed)
    ours = compiled.state_dict()
    keys_equal = [(k, tuple(v.shape)) for k, v in ours.items()] == [(k, tuple(v.shape)) for k, v in theirs.items()]
    problems = []
    if spec_params != params:
        problems.append(f"the spec has {spec_params:,} parameters, the module {params:,}")
    if not keys_equal:
        missing = [k for k in theirs if k not in ours][:3]
        extra = [k for k in ours if k not in theirs][:3]
        problems.append(f"state_dict differs: missing {missing}, unexpected {extra}" if missing or extra
                        else "state_dict keys are the same but their order or shapes differ")
    report = Verification(params, spec_params, len(theirs), keys_equal, False, problems=problems)
    if on_meta:
        report.strict_load = keys_equal
        return report
    try:
        compiled.load_state_dict(theirs, strict=True)
        report.strict_load = True
    except RuntimeError as err:
        problems.append(f"load_state_dict(strict=True) failed: {str(err).splitlines()[0]}")
        return report
    compiled.eval()
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = next((t.device for t in theirs.values()), torch.device("cpu"))
    example = torch.randn(2, *input_shape, generator=generator).to(device)
    with torch.no_grad():
        want, got = model(example), compiled(example)
    if isinstance(got, (tuple, list)):
        got = got[0]
    report.outputs_compared = True
    if got.shape != want.shape:
        problems.append(f"output shapes differ: spec {list(got.shape)}, module {list(want.shape)}")
        return report
    report.scale = want.abs().max().item()
    report.max_difference = (got - want).abs().max().item()
    if not report.max_difference <= TOLERANCE * max(report.scale, 1.0):
        problems.append(f"outputs differ by {report.max_difference:.3g} (largest output {report.scale:.3g})")
    return report
