"""ONNX backend: export a compiled spec, check it, and verify it in onnxruntime against PyTorch.

The exporter is torch.onnx's TorchScript one (`dynamo=False`): it exports every spec in `specs/` and takes
~0.1 s for LeNet-5 where the torch.export-based exporter takes ~3.6 s. Nodes that read a layer's weights are
then named after the layer (`/layer2.0.conv1/Conv`), so a layer is found in Netron by its spec name.
Where it fails (adaptive pooling whose output does not divide its input, for one), the torch.export-based
exporter is tried next and the report says so.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from netspec.ground.version import __version__
from netspec.backends.torch import load_weights, to_module
from netspec.backends.torch.layers import MaskedConv2d
from netspec.ground.errors import ToolError, first_line
from netspec.ir import Graph

DEFAULT_OPSET = 18
HIGHEST_OPSET = 20
# An output agrees when |got - want| <= ATOL x max(1, its largest |value|) + RTOL x |want|: float32 round-off
# grows with the output's scale (a deep network's logits can be large), so the absolute part follows it.
ATOL, RTOL = 1e-4, 1e-3


class ExportError(ToolError):
    """A mistake in what was asked for (opset, output), or an output that cannot be written; the message says
    which and why. A bad weights file is the backend's WeightsError (exit 1), as in `netspec eval`."""

    exit_code = 2


def written_error(err: BaseException) -> OSError | None:
    """The OSError behind `err` (itself, or the one it was raised from): a full disk or a read-only folder that
    an exporter met while writing, which is not the network's fault."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def cannot_write(output: Path, err: OSError) -> ExportError:
    return ExportError(f"cannot write {output}: {err.strerror or err}; nothing was written")


@dataclass
class Comparison:
    batch: int
    max_abs: float
    max_rel: float
    ok: bool


@dataclass
class ExportReport:
    path: str
    exporter: str
    opset: int
    provider: str
    size_bytes: int
    ops: dict[str, int]
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)


def densify_sparse_convs(model: nn.Module) -> None:
    """Replace each connection-table conv by a plain Conv2d whose weight has exact zeros off the table."""
    for name, module in list(model.named_modules()):
        if isinstance(module, MaskedConv2d):
            dense = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                              module.padding, module.dilation, bias=module.bias is not None)
            with torch.no_grad():
                dense.weight.copy_(module.dense_weight())
                if module.bias is not None:
                    dense.bias.copy_(module.bias)
            parent, _, leaf = name.rpartition(".")
            model.get_submodule(parent).add_module(leaf, dense)  # get_submodule("") is the model itself


def io_names(graph: Graph) -> tuple[str, list[str]]:
    """The spec's input name and its outputs' names, where ONNX accepts them (a layer named by position, "3",
    is not; `decoder.8` is not): then "output" for the scores, "aux" for an auxiliary output and
    "reconstruction" for a reconstruction."""
    taken: set[str] = set()

    def usable(name: str, fallback: str) -> str:
        chosen = name if name.isidentifier() else fallback
        while chosen in taken:
            chosen += "_"
        taken.add(chosen)
        return chosen

    input_name = usable(graph.input, "input")
    # Declared outputs are named as the `output` statement names them (`head1`, not its last layer `head1.2`).
    main, *aux = graph.output_names or [graph.output] + graph.aux_outputs
    return input_name, ([usable(main, "output")] + [usable(name, "aux") for name in aux]
                        + [usable(name, "reconstruction") for name in graph.reconstructions()])


@contextlib.contextmanager
def _quiet():
    """torch.onnx and onnxscript log progress, deprecations and caught tracebacks; the report says what matters."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo",
                                                    "torch.fx", "torch._subclasses", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _opset_of(path: str) -> int:
    import onnx

    return next(o.version for o in onnx.load(path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


def _export_once(model, example, path, graph: Graph, opset: int, dynamic: bool, dynamo: bool) -> None:
    input_name, output_names = io_names(graph)
    names = {"input_names": [input_name], "output_names": output_names}
    with _quiet():
        if dynamo:
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
            torch.onnx.export(model, (example,), path, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                              external_data=False, verbose=False, **names)
        else:
            axes = {name: {0: "batch"} for name in [input_name, *output_names]} if dynamic else None
            # PRESERVE keeps batch norm as BatchNormalization (eval semantics) instead of folding it into the
            # convolution, so every layer's weights stay initialisers named by their state_dict keys.
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset, dynamic_axes=axes,
                              do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE, **names)
    if _opset_of(path) != opset:
        raise ExportError(f"the exporter could not bring the model down to opset {opset}")


def _export(model, example, path, graph, opset, dynamic) -> str:
    """Export with the TorchScript exporter, or say which opset would work, or fall back to torch.export's."""
    try:
        _export_once(model, example, path, graph, opset, dynamic, dynamo=False)
        return "torchscript"
    except Exception as err:
        if written_error(err) is not None:  # the disk, not the opset: no other exporter would do better
            raise
        first = err
    with tempfile.TemporaryDirectory() as tmp:
        for candidate in range(opset + 1, HIGHEST_OPSET + 1):
            try:
                _export_once(model, example, os.path.join(tmp, "probe.onnx"), graph, candidate, dynamic, False)
            except Exception:
                continue
            raise ExportError(f"opset {opset} cannot express this network ({first_line(first)}); the lowest "
                              f"opset that works is {candidate}: pass --opset {candidate}")
    try:
        _export_once(model, example, path, graph, opset, dynamic, dynamo=True)
    except Exception as second:
        if written_error(second) is not None:
            raise
        raise ExportError(f"torch.onnx cannot export this network at opset {opset}. TorchScript exporter: "
                          f"{first_line(first)}; torch.export-based exporter: {first_line(second)}") from None
    return f"torch.export-based (the TorchScript exporter failed: {first_line(first)})"


def name_nodes_by_layer(proto) -> None:
    """Name each node that reads a layer's weights `/<layer>/<OpType>` (`/layer2.0.conv1/Conv`), the spec's
    name, so a layer is found in Netron; the exporters name nodes by the module call stack or by aten op."""
    initialisers = {i.name for i in proto.graph.initializer}
    taken: collections.Counter = collections.Counter()
    for node in proto.graph.node:
        layer = next((name.rsplit(".", 1)[0] for name in node.input if name in initialisers and "." in name), None)
        if layer is None:
            continue
        base = f"/{layer}/{node.op_type}"
        node.name = base if not taken[base] else f"{base}_{taken[base]}"
        taken[base] += 1


def _providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available \
        else ["CPUExecutionProvider"]


def compare(model: nn.Module, onnx_path: str, graph: Graph, batches: list[int], seed: int = 0) -> tuple[
        str, list[Comparison]]:
    """Run PyTorch and onnxruntime on the same random inputs; max absolute and relative differences."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=_providers())
    generator = torch.Generator().manual_seed(seed)
    results = []
    for batch in batches:
        x = torch.randn(batch, *graph.input_shape, generator=generator)
        with torch.no_grad():
            expected = model(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        outputs = session.run(None, {io_names(graph)[0]: x.numpy()})
        max_abs = max_rel = 0.0
        ok = len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            want = want.numpy()
            diff = abs(got - want)
            max_abs = max(max_abs, float(diff.max()) if diff.size else 0.0)
            max_rel = max(max_rel, float((diff / (abs(want) + 1e-12)).max()) if diff.size else 0.0)
            scale = max(1.0, float(abs(want).max())) if want.size else 1.0
            ok = ok and bool((diff <= ATOL * scale + RTOL * abs(want)).all()) and got.shape == want.shape
        results.append(Comparison(batch, max_abs, max_rel, ok))
    return session.get_providers()[0], results


def _metadata(graph: Graph, sources) -> dict[str, str]:
    digest = hashlib.sha256()
    for name in sorted(sources.texts):
        digest.update(name.encode() + b"\0" + sources.texts[name].encode() + b"\0")
    return {
        "netspec_version": __version__,
        "netspec_network": graph.name,
        "netspec_arguments": ", ".join(f"{k}={v}" for k, v in graph.arguments.items()),
        "netspec_spec_file": Path(graph.file).name,
        "netspec_spec_sha256": digest.hexdigest(),
        "netspec_parameters": str(sum(n.params for n in graph.nodes)),
        "netspec_input_shape": "[batch, " + ", ".join(map(str, graph.input_shape)) + "]",
        "netspec_normalization": "none (the spec declares none)",
    }


def export(graph: Graph, sources, output: str | Path, weights: str | Path | list[str] | None = None,
           opset: int = DEFAULT_OPSET, batch: str | int = "dynamic", force: bool = False,
           seed: int = 0) -> ExportReport:
    """Export, check with onnx.checker, verify in onnxruntime, then move the file into place.

    Nothing is written at `output` unless every step passed; a failing comparison is reported
    (ExportReport.ok is False) and the file is not kept. A full disk or a read-only folder is an ExportError
    (nothing written, no temporary left).
    """
    output = Path(output)
    if output.exists() and not force:
        raise ExportError(f"{output} exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        raise ExportError(f"cannot write {output}: {output.parent} is not a directory")
    if not 7 <= opset <= HIGHEST_OPSET:
        raise ExportError(f"opset {opset} is outside what torch.onnx exports (7 to {HIGHEST_OPSET})")
    dynamic = batch == "dynamic"
    model = to_module(graph, seed=seed)
    if weights is not None:
        load_weights(model, weights)  # a bad file is a WeightsError: exit 1, as `netspec eval` says it
    model.eval()
    if graph.aux_outputs:
        model.all_outputs = True  # every output in the file, auxiliary classifiers included
    densify_sparse_convs(model)
    example = torch.randn(2 if dynamic else int(batch), *graph.input_shape)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as err:
        raise cannot_write(output, err) from None
    os.close(fd)
    try:
        return _export_checked(model, example, tmp, output, graph, sources, opset, dynamic, batch, seed)
    except Exception as err:
        written = written_error(err)
        if written is None or isinstance(err, ToolError):
            raise
        raise cannot_write(output, written) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export_checked(model, example, tmp: str, output: Path, graph: Graph, sources, opset: int, dynamic: bool,
                    batch: str | int, seed: int) -> ExportReport:
    """Export into `tmp`, check and verify it, and move it to `output` when PyTorch and onnxruntime agree."""
    import onnx

    exporter = _export(model, example, tmp, graph, opset, dynamic)
    proto = onnx.load(tmp)
    name_nodes_by_layer(proto)
    for key, value in _metadata(graph, sources).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, tmp)
    provider, comparisons = compare(model, tmp, graph, [1, 3] if dynamic else [int(batch)], seed)
    report = ExportReport(str(output), exporter, opset, provider, os.path.getsize(tmp),
                          dict(collections.Counter(n.op_type for n in proto.graph.node).most_common()),
                          comparisons)
    if report.ok:
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    return report
