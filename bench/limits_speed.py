"""How fast `netspec check` refuses (or accepts) the worst input for each limit, before and after.

    git worktree add --detach /tmp/netspec-before HEAD    # the code to compare against (optional)
    python bench/limits_speed.py --before /tmp/netspec-before --runs 3 --timeout 30

Each case is the worst input found for one limit of netspec/limits.py that stays within the file-size limit
(4 MiB a file). Every case is checked as a whole process (`netspec check FILE`: interpreter start, imports
and Lark's cached tables included), capped at 4 GiB of address space and `--timeout` seconds, with this
checkout and with `--before` (a checkout put first on PYTHONPATH), and in this process with this checkout
(imports and tables warm). Prints a Markdown table: wall time, and the CPU time of the child beside it,
since the 2-core machine is often shared. docs/reliability.md records the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
FILE_BYTES = 4 * MIB  # Limits.file_bytes
NET = "network N {{\n  input x: [1, 8, 8]\n  {body}\n}}\n"
TAIL = NET.format(body="relu()")

# The child: address space capped, then `netspec check` exactly as the command line runs it.
CHILD = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
         "from netspec.cli import main\nsys.exit(main(['check', *sys.argv[1:]]))\n")


@dataclass
class Case:
    name: str
    limit: str  # the limit it probes
    files: dict[str, str]  # file name -> text; the first is checked

    @property
    def size(self) -> int:
        return sum(len(t.encode()) for t in self.files.values())


def fill(unit: str, budget: int, head: str = "", tail: str = "") -> str:
    """head + unit repeated as often as fits in `budget` bytes with head and tail + tail."""
    room = budget - len(head.encode()) - len(tail.encode())
    return head + unit * (room // len(unit.encode())) + tail


def nested(opening: str, middle: str, closing: str, budget: int, head: str = "", tail: str = "") -> str:
    """head + opening * n + middle + closing * n + tail, n as large as fits in `budget` bytes."""
    room = budget - len((head + middle + tail).encode())
    n = room // len((opening + closing).encode())
    return head + opening * n + middle + closing * n + tail


def numbered(template: str, budget: int, tail: str = "") -> str:
    """template.format(i) for i = 0, 1, ... as long as the lines fit in `budget` bytes with tail."""
    lines, size, i = [], len(tail.encode()), 0
    while True:
        line = template.format(i)
        if size + len(line.encode()) > budget:
            return "".join(lines) + tail
        lines.append(line)
        size += len(line.encode())
        i += 1


def cases(limits) -> list[Case]:
    max_tokens, layers = limits.tokens, limits.instances
    full = FILE_BYTES - 64  # room for the file's last lines
    template_label = '"l{' + "1 + " * 30 + '1}": relu()\n'
    b = []
    # file size
    b.append(Case("4 MiB + 1 byte of comments", "file size",
                  {"main.net": TAIL + "#" * (FILE_BYTES - len(TAIL)) + "\n"}))
    b.append(Case("4 MiB of comment lines", "file size",
                  {"main.net": fill("# a comment (with [brackets] and \"quotes\n", full, tail=TAIL)}))
    b.append(Case("one string of 4 MiB", "file size", {"main.net": 'let s = "' + "x" * (full - 12) + '"\n' + TAIL}))
    b.append(Case("syntax error after a 4 MiB string", "file size",
                  {"main.net": 'let s = "' + "(" * (full - 12) + '" )\n' + TAIL}))
    # nesting: brackets
    b.append(Case("`1 + (` x 100,000 (the issue's case)", "nesting",
                  {"main.net": "let a = " + "1 + (" * 100_000 + "1" + ")" * 100_000 + "\n" + TAIL}))
    b.append(Case("4 MiB of nested `(`", "nesting", {"main.net": nested("(", "1", ")", full, "let a = ", "\n" + TAIL)}))
    b.append(Case("4 MiB of nested `[`", "nesting", {"main.net": nested("[", "1", "]", full, "let a = ", "\n" + TAIL)}))
    b.append(Case("4 MiB of nested groups", "nesting",
                  {"main.net": NET.format(body=nested("{", "relu()", "}", full - len(NET)))}))
    b.append(Case("4 MiB of nested calls `f(`", "nesting",
                  {"main.net": nested("abs(", "1", ")", full, "let a = ", "\n" + TAIL)}))
    # nesting: operators, no brackets
    b.append(Case("4 MiB of unary minus", "nesting", {"main.net": fill("- ", full, "let a = ", "1\n" + TAIL)}))
    b.append(Case("4 MiB of `not`", "nesting", {"main.net": fill("not ", full, "let a = ", "true\n" + TAIL)}))
    b.append(Case("4 MiB sum `1+1+...`", "nesting", {"main.net": fill("1+", full, "let a = ", "1\n" + TAIL)}))
    b.append(Case("4 MiB of `[0]` indexing", "nesting", {"main.net": fill("[0]", full, "let a = [1]", "\n" + TAIL)}))
    # tokens: many statements, long lists and chains
    b.append(Case("4 MiB of `let` statements", "tokens",
                  {"main.net": numbered("let a{0} = {0}\n", full, TAIL)}))
    b.append(Case("4 MiB of layers in one body", "tokens / layers",
                  {"main.net": NET.format(body=fill("relu()\n", full - len(NET)))}))
    b.append(Case("4 MiB list literal", "tokens / list items",
                  {"main.net": fill("1, ", full, "let a = [", "1]\n" + TAIL)}))
    b.append(Case("4 MiB chain `a -> a -> ...`", "tokens / layers",
                  {"main.net": NET.format(body=fill("relu() -> ", full - len(NET), tail="relu()"))}))
    b.append(Case("4 MiB of label templates", "tokens",
                  {"main.net": NET.format(body=fill(template_label, full - len(NET)))}))
    # the worst that is accepted: as many tokens as allowed, in the forms the parser finds dearest
    b.append(Case(f"list of {max_tokens // 2 - 5:,} items (at the token limit)", "tokens",
                  {"main.net": "let a = [" + "1, " * (max_tokens // 2 - 13) + "1]\n" + TAIL}))
    b.append(Case("lets of 99 nested `(1 + ` (at the token limit)", "tokens",
                  {"main.net": "".join(f"let a{i} = " + "(1 + " * 99 + "1" + ")" * 99 + "\n"
                                       for i in range((max_tokens - 20) // 400)) + TAIL}))
    unit = "  conv(8, kernel=3, padding=1)\n"  # 12 tokens, one layer, a shape and parameter pass each
    b.append(Case(f"{(max_tokens - 20) // 12:,} conv layers written out (at the token limit)", "tokens",
                  {"main.net": NET.format(body=unit * ((max_tokens - 20) // 12))}))
    # layers and repeats
    b.append(Case("`{ { relu() * 10000 } * 10000 } * 10000`", "repeat / layers",
                  {"main.net": NET.format(body="{ { relu() * 10000 } * 10000 } * 10000")}))
    b.append(Case(f"{layers:,} conv layers by repeats (at the layer limit)", "layers",
                  {"main.net": NET.format(body=f"{{ conv(8, kernel=3, padding=1) * 99 }} * {layers // 100}")}))
    statements = (max_tokens - 100) // 208  # each 100 terms, 207 tokens
    heavy = "block B(c) {\n" + "".join(f"  conv(c{' + 0' * 99}, kernel=1)\n" for _ in range(statements)) + "}\n"
    b.append(Case(f"{statements} layers of 100-term arguments x {layers // statements} instances",
                  "layers / evaluation steps",
                  {"main.net": heavy + NET.format(body=f"B(8) * {layers // statements}")}))
    b.append(Case("sum of a 100,000-item list in each layer of `B() * 10000`", "evaluation steps",
                  {"main.net": "let a = range(100000)\nblock B() {\n  conv(sum(a) * 0 + 8, kernel=1)\n}\n"
                               + NET.format(body="B() * 10000")}))
    lets = (max_tokens - 40) // 7
    for verb, expression in (("summing", "sum(a)"), ("slicing", "a[1:]")):
        b.append(Case(f"{lets:,} lets each {verb} a 100,000-item list", "evaluation steps",
                      {"main.net": "let a = range(100000)\n"
                                   + "".join(f"let b{i} = {expression}\n" for i in range(lets)) + TAIL}))
    b.append(Case("a 100,000-item nested list passed to 10,000 layers", "evaluation steps",
                  {"main.net": "let a = [range(50000), range(50000)]\nblock B() {\n  conv(8, kernel=1, padding=a)\n}\n"
                               + NET.format(body="B() * 10000")}))
    chain = "".join(f"block B{i}() {{ B{i + 1}()\n B{i + 1}() }}\n" for i in range(63)) + "block B63() { relu() }\n"
    b.append(Case("64 blocks, each calling the next twice", "block depth / layers",
                  {"main.net": chain + NET.format(body="B0()")}))
    # imports: every file may hold the limits, so the files of a spec share the token limit
    per_file = (max_tokens - 40) // 4  # `let aI = I` is four tokens
    files = {"main.net": 'import "f0.net"\n' + TAIL}
    for i in range(64):
        files[f"f{i}.net"] = (f'import "f{i + 1}.net"\n' if i < 63 else "") + "".join(
            f"let v{i}_{j} = {j}\n" for j in range(per_file))
    b.append(Case(f"64 nested imports of {per_file * 4:,} tokens each", "imports / tokens", files))
    files = {"main.net": "".join(f'import "g{i}.net"\n' for i in range(2000)) + TAIL}
    files.update({f"g{i}.net": f"block G{i}() {{ relu() }}\n" for i in range(2000)})
    b.append(Case("2,000 imported files", "imports / tokens", files))
    # sizes
    b.append(Case("`conv(10**12, kernel=1)`", "elements", {"main.net": NET.format(body="conv(10**12, kernel=1)")}))
    b.append(Case("`linear(10**9) -> linear(40)`", "parameters",
                  {"main.net": NET.format(body="flatten() -> linear(10**9) -> linear(40)")}))
    return b


def write(case: Case, folder: Path) -> Path:
    for name, text in case.files.items():
        (folder / name).write_text(text)
    return folder / next(iter(case.files))


def whole_process(path: Path, pythonpath: str | None, timeout: float) -> tuple[float, float, str]:
    """(wall seconds, child CPU seconds, outcome) of `netspec check path` in a fresh interpreter."""
    env = {**os.environ, "NETSPEC_DEBUG": ""}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                                timeout=timeout, env=env, cwd=path.parent)
    except subprocess.TimeoutExpired:
        return float("inf"), float("inf"), "timeout"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, outcome(result.returncode, result.stderr)


def outcome(code: int, stderr: str) -> str:
    if "MemoryError" in stderr:
        return "MemoryError"
    if code == 0:
        return "accepted"
    for line in stderr.splitlines():
        if "error[" in line:
            return line[line.index("error[") + 6:line.index("error[") + 11]
    return f"exit {code}"


def in_process(path: Path, runs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `netspec check` in this process, imports and tables warm; medians."""
    from netspec.cli import main

    walls, cpus = [], []
    for _ in range(runs):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            start, start_cpu = time.perf_counter(), time.process_time()
            main(["check", str(path)])
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def seconds(value: float, timeout: float) -> str:
    return f"> {timeout:.0f} s" if value == float("inf") else f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="a checkout of the code to compare against (e.g. a git worktree of HEAD)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per whole-process check, seconds")
    parser.add_argument("--runs", type=int, default=3, help="whole-process runs of this checkout (median)")
    parser.add_argument("--only", help="run the cases whose name contains this text")
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from netspec.ground.limits import DEFAULT

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}; load average at start {load:.1f}")
    header = "| input | limit | size | result | before: whole process | after: whole process | after: in process |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for case in cases(DEFAULT):
        if options.only and options.only not in case.name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = write(case, Path(tmp))
            old = "not measured"
            if options.before:
                wall, cpu, result = whole_process(path, options.before, options.timeout)
                old = (f"> {options.timeout:.0f} s" if result == "timeout"
                       else f"{wall:.2f} s (CPU {cpu:.2f} s), {result}")
            runs = [whole_process(path, str(ROOT), options.timeout) for _ in range(options.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            warm = in_process(path, 3) if wall != float("inf") else None
            worst = max(worst, wall)
        size = f"{case.size / MIB:.2f} MiB" if case.size >= MIB // 10 else f"{case.size:,} B"
        print(f"| {case.name} | {case.limit} | {size} | {runs[0][2]} | {old} | {seconds(wall, options.timeout)} "
              f"(CPU {seconds(cpu, options.timeout)}) | "
              + ("- |" if warm is None else f"{warm[0] * 1000:.0f} ms (CPU {warm[1] * 1000:.0f} ms) |"), flush=True)
    print(f"slowest whole process after: {worst:.2f} s; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
