"""What each `netspec` command does, once its arguments are read; every one returns the exit status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from netspec.analysis.tables import summary_table, table
from netspec.cli.arguments import limits_from_options, recipe_from_options
from netspec.ground.errors import Diagnostic, NetspecError, Sources, ToolError, render_all

EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE = 0, 1, 2


def report_errors(diagnostics: list[Diagnostic], sources: Sources, fmt: str, limit: int) -> None:
    if fmt == "json":
        print(json.dumps({"ok": False, "error_count": len(diagnostics),
                          "errors": [d.to_json() for d in diagnostics[:limit]]}, indent=2))
    else:
        print(render_all(diagnostics, sources, limit), file=sys.stderr)


def load_spec(options: argparse.Namespace, fmt: str = "text", sources: Sources | None = None):
    """(graph, None), or (None, exit status) after printing the spec's errors. `sources` gets the texts read."""
    import netspec

    sources = sources if sources is not None else Sources()
    limits = limits_from_options(options)
    try:
        return netspec.load(options.spec, sources, limits, **dict(options.set)), None
    except NetspecError as err:
        report_errors(err.diagnostics, sources, fmt, limits.errors_shown)
        top_level_missing = all(d.code == "NS209" and d.span is None for d in err.diagnostics)
        return None, EXIT_USAGE if top_level_missing else EXIT_SPEC_ERROR


def write_output(command: str, path: str, data: bytes | str) -> bool:
    from netspec.ground.files import write_atomic

    try:
        write_atomic(path, data)
        return True
    except OSError as err:
        print(f"netspec {command}: cannot write {path}: {err.strerror}", file=sys.stderr)
        return False


def load_with_recipe(options: argparse.Namespace):
    """(graph, recipe, None), or (None, None, exit status) after printing the spec's errors; settings that make
    no recipe raise RecipeError."""
    graph, status = load_spec(options)
    if graph is None:
        return None, None, status
    return graph, recipe_from_options(options, graph), None


def cmd_check(options: argparse.Namespace) -> int:
    import netspec

    graph, status = load_spec(options, options.format)
    if graph is None:
        return status
    depth = None if options.expand else (options.depth or (1 if options.collapse else None))
    summary = netspec.summarize(graph, depth)
    print(summary.model_dump_json(indent=2) if options.format == "json" else summary_table(summary))
    return EXIT_OK


GRAPH_FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
                 ".mermaid": "mermaid"}
def cmd_graph(options: argparse.Namespace) -> int:
    from netspec.backends import graph as diagrams
    from netspec.ground.errors import did_you_mean

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
    graph, status = load_spec(options)
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
        data: bytes | str = diagrams.render(text, fmt)
    else:
        data = text
    if options.output:
        if not write_output("graph", options.output, data):
            return EXIT_USAGE
        print(f"wrote {options.output} ({fmt}, {len(diagram.boxes())} boxes, {len(diagram.edges)} edges)")
    else:
        sys.stdout.write(data)
    return EXIT_OK


def cmd_compile(options: argparse.Namespace) -> int:
    graph, status = load_spec(options)
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
    if not write_output("compile", options.output, source):
        return EXIT_USAGE
    print(f"wrote {options.output}: class {graph.name}, {sum(n.params for n in graph.nodes):,} parameters")
    return EXIT_OK


def cmd_export(options: argparse.Namespace) -> int:
    sources = Sources()
    graph, status = load_spec(options, sources=sources)
    if graph is None:
        return status
    try:
        from netspec.backends.onnx import ATOL, RTOL, export
    except ImportError as err:
        print(f"netspec export: {err.name or err} is needed; install the project's `onnx` extra "
              '(pip install -e ".[onnx]")', file=sys.stderr)
        return EXIT_USAGE
    report = export(graph, sources, options.output, options.weights, options.opset, options.batch, options.force)
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


def cmd_train(options: argparse.Namespace) -> int:
    graph, recipe, status = load_with_recipe(options)
    if graph is None:
        return status
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
    except ToolError as err:
        if distributed.is_main_process() or isinstance(err, distributed.ProcessError):  # else rank 0 says it
            raise
        return EXIT_SPEC_ERROR
    if not distributed.is_main_process():
        return EXIT_OK
    def percent(key: str) -> str:
        return f"{result[key]:.2%}" if result.get(key) is not None else "-"

    rows = [[graph.name, recipe.data, str(result["epoch"]), f"{percent('best_val_accuracy')} ({result['best_epoch']})",
             percent("test_accuracy"), f"{result['train_seconds']:.1f} s", f"{result['images_per_second']:,.0f}"]]
    print(table(["network", "data", "epochs", "best val (epoch)", "test (best.pt)", "train time", "img/s"], rows,
                 right={2, 3, 4, 5, 6}))
    print(f"run folder: {result['run']} (metrics.jsonl, config.json, last.pt, best.pt)")
    return EXIT_OK


def cmd_eval(options: argparse.Namespace) -> int:
    graph, recipe, status = load_with_recipe(options)
    if graph is None:
        return status
    from netspec.train import DataOptions, evaluate_weights

    result = evaluate_weights(graph, options.weights, recipe, options.data_dir, options.device, options.download,
                              DataOptions(options.data_mode, options.workers))
    print(f"{result['network']} on {result['dataset']} test set ({result['test_images']:,} images): "
          f"accuracy {result['test_accuracy']:.2%}, loss {result['test_loss']:.4f}")
    return EXIT_OK


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
    from netspec.train.plot import plot

    data, runs, names = plot(options.runs, options.output, options.title)
    if not write_output("plot", options.output, data):
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
