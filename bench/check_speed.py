"""How fast `netspec check` is, against the torchinfo route, in one run.

    python bench/check_speed.py                 # needs `pip install -e ".[bench]"` for the anchor

Times whole processes (interpreter start and imports included, as a user or CI meets them):
  1. `netspec check specs/resnet152.net`
  2. the same summary by torchinfo on torchvision's resnet152 at 1x3x224x224
  3. `netspec check` on a generated network of 1,000 residual blocks
and, in this process, the stages of (3): parse, lower (with pydantic validation), passes, summary.
Prints medians and the ratio; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TORCHINFO = ("import torchvision, torchinfo; "
             "torchinfo.summary(torchvision.models.resnet152(), input_size=(1, 3, 224, 224), depth=10)")
# The same work without interpreter start and imports: model build + summary, median of 5, in one process.
TORCHINFO_WARM = """
import statistics, time, io, contextlib, torchvision, torchinfo
times = []
for _ in range(5):
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        torchinfo.summary(torchvision.models.resnet152(), input_size=(1, 3, 224, 224), depth=10)
    times.append(time.perf_counter() - t)
print(statistics.median(times))
"""


def generated_spec(blocks: int) -> str:
    lines = [
        "block Residual(c) {",
        "  input x",
        "  conv1: conv(c, kernel=3, padding=1, bias=false)",
        "  bn1: batchnorm()",
        "  relu()",
        "  conv2: conv(c, kernel=3, padding=1, bias=false)",
        "  bn2: batchnorm()",
        "  add(x)",
        "  relu()",
        "}",
        "",
        f"network Deep{blocks} {{",
        "  input x: [3, 32, 32]",
        "  stem: conv(16, kernel=3, padding=1)",
    ]
    lines += [f"  block{i}: Residual(16)" for i in range(blocks)]
    lines += ["  global_avgpool()", "  flatten()", "  fc: linear(10)", "}"]
    return "\n".join(lines) + "\n"


def time_process(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr}")
    return times


def stages(path: Path, runs: int) -> dict[str, float]:
    from netspec.semantics.lower import lower
    from netspec.semantics.program import load_program
    from netspec.analysis.passes import PASSES
    from netspec.analysis.summary import summarize

    found: dict[str, list[float]] = {"parse": [], "lower": [], "passes": [], "summary": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        program = load_program(path)
        t1 = time.perf_counter()
        graph = lower(program)
        t2 = time.perf_counter()
        for run_pass in PASSES:
            graph = run_pass(graph)
        t3 = time.perf_counter()
        summarize(graph)
        t4 = time.perf_counter()
        for key, value in zip(found, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            found[key].append(value)
    return {key: statistics.median(values) for key, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--anchor-python", default=sys.executable,
                        help="interpreter with torch, torchvision and torchinfo (default: this one)")
    options = parser.parse_args()
    command = shutil.which("netspec") or sys.exit("netspec is not on PATH: pip install -e .")

    print(f"machine: {platform.machine()}, {platform.processor() or '?'}, Python {platform.python_version()}")
    check = time_process([command, "check", "specs/resnet152.net"], options.runs)
    anchor = time_process([options.anchor_python, "-c", TORCHINFO], options.runs)
    anchor_warm = float(subprocess.run([options.anchor_python, "-c", TORCHINFO_WARM], capture_output=True,
                                       text=True, check=True).stdout.split()[-1])
    import netspec

    warm = []
    for _ in range(5):
        start = time.perf_counter()
        netspec.summarize(netspec.load(ROOT / "specs/resnet152.net"))
        warm.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "deep1000.net"
        spec.write_text(generated_spec(1000))
        deep = time_process([command, "check", str(spec)], options.runs)
        parts = stages(spec, options.runs)

    med_check, med_anchor, med_deep = (statistics.median(t) for t in (check, anchor, deep))
    print(f"netspec check specs/resnet152.net      median {med_check * 1000:8.1f} ms  ({options.runs} runs)")
    print(f"torchinfo on torchvision resnet152      median {med_anchor * 1000:8.1f} ms  ({options.runs} runs)")
    print(f"ratio (torchinfo / netspec)             {med_anchor / med_check:8.1f}x")
    med_warm = statistics.median(warm)
    print(f"in-process, imports done: netspec {med_warm * 1000:.1f} ms, torchinfo {anchor_warm * 1000:.1f} ms "
          f"({anchor_warm / med_warm:.1f}x)")
    print(f"netspec check, 1,000 residual blocks    median {med_deep * 1000:8.1f} ms  (7,004 layers)")
    print("  in-process stages: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in parts.items()))


if __name__ == "__main__":
    main()
