"""Hostile input: every ceiling ends in a located error, quickly; imports stay where they are allowed."""

import ast as python_ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netspec
from netspec.cli import main
from netspec.ground.errors import NetspecError
from netspec.ground.limits import Limits

ROOT = Path(__file__).resolve().parent.parent
NET = "network N {{\n  input x: [1, 8, 8]\n  {body}\n}}\n"


def errors_of(path, **kwargs):
    with pytest.raises(NetspecError) as caught:
        netspec.load(path, **kwargs)
    return caught.value.diagnostics


def write(tmp_path, text, name="spec.net"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line", [
    ("let a = " + "1 + (" * 3000 + "1" + ")" * 3000, 1),
    ("let a = " + "(" * 3000 + "1" + ")" * 3000, 1),
    ("let a = " + "[" * 3000 + "]" * 3000, 1),
    ("let a = " + "-" * 3000 + "1", 1),
    ("let a = " + "not " * 3000 + "true", 1),
    ("let a = " + " + ".join(["1"] * 3000), 1),
    ("let a = [1]" + "[0]" * 3000, 1),
    (NET.format(body="{" * 3000 + "relu()" + "}" * 3000), 3),
], ids=["brackets", "parentheses", "lists", "minus", "not", "sum", "index", "groups"])
def test_nesting_deeper_than_the_limit_is_an_error_not_a_crash(tmp_path, text, line):
    if not text.startswith("network"):
        text += "\n" + NET.format(body="relu()")
    [error] = errors_of(write(tmp_path, text))
    assert error.code == "NS213" and "nest more than 100 levels deep" in error.message
    assert error.span.line == line


def test_values_nested_through_lets_are_refused(tmp_path):
    lets = "let a0 = 1\n" + "".join(f"let a{i + 1} = [a{i}]\n" for i in range(150))
    [error] = errors_of(write(tmp_path, lets + NET.format(body="relu()")))
    assert (error.code, error.message, error.span.line) == ("NS213", "lists nested more than 100 deep", 102)


@pytest.mark.parametrize("text", [
    "let a = " + "(" * 100 + "1" + ")" * 100 + "\n" + NET.format(body="conv(a, kernel=1)"),
    "let a = " + "-" * 98 + "1 + 1\n" + NET.format(body="conv(a + 1, kernel=1)"),
    "let a = " + "(1 + " * 98 + "1" + ")" * 98 + " - 98\n" + NET.format(body="conv(a, kernel=1)"),
    NET.format(body="{" * 99 + "relu()" + "}" * 99),
    "let a = " + "[" * 99 + "1" + "]" * 99 + "\n" + NET.format(body="conv(1, kernel=1) if a != 0"),
], ids=["parentheses", "minus", "sum", "groups", "lists"])
def test_nesting_within_the_limit_works(tmp_path, text):
    graph = netspec.load(write(tmp_path, text))
    assert graph.nodes[-1].shape[1:] == (8, 8)


def test_the_bracket_past_the_limit_is_the_one_shown(tmp_path):
    """Brackets are counted before parsing, so a file of 100,000 nested ones is refused at the 102nd (a block's
    own braces are the one more), with the hint of the syntax-tree check behind it."""
    [error] = errors_of(write(tmp_path, "let a = " + "[" * 200 + "]" * 200 + "\n" + NET.format(body="relu()")))
    assert (error.code, error.span.line, error.span.col, error.span.end_col) == ("NS213", 1, 110, 111)
    assert error.hint == "split the expression with `let`, or the body into blocks"
    [error] = errors_of(write(tmp_path, NET.format(body="{" * 100_000 + "relu()" + "}" * 100_000)))
    assert (error.span.line, error.span.col) == (3, 103)


def test_max_tokens_raises_the_token_ceiling_from_the_command_line(tmp_path, capsys):
    spec = write(tmp_path, NET.format(body="relu()\n"))  # 17 tokens
    assert main(["check", str(spec), "--max-tokens", "16"]) == 1
    captured = capsys.readouterr()
    assert "error[NS213]: more than 16 tokens in one file" in captured.out + captured.err
    assert main(["check", str(spec), "--max-tokens", "17"]) == 0


def test_brackets_in_strings_and_comments_do_not_count(tmp_path):
    text = ('# ' + "(" * 500 + "\n" + 'let s = "' + "[" * 500 + '" # "' + "{" * 500 + "\n"
            + NET.format(body="relu()"))
    assert netspec.load(write(tmp_path, text)).nodes[-1].shape == (1, 8, 8)


def test_tokens_past_the_limit_are_refused_before_parsing(tmp_path):
    spec = write(tmp_path, NET.format(body="relu()\n"))  # 17 tokens
    assert len(netspec.load(spec, limits=Limits(tokens=17)).nodes) == 2
    [error] = errors_of(spec, limits=Limits(tokens=16))
    assert (error.code, error.message, error.span.line, error.span.col) == (
        "NS213", "more than 16 tokens in one file", 5, 1)
    assert error.hint == "write what repeats once: a block, `* n`, or a `for` loop (or raise the ceiling with " \
                         "--max-tokens N)"
    # a label's {expressions} are parsed too, so their tokens count
    labelled = write(tmp_path, NET.format(body='"layer{1 + 1}": relu()'))  # 19 tokens and the 3 inside
    assert netspec.load(labelled, limits=Limits(tokens=22)).nodes[-1].name == "layer2"
    [error] = errors_of(labelled, limits=Limits(tokens=15))
    assert (error.message, error.span.line, error.span.col) == ("more than 15 tokens in one file", 3, 12)


def test_a_spec_and_its_imports_share_the_token_limit(tmp_path):
    write(tmp_path, "block Head(c) { flatten() -> linear(c) }\n", "head.net")  # 15 tokens
    spec = write(tmp_path, 'import "head.net"\n' + NET.format(body="Head(3)"))  # 20 tokens
    assert netspec.load(spec, limits=Limits(tokens=35)).nodes[-1].shape == (3,)
    [error] = errors_of(spec, limits=Limits(tokens=34))
    assert (error.message, error.span.file, error.span.line, error.span.col) == (
        "more than 34 tokens, 20 of them in the files read before this one", str(tmp_path / "head.net"), 1, 40)


def test_evaluation_is_bounded_across_instances(tmp_path):
    """Arguments are evaluated once per instance and names hand on whole lists: the steps are counted, and the
    first place past the ceiling is the one error."""
    lets = "let a = range(10)\nlet b = sum(a)\nlet c = b + 1\n"  # 2 nodes and 10 items, 2 and 10, 3 nodes
    spec = write(tmp_path, lets + NET.format(body="relu()"))
    assert len(netspec.load(spec, limits=Limits(evaluation_steps=27)).nodes) == 2
    errors = errors_of(spec, limits=Limits(evaluation_steps=26))
    assert [(e.code, e.message, e.span.line, e.span.col) for e in errors] == [
        ("NS213", "evaluating the spec's expressions takes more than 26 steps", 3, 13)]
    blocks = "block B(c) {\n  conv(c * 2, kernel=1)\n}\n" + NET.format(body="B(4) * 100")
    spec = write(tmp_path, blocks)
    errors = errors_of(spec, limits=Limits(evaluation_steps=200))
    assert [(e.code, e.message, e.span.line, e.span.col) for e in errors] == [
        ("NS213", "evaluating the spec's expressions takes more than 200 steps", 2, 22)]
    assert netspec.load(spec).nodes[-1].shape == (8, 8, 8)


def test_exponential_lists_are_refused_before_they_are_built(tmp_path):
    doubling = "let a0 = [1, 2]\n" + "".join(f"let a{i + 1} = a{i} + a{i}\n" for i in range(40))
    [error] = errors_of(write(tmp_path, doubling + NET.format(body="relu()")))
    assert error.code == "NS213" and error.message == "a list of 131,072 items (limit 100,000)"
    assert error.span.line == 17
    shared = "let a0 = [1, 2]\n" + "".join(f"let a{i + 1} = [a{i}, a{i}]\n" for i in range(60))
    [error] = errors_of(write(tmp_path, shared + NET.format(body="relu()")))
    assert error.code == "NS213" and "more than 100,000 items" in error.message and error.span.line == 16


def test_a_huge_value_is_shown_cut_short(tmp_path):
    text = "let a = [" + ", ".join(["123456789"] * 4000) + "]\n" + NET.format(body="conv(a, kernel=1)")
    [error] = errors_of(write(tmp_path, text))
    assert error.code == "NS203" and len(error.message) < 300 and error.message.endswith("...")


def test_work_is_bounded_even_when_nothing_is_built(tmp_path):
    [error] = errors_of(write(tmp_path, NET.format(body="{ { { } * 10000 } * 10000 } * 10000")))
    assert error.code == "NS213"
    assert error.message == "the network instantiates more than 10,000 layers, blocks and groups"
    blocks = ("block A() { relu()\n relu() }\nblock B() { A() * 100\n A() * 100 }\nblock C() { B() * 100 }\n"
              + NET.format(body="C() * 100"))
    [error] = errors_of(write(tmp_path, blocks))
    assert error.notes[0].startswith("inside N -> C -> B")  # where the count passed the ceiling
    graph = netspec.load(write(tmp_path, NET.format(body="relu() * 9000")), limits=Limits(instances=9000))
    assert len(graph.nodes) == 9001


def test_repeat_counts_block_depth_and_imports_have_ceilings(tmp_path):
    [error] = errors_of(write(tmp_path, NET.format(body="relu() * 10001")))
    assert (error.code, error.message) == ("NS213", "repeat count 10,001 exceeds the limit of 10,000")
    chain = "".join(f"block B{i}() {{ B{i + 1}() }}\n" for i in range(70)) + "block B70() { relu() }\n"
    [error] = errors_of(write(tmp_path, chain + NET.format(body="B0()")))
    assert (error.code, error.message) == ("NS213", "blocks nest deeper than 64")
    for i in range(70):
        write(tmp_path, f'import "f{i + 1}.net"\n', f"f{i}.net")
    write(tmp_path, "block Z() { relu() }\n", "f70.net")
    [error] = errors_of(write(tmp_path, 'import "f0.net"\n' + NET.format(body="relu()")))
    assert (error.code, error.message) == ("NS213", "imports nest deeper than 64 files")


def test_tensor_size_and_parameter_ceilings(tmp_path):
    [error] = errors_of(write(tmp_path, NET.format(body="conv(10**12, kernel=1)")))
    assert error.code == "NS213" and "elements per sample" in error.message
    huge = NET.format(body="flatten() -> linear(10**9) -> linear(40)")
    [error] = errors_of(write(tmp_path, huge))
    assert error.code == "NS213" and error.span.line == 3
    assert error.message == ("the network's parameters pass the ceiling of 100,000,000,000 at layer '2' "
                             "(40,000,000,040 of its own, 105,000,000,040 so far)")
    graph = netspec.load(tmp_path / "spec.net", limits=Limits(params=10**12))
    assert sum(n.params for n in graph.nodes) == 105_000_000_040
    [error] = errors_of(ROOT / "specs/lenet5.net", limits=Limits(params=60_000))  # 60,840 in all
    assert "at layer 'output' (840 of its own, 60,840 so far)" in error.message


def test_file_size_ceiling(tmp_path):
    path = write(tmp_path, NET.format(body="relu()") + "#" * (4 * 1024 * 1024))
    [error] = errors_of(path)
    assert error.code == "NS213" and error.message.endswith("specs are limited to 4,194,304")


def test_bytes_that_are_not_utf8_are_located(tmp_path):
    path = tmp_path / "latin1.net"
    path.write_bytes(b"network N {\n  input x: [1, 4, 4]  # caf\xe9\n  relu()\n}\n")
    [error] = errors_of(path)
    assert (error.code, error.message, error.span.line, error.span.col) == (
        "NS100", "byte 0xe9 is not UTF-8 text", 2, 28)


def test_imports_stay_inside_the_spec_folder(tmp_path):
    write(tmp_path, "block Head(c) { flatten() -> linear(c) }\n", "lib/head.net")
    escaping = write(tmp_path, 'import "../lib/head.net"\n' + NET.format(body="Head(3)"), "project/net.net")
    [error] = errors_of(escaping)
    assert error.code == "NS214" and (error.span.line, error.span.col) == (1, 1)
    assert error.message == f"this import reads {os.path.relpath(tmp_path / 'lib/head.net')}, outside the " \
                            "folders imports may read"
    assert error.notes == (f"allowed: {os.path.relpath(tmp_path / 'project')}/",)
    assert netspec.load(escaping, limits=Limits(import_roots=(tmp_path / "lib",))).nodes[-1].shape == (3,)
    assert netspec.load(escaping, limits=Limits(import_roots=None)).nodes[-1].shape == (3,)
    (tmp_path / "project" / "link").symlink_to(tmp_path / "lib")
    through_link = write(tmp_path, 'import "link/head.net"\n' + NET.format(body="Head(3)"), "project/l.net")
    assert errors_of(through_link)[0].code == "NS214"
    absolute = write(tmp_path, f'import "{tmp_path / "lib/head.net"}"\n' + NET.format(body="Head(3)"),
                     "project/a.net")
    assert errors_of(absolute)[0].code == "NS214"
    nested = write(tmp_path, 'import "sub/../sub/h.net"\n' + NET.format(body="Head(2)"), "project/n.net")
    write(tmp_path, "block Head(c) { flatten() -> linear(c) }\n", "project/sub/h.net")
    assert netspec.load(nested).nodes[-1].shape == (2,)


def test_cli_import_flags(tmp_path, capsys):
    write(tmp_path, "block Head(c) { flatten() -> linear(c) }\n", "lib/head.net")
    spec = write(tmp_path, 'import "../lib/head.net"\n' + NET.format(body="Head(3)"), "project/net.net")
    assert main(["check", str(spec)]) == 1
    assert "error[NS214]" in capsys.readouterr().err
    assert main(["check", str(spec), "--import-path", str(tmp_path / "lib")]) == 0
    assert main(["check", str(spec), "--allow-any-import"]) == 0
    assert main(["check", str(spec), "--allow-any-import", "--max-params", "10"]) == 1
    assert "ceiling of 10 at layer" in capsys.readouterr().err


def test_thousands_of_errors_print_a_capped_list_and_a_count(tmp_path, capsys):
    spec = write(tmp_path, NET.format(body="foo()\n" * 3_000))  # 9,015 tokens
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.count("error[NS201]") == 50
    assert err.rstrip().endswith("... and 2950 more errors\n3000 errors found")
    assert main(["check", str(spec), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["error_count"], len(report["errors"])) == (False, 3_000, 50)


def test_json_stays_json_when_netspec_itself_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NETSPEC_DEBUG", raising=False)
    monkeypatch.setattr(netspec, "load", lambda *a, **k: 1 / 0)
    assert main(["check", str(write(tmp_path, NET.format(body="relu()"))), "--format", "json"]) == 3
    out = capsys.readouterr()
    assert json.loads(out.out) == {"ok": False, "internal_error": "ZeroDivisionError: division by zero"}
    assert "This is a bug in netspec" in out.err


FULL = 4 * 1024 * 1024 - 100  # bytes: the worst inputs fill the file-size limit
HEAVY_BLOCK = "block B(c) {\n" + "".join(f"  conv(c{' + 0' * 99}, kernel=1)\n" for _ in range(40)) + "}\n"
WORST = {  # name: (text, line, column, message) of the first error
    "lists": ("let a0 = [1, 2]\n" + "".join(f"let a{i + 1} = [a{i}, a{i}]\n" for i in range(60))
              + NET.format(body="relu()"),
              16, 11, "a list holding more than 100,000 items, nested lists counted through"),
    "doubling": ("let a0 = [1]\n" + "".join(f"let a{i + 1} = a{i} + a{i}\n" for i in range(40))
                 + NET.format(body="relu()"),
                 18, 11, "a list of 131,072 items (limit 100,000)"),
    "nesting": ("let a = " + "1 + (" * 100_000 + "1" + ")" * 100_000 + "\n" + NET.format(body="relu()"),
                1, 518, "operators, brackets and groups nest more than 100 levels deep here"),
    "nested groups": (NET.format(body="{" * (FULL // 2) + "relu()" + "}" * (FULL // 2)),
                      3, 103, "operators, brackets and groups nest more than 100 levels deep here"),
    "list literal": ("let a = [" + "1, " * (FULL // 3) + "1]\n" + NET.format(body="relu()"),
                     1, 15_004, "more than 10,000 tokens in one file"),
    "statements": (NET.format(body="relu()\n" * (FULL // 7)), 3332, 1, "more than 10,000 tokens in one file"),
    "unary minus": ("let a = " + "- " * (FULL // 2) + "1\n" + NET.format(body="relu()"),
                    1, 20_003, "more than 10,000 tokens in one file"),
    "repeats": (NET.format(body="{ { relu() * 10000 } * 10000 } * 10000"),
                3, 7, "the network instantiates more than 10,000 layers, blocks and groups"),
    "arguments": (HEAVY_BLOCK + NET.format(body="B(8) * 250"),
                  41, 268, "evaluating the spec's expressions takes more than 200,000 steps"),
    "lets": ("let a = range(100000)\n" + "".join(f"let b{i} = sum(a)\n" for i in range(1000))
             + NET.format(body="relu()"),
             2, 10, "evaluating the spec's expressions takes more than 200,000 steps"),
}


@pytest.mark.parametrize("name", WORST)
def test_worst_inputs_are_refused_located_and_within_memory(tmp_path, name):
    """The worst input found for each limit (bench/limits_speed.py times them all), checked by the command in a
    process capped at 1 GiB of address space: one located NS213. The timeout only stops a hang; the bench
    holds the speed (well under a second each)."""
    text, line, column, message = WORST[name]
    assert len(text.encode()) <= 4 * 1024 * 1024
    path = write(tmp_path, text, "worst.net")
    script = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
              "from netspec.cli import main\nsys.exit(main(['check', sys.argv[1]]))\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "NETSPEC_DEBUG": ""})
    assert result.returncode == 1 and "MemoryError" not in result.stderr, result.stderr[-600:]
    assert result.stderr.count("error[") == 1
    assert result.stderr.startswith(f"{path}:{line}:{column}: error[NS213]: {message}\n")


def test_no_spec_text_reaches_eval_exec_or_unsafe_loaders():
    """A static check of the package: no eval/exec, no YAML, torch.load only with weights_only=True,
    and pickle only through the CIFAR-10 reader's arrays-only unpickler."""
    found = []
    for path in sorted((ROOT / "netspec").rglob("*.py")):
        tree = python_ast.parse(path.read_text())
        for node in python_ast.walk(tree):
            if isinstance(node, python_ast.Call):
                func = python_ast.unparse(node.func)
                if func in ("eval", "exec", "__import__") or func.startswith(("yaml.", "marshal.")):
                    found.append(f"{path.name}: {func}")
                if func == "torch.load" and not any(k.arg == "weights_only" and python_ast.unparse(k.value) == "True"
                                                    for k in node.keywords):
                    found.append(f"{path.name}: torch.load without weights_only=True")
                if func in ("pickle.load", "pickle.loads"):
                    found.append(f"{path.name}: {func}")
            if isinstance(node, python_ast.ClassDef) and any("Unpickler" in python_ast.unparse(b) for b in node.bases):
                assert path.name == "datasets.py" and node.name == "_ArraysOnly", f"{path.name}: {node.name}"
    assert found == []
    source = (ROOT / "netspec" / "train" / "datasets.py").read_text()
    assert re.search(r'raise pickle.UnpicklingError\(f"refusing to load', source)


def test_import_names_that_cannot_be_files(tmp_path):
    nul = write(tmp_path, 'import "a\x00b.net"\n' + NET.format(body="relu()"))
    [error] = errors_of(nul)
    assert error.code == "NS209" and error.message.endswith("embedded null byte") and error.span.line == 1
    (tmp_path / "loop.net").symlink_to(tmp_path / "loop2.net")
    (tmp_path / "loop2.net").symlink_to(tmp_path / "loop.net")
    [error] = errors_of(write(tmp_path, 'import "loop.net"\n' + NET.format(body="relu()")))
    assert error.code == "NS209" and "loop" in error.message.lower() and error.span.line == 1


def test_names_that_would_break_the_compiled_module_are_refused(tmp_path):
    text = "network class {\n  input x: [1, 8, 8]\n  lambda: conv(2, kernel=3)\n  forward: relu()\n  ok_: relu()\n}\n"
    errors = errors_of(write(tmp_path, text))
    assert [(e.code, e.span.line, e.message) for e in errors] == [
        ("NS203", 1, "'class' cannot name a network: it is a Python keyword"),
        ("NS203", 3, "'lambda' cannot name a layer: it is a Python keyword"),
        ("NS203", 4, "'forward' cannot name a layer: the compiled torch module already has an attribute of that name")]


@pytest.mark.parametrize("ending, where, char", [("\r\n", "3:1", "\\x08"), ("\r\r\n", "3:1", "\\x08"),
                                                 ("\x0c\n", "3:1", "\\x08"), ("\u2028\n", "1:12", "\\u2028")],
                         ids=["crlf", "cr-crlf", "ff", "ls"])
def test_line_endings_other_than_newline_keep_errors_located(tmp_path, ending, where, char, capsys):
    """Lark counts lines by \\n alone; the renderer must too (str.splitlines would also split at \\r, \\f...)."""
    spec = tmp_path / "spec.net"
    spec.write_bytes(f"network N {{{ending}  input x: [1, 4, 4]{ending}\x08relu(){ending}}}{ending}"
                     .encode("utf-8"))
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:{where}: error[NS100]: unexpected character '{char}'" in err
    if where == "3:1":
        assert "3 | \u2408relu()" in err and "  | ^\n" in err  # the control character drawn as a picture


@pytest.mark.parametrize("expression, message", [
    ("0 ** -1", "division by zero"), ("0.0 ** -0.5", "division by zero"),
    ("(-8) ** 0.5", "the result is not a real number"), ("1e308 * 10", "inf is larger than any plausible size "
                                                                      "(limit 1e18)")])
def test_arithmetic_corners_are_errors_at_the_expression(tmp_path, expression, message):
    """Found by the long fuzz run (0 ** -1 raised ZeroDivisionError through the checker)."""
    [error] = errors_of(write(tmp_path, f"let a = {expression}\n" + NET.format(body="relu()")))
    assert (error.span.line, error.span.col, error.message) == (1, 9, message)


def test_an_unchanged_import_is_parsed_once_and_a_changed_one_again(tmp_path):
    """The language server checks a spec at every keystroke: the trees of files whose text did not change are
    reused (netspec.semantics.program), and any change of the text parses it again."""
    from netspec.ground.errors import Sources
    from netspec.semantics.program import load_program

    write(tmp_path, "block Head(c) { flatten() -> linear(c) }\n", "head.net")
    spec = write(tmp_path, 'import "head.net"\n' + NET.format(body="Head(3)"))
    trees = [{}, {}, {}]
    load_program(spec, Sources(), trees=trees[0])
    load_program(spec, Sources(), trees=trees[1], texts={spec.resolve(): spec.read_text().replace("(3)", "(4)")})
    head = str(tmp_path / "head.net")
    assert trees[1][head] is trees[0][head] and trees[1][str(spec)] is not trees[0][str(spec)]
    write(tmp_path, "block Head(c) { flatten() -> linear(c + 1) }\n", "head.net")
    graph = netspec.load(spec)
    load_program(spec, Sources(), trees=trees[2])
    assert trees[2][head] is not trees[0][head] and graph.nodes[-1].shape == (4,)
