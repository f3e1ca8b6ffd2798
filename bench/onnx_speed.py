"""onnxruntime against PyTorch eager: inference latency of an exported spec, in the same run.

    python bench/onnx_speed.py specs/resnet50.net               # CUDA when present (ORT CUDA provider), else CPU
    python bench/onnx_speed.py specs/lenet5.net --batches 1 64

Exports the spec with netspec's exporter (initial weights), then times batch 1 and 64 (by default) in both
runtimes, alternating rounds; medians in milliseconds. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

import netspec
from netspec import Sources
from netspec.backends.onnx import export


def timed(fn, rounds: int, per_round: int, sync) -> float:
    for _ in range(3):
        fn()
    sync()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        sync()
        samples.append((time.perf_counter() - start) / per_round)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=5)
    options = parser.parse_args()

    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    device = "cuda" if cuda else "cpu"
    sources = Sources()
    graph = netspec.load(options.spec, sources)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        report = export(graph, sources, path)
        providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(path), providers=providers)
        model = netspec.compile(options.spec, seed=0).eval().to(device)
        input_name = session.get_inputs()[0].name
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        print(f"{graph.name}: {report.exporter} opset {report.opset}; onnxruntime {onnxruntime.__version__} "
              f"{providers[0]}, torch {torch.__version__} on {device}")
        for batch in options.batches:
            x = torch.randn(batch, *graph.input_shape)
            x_dev, x_np = x.to(device), x.numpy()
            with torch.inference_mode():
                eager = timed(lambda: model(x_dev), options.rounds, options.per_round, sync)
            ort = timed(lambda: session.run(None, {input_name: x_np}), options.rounds, options.per_round, sync)
            print(f"  batch {batch:3d}: torch eager {eager * 1000:8.2f} ms, onnxruntime {ort * 1000:8.2f} ms "
                  f"(ort/eager {ort / eager:.2f}{'; ort includes host-device copies' if cuda else ''})")


if __name__ == "__main__":
    main()
