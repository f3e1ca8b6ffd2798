"""`netspec`: the parser of its commands and the one place where their outcomes become exit statuses."""

from __future__ import annotations

import argparse
import json
import os
import sys

from netspec.cli.arguments import batch_size, data_arguments, recipe_arguments, spec_arguments
from netspec.cli.commands import (EXIT_OK, cmd_check, cmd_compile, cmd_eval, cmd_export, cmd_fmt, cmd_graph, cmd_lsp,
                                  cmd_import, cmd_ops, cmd_plot, cmd_predict, cmd_train)
from netspec.ground.errors import ToolError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netspec", description="Declarative architecture specs for CNNs.")
    from netspec.ground.version import __version__

    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="validate a spec and print shapes, parameters and MACs",
                                description="Validate a spec; print every layer's output shape, parameter count "
                                            "and MACs, then the totals. Exit 0: valid, 1: errors, 2: usage.")
    spec_arguments(check)
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--strict", action="store_true",
                       help="fail (exit 1) on warnings too: values computed and never used (docs/errors.md)")
    view = check.add_mutually_exclusive_group()
    view.add_argument("--expand", action="store_true", help="one row per layer (the default)")
    view.add_argument("--collapse", action="store_true", help="one row per top-level block or group")
    view.add_argument("--depth", type=int, metavar="N", help="collapse scopes nested N deep into one row")
    check.set_defaults(run=cmd_check)

    graph = commands.add_parser("graph", help="draw the architecture (DOT, Mermaid, SVG or PNG)",
                                description="Draw a spec: blocks collapsed into one box each unless expanded, "
                                            "tensor shapes on the edges, skip connections dashed.")
    spec_arguments(graph)
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
    spec_arguments(compile_)
    compile_.add_argument("-o", "--output", help="the .py file to write; default: stdout")
    compile_.add_argument("--emit", choices=("python",), default="python", help="what to write (default: python)")
    compile_.set_defaults(run=cmd_compile)

    export = commands.add_parser("export", help="export ONNX, verified in onnxruntime against PyTorch",
                                 description="Export the spec to ONNX, run onnx.checker, run it in onnxruntime on "
                                             "random input at batch 1 and 3 and compare with PyTorch. Exit 1 if "
                                             "they disagree beyond atol 1e-4 / rtol 1e-3 (nothing is written).")
    spec_arguments(export)
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument("--weights", action="append", metavar="[MEMBER=]PATH",
                        help="a state_dict or checkpoint saved by torch.save (default: initial weights); "
                             "MEMBER=PATH loads one ensemble member (repeatable)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    export.add_argument("--batch", type=batch_size, default="dynamic", help="'dynamic' (default) or a fixed size")
    export.add_argument("--force", action="store_true", help="overwrite an existing output file")
    export.add_argument("--embed-preprocessing", action="store_true",
                        help="with the --weights of a run: the graph takes uint8 images and preprocesses them as "
                             "the run evaluated (resize, crop, pad, scale, normalise)")
    export.set_defaults(run=cmd_export)

    train = commands.add_parser("train", help="train a spec on a dataset (GPU when present)",
                                description="Train a spec. Settings come from the defaults, then the spec's "
                                            "`train Network { ... }` section, then these flags.")
    spec_arguments(train)
    data_arguments(train)
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
    tuning = train.add_argument_group("fine-tuning (docs/training.md)")
    tuning.add_argument("--init", metavar="PATH",
                        help="start from these weights: a run's best.pt (forks it), a state_dict (.pt, .pth, "
                             ".safetensors) or torchvision:ENUM (e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1); "
                             "a head of another shape is re-initialised")
    tuning.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                        help="leave these parameters untrained: a layer or scope name (layer1) or a pattern of "
                             "parameter names (layer[12].*) (repeatable)")
    recipe_arguments(train)
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
    spec_arguments(evaluate)
    data_arguments(evaluate)
    evaluate.add_argument("--weights", required=True, action="append", metavar="[MEMBER=]PATH",
                          help="best.pt, last.pt or a state_dict; MEMBER=PATH loads one ensemble member "
                               "(repeatable)")
    evaluate.add_argument("--confusion", metavar="FILE",
                          help="write the confusion matrix: a picture (.png, .svg, .pdf) or the counts (.csv)")
    evaluate.add_argument("--per-class", action="store_true",
                          help="print each class's accuracy (the default up to 20 classes)")
    evaluate.set_defaults(run=cmd_eval)

    predict = commands.add_parser("predict", help="classify images (or segment them) with saved weights",
                                  description="Apply saved weights to image files, each preprocessed as the run "
                                              "that trained them evaluated (the checkpoint records it): the top-k "
                                              "classes by name with their probabilities, or a mask PNG per image "
                                              "for a segmentation network. Exit 0: every image predicted, 1: an "
                                              "image could not be read (the others are predicted), 2: usage.")
    spec_arguments(predict)
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="an image file, or a folder of images")
    predict.add_argument("--weights", required=True, metavar="PATH",
                         help="best.pt or last.pt of a run (or a plain state_dict: classes numbered, ImageNet's "
                              "statistics)")
    predict.add_argument("--top-k", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    predict.add_argument("-o", "--output", metavar="FILE", help="also write the predictions: .csv or .json")
    predict.add_argument("--masks", metavar="DIR", help="segmentation: the folder for the mask PNGs "
                                                        "(default ./masks)")
    predict.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per forward pass")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    predict.set_defaults(run=cmd_predict)

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

    import_ = commands.add_parser("import", help="write a spec for a PyTorch module or ONNX model (docs/import.md)",
                                  description="Trace a PyTorch module (MODULE:CALLABLE, e.g. torchvision.models:"
                                              "resnet50 or mypkg.models:Net(width=2)) or read an .onnx file, write "
                                              "a spec with the original's state_dict names and blocks for repeated "
                                              "structure, and verify it: parameters, state_dict keys, shapes and "
                                              "order, and outputs. Exit 0: written and exact, 1: cannot be imported.")
    import_.add_argument("model", metavar="MODULE_OR_FILE", nargs="+",
                         help="MODULE:CALLABLE[(keyword=literal, ...)] or an .onnx file; several write one file, "
                              "one network each, the blocks they share written once")
    import_.add_argument("-o", "--output", required=True, help="the .net file to write")
    import_.add_argument("--input", metavar="C,H,W", action="append",
                         help="the input shape without the batch (PyTorch modules; default 3,224,224); with "
                              "several models, once for all or once per model, in their order")
    import_.add_argument("--name", help="the network's name, for a single model (default: the callable's or the "
                                        "file's)")
    import_.add_argument("--weights", metavar="OUT.pt", help="also write the original's weights as a netspec "
                                                             "checkpoint (a single model)")
    import_.set_defaults(run=cmd_import)

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
    except ToolError as err:  # a file, a setting or the machine: said in one line, never called a bug
        print(f"netspec {options.command}: {err}", file=sys.stderr)
        return err.exit_code
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
