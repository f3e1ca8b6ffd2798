"""How long the language server takes to answer a hover near the end of a 1,000,000-character line.

    python bench/lsp_positions.py --runs 21

The document is a network whose last layer sits after 999,980 spaces on its line, with two emoji on the line
above; the hover is at column 999,990 (UTF-16), on the layer's op. The request path is the server's own
(`NetspecServer.hover`: the position to an offset, the name there, the markdown, the range back to a
position) after one check of the document, without the JSON-RPC transport. Prints the median of `--runs`
hovers with the document's text index warm (the server keeps one per open text), the first hover (index
built), and, for comparison, the per-character walk along the line that the conversion used before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types as lsp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netspec.lsp.checking import check_document  # noqa: E402
from netspec.lsp.positions import TextIndex, units  # noqa: E402
from netspec.lsp.server import NetspecServer  # noqa: E402

COLUMN = 999_990


def document() -> str:
    padding = " " * 999_980
    return f"# 😀😀\nnetwork N {{\n  input x: [1, 8, 8]\n{padding}stem: conv(8, kernel=1)\n}}\n"


def walk(text: str, start: int, end: int, character: int) -> int:
    """The conversion before: a step per character of the line."""
    counted = 0
    for offset in range(start, end):
        if counted >= character:
            return offset
        counted += units(text[offset], lsp.PositionEncodingKind.Utf16)
    return end


def milliseconds(action, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    options = parser.parse_args()

    text = document()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long_line.net"
        path.write_text(text)
        uri = path.as_uri()
        server = NetspecServer()
        server.texts[uri] = (text, 1)
        analysis = check_document(uri, path, text, 1, {})
        assert not analysis.diagnostics, analysis.diagnostics
        server.latest[uri] = server.good[uri] = analysis
        position = lsp.Position(3, COLUMN)

        first = milliseconds(lambda: server.hover(uri, position), 1)[0]
        answer = server.hover(uri, position)
        assert answer is not None and answer.contents.value.startswith("N:\n- `stem`"), answer
        warm = milliseconds(lambda: server.hover(uri, position), options.runs)

        index = TextIndex(text)
        line_start, line_end = index.lsp_lines[3], index.line_end(3)
        assert walk(text, line_start, line_end, COLUMN) == index.from_position(position, "utf-16")
        before = milliseconds(lambda: walk(text, line_start, line_end, COLUMN), max(3, options.runs // 7))

    print(f"hover at column {COLUMN:,} of a {len(text.splitlines()[3]):,}-character line "
          f"(median of {options.runs}): {statistics.median(warm):.3f} ms")
    print(f"first hover (the text index built): {first:.1f} ms")
    print(f"the per-character walk it replaced, the conversion alone: {statistics.median(before):.1f} ms")


if __name__ == "__main__":
    main()
