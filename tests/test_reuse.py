"""What a check reuses, so that a language server answers a keystroke in a large spec fast (docs/editors.md): a large
text is parsed in pieces, and only the pieces an edit touched are parsed again; a block instance with the arguments
and input shapes of one lowered before is a renamed copy of it. Neither may change what a check finds: the whole
parse and the lowering of every instance afresh are the oracles."""

import dataclasses
import sys
from pathlib import Path

import pytest
from hypothesis import given

import netspec.language.parse as parse_module
from conftest import ROOT
from fuzz_inputs import fixed_budget, mutated_spec, syntax_valid
from netspec.ground.errors import NetspecError, Sources, Span
from netspec.ground.limits import DEFAULT
from netspec.language.parse import parse_in_pieces, parser
from netspec.semantics.lower import lower
from netspec.semantics.program import load_program

sys.path.insert(0, str(ROOT / "bench"))
from check_speed import generated_spec  # noqa: E402

SPEC_FILES = sorted(p for folder in ("specs", "tests", "examples") for p in (ROOT / folder).rglob("*.net"))


def whole(text: str, file: str = "f.net"):
    """The text parsed in one piece, as netspec parses a small text; None where it does not parse."""
    try:
        return parse_module._ToAst(file, DEFAULT.nesting).transform(parser().parse(text.lstrip("\ufeff"),
                                                                                    start="module"))
    except Exception:
        return None


def spans(tree) -> list:
    """Every span in a tree (a node's own, its labels' and names'), with the type of the node holding it, in order:
    trees compare without their spans (ast.py), these with them."""
    if isinstance(tree, (list, tuple)):
        return [found for item in tree for found in spans(item)]
    if isinstance(tree, Span):
        return [tree]
    if not dataclasses.is_dataclass(tree):
        return []
    return [(type(tree).__name__, f.name, found) for f in dataclasses.fields(tree)
            for found in spans(getattr(tree, f.name))]


def same_tree(got, expected) -> bool:
    return got == expected and spans(got) == spans(expected)


@pytest.fixture
def parses(monkeypatch):
    """The pieces Lark parses (each piece's start symbol), however the parse is reached."""
    called: list[str] = []
    real = parser()

    class Counting:
        def parse(self, text, start):
            called.append(start)
            return real.parse(text, start=start)

    monkeypatch.setattr(parse_module, "parser", lambda: Counting())
    parse_module._PIECES.clear()
    return called


# Parsing in pieces ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lines", [1, 5])
def test_every_spec_in_the_repository_parsed_in_pieces_is_the_same_tree(lines):
    compared = 0
    for path in SPEC_FILES:
        text = path.read_text(errors="replace")
        expected = whole(text, str(path))
        got = parse_in_pieces(text, str(path), DEFAULT.nesting, lines)
        assert (got is not None and same_tree(got, expected)) or (got is None and expected is None) or \
            (got is None and path.name == "too_deep.net"), path  # nesting refused: the whole parse reports it
        compared += got is not None
    assert compared >= 100


def test_an_edit_inside_a_large_body_parses_one_piece_again(parses):
    text = generated_spec(1000)
    first = parse_module.parse(text, "deep.net")
    assert len(parses) > 30 and set(parses) == {"module", "statements"}  # cut in pieces, each parsed once
    parses.clear()
    edited = text.replace("linear(10)", "linear(12)")
    again = parse_module.parse(edited, "deep.net")
    assert parses == ["statements"]
    assert same_tree(again, whole(edited, "deep.net")) and again != first
    parses.clear()
    assert parse_module.parse(edited, "deep.net") == again and parses == []


@pytest.mark.parametrize("edit", ["add a line", "remove a line", "add a statement"])
def test_an_edit_that_adds_or_removes_lines_moves_the_pieces_below_it_without_parsing_them(edit, parses):
    text = generated_spec(1000)
    parse_module.parse(text, "deep.net")
    lines = text.split("\n")
    if edit == "add a line":
        lines.insert(400, "")
    elif edit == "remove a line":
        del lines[400]
    else:
        lines.insert(400, "  extra: relu()")
    parses.clear()
    edited = "\n".join(lines)
    assert same_tree(parse_module.parse(edited, "deep.net"), whole(edited, "deep.net"))
    # the network's header and closing brace (their span grew or shrank) and the run of statements edited (two
    # where the edit moved the cut between them); the runs below it are moved, not parsed
    assert parses.count("module") == 1 and 1 <= parses.count("statements") <= 2 and len(parses) <= 3


def test_a_mistake_in_a_large_text_is_reported_as_the_whole_parse_reports_it():
    text = generated_spec(1000).replace("  block500: Residual(16)", "  block500: Residual(16",)
    with pytest.raises(NetspecError) as caught:
        parse_module.parse(text, "deep.net")
    (found,) = caught.value.diagnostics
    assert (found.code, found.span.line) == ("NS100", 516)
    assert found.message.startswith("unexpected name 'block501'; expected")


@fixed_budget(60)
@given(data=mutated_spec())
def test_a_mutated_spec_parsed_in_pieces_is_the_same_tree_or_parsed_whole(data):
    _, raw = data
    text = raw.decode("utf-8", "replace")
    got = parse_in_pieces(text, "f.net", DEFAULT.nesting, 2)
    assert got is None or same_tree(got, whole(text))


@fixed_budget(30)
@given(text=syntax_valid())
def test_a_grammar_sentence_parsed_in_pieces_is_the_same_tree(text):
    got = parse_in_pieces(text, "f.net", DEFAULT.nesting, 1)
    assert got is None or same_tree(got, whole(text))


# Lowering identical block instances once --------------------------------------------------------------------------

def lowered(program, name, reuse: bool):
    """Everything a check keeps of a lowering: the graph, each layer's span, scope and shape, the scopes, and the
    diagnostics; or the error that stopped it."""
    try:
        graph = lower(program, name, reuse_instances=reuse)
    except NetspecError as err:
        return [(d.code, d.span, d.message, d.notes) for d in err.diagnostics]
    return (graph.model_dump(), [(n.span, n.scope, n.shape) for n in graph.nodes],
            {k: (v.span, v.kind, v.arguments, v.defaulted) for k, v in graph.scopes.items()},
            [(d.code, d.span, d.message, d.notes, d.related) for d in graph.diagnostics])


def test_every_network_in_the_repository_lowers_the_same_with_instances_copied():
    compared = 0
    for path in SPEC_FILES:
        try:
            program = load_program(path, Sources())
        except NetspecError:
            continue
        for name in program.root.networks:
            assert lowered(program, name, True) == lowered(program, name, False), f"{path}:{name}"
            compared += 1
    assert compared >= 150


def test_instances_with_the_same_arguments_and_input_share_one_lowering(tmp_path):
    path = tmp_path / "deep.net"
    path.write_text(generated_spec(50))
    graph = lower(load_program(path, Sources()))
    convs = [n for n in graph.nodes if n.name.endswith(".conv1")]
    assert [n.name for n in convs[:2]] == ["block0.conv1", "block1.conv1"] and len(convs) == 50
    assert len({id(n.args) for n in convs}) == 1 and len({id(n) for n in convs}) == 50
    assert convs[7].inputs == ["block6.6"] and convs[7].scope == ("block7",)


@pytest.mark.parametrize("ceiling", [3, 40, 200])
def test_the_instance_ceiling_stops_a_copied_instance_where_it_stops_a_lowered_one(ceiling, tmp_path):
    path = tmp_path / "deep.net"
    path.write_text(generated_spec(30))
    program = load_program(path, Sources(), dataclasses.replace(DEFAULT, instances=ceiling))
    assert lowered(program, None, True) == lowered(program, None, False)


@fixed_budget(60)
@given(data=mutated_spec())
def test_a_mutated_spec_lowers_the_same_with_instances_copied(data):
    name, raw = data
    folder = ROOT / "specs" / Path(name).parent
    try:
        program = load_program(folder / "mutated.net", Sources(), texts={
            (folder / "mutated.net").resolve(): raw.decode("utf-8", "replace")})
    except NetspecError:
        return
    for network in program.root.networks:
        assert lowered(program, network, True) == lowered(program, network, False)
