"""`netspec fmt`: one canonical layout, every comment kept, idempotent, and never a change of meaning.

Meaning is what `netspec.load` makes of each network in a file: its layers' names, ops, arguments, inputs and
shapes, or its error codes. It is compared before and after formatting for every spec in the repository
(formatted together in a copy, so the imported block files are formatted too) and for the fuzz corpus.
"""

import io
import re
import shutil
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from fuzz_inputs import fixed_budget as fuzz  # noqa: E402
from fuzz_inputs import mutated_spec, syntax_valid
from hypothesis import given

import netspec
from conftest import regenerate  # noqa: E402
from netspec.cli import main
from netspec.ground.errors import NetspecError
from netspec.fmt import format_text
from netspec.semantics.lower import lower
from netspec.semantics.program import load_program
from netspec.language.parse import parse
from netspec.analysis.passes import PASSES

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ["specs", "examples", "tests/ops"]


def repository_specs() -> list[Path]:
    return sorted(p.relative_to(ROOT) for folder in FOLDERS for p in (ROOT / folder).rglob("*.net"))


def meaning(path: Path, networks_at_most: int | None = None) -> list:
    """Every network of the file as `netspec.load` gives it (its layers, or its error codes); a file of blocks
    alone is its load error, NS210. netspec.load's own steps, with the file parsed once for all its networks
    (parsing again for each is most of the time of a file of 19 networks)."""
    try:
        program = load_program(path)
    except NetspecError as err:
        return [sorted(d.code for d in err.diagnostics)]
    if not program.root.networks:
        with pytest.raises(NetspecError) as err:
            netspec.load(path)
        return [sorted(d.code for d in err.value.diagnostics)]
    out = []
    for network in program.root.networks[:networks_at_most]:
        try:
            graph = lower(program, network)
            for run_pass in PASSES:
                graph = run_pass(graph)
        except NetspecError as err:
            out.append((network, sorted(d.code for d in err.diagnostics)))
            continue
        if any(d.is_error for d in graph.diagnostics):
            out.append((network, sorted(d.code for d in graph.diagnostics)))
            continue
        out.append((network, graph.output, graph.aux_outputs, graph.arguments,
                    [(n.name, n.op, n.args, n.inputs, n.shape, n.params, n.macs) for n in graph.nodes]))
    return out


def comments(text: str) -> list[str]:
    """The comments of a spec in order, read by the formatter's own rule: '#' outside a string, to the line end."""
    found = []
    for line in text.split("\n"):
        code = re.sub(r'"[^"\n]*"', lambda m: "_" * len(m.group()), line)
        if "#" in code:
            found.append(line[code.index("#"):].rstrip())
    return found


def test_every_spec_in_the_repository_keeps_its_meaning(tmp_path):
    copy = tmp_path / "repo"
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, copy / folder)
    specs = repository_specs()
    assert len(specs) >= 40
    changed = 0
    for spec in specs:
        original = (ROOT / spec).read_text()
        formatted = format_text(original, str(spec))
        assert format_text(formatted) == formatted, spec
        assert comments(formatted) == comments(original), spec
        changed += formatted != original
        (copy / spec).write_text(formatted)
    assert changed > 0  # the layout is really applied, not only checked
    for spec in specs:
        before, after = meaning(ROOT / spec), meaning(copy / spec)
        assert after == before, spec
        assert any(isinstance(entry, tuple) and len(entry) == 5 for entry in before) or "blocks" in str(spec) \
            or spec.name == "heads.net", f"{spec} has no network that checks"


def format_keeps_meaning(text: str, folder: Path) -> str:
    """The fuzz property: formatted, a spec means what it meant, and formatting again changes nothing; refused,
    it is because the spec does not parse, as `netspec.load` also reports. Returns which it was."""
    original = folder / "_fuzz.net"
    original.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        formatted = format_text(text, str(original))
    except NetspecError as err:
        with pytest.raises(NetspecError) as loaded:
            load_program(original)
        assert {d.code for d in err.diagnostics} <= {d.code for d in loaded.value.diagnostics}
        return "refused"
    assert format_text(formatted) == formatted
    assert comments(formatted) == comments(text.lstrip("\ufeff").replace("\r\n", "\n"))
    again = folder / "_fuzz_formatted.net"
    again.write_text(formatted, encoding="utf-8", errors="surrogatepass")
    assert meaning(again, networks_at_most=1) == meaning(original, networks_at_most=1)
    return "formatted"


def test_mutated_specs_keep_their_meaning(workspace):
    outcomes = Counter()

    @fuzz(100)  # the corpus is every spec of specs/: a new one changes the draw (vit.net left 25 of 70 formatted)
    @given(case=mutated_spec())
    def mutated(case):
        name, data = case
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # `netspec fmt` reports it as `check` does (NS100), before any formatting
            return
        outcomes[format_keeps_meaning(text, (workspace / name).parent)] += 1

    mutated()
    assert outcomes["formatted"] >= 30, outcomes  # most mutations still parse: the property is really tested


def test_grammar_sentences_keep_their_meaning(workspace):
    outcomes = Counter()

    @fuzz(60)
    @given(text=syntax_valid())
    def sentence(text):
        outcomes[format_keeps_meaning(text, workspace)] += 1

    sentence()
    # The generator puts comments between tokens, and a comment runs over the tokens after it on its line, so
    # many sentences do not parse (NS100, refused): 32 of these 60 do.
    assert outcomes["formatted"] >= 25, outcomes


@pytest.mark.parametrize("where", ["after", "before"])
def test_a_comment_at_every_token_is_kept_in_order(where):
    """A comment after each token (trailing) or on its own line before each (leading), in every top-level spec."""
    from netspec.fmt import concrete_parser

    for spec in sorted((ROOT / "specs").glob("*.net")) + sorted((ROOT / "examples").rglob("*.net")):
        original = spec.read_text()
        tokens = list(concrete_parser().parse(original).scan_values(lambda v: True))
        pieces, position = [], 0
        for count, token in enumerate(sorted(tokens, key=lambda t: t.start_pos)):
            if where == "before":
                pieces += [original[position:token.start_pos], f"\n# c{count}\n", str(token)]
            else:
                pieces += [original[position:token.end_pos], f"  # c{count}\n"]
            position = token.end_pos
        text = "".join(pieces) + original[position:]
        assert len(comments(text)) == len(comments(original)) + len(tokens)
        formatted = format_text(text, str(spec))
        assert comments(formatted) == comments(text), spec
        assert format_text(formatted) == formatted, spec
        assert parse(formatted) == parse(original), spec


MESSY = """\
# A header comment.


import   "blocks/resnet.net"
import "blocks/vgg.net"
let widths=[16,32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,]
let k = - -1
block Tiny(c){conv(c,kernel=3,padding=1)->relu()}
block Two(c) { conv(c, 1) relu() }


# About the network.
network N(classes=10,) {
  input x:[3,32,32]   # the input
  stem: { conv(16, kernel=3, padding=1, bias=false) batchnorm() relu() }
  y=x->conv(16,kernel=3,padding=1)->relu()     # a branch
  add(y)  # merge



  for i in range(2) { Tiny(16) }
  head: { global_avgpool() -> flatten() }
  fc: linear(classes, init="kaiming", frozen=false, some_argument_that_is_long=1, another_long_argument=2, more=3, last=4)
  # the end of the body
}
train N{epochs=2 lr=0.1}
# the end of the file
"""

CANONICAL = """\
# A header comment.

import "blocks/resnet.net"
import "blocks/vgg.net"

let widths = [
  16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152,
  4194304
]
let k = - -1

block Tiny(c) { conv(c, kernel=3, padding=1) -> relu() }

block Two(c) {
  conv(c, 1)
  relu()
}

# About the network.
network N(classes=10) {
  input x: [3, 32, 32]  # the input
  stem: {
    conv(16, kernel=3, padding=1, bias=false)
    batchnorm()
    relu()
  }
  y = x -> conv(16, kernel=3, padding=1) -> relu()  # a branch
  add(y)                                            # merge

  for i in range(2) { Tiny(16) }
  head: { global_avgpool() -> flatten() }
  fc: linear(
    classes,
    init="kaiming",
    frozen=false,
    some_argument_that_is_long=1,
    another_long_argument=2,
    more=3,
    last=4
  )
  # the end of the body
}

train N {
  epochs = 2
  lr = 0.1
}
# the end of the file
"""


def test_the_canonical_layout():
    assert format_text(MESSY) == CANONICAL
    assert format_text(CANONICAL) == CANONICAL


GOLDEN = ROOT / "tests" / "golden" / "fmt"


@pytest.mark.parametrize("source", sorted(GOLDEN.glob("*.in.net")), ids=lambda p: p.name[:-len(".in.net")])
def test_golden_layouts(source):
    """NAME.in.net formats to NAME.out.net byte for byte, and NAME.out.net is already canonical.

    After a deliberate change of layout, rewrite the expected files with
    `NETSPEC_REGEN=1 pytest tests/test_fmt.py -k golden` and review the diff.
    """
    expected_file = source.with_name(source.name.replace(".in.net", ".out.net"))
    formatted = format_text(source.read_text(encoding="utf-8"), str(source))
    if regenerate():
        expected_file.write_text(formatted, encoding="utf-8", newline="\n")
    expected = expected_file.read_bytes().decode("utf-8")  # as bytes: a "\r" is not translated away
    assert formatted == expected
    assert format_text(expected, str(expected_file)) == expected


def test_a_chain_too_long_for_a_line_breaks_before_each_arrow():
    steps = " -> ".join(f"conv({n}, kernel=3, padding=1)" for n in (8, 16, 32, 64))
    text = f"network N {{\n  input x: [3, 8, 8]\n  y = x -> {steps}\n  add(y)\n}}\n"
    assert format_text(text) == (
        "network N {\n  input x: [3, 8, 8]\n  y = x\n"
        "    -> conv(8, kernel=3, padding=1)\n    -> conv(16, kernel=3, padding=1)\n"
        "    -> conv(32, kernel=3, padding=1)\n    -> conv(64, kernel=3, padding=1)\n  add(y)\n}\n")


def test_a_group_in_a_chain_keeps_the_chain_on_its_line():
    text = 'block B(c) {\n  input x\n  x -> branch: { conv(c, 1) relu() } if c > 1\n  add(x)\n}\n'
    assert format_text(text) == (
        "block B(c) {\n  input x\n  x -> branch: {\n    conv(c, 1)\n    relu()\n  } if c > 1\n  add(x)\n}\n")


def test_the_deepest_nesting_the_parser_takes_is_formatted_without_recursion():
    """100 brackets are hundreds of levels of Lark's tree (each holds or_, and_, compare, ... power): every walk
    of the formatter is iterative. One more bracket is the parser's NS213, as for `netspec check`."""
    depth = 100
    text = f"let deep = {'(' * depth}1 + 2{')' * depth}\n"
    assert format_text(text.replace(" ", "")) == text
    groups = "network N {\n  input x: [1, 2, 2]\n" + "".join("  " * i + "{\n" for i in range(1, depth)) + \
        "  " * depth + "relu()\n" + "".join("  " * i + "}\n" for i in reversed(range(1, depth))) + "}\n"
    assert format_text(groups) == groups
    with pytest.raises(NetspecError) as err:
        format_text(f"let deep = {'(' * (depth + 2)}1{')' * (depth + 2)}\n")
    assert [d.code for d in err.value.diagnostics] == ["NS213"]


def test_a_spec_that_does_not_parse_is_refused_with_the_parsers_error():
    with pytest.raises(NetspecError) as err:
        format_text("network N {\n  input x: [3, 8, 8]\n  conv(8, kernel=3\n}\n", "broken.net")
    (d,) = err.value.diagnostics
    assert (d.code, d.span.line, d.span.col, d.hint) == ("NS100", 4, 1, "the '(' at 3:7 is not closed")


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def test_fmt_check_lists_the_files_that_would_change_and_changes_nothing(tmp_path):
    messy, tidy = tmp_path / "messy.net", tmp_path / "sub" / "tidy.net"
    tidy.parent.mkdir()
    messy.write_text(MESSY)
    tidy.write_text(CANONICAL)
    status, out, err = run("fmt", "--check", str(tmp_path))
    assert (status, out) == (1, f"would reformat {messy}\n")
    assert err == "1 file would be reformatted, 1 left unchanged\n"
    assert messy.read_text() == MESSY
    assert run("fmt", "--check", str(tidy)) == (0, "", "0 files would be reformatted, 1 left unchanged\n")


def test_fmt_rewrites_files_in_place(tmp_path):
    messy = tmp_path / "messy.net"
    messy.write_text(MESSY)
    assert run("fmt", str(messy)) == (0, f"reformatted {messy}\n", "1 file reformatted, 0 left unchanged\n")
    assert messy.read_text() == CANONICAL
    assert run("fmt", str(messy)) == (0, "", "0 files reformatted, 1 left unchanged\n")


def test_fmt_leaves_a_broken_file_alone_and_says_where_it_is_broken(tmp_path):
    broken = tmp_path / "broken.net"
    broken.write_text("network N {\n  relu(\n}\n")
    status, out, err = run("fmt", str(broken))
    assert status == 1 and out == ""
    assert f"{broken}:3:1: error[NS100]: unexpected token '}}'" in err
    assert err.endswith("0 files reformatted, 0 left unchanged, 1 not formatted (see above)\n")
    assert broken.read_text() == "network N {\n  relu(\n}\n"
    status, _, err = run("fmt", str(tmp_path / "missing.net"))
    assert status == 2 and "error[NS209]: file not found" in err


def test_fmt_reads_stdin_and_writes_stdout(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("network N{input x:[1,4,4] relu()}"))
    assert run("fmt", "-") == (0, "network N {\n  input x: [1, 4, 4]\n  relu()\n}\n",
                               "1 file reformatted, 0 left unchanged\n")
