"""Highlighting: the Pygments lexer (found through its entry point) and the VS Code extension's TextMate grammar,
run here by a small TextMate tokenizer over Python's `re`."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pygments = pytest.importorskip("pygments")

from pygments.lexers import get_lexer_by_name, get_lexer_for_filename  # noqa: E402
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String  # noqa: E402

from netspec.language.evaluate import FUNCTIONS  # noqa: E402
from netspec.highlight import NetspecLexer  # noqa: E402
from netspec.ops import OPS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
SPECS = sorted((ROOT / "specs").rglob("*.net")) + sorted((ROOT / "examples").rglob("*.net"))

SAMPLE = """import "blocks/resnet.net"
let width = 1.5e-3  # a comment
network Net(growth=32, cfg=[6, 12]) {
  input x: [3, 224, 224]
  for i in range(len(cfg[1:])) {
    "denselayer{i + 1}": Dense(growth * 2 ** i // 3, bn=true) if i >= 1 else relu()
  }
  output: linear(10, bias=false) -> ...Tail()
}
"""


def tokens(text: str) -> list[tuple]:
    return [(kind, value) for kind, value in NetspecLexer().get_tokens(text) if value.strip()]


def test_pygments_finds_the_lexer_by_name_and_by_file_name():
    assert type(get_lexer_by_name("netspec")) is NetspecLexer
    assert type(get_lexer_for_filename("resnet.net")) is NetspecLexer


def test_every_spec_lexes_without_error_tokens():
    assert len(SPECS) > 30
    for path in SPECS:
        errors = [value for kind, value in NetspecLexer().get_tokens(path.read_text()) if kind in Error]
        assert errors == [], path


def test_the_lexer_covers_the_grammar():
    found = tokens(SAMPLE)
    expected = [
        (Keyword.Namespace, "import"), (String.Double, '"'), (String.Double, "blocks/resnet.net"), (String.Double, '"'),
        (Keyword.Declaration, "let"), (Name.Constant, "width"), (Operator, "="), (Number.Float, "1.5e-3"),
        (Comment.Single, "# a comment"),
        (Keyword.Declaration, "network"), (Name.Class, "Net"),
    ]
    assert found[:len(expected)] == expected
    kinds = dict((value, kind) for kind, value in found)
    assert kinds["input"] is Keyword and kinds["x"] is Name.Variable
    assert kinds["for"] is Keyword and kinds["i"] is Name and kinds["in"] is Keyword
    assert kinds["range"] is Name.Builtin and kinds["len"] is Name.Builtin and kinds["relu"] is Name.Builtin
    assert kinds["Dense"] is Name.Function and kinds["Tail"] is Name.Function  # block instances
    assert kinds["output"] is Name.Label  # `output:` labels a step
    assert kinds["true"] is Keyword.Constant and kinds["false"] is Keyword.Constant
    assert kinds["if"] is Keyword and kinds["else"] is Keyword
    assert kinds["->"] is Operator and kinds["..."] is Operator and kinds["**"] is Operator and kinds["//"] is Operator
    string = [(kind, value) for kind, value in found if kind in String][3:]
    assert string == [(String.Double, '"'), (String.Double, "denselayer"), (String.Interpol, "{"),
                      (String.Interpol, "}"), (String.Double, '"')]
    assert (Number.Integer, "1") in found
    # Inside brackets a name before ':' is a slice bound, not a label.
    second_cfg = [i for i, (_, value) in enumerate(found) if value == "cfg"][1]  # in len(cfg[1:])
    after = found[second_cfg:second_cfg + 5]
    assert after == [(Name, "cfg"), (Punctuation, "["), (Number.Integer, "1"), (Punctuation, ":"), (Punctuation, "]")]


def test_every_registered_op_and_function_is_a_builtin():
    for name in [op for op in OPS if op != "input"] + list(FUNCTIONS):
        assert tokens(f"{name}()")[0] == (Name.Builtin, name), name
    assert tokens("input x")[0] == (Keyword, "input")
    assert tokens("my_input()")[0] == (Name.Function, "my_input")  # a name only starting with a keyword


def test_pygmentize_colours_a_spec():
    pygmentize = str(Path(sys.executable).parent / "pygmentize")  # the script pip installed beside this Python
    html = subprocess.run([pygmentize, "-l", "netspec", "-f", "html", str(ROOT / "specs/lenet.net")],
                          capture_output=True, text=True, check=True).stdout
    assert ('<span class="kd">network</span><span class="w"> </span><span class="nc">LeNet</span><span class="p">('
            '</span><span class="n">classes</span><span class="o">=</span><span class="mi">10</span>') in html
    assert '<span class="nb">conv</span><span class="p">(</span><span class="mi">6</span>' in html
    assert '<span class="c1"># The common modern LeNet (as in d2l.ai): 28x28 MNIST digits padded by 2,</span>' in html
    guessed = subprocess.run([pygmentize, "-N", "lenet.net"], capture_output=True, text=True)
    assert guessed.stdout.strip() == "netspec"


# -- the TextMate grammar ------------------------------------------------------------------------------------------


class TextMate:
    """Enough of a TextMate engine for this grammar: match, begin/end with captures, include, and the rule that
    the earliest match wins (ties to the first pattern, an end pattern before its inner ones)."""

    def __init__(self, grammar: dict):
        self.grammar = grammar

    def patterns(self, rules: list[dict]) -> list[dict]:
        out = []
        for rule in rules:
            if "include" in rule:
                target = self.grammar["repository"][rule["include"].removeprefix("#")]
                out.extend(self.patterns(target["patterns"]) if "match" not in target and "begin" not in target
                           else [target])
            else:
                out.append(rule)
        return out

    def tokenize(self, text: str) -> list[tuple[str, tuple[str, ...]]]:
        """(text, scopes) for every piece of `text`, fed a line at a time as an editor does."""
        found = []
        # (the begin/end rule we are inside, its inner patterns, the scopes inside it, the scopes of its end)
        root = (self.grammar["scopeName"],)
        stack = [(None, self.patterns(self.grammar["patterns"]), root, root)]
        for line in text.split("\n"):
            line += "\n"
            position = 0
            while position < len(line):
                end, rules, scopes, end_scopes = stack[-1]
                best = None
                if end is not None:
                    match = re.compile(end["end"]).search(line, position)
                    if match:
                        best = (match.start(), -1, match, end)
                for order, rule in enumerate(rules):
                    match = re.compile(rule.get("match") or rule["begin"]).search(line, position)
                    if match and (best is None or match.start() < best[0]):
                        best = (match.start(), order, match, rule)
                if best is None:
                    found.append((line[position:], scopes))
                    break
                start, order, match, rule = best
                if start > position:
                    found.append((line[position:start], scopes))
                if order == -1:  # the end of the innermost begin/end rule
                    self.emit(found, match, end_scopes, rule.get("endCaptures", {}))
                    stack.pop()
                elif "match" in rule:
                    inner = scopes + ((rule["name"],) if "name" in rule else ())
                    self.emit(found, match, inner, rule.get("captures", {}))
                else:
                    inner = scopes + ((rule["name"],) if "name" in rule else ())
                    self.emit(found, match, inner, rule.get("beginCaptures", {}))
                    content = inner + ((rule["contentName"],) if "contentName" in rule else ())
                    stack.append((rule, self.patterns(rule.get("patterns", [])), content, inner))
                position = max(match.end(), position + (match.end() == start and order != -1))
        return [(piece, scopes) for piece, scopes in found if piece.strip()]

    @staticmethod
    def emit(found: list, match: re.Match, scopes: tuple, captures: dict) -> None:
        at = match.start()
        for group in sorted((int(g) for g in captures if int(g) > 0 and match.group(int(g)) is not None),
                            key=match.start):
            if match.start(group) > at:
                found.append((match.string[at:match.start(group)], scopes))
            found.append((match.group(group), scopes + (captures[str(group)]["name"],)))
            at = match.end(group)
        whole = scopes + ((captures["0"]["name"],) if "0" in captures else ())
        if match.end() > at:
            found.append((match.string[at:match.end()], whole))


@pytest.fixture(scope="module")
def textmate():
    return TextMate(json.loads((VSCODE / "syntaxes" / "netspec.tmLanguage.json").read_text()))


def scope(pieces, text: str, occurrence: int = 0) -> str:
    """The innermost scope of the `occurrence`-th piece equal to `text`."""
    return [scopes for piece, scopes in pieces if piece == text][occurrence][-1]


def test_every_textmate_regex_compiles_in_python(textmate):
    count = 0

    def walk(node):
        nonlocal count
        if isinstance(node, dict):
            for key in ("match", "begin", "end"):
                if key in node:
                    re.compile(node[key])
                    count += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(textmate.grammar)
    assert count == 36


def test_textmate_scopes_keywords_strings_comments_and_numbers(textmate):
    pieces = textmate.tokenize(SAMPLE)
    assert scope(pieces, "import") == "keyword.control.import.netspec"
    assert scope(pieces, "blocks/resnet.net") == "string.quoted.double.netspec"
    assert scope(pieces, "let") == "storage.type.netspec"
    assert scope(pieces, "width") == "variable.other.constant.netspec"
    assert scope(pieces, "1.5e-3") == "constant.numeric.float.netspec"
    assert scope(pieces, "# a comment") == "comment.line.number-sign.netspec"
    assert scope(pieces, "network") == "storage.type.netspec"
    assert scope(pieces, "Net") == "entity.name.type.netspec"
    assert scope(pieces, "growth") == "variable.parameter.netspec"
    assert scope(pieces, "32") == "constant.numeric.integer.netspec"
    assert scope(pieces, "input") == "keyword.other.input.netspec"
    assert scope(pieces, "x") == "variable.parameter.input.netspec"
    assert scope(pieces, "for") == "keyword.control.loop.netspec"
    assert scope(pieces, "range") == "support.function.builtin.netspec"
    assert scope(pieces, "cfg", 1) == "variable.other.netspec"  # in a slice, not a label
    assert scope(pieces, "denselayer") == "string.quoted.double.netspec"
    assert scope(pieces, "{", 2) == "punctuation.section.interpolation.begin.netspec"
    assert [scopes for piece, scopes in pieces if piece == "i"][1] == (  # "denselayer{i + 1}"
        "source.netspec", "string.quoted.double.netspec", "meta.interpolation.netspec", "source.netspec.embedded",
        "variable.other.netspec")
    assert scope(pieces, "Dense") == "entity.name.function.block.netspec"
    assert scope(pieces, "**") == "keyword.operator.arithmetic.netspec"
    assert scope(pieces, "true") == "constant.language.boolean.netspec"
    assert scope(pieces, "if") == "keyword.control.conditional.netspec"
    assert scope(pieces, "relu") == "support.function.layer.netspec"
    assert scope(pieces, "output") == "entity.name.label.netspec"
    assert scope(pieces, "->") == "keyword.operator.chain.netspec"
    assert scope(pieces, "...") == "keyword.operator.spread.netspec"


def test_textmate_scopes_every_character_of_every_spec(textmate):
    for path in SPECS:
        bare = [piece for piece, scopes in textmate.tokenize(path.read_text()) if len(scopes) == 1]
        assert bare == [], path


def test_the_extension_declares_the_language_grammar_and_server():
    package = json.loads((VSCODE / "package.json").read_text())
    contributes = package["contributes"]
    assert contributes["languages"] == [{"id": "netspec", "aliases": ["netspec", "Netspec"], "extensions": [".net"],
                                         "configuration": "./language-configuration.json"}]
    assert contributes["grammars"] == [{"language": "netspec", "scopeName": "source.netspec",
                                        "path": "./syntaxes/netspec.tmLanguage.json"}]
    for relative in ("./language-configuration.json", "./syntaxes/netspec.tmLanguage.json", package["main"]):
        assert (VSCODE / relative).is_file(), relative
    assert contributes["configuration"]["properties"]["netspec.server.path"]["default"] == "netspec"
    main = (VSCODE / package["main"]).read_text()
    assert 'args: ["lsp"]' in main and "vscode-languageclient/node" in main
    assert "vscode-languageclient" in package["dependencies"]
    # the inlay-hint setting: the server's modes, handed over at start and on every change of the section
    from netspec.lsp.inlays import MODES

    setting = contributes["configuration"]["properties"]["netspec.inlayHints"]
    assert (setting["enum"], setting["default"]) == (list(MODES), MODES[0])
    assert 'initializationOptions: { inlayHints: settings.get("inlayHints", "shapes+params") }' in main
    assert 'synchronize: { configurationSection: "netspec" }' in main
    configuration = json.loads((VSCODE / "language-configuration.json").read_text())
    assert configuration["comments"] == {"lineComment": "#"}
    assert configuration["brackets"] == [["{", "}"], ["[", "]"], ["(", ")"]]
    assert {pair["open"] for pair in configuration["autoClosingPairs"]} == {"{", "[", "(", '"'}
