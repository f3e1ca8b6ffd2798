"""Keystroke to diagnostics in `netspec lsp`, with a warm server, over its real stdin and stdout.

    python bench/lsp_latency.py --runs 21

Starts the server, opens each spec (a generated network of 1,000 residual blocks, bench/check_speed.py's, and
specs/resnet152.net), waits for its diagnostics, then sends `--runs` keystrokes, one at a time: an incremental
change of one character (a digit of the classifier's width, toggled), and times each from the moment the
change is written to the moment the diagnostics of that version arrive; after each, an Enter in the middle of the
file (an empty line added, taken away again by the next), timed the same way. Also times, per spec, inlay-hint
requests for the 60 lines around the edit (what an editor asks for) and for the whole document, and a hover,
each after the check. Prints medians and 90th percentiles in
milliseconds; docs/benchmarks.md records them. `--full` sends whole texts instead (what a server asking for
full synchronisation gets), and `--source DIR` serves from another checkout, to compare versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_speed import generated_spec  # noqa: E402


class Client:
    """Plain JSON-RPC over the server's pipes: the transport a client's keystroke crosses."""

    def __init__(self, source: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "netspec", "lsp"], cwd=source, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.next_id = 0

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def receive(self) -> dict:
        length = None
        while (header := self.process.stdout.readline()) not in (b"\r\n", b""):
            if header.lower().startswith(b"content-length:"):
                length = int(header.split(b":")[1])
        if length is None:
            raise SystemExit("the server closed its output")
        return json.loads(self.process.stdout.read(length))

    def request(self, method: str, params) -> dict:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self.receive()
            if message.get("id") == self.next_id and "method" not in message:
                return message
            if "method" in message and "id" in message:  # a request of the server's: answer it
                self.send({"id": message["id"], "result": None})

    def diagnostics(self, uri: str, version: int) -> list:
        while True:
            message = self.receive()
            if "method" in message and "id" in message:
                self.send({"id": message["id"], "result": None})
            elif message.get("method") == "textDocument/publishDiagnostics" and message["params"]["uri"] == uri \
                    and message["params"].get("version") == version:
                return message["params"]["diagnostics"]

    def close(self) -> None:
        self.request("shutdown", None)
        self.send({"method": "exit"})
        self.process.wait(timeout=30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def measure(client: Client, path: Path, marker: str, runs: int, full: bool) -> dict[str, list[float]]:
    """Keystrokes on the digit after `marker` on the last line holding it."""
    text = path.read_text()
    uri = path.resolve().as_uri()
    client.send({"method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": uri, "languageId": "netspec", "version": 1, "text": text}}})
    client.diagnostics(uri, 1)
    lines = text.split("\n")
    line = max(i for i, x in enumerate(lines) if marker in x)
    column = lines[line].index(marker) + len(marker)
    digits = lines[line][column]
    times: dict[str, list[float]] = {"keystroke → diagnostics": [], "Enter mid-file → diagnostics": [],
                                     "inlay hints, 60 lines on screen": [], "inlay hints, whole document": [],
                                     "hover": []}
    middle = len(lines) // 2  # where Enter adds an empty line, and the next keystroke takes it away
    screen = {"start": {"line": max(0, line - 30), "character": 0}, "end": {"line": line + 30, "character": 0}}
    for run in range(runs):
        version = 2 * run + 2
        digit = "9" if run % 2 == 0 else digits
        at = line + 1 if run % 2 == 1 and middle <= line else line  # below the empty line the last Enter added
        start = time.perf_counter()
        if full:  # the whole text, as a client of a server that asks for full synchronisation sends it
            lines[at] = lines[at][:column] + digit + lines[at][column + 1:]
            changes = [{"text": "\n".join(lines)}]
        else:
            changes = [{"range": {"start": {"line": at, "character": column},
                                  "end": {"line": at, "character": column + 1}}, "text": digit}]
        client.send({"method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": version}, "contentChanges": changes}})
        found = client.diagnostics(uri, version)
        times["keystroke → diagnostics"].append(time.perf_counter() - start)
        assert found == [], found
        version = 2 * run + 3
        start = time.perf_counter()
        if run % 2 == 0:
            lines.insert(middle, "")
            change = {"range": {"start": {"line": middle, "character": 0}, "end": {"line": middle, "character": 0}},
                      "text": "\n"}
        else:
            del lines[middle]
            change = {"range": {"start": {"line": middle, "character": 0},
                                "end": {"line": middle + 1, "character": 0}}, "text": ""}
        changes = [{"text": "\n".join(lines)}] if full else [change]
        client.send({"method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri, "version": version}, "contentChanges": changes}})
        found = client.diagnostics(uri, version)
        times["Enter mid-file → diagnostics"].append(time.perf_counter() - start)
        assert found == [], found
        start = time.perf_counter()
        client.request("textDocument/inlayHint", {"textDocument": {"uri": uri}, "range": screen})
        times["inlay hints, 60 lines on screen"].append(time.perf_counter() - start)
        start = time.perf_counter()
        client.request("textDocument/inlayHint", {"textDocument": {"uri": uri}, "range": {
            "start": {"line": 0, "character": 0}, "end": {"line": len(lines), "character": 0}}})
        times["inlay hints, whole document"].append(time.perf_counter() - start)
        start = time.perf_counter()
        client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                              "position": {"line": line, "character": column - 2}})
        times["hover"].append(time.perf_counter() - start)
    client.send({"method": "textDocument/didClose", "params": {"textDocument": {"uri": uri}}})
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3, help="keystrokes first, not timed")
    parser.add_argument("--full", action="store_true", help="send whole texts, not edits of ranges")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the checkout whose netspec serves (to compare with another version)")
    options = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{options.runs} keystrokes per spec after {options.warmup} untimed")
    with tempfile.TemporaryDirectory() as folder:
        deep = Path(folder) / "deep1000.net"
        deep.write_text(generated_spec(1000))
        client = Client(options.source)
        client.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        client.send({"method": "initialized", "params": {}})
        for name, path, marker in (("1,000 residual blocks", deep, "linear("),
                                   ("specs/resnet152.net", ROOT / "specs" / "resnet152.net", "classes=")):
            measure(client, path, marker, options.warmup, options.full)
            times = measure(client, path, marker, options.runs, options.full)
            for what, values in times.items():
                ms = [v * 1000 for v in values]
                print(f"{name:24} {what:32} median {statistics.median(ms):7.1f} ms   p90 {percentile(ms, 90):7.1f} ms")
        client.close()


if __name__ == "__main__":
    main()
