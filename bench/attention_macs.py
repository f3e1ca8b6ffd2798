"""netspec's MACs for torchvision's transformers against the analysis tools, measured in one run (issue 25).

    python bench/attention_macs.py                        # vit_b_16, swin_t, maxvit_t: every installed tool
    python bench/attention_macs.py swin_v2_b vit_h_14     # other builders of specs/torchvision/

torchvision publishes each builder's multiply-accumulates as GFLOPS (its weights' `_ops`: FlopCounterMode's FLOPs
halved): vit_b_16 17.564, swin_t 4.491, maxvit_t 5.558. Each tool counts torchvision's own model on one image of
the published weights' size; a tool that is not installed (torchinfo, fvcore: `pip install torchinfo fvcore`) or
that fails on the model is reported as such. torch.utils.flop_counter is counted three ways, because what it sees
depends on where the forward runs: on the meta device with gradients on (the unfused attention: what torchvision's
figures count), on the CPU with gradients on (attention may run a fused CPU kernel), and on the CPU under no_grad
(nn.MultiheadAttention's fast path). netspec needs no forward at all: `netspec check` of the spec, timed in a
fresh process (start-up included) and in process. Results go in docs/benchmarks.md.
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

ZOO = ROOT / "specs" / "torchvision"


def spec_of(name: str) -> Path:
    """The file of specs/torchvision/ that defines the builder's network."""
    from netspec.semantics.program import load_program

    return next(p for p in sorted(ZOO.glob("*.net")) if name in load_program(p).root.networks)


def flop_counter(model, device: str, grad: bool, size: int) -> float:
    with torch.device(device):
        model = model.to(device)
        x = torch.randn(1, 3, size, size) if device != "meta" else torch.empty(1, 3, size, size)
    with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def torchinfo_macs(model, size: int) -> float | str:
    try:
        import torchinfo
    except ImportError:
        return "not installed"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return torchinfo.summary(model, input_size=(1, 3, size, size), verbose=0).total_mult_adds
    except Exception as err:  # a tool's failure on the model is a result
        return f"failed: {type(err).__name__}"


def fvcore_macs(model, size: int) -> float | str:
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return "not installed"
    try:
        analysis = FlopCountAnalysis(model, torch.randn(1, 3, size, size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total()  # fvcore's "flops" are multiply-accumulates
    except Exception as err:
        return f"failed: {type(err).__name__}"


def measure(name: str) -> None:
    spec = spec_of(name)
    start = time.perf_counter()
    graph = netspec.load(f"{spec}:{name}")
    macs = netspec.summarize(graph).totals.macs
    in_process = time.perf_counter() - start
    size = graph.input_shape[1]
    weights = [w for w in torchvision.models.get_model_weights(name) if w.transforms().crop_size == [size]][0]
    published = weights.meta["_ops"]
    print(f"\n{name} at {size}x{size}: published {published:.3f} GMACs ({weights.name})\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "netspec", "check", f"{spec}:{name}"], check=True, capture_output=True)
    fresh = time.perf_counter() - start

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.device("meta"):
        on_meta = torchvision.models.get_model(name, weights=None).eval()
    rows = [("netspec check (no forward)", macs),
            ("FlopCounterMode, meta device, gradients on", flop_counter(on_meta, "meta", True, size)),
            ("FlopCounterMode, CPU, gradients on", flop_counter(model, "cpu", True, size)),
            ("FlopCounterMode, CPU, no_grad", flop_counter(model, "cpu", False, size)),
            ("torchinfo.summary total_mult_adds", torchinfo_macs(model, size)),
            ("fvcore FlopCountAnalysis total", fvcore_macs(model, size))]
    print(f"| tool | MACs | GMACs | vs published {published:.3f} |")
    print("|---|---:|---:|---:|")
    for tool, value in rows:
        if isinstance(value, str):
            print(f"| {tool} | {value} | | |")
        else:
            print(f"| {tool} | {value:,.0f} | {value / 1e9:.3f} | {value / 1e9 - published:+.3f} |")
    print(f"\nnetspec check {name}: {in_process * 1000:.0f} ms in process, {fresh:.2f} s as a fresh `netspec check`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builders", nargs="*", default=["vit_b_16", "swin_t", "maxvit_t"])
    print(f"{platform.platform()}, torch {torch.__version__}, torchvision {torchvision.__version__}")
    for name in parser.parse_args().builders:
        measure(name)


if __name__ == "__main__":
    main()
