"""Data-parallel scaling of `netspec train`: 1 process against N (torchrun's launcher, DistributedDataParallel).

    python bench/ddp_speed.py --device cpu --nproc 2                       # gloo on this CPU (LeNet)
    python bench/ddp_speed.py --device cuda --nproc 8 --spec specs/resnet18.net --set classes=10 \\
        --batch-size 256 --epochs 4                                         # NCCL, one process per GPU

Each configuration is a real `netspec train` run on synthetic data of the network's input shape (4,096 training
images), timed by its own metrics.jsonl: `epoch_seconds` is training only, without the evaluation; the first
epoch (warm-up) is dropped and the median of the others kept. Two ways to add processes:

- weak scaling (the default, what GPU users do): every process keeps --batch-size; the global batch grows
  with N. Efficiency = images/s on N / (N x images/s on 1).
- strong scaling (--scaling strong): the global batch stays --batch-size, split over the N processes.

The efficiency compares N processes with 1 process on as many threads as each of the N has. On the CPU, 1
process is measured on every core and on cores/N threads, and the N processes get cores/N threads each: the
same machine used two ways. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_IMAGES = 4096  # netspec.train.datasets.synthetic's training set


def measure(options, nproc: int, threads: int | None, global_batch: int) -> dict:
    """One `netspec train` run (each process on `threads` threads, else torch's or --nproc's default); its median
    epoch time after the first, per step and per image."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "netspec", "train", options.spec, "--data", "synthetic", "--device",
                   options.device, "--epochs", str(options.epochs), "--batch-size", str(global_batch),
                   "--validation", "0", "--no-progress", "--out", str(Path(tmp) / "run"), *[f"--set={s}" for s in options.set]]
        if nproc > 1:
            command += ["--nproc", str(nproc)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
        lines = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        lines = [m for m in lines if "split" not in m]  # the epochs, not the final test line
    seconds = statistics.median(m["epoch_seconds"] for m in lines[1:])
    steps = math.ceil(TRAIN_IMAGES / global_batch)
    return {"nproc": nproc, "threads": threads or 0, "global_batch": global_batch, "per_process": global_batch // nproc,
            "epoch_seconds": seconds, "step_ms": 1000 * seconds / steps, "images_per_second": TRAIN_IMAGES / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--nproc", type=int, default=2, help="processes to compare with 1")
    parser.add_argument("--spec", default="specs/lenet.net")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--batch-size", type=int, default=128, help="per process (weak) or global (strong)")
    parser.add_argument("--epochs", type=int, default=4, help="the first is warm-up and not counted")
    parser.add_argument("--scaling", choices=("weak", "strong", "both"), default="weak")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; the median is reported")
    options = parser.parse_args()
    import torch

    device = torch.cuda.get_device_name() if options.device == "cuda" else platform.processor() or "CPU"
    print(f"device: {device} ({os.cpu_count()} CPU cores), torch {torch.__version__}, {options.spec} "
          f"{' '.join(options.set)}, synthetic data, {TRAIN_IMAGES} images per epoch")
    scalings = ("weak", "strong") if options.scaling == "both" else (options.scaling,)
    n, cores = options.nproc, os.cpu_count() or 1
    print("| scaling | processes | threads each | global batch | per process | step | images/s | efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for scaling in scalings:
        batch = options.batch_size * n if scaling == "weak" else options.batch_size
        # (processes, threads, global batch); on the CPU, one process also on the share of the cores each of
        # the N gets, so that what DDP itself costs shows apart from how the cores are used.
        configs = [(1, None, options.batch_size)] + ([(n, None, batch)] if n > 1 else [])
        if options.device == "cpu":
            configs = [(1, cores, options.batch_size), (1, max(1, cores // n), options.batch_size),
                       (n, max(1, cores // n), batch)]
        rounds = [[measure(options, *config) for config in configs] for _ in range(options.repeats)]
        results = [{key: statistics.median(r[i][key] for r in rounds) for key in rounds[0][i]}
                   for i in range(len(configs))]
        for result in results:
            one = next(r for r in results if r["nproc"] == 1 and r["threads"] == result["threads"]) \
                if result["nproc"] > 1 else result
            efficiency = result["images_per_second"] / (result["nproc"] * one["images_per_second"])
            threads = f"{result['threads']:.0f}" if result["threads"] else "default"
            print(f"| {scaling} | {result['nproc']:.0f} | {threads} | {result['global_batch']:.0f} | "
                  f"{result['per_process']:.0f} | {result['step_ms']:.2f} ms | {result['images_per_second']:,.0f} | "
                  f"{efficiency:.2f} |")

if __name__ == "__main__":
    main()
