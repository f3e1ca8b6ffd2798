"""The `netspec` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from netspec.errors import Diagnostic, NetspecError, Sources, render_all
from netspec.evaluate import show
from netspec.limits import search_path_from_environment

EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE = 0, 1, 2


def _parse_override(text: str) -> tuple[str, Any]:
    """`classes=10` -> ("classes", 10); the value is a spec expression, never Python."""
    from netspec.evaluate import evaluate
    from netspec.parse import parse

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        module = parse(f"let {key} = {value}", "--set")
        if len(module.items) != 1:
            raise argparse.ArgumentTypeError(f"cannot read --set {text}: the value must be one expression")
        return key, evaluate(module.items[0].value, {}.__getitem__, allow_symbol=True)
    except NetspecError as err:
        raise argparse.ArgumentTypeError(f"cannot read --set {text}: {err.diagnostics[0].message}") from None


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}"
    return f"{n:g} {unit}".rstrip()


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    # Plain columns: rich's Table took 0.2 s for ResNet-152's 508 rows and 3 s for 7,000 (docs/benchmarks.md).
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows), rule])


def _print_summary(summary, fmt: str) -> None:
    if fmt == "json":
        print(summary.model_dump_json(indent=2))
        return
    rows = []
    for row in summary.rows:
        params = f"{row.params:,}" if row.params else "-"
        if row.params and row.trainable != row.params:
            params += " (frozen)" if row.trainable == 0 else f" ({row.params - row.trainable:,} frozen)"
        rows.append(["  " * row.depth + row.name, row.op, "[" + ", ".join(map(str, row.shape)) + "]", params,
                     f"{row.macs:,}" if row.macs else "-"])
    args = ", ".join(f"{k}={show(v)}" for k, v in summary.arguments.items())
    t = summary.totals
    print(f"{summary.network}({args})  {summary.file}\n")
    print(_table(["layer", "op", "output shape", "params", "MACs"], rows, right={3, 4}))
    print(f"Params:      {t.params:,} (trainable {t.trainable:,}, non-trainable {t.non_trainable:,})")
    print(f"Buffers:     {t.buffers:,} (batch-norm statistics; not parameters)")
    print(f"MACs:        {t.macs:,} ({_human(t.macs)}) multiply-accumulates per sample")
    print(f"FLOPs:       {t.flops:,} ({_human(t.flops)}) = 2 x MACs")
    print(f"Activations: {t.activation_bytes:,} bytes ({_human(t.activation_bytes, 'B')}) "
          "float32 outputs of every layer, batch 1")
    if len(summary.outputs) > 1:
        main, parts = summary.outputs[0], []
        if summary.aux_outputs:
            parts.append(f"the auxiliary {', '.join(summary.aux_outputs)} (while training)")
        reconstructions = summary.outputs[1 + len(summary.aux_outputs):]
        if reconstructions:
            parts.append(f"the reconstruction {', '.join(reconstructions)} of the input")
        labels = "; forward(x, labels=None) takes the class labels while training" if summary.takes_labels else ""
        print(f"Outputs:     {main}, then {' and '.join(parts)}{labels}")


def _report_errors(diagnostics: list[Diagnostic], sources: Sources, fmt: str, limit: int) -> None:
    if fmt == "json":
        print(json.dumps({"ok": False, "error_count": len(diagnostics),
                          "errors": [d.to_json() for d in diagnostics[:limit]]}, indent=2))
    else:
        print(render_all(diagnostics, sources, limit), file=sys.stderr)


def _limits(options: argparse.Namespace):
    from netspec.limits import Limits

    search = tuple(Path(p) for p in options.import_path) + search_path_from_environment()
    roots = None if options.allow_any_import else search
    return Limits(params=options.max_params, instances=options.max_layers, tokens=options.max_tokens,
                  import_roots=roots, import_search=search)


def _load(options: argparse.Namespace, fmt: str = "text", sources: Sources | None = None):
    """(graph, None), or (None, exit status) after printing the spec's errors. `sources` gets the texts read."""
    import netspec

    sources = sources if sources is not None else Sources()
    limits = _limits(options)
    try:
        return netspec.load(options.spec, sources, limits, **dict(options.set)), None
    except NetspecError as err:
        _report_errors(err.diagnostics, sources, fmt, limits.errors_shown)
        top_level_missing = all(d.code == "NS209" and d.span is None for d in err.diagnostics)
        return None, EXIT_USAGE if top_level_missing else EXIT_SPEC_ERROR


def _write(command: str, path: str, data: bytes | str) -> bool:
    from netspec.files import write_atomic

    try:
        write_atomic(path, data)
        return True
    except OSError as err:
        print(f"netspec {command}: cannot write {path}: {err.strerror}", file=sys.stderr)
        return False


def cmd_check(options: argparse.Namespace) -> int:
    import netspec

    graph, status = _load(options, options.format)
    if graph is None:
        return status
    depth = None if options.expand else (options.depth or (1 if options.collapse else None))
    _print_summary(netspec.summarize(graph, depth), options.format)
    return EXIT_OK


GRAPH_FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
                 ".mermaid": "mermaid"}
DOT_MISSING = ("SVG and PNG need Graphviz's `dot` program, which is not installed.\n"
               "Install it with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
               "from https://graphviz.org/download/, or write text with --format dot or --format mermaid.")


def cmd_graph(options: argparse.Namespace) -> int:
    from netspec.backends import graph as diagrams
    from netspec.errors import did_you_mean

    fmt = options.format
    if fmt is None:
        fmt = GRAPH_FORMATS.get(Path(options.output).suffix.lower()) if options.output else "dot"
        if fmt is None:
            print(f"netspec graph: cannot tell the format of {options.output}; name it .svg, .png, .dot or .mmd, "
                  "or pass --format", file=sys.stderr)
            return EXIT_USAGE
    if fmt in ("svg", "png") and not options.output:
        print(f"netspec graph: --format {fmt} writes a file; give one with -o", file=sys.stderr)
        return EXIT_USAGE
    graph, status = _load(options)
    if graph is None:
        return status
    expand: set[str] | str = diagrams.ALL if options.expand_all else set(options.expand)
    for name in options.expand:
        if name not in graph.scopes:
            hint = did_you_mean(name, graph.scopes) or "blocks and groups: " + ", ".join(
                s for s in graph.scopes if "." not in s)
            print(f"netspec graph: --expand {name}: no block or group of that name; {hint}", file=sys.stderr)
            return EXIT_USAGE
    diagram = diagrams.layout(graph, expand)
    text = diagrams.to_mermaid(diagram) if fmt == "mermaid" else diagrams.to_dot(diagram)
    if fmt in ("svg", "png"):
        try:
            data: bytes | str = diagrams.render(text, fmt)
        except diagrams.DotNotFound:
            print(f"netspec graph: {DOT_MISSING}", file=sys.stderr)
            return EXIT_USAGE
    else:
        data = text
    if options.output:
        if not _write("graph", options.output, data):
            return EXIT_USAGE
        print(f"wrote {options.output} ({fmt}, {len(diagram.boxes())} boxes, {len(diagram.edges)} edges)")
    else:
        sys.stdout.write(data)
    return EXIT_OK


def cmd_compile(options: argparse.Namespace) -> int:
    graph, status = _load(options)
    if graph is None:
        return status
    try:
        from netspec.backends.torch import to_python
    except ImportError as err:
        print(f"netspec compile: PyTorch is needed ({err}); install it with `pip install torch` (or the project's `torch` extra)", file=sys.stderr)
        return EXIT_USAGE
    source = to_python(graph)
    if not options.output:
        sys.stdout.write(source)
        return EXIT_OK
    if not _write("compile", options.output, source):
        return EXIT_USAGE
    print(f"wrote {options.output}: class {graph.name}, {sum(n.params for n in graph.nodes):,} parameters")
    return EXIT_OK


def _batch(text: str) -> str | int:
    if text == "dynamic":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")


def cmd_export(options: argparse.Namespace) -> int:
    sources = Sources()
    graph, status = _load(options, sources=sources)
    if graph is None:
        return status
    try:
        from netspec.backends.onnx import ATOL, RTOL, ExportError, export
    except ImportError as err:
        print(f"netspec export: {err.name or err} is needed; install the project's `onnx` extra "
              '(pip install -e ".[onnx]")', file=sys.stderr)
        return EXIT_USAGE
    try:
        report = export(graph, sources, options.output, options.weights, options.opset, options.batch,
                        options.force)
    except ExportError as err:
        print(f"netspec export: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exporter:  {report.exporter}, opset {report.opset}")
    print(f"runtime:   onnxruntime, {report.provider}")
    for c in report.comparisons:
        verdict = "ok" if c.ok else f"FAILS atol {ATOL:g} / rtol {RTOL:g}"
        print(f"batch {c.batch}:   max |onnx - torch| {c.max_abs:.3g}, max relative {c.max_rel:.3g}  {verdict}")
    print("ops:       " + ", ".join(f"{op} {count}" for op, count in report.ops.items()))
    if not report.ok:
        print(f"netspec export: onnxruntime disagrees with PyTorch; {options.output} was not written",
              file=sys.stderr)
        return EXIT_SPEC_ERROR
    print(f"wrote {report.path} ({report.size_bytes:,} bytes)")
    return EXIT_OK


# Flags with their own help or choices in _data_arguments; every other recipe setting gets a flag of its own
# from the Recipe schema (_recipe_arguments), so a new setting is settable from the command line at once.
DATA_FLAGS = ("data", "pad", "permute_pixels")
RECIPE_HELP = {
    "batch_size": "the global batch, split over the processes",
    "loss": "margin: the capsule loss on output lengths (CapsNet)",
    "compile": "torch.compile (falls back to eager)",
    "seed": "makes CPU runs bit-reproducible",
    "validation": "fraction of the training set held out to choose best.pt (0: none; a val/ folder wins)",
    "augment": "crop: a random crop of each image padded by 4 pixels (2 below 32x32); flip: horizontal",
    "train_crop": "auto: RandomResizedCrop when images are not the input size",
    "ema": "keep an exponential moving average of the weights, evaluated and checkpointed alongside",
    "precision": "auto: bf16 autocast on CUDA, fp32 on the CPU; fp16 adds a gradient scaler",
}


def _recipe_arguments(command: argparse.ArgumentParser) -> None:
    """A flag per recipe setting, typed and with the choices the schema allows (docs/training.md)."""
    import types
    import typing

    from netspec.recipe import Recipe

    group = command.add_argument_group("recipe (the spec's train section; these flags override it)")
    for name, info in Recipe.model_fields.items():
        if name in DATA_FLAGS:
            continue
        kind = info.annotation
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType)  # `X | None`
        options = [a for a in typing.get_args(kind) if a is not type(None)] if optional else [kind]
        base = typing.get_args(options[0])[0] if typing.get_origin(options[0]) is typing.Annotated else options[0]
        flag = "--" + name.replace("_", "-")
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=RECIPE_HELP.get(name))
        elif typing.get_origin(base) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(base), help=RECIPE_HELP.get(name))
        else:
            group.add_argument(flag, type=base, help=RECIPE_HELP.get(name))


def _recipe(options: argparse.Namespace, graph):
    """Defaults, then the spec's `train` section, then the flags given."""
    from pydantic import ValidationError

    from netspec.recipe import Recipe

    flags = {key: getattr(options, key) for key in Recipe.model_fields if getattr(options, key, None) is not None}
    try:
        return Recipe.model_validate({**graph.recipe, **flags})
    except ValidationError as err:
        e = err.errors()[0]
        where = f"--{str(e['loc'][0]).replace('_', '-')}: " if e["loc"] else ""
        print(f"netspec {options.command}: {where}{e['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return None


def _load_with_recipe(options: argparse.Namespace):
    """(graph, recipe, None), or (None, None, exit status) after saying what is wrong."""
    graph, status = _load(options)
    if graph is None:
        return None, None, status
    recipe = _recipe(options, graph)
    return (graph, recipe, None) if recipe is not None else (None, None, EXIT_USAGE)


def cmd_train(options: argparse.Namespace) -> int:
    graph, recipe, status = _load_with_recipe(options)
    if graph is None:
        return status
    from netspec.data import DataError
    from netspec.train import DataOptions, RunOptions, TrainError, distributed, run

    out = Path(options.out or Path("runs") / Path(graph.file).stem)
    run_options = RunOptions(resume=options.resume, overwrite=options.overwrite, download=options.download,
                             sync_bn=options.sync_bn, max_steps=options.max_steps, log_every=options.log_every,
                             data=DataOptions(options.data_mode, options.workers, options.limit_eval))
    try:
        if options.nproc is not None and not distributed.launched():  # start the processes, each running this
            distributed.check_launch(options.nproc, options.device, options.dist_backend, recipe.batch_size)
            return distributed.launch(options.nproc, options.max_restarts, options.argv)
        if options.max_restarts and options.nproc is None:
            raise TrainError("--max-restarts goes with --nproc (under torchrun, give torchrun --max-restarts)")
        if options.nproc is not None and int(os.environ["WORLD_SIZE"]) != options.nproc:
            raise TrainError("--nproc starts processes itself; under torchrun leave it out (torchrun has "
                             "--nproc-per-node)")
        result = run(graph, recipe, out, options.data_dir, options.device, progress=not options.no_progress,
                     dist_backend=options.dist_backend, dist_timeout=options.dist_timeout, options=run_options)
    except (TrainError, DataError) as err:
        if distributed.is_main_process() or isinstance(err, distributed.ProcessError):  # else rank 0 says it
            print(f"netspec train: {err}", file=sys.stderr)
        return EXIT_SPEC_ERROR
    if not distributed.is_main_process():
        return EXIT_OK
    def percent(key: str) -> str:
        return f"{result[key]:.2%}" if result.get(key) is not None else "-"

    rows = [[graph.name, recipe.data, str(result["epoch"]), f"{percent('best_val_accuracy')} ({result['best_epoch']})",
             percent("test_accuracy"), f"{result['train_seconds']:.1f} s", f"{result['images_per_second']:,.0f}"]]
    print(_table(["network", "data", "epochs", "best val (epoch)", "test (best.pt)", "train time", "img/s"], rows,
                 right={2, 3, 4, 5, 6}))
    print(f"run folder: {result['run']} (metrics.jsonl, config.json, last.pt, best.pt)")
    return EXIT_OK


def cmd_eval(options: argparse.Namespace) -> int:
    graph, recipe, status = _load_with_recipe(options)
    if graph is None:
        return status
    from netspec.data import DataError
    from netspec.train import DataOptions, TrainError, evaluate_weights

    try:
        result = evaluate_weights(graph, options.weights, recipe, options.data_dir, options.device, options.download,
                                  DataOptions(options.data_mode, options.workers))
    except (TrainError, DataError) as err:
        print(f"netspec eval: {err}", file=sys.stderr)
        return EXIT_SPEC_ERROR
    print(f"{result['network']} on {result['dataset']} test set ({result['test_images']:,} images): "
          f"accuracy {result['test_accuracy']:.2%}, loss {result['test_loss']:.4f}")
    return EXIT_OK


def _data_arguments(command: argparse.ArgumentParser) -> None:
    from netspec.recipe import DATASETS

    command.add_argument("--data", choices=DATASETS, help="dataset (default: the spec's, else mnist)")
    command.add_argument("--data-dir", help="where datasets live (also $NETSPEC_DATA; then ./data, ~/data)")
    command.add_argument("--download", action="store_true", help="fetch a missing dataset with torchvision")
    command.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    command.add_argument("--pad", type=int, help="zero padding around each image, e.g. 2 for 28x28 -> 32x32")
    command.add_argument("--permute-pixels", type=int, metavar="SEED",
                         help="shuffle pixel positions with one fixed permutation (the seed)")
    command.add_argument("--data-mode", choices=("auto", "memory", "stream"), default="auto",
                         help="memory: the dataset on the device as one tensor; stream: a DataLoader with workers "
                              "(auto: memory for MNIST/CIFAR-10, stream for image files; printed at the start)")
    command.add_argument("--workers", type=int, metavar="N", help="DataLoader worker processes when streaming")


def cmd_ops(options: argparse.Namespace) -> int:
    from netspec.ops import OPS
    from netspec.ops.base import signature

    for name, op in sorted(OPS.items()):
        if op.inputs != 0:  # the input placeholder is declared with `input`, not called
            print(f"{signature(op)}\n    {op.summary}")
    return EXIT_OK


def cmd_fmt(options: argparse.Namespace) -> int:
    from netspec.fmt import format_paths

    return format_paths(options.files, options.check)


def cmd_plot(options: argparse.Namespace) -> int:
    from netspec.plot import PlotError, plot

    try:
        data, runs, names = plot(options.runs, options.output, options.title)
    except PlotError as err:
        print(f"netspec plot: {err}", file=sys.stderr)
        return EXIT_USAGE if err.usage else EXIT_SPEC_ERROR
    if not _write("plot", options.output, data):
        return EXIT_USAGE
    epochs = ", ".join(f"{name} {run.epoch_count} epoch{'s' if run.epoch_count != 1 else ''}"
                       for run, name in zip(runs, names))
    print(f"wrote {options.output} ({epochs})")
    return EXIT_OK


def cmd_lsp(options: argparse.Namespace) -> int:
    try:
        from netspec.lsp import serve
    except ImportError as err:
        print(f"netspec lsp: {(err.name or 'pygls').split('.')[0]} is needed; install the project's `lsp` extra "
              '(pip install -e ".[lsp]")', file=sys.stderr)
        return EXIT_USAGE
    serve()
    return EXIT_OK


def _count(text: str) -> int:
    """A positive count; underscores and powers of ten allowed: 1_000_000, 1e12."""
    try:
        value = float(text.replace("_", "")) if "e" in text.lower() else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(value)


def _spec_arguments(command: argparse.ArgumentParser) -> None:
    from netspec.limits import DEFAULT

    command.add_argument("spec", help="a .net file, or file.net:Network to pick one of several networks")
    command.add_argument("--set", action="append", type=_parse_override, default=[], metavar="NAME=VALUE",
                         help="override a network parameter, e.g. --set classes=10 (repeatable)")
    limits = command.add_argument_group("limits (docs/reliability.md)")
    limits.add_argument("--max-params", type=_count, default=DEFAULT.params, metavar="N",
                        help=f"refuse networks with more parameters (default {DEFAULT.params:.0e})")
    limits.add_argument("--max-layers", type=_count, default=DEFAULT.instances, metavar="N",
                        help=f"refuse networks instantiating more layers, blocks and groups "
                             f"(default {DEFAULT.instances:,})")
    limits.add_argument("--max-tokens", type=_count, default=DEFAULT.tokens, metavar="N",
                        help=f"refuse specs (with their imports) of more tokens (default {DEFAULT.tokens:,})")
    limits.add_argument("--import-path", action="append", default=[], metavar="DIR",
                        help="a folder imports are looked for in after the importing file's own, and may read "
                             "(repeatable; also the NETSPEC_PATH environment variable, separated by ':')")
    limits.add_argument("--allow-any-import", action="store_true",
                        help="let imports read any file (only for specs you trust)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netspec", description="Declarative architecture specs for CNNs.")
    from netspec import __version__

    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="validate a spec and print shapes, parameters and MACs",
                                description="Validate a spec; print every layer's output shape, parameter count "
                                            "and MACs, then the totals. Exit 0: valid, 1: errors, 2: usage.")
    _spec_arguments(check)
    check.add_argument("--format", choices=("text", "json"), default="text")
    view = check.add_mutually_exclusive_group()
    view.add_argument("--expand", action="store_true", help="one row per layer (the default)")
    view.add_argument("--collapse", action="store_true", help="one row per top-level block or group")
    view.add_argument("--depth", type=int, metavar="N", help="collapse scopes nested N deep into one row")
    check.set_defaults(run=cmd_check)

    graph = commands.add_parser("graph", help="draw the architecture (DOT, Mermaid, SVG or PNG)",
                                description="Draw a spec: blocks collapsed into one box each unless expanded, "
                                            "tensor shapes on the edges, skip connections dashed.")
    _spec_arguments(graph)
    graph.add_argument("-o", "--output", help="file to write (.svg, .png, .dot, .mmd); default: DOT to stdout")
    graph.add_argument("--format", choices=("dot", "mermaid", "svg", "png"),
                       help="default: from the output's extension")
    graph.add_argument("--expand", action="append", default=[], metavar="NAME",
                       help="open a block or group one level, e.g. --expand inception3a (repeatable)")
    graph.add_argument("--expand-all", action="store_true", help="draw every layer")
    graph.set_defaults(run=cmd_graph)

    compile_ = commands.add_parser("compile", help="write a standalone PyTorch module for a spec",
                                   description="Write the spec as a standalone .py file that defines the network "
                                               "as a torch.nn.Module (only torch imported). From Python, "
                                               "netspec.compile(spec) returns the module itself.")
    _spec_arguments(compile_)
    compile_.add_argument("-o", "--output", help="the .py file to write; default: stdout")
    compile_.add_argument("--emit", choices=("python",), default="python", help="what to write (default: python)")
    compile_.set_defaults(run=cmd_compile)

    export = commands.add_parser("export", help="export ONNX, verified in onnxruntime against PyTorch",
                                 description="Export the spec to ONNX, run onnx.checker, run it in onnxruntime on "
                                             "random input at batch 1 and 3 and compare with PyTorch. Exit 1 if "
                                             "they disagree beyond atol 1e-4 / rtol 1e-3 (nothing is written).")
    _spec_arguments(export)
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument("--weights", action="append", metavar="[MEMBER=]PATH",
                        help="a state_dict or checkpoint saved by torch.save (default: initial weights); "
                             "MEMBER=PATH loads one ensemble member (repeatable)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    export.add_argument("--batch", type=_batch, default="dynamic", help="'dynamic' (default) or a fixed size")
    export.add_argument("--force", action="store_true", help="overwrite an existing output file")
    export.set_defaults(run=cmd_export)

    train = commands.add_parser("train", help="train a spec on a dataset (GPU when present)",
                                description="Train a spec. Settings come from the defaults, then the spec's "
                                            "`train Network { ... }` section, then these flags.")
    _spec_arguments(train)
    _data_arguments(train)
    train.add_argument("--out", help="the run folder (default: runs/<spec file name>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last.pt (starts it when nothing was checkpointed)")
    train.add_argument("--overwrite", action="store_true", help="start again over a checkpointed run in --out")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    train.add_argument("--log-every", type=float, default=30.0, metavar="SECONDS",
                       help="when stderr is not a terminal, a progress line this often (default 30)")
    train.add_argument("--max-steps", type=int, metavar="N", help="at most N steps an epoch (a smoke run)")
    train.add_argument("--limit-eval", type=int, metavar="N",
                       help="evaluate on the first N validation and test images only (a smoke run)")
    _recipe_arguments(train)
    many = train.add_argument_group("many processes (docs/training.md); also under torchrun -m netspec train")
    many.add_argument("--nproc", type=int, metavar="N",
                      help="start N processes on this machine through torchrun's launcher: one per GPU, or CPU "
                           "processes; the batch size stays the global batch, split over them")
    many.add_argument("--max-restarts", type=int, default=0, metavar="K",
                      help="with --nproc: when a process dies, restart the group from the last checkpoint, up to K "
                           "times")
    many.add_argument("--sync-bn", action="store_true",
                      help="batch norms take their statistics over all processes' batches (SyncBatchNorm)")
    many.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                      help="auto: NCCL between GPUs, gloo between CPU processes")
    many.add_argument("--dist-timeout", type=float, default=300.0, metavar="SECONDS",
                      help="how long a process waits for the others, to meet at the start and at each exchange "
                           "(default 300, netspec.train.distributed.DEFAULT_TIMEOUT)")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("eval", help="test accuracy of saved weights")
    _spec_arguments(evaluate)
    _data_arguments(evaluate)
    evaluate.add_argument("--weights", required=True, action="append", metavar="[MEMBER=]PATH",
                          help="best.pt, last.pt or a state_dict; MEMBER=PATH loads one ensemble member "
                               "(repeatable)")
    evaluate.set_defaults(run=cmd_eval)

    ops = commands.add_parser("ops", help="list the layer types a spec can use")
    ops.set_defaults(run=cmd_ops)

    fmt = commands.add_parser("fmt", help="rewrite specs in the canonical layout, comments kept",
                              description="Rewrite .net files in one canonical layout (docs/editors.md); a folder "
                                          "stands for the .net files in it. Exit 0: done, 1: --check found files "
                                          "to reformat, or a file does not parse; 2: a file cannot be read.")
    fmt.add_argument("files", nargs="+", metavar="FILE", help="a .net file or folder; - reads stdin, writes stdout")
    fmt.add_argument("--check", action="store_true", help="change nothing; list the files that would change")
    fmt.set_defaults(run=cmd_fmt)

    plot = commands.add_parser("plot", help="draw loss and accuracy per epoch of training runs (PNG, SVG, PDF)",
                               description="Draw loss and accuracy against epoch of one or more run folders (their "
                                           "metrics.jsonl), one colour per run: train dashed, validation solid, "
                                           "EMA dotted, the reported test accuracy a star. Exit 0: written, 1: a "
                                           "metrics.jsonl cannot be read, 2: a folder is not a run, or the output "
                                           "cannot be written.")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="a run folder written by netspec train")
    plot.add_argument("-o", "--output", required=True, help="the picture to write: .png, .svg or .pdf")
    plot.add_argument("--title", help="the figure's title (default: the network's name, when all runs share one)")
    plot.set_defaults(run=cmd_plot)

    lsp = commands.add_parser("lsp", help="the language server, over stdin and stdout (docs/editors.md)",
                              description="Run the netspec language server for editors: diagnostics as you type, "
                                          "hover with shapes, parameters and MACs, go to definition, completion, "
                                          "outline and formatting. It speaks LSP over stdin and stdout.")
    lsp.add_argument("--stdio", action="store_true", help="accepted for clients that pass it; stdio is the default")
    lsp.set_defaults(run=cmd_lsp)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    options.argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc` hands to each process
    if getattr(options, "depth", None) is not None and options.depth < 1:
        parser.error("--depth must be at least 1")
    try:
        return options.run(options)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as err:  # a bug in netspec, not a mistake in the spec
        if os.environ.get("NETSPEC_DEBUG"):
            raise
        if getattr(options, "format", None) == "json":  # machine readers still get JSON
            print(json.dumps({"ok": False, "internal_error": f"{type(err).__name__}: {err}"}))
        print(f"netspec: internal error: {type(err).__name__}: {err}\n"
              "This is a bug in netspec; rerun with NETSPEC_DEBUG=1 for the traceback and report it.",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
