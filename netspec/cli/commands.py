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
        errors = [d for d in diagnostics if d.is_error]
        print(json.dumps({"ok": False, "error_count": len(errors),
                          "errors": [d.to_json() for d in errors[:limit]],
                          "warnings": [d.to_json() for d in diagnostics if not d.is_error][:limit]}, indent=2))
    else:
        print(render_all(diagnostics, sources, limit), file=sys.stderr)


def load_spec(options: argparse.Namespace, fmt: str = "text", sources: Sources | None = None):
    """(graph, None), or (None, exit status) after printing the spec's errors. `sources` gets the texts read."""
    import netspec

    sources = sources if sources is not None else Sources()
    limits = limits_from_options(options)
    try:
        graph = netspec.load(options.spec, sources, limits, **dict(options.set))
    except NetspecError as err:
        report_errors(err.diagnostics, sources, fmt, limits.errors_shown)
        top_level_missing = all(d.code == "NS209" and d.span is None for d in err.diagnostics)
        return None, EXIT_USAGE if top_level_missing else EXIT_SPEC_ERROR
    if graph.warnings and getattr(options, "strict", False):  # check --strict: a warning fails like an error
        report_errors(graph.warnings, sources, fmt, limits.errors_shown)
        return None, EXIT_SPEC_ERROR
    if graph.warnings and fmt != "json":  # JSON carries them in its summary
        print(render_all(graph.warnings, sources, limits.errors_shown), file=sys.stderr)
    return graph, None


def write_output(command: str, path: str, data: bytes | str) -> bool:
    from netspec.ground.files import write_atomic

    try:
        write_atomic(path, data)
        return True
    except OSError as err:
        print(f"netspec {command}: cannot write {path}: {err.strerror}", file=sys.stderr)
        return False


def recorded_arguments(config: dict | None, graph) -> list[tuple[str, object]]:
    """The network arguments a checkpoint's run was trained with where they differ from `graph`'s, as --set
    pairs; none when the checkpoint records another network (loading its weights then says so)."""
    from netspec.language.evaluate import show
    from netspec.language.overrides import OverrideError, parse_override

    if not config or config.get("network") != graph.name:
        return []
    texts = config.get("argument_texts")
    if not isinstance(texts, dict):  # a run of an earlier netspec: its arguments as JSON (blocks by name)
        saved = config.get("arguments") if isinstance(config.get("arguments"), dict) else {}
        texts = {name: value if isinstance(value, str) else show(value, limit=1 << 20)
                 for name, value in saved.items()}
    pairs = []
    for name, text in texts.items():
        if name not in graph.arguments or show(graph.arguments[name], limit=1 << 20) == text:
            continue
        try:
            pairs.append(parse_override(f"{name}={text}"))
        except OverrideError:
            continue  # not an argument a spec can be given (a value netspec can no longer read): left as it is
    return pairs


def load_for_weights(options: argparse.Namespace, sources: Sources | None = None):
    """(graph, the checkpoint's run config or None, None), or (None, None, exit status): the spec with the
    arguments its run recorded in `--weights` (a netspec checkpoint), which `--set` overrides; a line on stderr
    says which were taken."""
    from netspec.train.checkpoints import saved_config

    graph, status = load_spec(options, sources=sources)
    if graph is None:
        return None, None, status
    config = saved_config(options.weights) if options.weights else None
    given = {name for name, _ in options.set}
    recorded = [(name, value) for name, value in recorded_arguments(config, graph) if name not in given]
    if recorded:
        from netspec.language.evaluate import show

        again = argparse.Namespace(**{**vars(options), "set": recorded + list(options.set)})
        graph, status = load_spec(again, sources=sources)
        if graph is None:
            return None, None, status
        print(f"netspec {options.command}: using the run's arguments "
              f"{', '.join(f'{name}={show(value)}' for name, value in recorded)} (recorded in {options.weights[0]}; "
              "--set overrides them)", file=sys.stderr)
    return graph, config, None


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
    summary.warnings = [d.to_json() for d in graph.warnings]
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
    from netspec.backends.torch.naming import network_class_name

    print(f"wrote {options.output}: class {network_class_name(graph.name)}, "
          f"{sum(n.params for n in graph.nodes):,} parameters")
    return EXIT_OK


def cmd_export(options: argparse.Namespace) -> int:
    sources = Sources()
    if options.weights:
        graph, config, status = load_for_weights(options, sources)
    else:
        (graph, status), config = load_spec(options, sources=sources), None
    if graph is None:
        return status
    if options.embed_preprocessing and not options.weights:
        print("netspec export: --embed-preprocessing goes with --weights (best.pt or last.pt of a run, which "
              "records its preprocessing)", file=sys.stderr)
        return EXIT_USAGE
    try:
        from netspec.backends.onnx import ATOL, RTOL, export
    except ImportError as err:
        print(f"netspec export: {err.name or err} is needed; install the project's `onnx` extra "
              '(pip install -e ".[onnx]")', file=sys.stderr)
        return EXIT_USAGE
    report = export(graph, sources, options.output, options.weights, options.opset, options.batch, options.force,
                    run=config if config and config.get("network") == graph.name else None,
                    embed_preprocessing=options.embed_preprocessing)
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
    from netspec.train.finetune import FineTune

    out = Path(options.out or Path("runs") / Path(graph.file).stem)
    tuning = FineTune(options.init, tuple(options.freeze), recipe.freeze_backbone, recipe.lr_head,
                      recipe.backbone_lr_factor)
    run_options = RunOptions(resume=options.resume, overwrite=options.overwrite, download=options.download,
                             sync_bn=options.sync_bn, max_steps=options.max_steps, log_every=options.log_every,
                             data=DataOptions(options.data_mode, options.workers, options.limit_eval),
                             finetune=tuning)
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
    except KeyboardInterrupt:
        if distributed.is_main_process():
            print(f"\nnetspec train: interrupted; {interrupted_line(out, options.argv)}", file=sys.stderr)
        return 130
    except ToolError as err:
        if distributed.is_main_process() or isinstance(err, distributed.ProcessError):  # else rank 0 says it
            raise
        return EXIT_SPEC_ERROR
    if not distributed.is_main_process():
        return EXIT_OK
    def percent(key: str) -> str:
        return f"{result[key]:.2%}" if result.get(key) is not None else "-"

    segmenting = "val_miou" in result or "test_miou" in result
    rows = [[graph.name, recipe.data, str(result["epoch"]), f"{percent('best_val_accuracy')} ({result['best_epoch']})",
             percent("test_miou" if segmenting else "test_accuracy"), f"{result['train_seconds']:.1f} s",
             f"{result['images_per_second']:,.0f}"]]
    headings = ["best val mIoU (epoch)", "test mIoU (best.pt)"] if segmenting else ["best val (epoch)",
                                                                                    "test (best.pt)"]
    print(table(["network", "data", "epochs", *headings, "train time", "img/s"], rows, right={2, 3, 4, 5, 6}))
    print(f"run folder: {result['run']} (metrics.jsonl, config.json, last.pt, best.pt)")
    return EXIT_OK


def interrupted_line(out: Path, argv: list[str]) -> str:
    """Where a run stopped by Ctrl-C can be resumed from, and the command that resumes it."""
    import shlex

    from netspec.train.checkpoints import RunFolder

    folder = RunFolder(out)
    epochs = folder.epochs_done() if folder.last.exists() else 0
    if not epochs:
        return f"no epoch was checkpointed in {out}; the same command starts it again"
    kept = [arg for arg in argv if arg not in ("--resume", "--overwrite")]
    if "--out" not in kept and not any(arg.startswith("--out=") for arg in kept):
        kept += ["--out", str(out)]
    return (f"the last checkpoint is {folder.last} (after epoch {epochs}); resume with: "
            f"{shlex.join(['netspec', *kept, '--resume'])}")


def cmd_eval(options: argparse.Namespace) -> int:
    graph, config, status = load_for_weights(options)
    if graph is None:
        return status
    recipe = recipe_from_options(options, graph, config)
    from netspec.train import DataOptions, evaluate_weights

    if options.confusion:
        from netspec.train.plot import FORMATS

        if Path(options.confusion).suffix.lower() not in (*FORMATS, ".csv"):
            print(f"netspec eval: cannot tell the format of {options.confusion}; name it .png, .svg, .pdf or .csv",
                  file=sys.stderr)
            return EXIT_USAGE
    result = evaluate_weights(graph, options.weights, recipe, options.data_dir, options.device, options.download,
                              DataOptions(options.data_mode, options.workers),
                              log=lambda message: print(message, file=sys.stderr))
    names = result["classes"] or [str(i) for i in range(len(result["per_class"]))]
    heading = f"{result['network']} on {result['dataset']} test set ({result['test_images']:,} images): "
    if result["task"] == "segmentation":
        print(heading + f"mIoU {result['miou']:.2%}, pixel accuracy {result['test_accuracy']:.2%}, loss "
                        f"{result['test_loss']:.4f}")
    else:
        top5 = f", top-5 {result['test_top5_accuracy']:.2%}" if result["test_top5_accuracy"] is not None else ""
        print(heading + f"accuracy {result['test_accuracy']:.2%}{top5}, loss {result['test_loss']:.4f}")
    if options.per_class or len(names) <= 20:
        def share(value):
            return f"{value:.2%}" if value is not None else "-"

        totals = [sum(row) for row in result["confusion"]]
        if result["task"] == "segmentation":
            rows = [[name, share(accuracy), share(iou), f"{total:,}"] for name, accuracy, iou, total in
                    zip(names, result["per_class"], result["iou"], totals)]
            print(table(["class", "pixel accuracy", "IoU", "pixels"], rows, right={1, 2, 3}))
        else:
            rows = [[name, share(accuracy), f"{total:,}"] for name, accuracy, total in
                    zip(names, result["per_class"], totals)]
            print(table(["class", "accuracy", "images"], rows, right={1, 2}))
    if options.confusion:
        from netspec.train.plot import draw_confusion

        data = draw_confusion(result["confusion"], names, options.confusion,
                              f"{result['network']} on {result['dataset']}: confusion")
        if not write_output("eval", options.confusion, data):
            return EXIT_USAGE
        print(f"wrote {options.confusion} (rows: true class, columns: predicted)")
    return EXIT_OK


def cmd_predict(options: argparse.Namespace) -> int:
    options.weights = [options.weights]
    if options.output and Path(options.output).suffix.lower() not in (".csv", ".json"):
        print(f"netspec predict: cannot tell the format of {options.output}; name it .csv or .json", file=sys.stderr)
        return EXIT_USAGE
    if options.top_k < 1:
        print(f"netspec predict: --top-k {options.top_k}: give 1 or more", file=sys.stderr)
        return EXIT_USAGE
    graph, config, status = load_for_weights(options)
    if graph is None:
        return status
    recipe = recipe_from_options(options, graph, config)
    from netspec.train.predict import line, predict, write_predictions

    result = predict(graph, options.weights[0], config, recipe, options.images, options.top_k, options.device,
                     options.batch_size, options.masks)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for prediction in result.predictions:
        print(line(prediction, result.task))
    for path, reason in result.skipped:
        print(f"skipped an unreadable image: {path}: {reason}", file=sys.stderr)
    if options.output:
        write_predictions(result, options.output)
        print(f"wrote {options.output} ({len(result.predictions)} image{'s' * (len(result.predictions) != 1)})",
              file=sys.stderr)
    return EXIT_SPEC_ERROR if result.skipped else EXIT_OK


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


def cmd_import(options: argparse.Namespace) -> int:
    """`netspec import`: trace, write, verify (netspec/importer/)."""
    try:
        from netspec.importer import (ImportFailed, import_module, import_onnx, load_target, parse_shape,
                                      write_weights)
    except ImportError as err:
        print(f"netspec import: PyTorch is needed ({err}); install it with `pip install torch` (and `onnx`, "
              "`onnxruntime` for .onnx files)", file=sys.stderr)
        return EXIT_USAGE

    if len(options.model) > 1:
        return import_several(options)
    target = options.model[0]
    if options.input and len(options.input) > 1:
        raise ImportFailed(f"--input is given {len(options.input)} times for one model; give it once")
    if target.endswith(".onnx"):
        if options.input:
            raise ImportFailed("--input is read from the .onnx file; leave it out")
        imported, model = import_onnx(target, options.name), None
    else:
        model, name = load_target(target)
        imported = import_module(model, parse_shape((options.input or ["3,224,224"])[0]), options.name or name)
    if not write_output("import", options.output, imported.text):
        return EXIT_USAGE
    if options.weights:
        write_weights(options.weights, imported, model)
    print(f"wrote {options.output}")
    print("\n".join(imported.report()))
    return EXIT_OK


def import_several(options: argparse.Namespace) -> int:
    """`netspec import A B ... -o family.net`: one file, one network per model, shared blocks written once; any
    model that cannot be imported fails the whole command, naming it, and nothing is written."""
    import re

    from netspec.importer import ImportFailed, import_family, load_target, module_source, onnx_source, parse_shape

    if options.name:
        raise ImportFailed("--name names a single model's network; with several, each network takes its "
                           "callable's or file's name")
    if options.weights:
        raise ImportFailed("--weights writes one network's checkpoint; import that model alone to write it")
    given = options.input or ["3,224,224"]
    if len(given) not in (1, len(options.model)):
        raise ImportFailed(f"--input is given {len(given)} times for {len(options.model)} models: give it once for "
                           "all of them, or once per model in the order of the models")
    shapes = [parse_shape(text) for text in given] * (len(options.model) // len(given))
    callables = [target.partition(":")[2].partition("(")[0] for target in options.model]
    sources = []
    for target, callable_name, shape in zip(options.model, callables, shapes):
        try:
            if target.endswith(".onnx"):
                if len(given) > 1:
                    raise ImportFailed("its input shape is read from the file; give --input once for all the "
                                       "PyTorch modules instead of once per model")
                sources.append(onnx_source(target))
            else:
                model, name = load_target(target)
                if callables.count(callable_name) > 1:  # Net(width=2) and Net(width=4): named by their arguments
                    name = "_".join(re.findall(r"[A-Za-z0-9]+", target.partition(":")[2]))
                sources.append(module_source(model, shape, name))
        except ImportFailed as err:
            raise ImportFailed(f"{target}: {err}; nothing was written") from None
    family = import_family(sources)
    if not write_output("import", options.output, family.text):
        return EXIT_USAGE
    print(f"wrote {options.output}")
    print("\n".join(family.report()))
    return EXIT_OK
