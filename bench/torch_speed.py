"""Compiled specs against torchvision's hand-written models, in the same run.

    python bench/torch_speed.py cpu      # batch-1 inference latency, ResNet-18 at 224x224 (target ratio <= 1.02)
    python bench/torch_speed.py gpu      # training throughput on CUDA (target ratio >= 0.99):
                                         #   ResNet-50 batch 256 at 224x224, ResNet-18 batch 512 at 32x32,
                                         #   bf16 autocast, channels_last, SGD, synthetic data; eager and
                                         #   torch.compile (a model that fails to compile is reported, then
                                         #   measured eager)

Both models get the same weights; measurements alternate between them so that drift in the machine's
speed hits both alike. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision

import netspec

ROOT = Path(__file__).resolve().parent.parent


def pair(name: str, classes: int = 1000):
    reference = getattr(torchvision.models, name)(num_classes=classes)
    ours = netspec.compile(ROOT / f"specs/{name}.net", classes=classes)
    ours.load_state_dict(reference.state_dict())
    return ours, reference


def cpu_latency(rounds: int, per_round: int) -> None:
    ours, reference = (m.eval() for m in pair("resnet18"))
    x = torch.randn(1, 3, 224, 224)
    times = {"netspec": [], "torchvision": []}
    with torch.inference_mode():
        for model in (ours, reference):
            for _ in range(5):
                model(x)
        for _ in range(rounds):
            for label, model in (("netspec", ours), ("torchvision", reference)):
                start = time.perf_counter()
                for _ in range(per_round):
                    model(x)
                times[label].append((time.perf_counter() - start) / per_round)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"CPU ResNet-18 batch 1, 224x224, eval: {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.machine()}")
    print(f"  netspec     median {med['netspec'] * 1000:7.2f} ms")
    print(f"  torchvision median {med['torchvision'] * 1000:7.2f} ms")
    print(f"  ratio netspec/torchvision {med['netspec'] / med['torchvision']:.3f} (target <= 1.02), "
          f"{rounds} rounds of {per_round}")


def train_throughput(model, batch: int, size: int, steps: int, warmup: int) -> float:
    model = model.cuda().to(memory_format=torch.channels_last).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def gpu(steps: int, repeats: int) -> None:
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name, batch, size in (("resnet50", 256, 224), ("resnet18", 512, 32)):
        for mode in ("eager", "compile"):
            results = {"netspec": [], "torchvision": []}
            ours, reference = pair(name)
            models = {"netspec": ours, "torchvision": reference}
            note = ""
            if mode == "compile":
                for label in models:
                    try:
                        compiled = torch.compile(models[label])
                        train_throughput(compiled, batch, size, 1, 2)
                        models[label] = compiled
                    except Exception as err:  # report and fall back; never crash the benchmark
                        note += f" [{label}: torch.compile failed ({type(err).__name__}: {str(err)[:120]}); eager]"
                        torch._dynamo.reset()
            for _ in range(repeats):
                for label, model in models.items():
                    results[label].append(train_throughput(model, batch, size, steps, 3))
            med = {k: statistics.median(v) for k, v in results.items()}
            print(f"  {name} batch {batch} {size}x{size} {mode:7s}: netspec {med['netspec']:8.0f} img/s, "
                  f"torchvision {med['torchvision']:8.0f} img/s, ratio {med['netspec'] / med['torchvision']:.3f}"
                  f"{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("cpu", "gpu"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    if options.what == "cpu":
        cpu_latency(options.rounds, options.per_round)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: the GPU benchmark needs one")
        gpu(options.steps, options.repeats)


if __name__ == "__main__":
    main()
