"""The long fuzz run (issue #6): random inputs against `netspec check` for a time budget.

    python bench/fuzz.py --minutes 30                # all three sources, round-robin
    python bench/fuzz.py --minutes 5 --no-torch      # skip the torch shape comparison

Sources are those of the suite (tests/fuzz_inputs.py) but random rather than derandomised: mutated specs,
grammar sentences, random networks (checked against a torch forward pass). Each input must end in a valid
report or located errors within 2 s; the process runs under an address-space cap, so an input that tried to
allocate without bound would surface as a MemoryError finding. Prints a summary and writes it as JSON
(--out); failing inputs are saved beside it. Figures go in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SLOW_S = 2.0


def _fuzzer(run_settings, strategy, body):
    from hypothesis import given

    @run_settings
    @given(data=strategy)
    def run(data):
        body(data)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--chunk", type=int, default=200, help="inputs per hypothesis run")
    parser.add_argument("--memory-gib", type=float, default=6, help="address-space cap for this process")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"fuzz-{date.today()}.json"),
                        help="the JSON summary (bench/results/ is not committed)")
    options = parser.parse_args()

    cap = int(options.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    import shutil
    import warnings

    from hypothesis import HealthCheck, settings
    from hypothesis.errors import NonInteractiveExampleWarning

    import fuzz_inputs
    import netspec

    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    work = Path(tempfile.mkdtemp(prefix="netspec-fuzz-"))
    shutil.copytree(fuzz_inputs.SPECS, work / "specs")
    out = Path(options.out)
    findings_dir = out.with_suffix("")
    times: dict[str, list[float]] = {"mutated": [], "grammar": [], "network": []}
    outcomes: dict[str, dict[str, int]] = {k: {"ok": 0, "error": 0} for k in times}
    findings: list[dict] = []
    slowest: dict[str, tuple[float, str]] = {k: (0.0, "") for k in times}

    def record(source: str, data: bytes, run) -> None:
        path = work / "specs" / f"_{source}.net"
        path.write_bytes(data)
        seconds: list[float] = []
        outcome = run(path, seconds)
        elapsed = max(seconds)  # one `netspec check` (the front door runs it as text, then as JSON)
        times[source].append(elapsed)
        outcomes[source][outcome] += 1
        if elapsed > slowest[source][0]:
            slowest[source] = (elapsed, data.decode("utf-8", "replace")[:300])
        assert elapsed <= SLOW_S, f"{elapsed:.2f} s for one check"

    if not options.no_torch:  # imported before the clock starts on the first input
        import torch  # noqa: F401

        from netspec.backends.torch import to_module  # noqa: F401

    def compare_with_torch(path: Path, seconds: list[float]) -> str:
        outcome = fuzz_inputs.check_front_door(path, seconds)
        if outcome == "ok" and not options.no_torch:
            fuzz_inputs.agrees_with_torch(netspec.load(path))
        return outcome

    def strategies():
        yield "mutated", fuzz_inputs.mutated_spec().map(lambda case: case[1]), fuzz_inputs.check_front_door
        yield "grammar", fuzz_inputs.syntax_valid().map(lambda t: t.encode("utf-8", "surrogatepass")), \
            fuzz_inputs.check_front_door
        yield "network", fuzz_inputs.random_network().map(str.encode), compare_with_torch

    run_settings = settings(max_examples=options.chunk, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck))
    deadline = time.monotonic() + options.minutes * 60
    chunks = 0
    while time.monotonic() < deadline:
        for source, strategy, check in strategies():
            try:
                _fuzzer(run_settings, strategy, lambda data, s=source, c=check: record(s, data, c))()
            except (Exception, MemoryError) as err:  # a finding; hypothesis ran the shrunk input last
                text = f"{type(err).__name__}: {err}"
                finding = {"source": source, "error": text if len(text) < 2000 else text[:800] + " ... " + text[-1000:]}
                last = work / "specs" / f"_{source}.net"
                if last.exists():
                    findings_dir.mkdir(parents=True, exist_ok=True)
                    saved = findings_dir / f"{source}-{len(findings)}.net"
                    saved.write_bytes(last.read_bytes())
                    finding["input"] = str(saved)
                findings.append(finding)
                print(f"FINDING in {source}: {text[:150]} ... {text[-300:]}", file=sys.stderr)
        chunks += 1

    total = sum(len(t) for t in times.values())
    summary = {
        "date": str(date.today()), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                                                f"python {platform.python_version()}",
        "minutes": options.minutes, "inputs": total, "findings": findings,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "address_space_cap_gib": options.memory_gib,
        "sources": {k: {"inputs": len(v), **outcomes[k],
                        "median_ms": round(1000 * statistics.median(v), 2) if v else None,
                        "max_ms": round(1000 * max(v), 1) if v else None,
                        "slowest_input": slowest[k][1]} for k, v in times.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{total:,} inputs in {options.minutes:g} min, {len(findings)} findings; "
          f"peak RSS {summary['peak_rss_mib']} MiB (cap {options.memory_gib:g} GiB)")
    for source, figures in summary["sources"].items():
        print(f"  {source:8s} {figures['inputs']:>8,} inputs  ok {figures['ok']:>7,}  errors {figures['error']:>7,}  "
              f"median {figures['median_ms']} ms  max {figures['max_ms']} ms")
    print(f"written: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
