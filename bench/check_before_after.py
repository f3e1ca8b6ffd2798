"""`netspec check` whole-process time, this tree against another (an earlier commit), in one run.

    git worktree add --detach /tmp/netspec-before <commit>
    python bench/check_before_after.py --before /tmp/netspec-before --runs 15

Times `netspec check SPEC` (interpreter start and imports included) on specs/resnet152.net and on
the 1,000-block network of bench/check_speed.py, alternating the two trees run by run so that the machine's
load falls on both alike. Prints the medians and the ratio after / before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from check_speed import generated_spec  # noqa: E402


# What `netspec check SPEC` runs (the entry point's script), importable from either tree by PYTHONPATH.
CHECK = "import sys; from netspec.cli import main; sys.exit(main(['check', sys.argv[1]]))"


def whole_process(tree: Path, spec: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHECK, str(spec)], env=env, cwd=tree, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree}: netspec check {spec} failed:\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the earlier tree")
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        blocks = Path(folder) / "blocks1000.net"
        blocks.write_text(generated_spec(1000))
        specs = {"ResNet-152": ROOT / "specs" / "resnet152.net", "1,000 blocks": blocks}
        print(f"{'spec':<14} {'before (s)':>11} {'after (s)':>10} {'after/before':>13}")
        for label, spec in specs.items():
            times: dict[str, list[float]] = {"before": [], "after": []}
            for tree in (options.before, ROOT):  # warm both file caches first
                whole_process(tree, spec)
            for _ in range(options.runs):
                times["before"].append(whole_process(options.before, spec))
                times["after"].append(whole_process(ROOT, spec))
            before, after = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"{label:<14} {before:>11.3f} {after:>10.3f} {after / before:>13.3f}")


if __name__ == "__main__":
    main()
