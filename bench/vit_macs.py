"""netspec's MACs for torchvision's ViTs against the analysis tools, measured in one run (issue 25).

    python bench/vit_macs.py                 # vit_b_16: every installed tool, and `netspec check` times
    python bench/vit_macs.py vit_b_32        # another builder of specs/torchvision/vit.net

torchvision publishes vit_b_16 at 17.564 GFLOPS (its `_ops`: multiply-accumulates, FlopCounterMode's FLOPs halved).
Each tool counts torchvision's own model on a 224x224 image of batch 1; a tool that is not installed (torchinfo,
fvcore: `pip install torchinfo fvcore`) is reported as such. torch.utils.flop_counter is counted three ways,
because what it sees depends on where the forward runs: on the meta device with gradients on (the unfused
attention: what torchvision's figures count), on the CPU with gradients on (attention runs a fused CPU kernel),
and on the CPU under no_grad (nn.MultiheadAttention's fast path). netspec needs no forward at all: `netspec
check` of the spec, timed in a fresh process (start-up included) and in process. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import netspec  # noqa: E402

SPEC = ROOT / "specs" / "torchvision" / "vit.net"


def flop_counter(model, device: str, grad: bool) -> float:
    with torch.device(device):
        model = model.to(device)
        x = torch.randn(1, 3, 224, 224) if device != "meta" else torch.empty(1, 3, 224, 224)
    with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def torchinfo_macs(model) -> float | str:
    try:
        import torchinfo
    except ImportError:
        return "not installed"
    with contextlib.redirect_stdout(io.StringIO()):
        return torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0).total_mult_adds


def fvcore_macs(model) -> float | str:
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return "not installed"
    analysis = FlopCountAnalysis(model, torch.randn(1, 3, 224, 224))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total()  # fvcore's "flops" are multiply-accumulates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builder", nargs="?", default="vit_b_16")
    name = parser.parse_args().builder
    weights = [w for w in torchvision.models.get_model_weights(name) if w.transforms().crop_size == [224]][0]
    published = weights.meta["_ops"]
    print(f"{platform.platform()}, torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"{name}: published {published:.3f} GMACs ({weights.name})\n")

    start = time.perf_counter()
    graph = netspec.load(f"{SPEC}:{name}")
    macs = netspec.summarize(graph).totals.macs
    in_process = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "netspec", "check", f"{SPEC}:{name}"], check=True, capture_output=True)
    fresh = time.perf_counter() - start

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.device("meta"):
        on_meta = torchvision.models.get_model(name, weights=None).eval()
    rows = [("netspec check (no forward)", macs),
            ("FlopCounterMode, meta device, gradients on", flop_counter(on_meta, "meta", True)),
            ("FlopCounterMode, CPU, gradients on", flop_counter(model, "cpu", True)),
            ("FlopCounterMode, CPU, no_grad", flop_counter(model, "cpu", False)),
            ("torchinfo.summary total_mult_adds", torchinfo_macs(model)),
            ("fvcore FlopCountAnalysis total", fvcore_macs(model))]
    print(f"| tool | MACs | GMACs | vs published {published:.3f} |")
    print("|---|---:|---:|---:|")
    for tool, value in rows:
        if isinstance(value, str):
            print(f"| {tool} | {value} | | |")
        else:
            print(f"| {tool} | {value:,.0f} | {value / 1e9:.3f} | {value / 1e9 - published:+.3f} |")
    print(f"\nnetspec check {name}: {in_process * 1000:.0f} ms in process, {fresh:.2f} s as a fresh `netspec check`")


if __name__ == "__main__":
    main()
