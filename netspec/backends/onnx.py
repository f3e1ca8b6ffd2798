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
import json
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
from netspec.language.evaluate import show

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


def io_names(graph: Graph, preprocessed: bool = False) -> tuple[str, list[str]]:
    """The spec's input name and its outputs' names, where ONNX accepts them (a layer named by position, "3",
    is not; `decoder.8` is not): then "output" for the scores, "aux" for an auxiliary output and
    "reconstruction" for a reconstruction. With the preprocessing embedded the input is "image"."""
    taken: set[str] = {"image"} if preprocessed else set()

    def usable(name: str, fallback: str) -> str:
        chosen = name if name.isidentifier() else fallback
        while chosen in taken:
            chosen += "_"
        taken.add(chosen)
        return chosen

    input_name = "image" if preprocessed else usable(graph.input, "input")
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


class EmbeddedPreprocessing(nn.Module):
    """A network with its run's evaluation preprocessing in front (a `preprocessing` record of a netspec
    checkpoint, netspec.train.preprocessing): uint8 images [N, C, H, W] in. Images of the run's own size are
    padded; a run that resized takes images of any size: the shorter side resized to `resize` (antialiased, as
    torchvision's Resize) and the centre cropped, with the size arithmetic in the graph. Then pixels / 255 and
    (pixel - mean) / std per channel."""

    def __init__(self, network: nn.Module, record: dict):
        super().__init__()
        self.network = network
        self.resize, self.pad = record.get("resize"), int(record.get("pad") or 0)
        self.size = tuple(record["input_size"])
        self.mode = record.get("interpolation", "bilinear")
        channels = record["channels"]
        normalize = bool(record.get("normalize")) and record.get("mean") is not None
        self.normalize = normalize
        mean = torch.tensor(record["mean"] if normalize else [0.0] * channels).view(1, -1, 1, 1)
        std = torch.tensor(record["std"] if normalize else [1.0] * channels).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        seed = record.get("permute_pixels")
        height, width = (size - 2 * self.pad for size in self.size)
        permutation = torch.randperm(height * width, generator=torch.Generator().manual_seed(seed)) \
            if seed is not None and self.resize is None else None
        self.register_buffer("permutation", permutation, persistent=False)

    def image_shape(self) -> tuple[int, ...]:
        """The [C, H, W] of the images the graph takes (any H, W when it resizes: this is an example)."""
        channels = self.mean.shape[1]
        if self.resize is None:
            return (channels, *(size - 2 * self.pad for size in self.size))
        return (channels, self.size[0] + 21, self.size[1] + 9)

    def forward(self, image: torch.Tensor):
        x = image.float()
        if self.resize is not None:
            height, width = x.shape[-2], x.shape[-1]
            short = torch.sym_min(height, width)
            # torchvision's Resize(int): the shorter side to `resize`, the other in proportion, rounded down
            new_height, new_width = (self.resize * height) // short, (self.resize * width) // short
            x = torch.nn.functional.interpolate(x, size=(new_height, new_width), mode=self.mode,
                                                antialias=self.mode != "nearest",
                                                align_corners=False if self.mode != "nearest" else None)
            x = x.clamp(0, 255)
            top, left = half_rounded(new_height - self.size[0]), half_rounded(new_width - self.size[1])
            x = x[..., top:top + self.size[0], left:left + self.size[1]]
        else:
            if self.permutation is not None:
                n, c, h, w = x.shape
                x = x.reshape(n, c, h * w)[:, :, self.permutation].reshape(n, c, h, w)
            if self.pad:
                x = torch.nn.functional.pad(x, (self.pad,) * 4)
        x = x / 255
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.network(x)


def half_rounded(difference):
    """round(difference / 2) with Python's (and torchvision's CenterCrop's) ties to even, in integer arithmetic
    that torch.export keeps symbolic: an odd difference rounds up when its half is odd."""
    return difference // 2 + (difference % 2) * ((difference // 2) % 2)


def _opset_of(path: str) -> int:
    import onnx

    return next(o.version for o in onnx.load(path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


def _export_once(model, example, path, graph: Graph, opset: int, dynamic: bool, dynamo: bool) -> None:
    input_name, output_names = io_names(graph, embedded(model))
    names = {"input_names": [input_name], "output_names": output_names}
    any_size = embedded(model) and model.resize is not None  # images of any size: height and width dynamic
    with _quiet():
        if dynamo:
            shape = {0: torch.export.Dim("batch", min=1, max=4096)} if dynamic else {}
            if any_size:
                shape |= {2: torch.export.Dim("height", min=8, max=16384),
                          3: torch.export.Dim("width", min=8, max=16384)}
            torch.onnx.export(model, (example,), path, dynamo=True, opset_version=opset,
                              dynamic_shapes=(shape,) if shape else None, external_data=False, verbose=False,
                              **names)
        else:
            axes = {name: {0: "batch"} for name in [input_name, *output_names]} if dynamic else None
            # PRESERVE keeps batch norm as BatchNormalization (eval semantics) instead of folding it into the
            # convolution, so every layer's weights stay initialisers named by their state_dict keys.
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset, dynamic_axes=axes,
                              do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE, **names)
    if _opset_of(path) != opset:
        raise ExportError(f"the exporter could not bring the model down to opset {opset}")


def embedded(model: nn.Module) -> bool:
    return isinstance(model, EmbeddedPreprocessing)


def _export(model, example, path, graph, opset, dynamic) -> str:
    """Export with the TorchScript exporter, or say which opset would work, or fall back to torch.export's.
    Embedded preprocessing that resizes images of any size is torch.export's alone (the TorchScript exporter has
    no antialiased resize, and fixes the sizes it traces)."""
    if embedded(model) and model.resize is not None:
        try:
            _export_once(model, example, path, graph, opset, dynamic, dynamo=True)
        except Exception as err:
            if written_error(err) is not None:
                raise
            raise ExportError(f"torch.onnx cannot export this network with its preprocessing embedded at opset "
                              f"{opset} ({first_line(err)}); export it without --embed-preprocessing") from None
        return "torch.export-based (embedded preprocessing resizes images of any size)"
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
    for index, batch in enumerate(batches):
        if embedded(model):  # uint8 images; of two sizes when any size is taken
            channels, height, width = model.image_shape()
            if model.resize is not None and index:
                height, width = width + 13, height
            x = torch.randint(0, 256, (batch, channels, height, width), dtype=torch.uint8, generator=generator)
        else:
            x = torch.randn(batch, *graph.input_shape, generator=generator)
        with torch.no_grad():
            expected = model(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        outputs = session.run(None, {io_names(graph, embedded(model))[0]: x.numpy()})
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


def _metadata(graph: Graph, sources, run: dict | None = None, embed: bool = False) -> dict[str, str]:
    """The file's metadata_props. `run`: the config a netspec checkpoint carries (its run's classes,
    preprocessing, task and arguments), written as JSON so that a deployment reads what the outputs mean and
    which pixels to feed; `embed`: the preprocessing is in the graph, which takes uint8 images."""
    digest = hashlib.sha256()
    for name in sorted(sources.texts):
        digest.update(name.encode() + b"\0" + sources.texts[name].encode() + b"\0")
    shape = "[batch, " + ", ".join(map(str, graph.input_shape)) + "]"
    metadata = {
        "netspec_version": __version__,
        "netspec_network": graph.name,
        "netspec_arguments": ", ".join(f"{k}={show(v)}" for k, v in graph.arguments.items()),
        "netspec_spec_file": Path(graph.file).name,
        "netspec_spec_sha256": digest.hexdigest(),
        "netspec_parameters": str(sum(n.params for n in graph.nodes)),
        "netspec_input_shape": shape,
        "netspec_normalization": "none (no training run's record: the weights carry no preprocessing)",
    }
    record = run.get("preprocessing") if run else None
    if run:
        metadata["netspec_task"] = str(run.get("task", "classification"))
        metadata["netspec_classes"] = json.dumps(list(run.get("classes") or []))
        metadata["netspec_run_arguments"] = json.dumps(run.get("argument_texts") or run.get("arguments") or {})
    if isinstance(record, dict):
        metadata["netspec_preprocessing"] = json.dumps(record)
        metadata["netspec_normalization"] = (json.dumps({"mean": record["mean"], "std": record["std"]})
                                             if record.get("normalize") else "none (the run did not normalise)")
        size = "any H, W (resized inside)" if record.get("resize") else \
            f"{record['input_size'][0] - 2 * record['pad']}, {record['input_size'][1] - 2 * record['pad']}"
        metadata["netspec_input"] = (
            f"image: uint8 [batch, {record['channels']}, {size}] {record['color']} pixels; the graph "
            "preprocesses them as the run evaluated" if embed else
            f"{shape} float: {record['color']} pixels / 255, " + (
                "minus mean, divided by std (netspec_normalization), " if record.get("normalize") else "") +
            ("after resizing and centre-cropping (netspec_preprocessing)" if record.get("resize") else
             f"padded by {record['pad']}" if record.get("pad") else "at the input size"))
    return metadata


def export(graph: Graph, sources, output: str | Path, weights: str | Path | list[str] | None = None,
           opset: int = DEFAULT_OPSET, batch: str | int = "dynamic", force: bool = False,
           seed: int = 0, run: dict | None = None, embed_preprocessing: bool = False) -> ExportReport:
    """Export, check with onnx.checker, verify in onnxruntime, then move the file into place.

    Nothing is written at `output` unless every step passed; a failing comparison is reported
    (ExportReport.ok is False) and the file is not kept. A full disk or a read-only folder is an ExportError
    (nothing written, no temporary left). `run`: the config of the netspec checkpoint the weights come from,
    written into the metadata; `embed_preprocessing` puts its preprocessing into the graph (uint8 images in).
    """
    record = run.get("preprocessing") if run else None
    if embed_preprocessing and not isinstance(record, dict):
        raise ExportError("--embed-preprocessing needs the weights of a netspec run (best.pt or last.pt), whose "
                          "checkpoint records how its images were preprocessed")
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
    if embed_preprocessing:
        model = EmbeddedPreprocessing(model, record).eval()
        example = torch.randint(0, 256, (example.shape[0], *model.image_shape()), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(seed))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as err:
        raise cannot_write(output, err) from None
    os.close(fd)
    try:
        return _export_checked(model, example, tmp, output, graph, sources, opset, dynamic, batch, seed, run)
    except Exception as err:
        written = written_error(err)
        if written is None or isinstance(err, ToolError):
            raise
        raise cannot_write(output, written) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export_checked(model, example, tmp: str, output: Path, graph: Graph, sources, opset: int, dynamic: bool,
                    batch: str | int, seed: int, run: dict | None = None) -> ExportReport:
    """Export into `tmp`, check and verify it, and move it to `output` when PyTorch and onnxruntime agree."""
    import onnx

    exporter = _export(model, example, tmp, graph, opset, dynamic)
    proto = onnx.load(tmp)
    name_nodes_by_layer(proto)
    for key, value in _metadata(graph, sources, run, embedded(model)).items():
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
