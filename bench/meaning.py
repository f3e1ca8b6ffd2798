"""The property of issue 24 at scale: for every generated or mutated spec that `netspec check` accepts, the
compiled module has the checked parameter count, a forward pass gives every layer its checked shape, and the
Python file `netspec compile` writes defines the same module (state_dict keys in order, equal outputs).

    python bench/meaning.py --examples 2000

Sources: the suite's mutations of the language's new constructs and small specs (tests/test_meaning.py), and
the fuzz generator's random networks (tests/fuzz_inputs.py), drawn at random (not derandomised). Prints how many
specs were accepted and ran, refused with located errors, or broke the property (0 is the target); the figure
goes in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="specs per source")
    options = parser.parse_args()

    from hypothesis import HealthCheck, given, settings

    from fuzz_inputs import random_network
    from test_meaning import accepted_means_it_runs, meaningful_mutation

    results = {}
    for name, strategy in (("mutated", meaningful_mutation()), ("random", random_network())):
        counts = {"accepted and ran": 0, "refused, located": 0, "broke the property": 0}
        failures: list[str] = []
        start = time.perf_counter()

        @settings(max_examples=options.examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(text=strategy)
        def run(text):
            with tempfile.TemporaryDirectory() as folder:
                try:
                    accepted = accepted_means_it_runs(text, Path(folder))
                except Exception:  # noqa: BLE001 - a broken property is what this counts
                    counts["broke the property"] += 1
                    failures.append(text + "\n# " + traceback.format_exc().splitlines()[-1])
                    return
            counts["accepted and ran" if accepted else "refused, located"] += 1

        run()
        results[name] = counts
        print(f"{name}: {counts} in {time.perf_counter() - start:.0f} s")
        for text in failures[:3]:
            print(text)
    total = {key: sum(c[key] for c in results.values()) for key in next(iter(results.values()))}
    print(f"total: {total}")
    return 1 if total["broke the property"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
