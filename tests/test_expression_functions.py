"""make_divisible's round_limit (timm's make_divisible) and round(x, digits), which used to end `netspec check`
with an internal error."""

import pytest

import netspec
from netspec import NetspecError
from netspec.cli import main
from netspec.language.evaluate import make_divisible


def timm_make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm.layers.helpers.make_divisible, as timm writes it."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


@pytest.mark.parametrize("value, divisor, min_value, round_limit", [
    (20, 16, None, 0.9), (20, 16, None, 0.0), (64 * 0.25, 8, None, 0.0), (37.5, 8, 32, 0.0), (1280 * 1.3, 8, None, 0.9),
    (11.9, 8, None, 0.9), (11.9, 8, None, 0.5), (3.0, 8, 16, 0.9), (100.0, 16, None, 0.95), (24, 8, None, 1.0),
])
def test_make_divisible_is_timms(value, divisor, min_value, round_limit):
    assert make_divisible(value, divisor, min_value, round_limit) == timm_make_divisible(value, divisor, min_value,
                                                                                         round_limit)


def test_make_divisible_defaults_to_torchvisions_rounding():
    ops_misc = pytest.importorskip("torchvision.models._utils")
    for value in (20, 32 * 1.1, 24 * 0.5, 1280 * 1.3, 11.9, 96 * 0.75):
        assert make_divisible(value, 8) == make_divisible(value, 8, round_limit=0.9) == ops_misc._make_divisible(
            value, 8)


def width(spec, expression):
    """The value of an expression, read back as a linear layer's width."""
    return netspec.load(spec(f"network N {{ input x: [4]  linear({expression}) }}")).nodes[-1].shape[0]


@pytest.mark.parametrize("expression, value", [
    ("make_divisible(20, 16)", 32), ("make_divisible(20, 16, round_limit=0.0)", 16),
    ("make_divisible(20, 16, 8, 0.0)", 16),
    ("make_divisible(20, 16, min_value=24, round_limit=0)", 24), ("make_divisible(64 * 0.25, 8, round_limit=0.0)", 16),
])
def test_make_divisible_takes_round_limit_by_name_or_position(spec, expression, value):
    assert width(spec, expression) == value


@pytest.mark.parametrize("expression, code, message", [
    ("make_divisible(20, 16, round_limit=\"low\")", "NS212", "make_divisible needs a number, got \"low\""),
    ("make_divisible(20, 16, 8, 0.9, 1)", "NS211",
     "make_divisible takes (value, divisor, min_value=none, round_limit=0.9), got 5 positional"),
    ("make_divisible(20, 16, 8, round_limit=0.5, min_value=8)", "NS203",
     "make_divisible's min_value given twice, by position and by name"),
    ("make_divisible(20, 16, roundlimit=0.5)", "NS202", "make_divisible has no argument 'roundlimit'"),
])
def test_make_divisible_mistakes_are_located(spec, expression, code, message):
    with pytest.raises(NetspecError) as caught:
        netspec.load(spec(f"network N {{\n  input x: [4]\n  linear({expression})\n}}"))
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.message, diagnostic.span.line) == (code, message, 3)


def test_round_to_digits_checks_in_a_layer_and_in_a_let(spec, capsys):
    """round(x, 2) passed its digits where the expression belonged: an AttributeError, exit 3."""
    path = spec("let P = round(0.123, 2)\nnetwork R {\n  input x: [3, 8, 8]\n  dropout(round(0.1251, 3))\n"
                "  dropout(P)\n}\n")
    assert main(["check", str(path)]) == 0
    graph = netspec.load(path)
    assert [n.args.p for n in graph.nodes[1:]] == [0.125, 0.12]


@pytest.mark.parametrize("expression, value", [
    ("round(2.5)", "2"), ("round(0.125, 2)", "0.12"), ("round(1234.5678, 2)", "1234.57"), ("round(1234, -2)", "1200"),
    ("round(-1251, -1)", "-1250"), ("round(1234.5, -400)", "0"), ("round(7, 10 ** 18)", "7"),
    ("round(5 * 10 ** 17, -(10 ** 18))", "0"),
])
def test_round_with_digits_is_pythons_and_any_digits_are_cheap(spec, expression, value):
    graph = netspec.load(spec(f"let V = {expression}\nnetwork N {{ input x: [4]  linear(4) if V == {value} }}"))
    assert [n.op for n in graph.nodes] == ["input", "linear"]


@pytest.mark.parametrize("expression, code, message", [
    ("round(1.5, 0.5)", "NS212", "round needs an integer, got 0.5"),
    ("round(\"a\", 2)", "NS212", "round needs a number, got \"a\""),
    ("round(1, 2, 3)", "NS211", "round takes 1 or 2 arguments, got 3"),
])
def test_round_mistakes_are_located(spec, expression, code, message):
    with pytest.raises(NetspecError) as caught:
        netspec.load(spec(f"network N {{\n  input x: [4]\n  linear({expression})\n}}"))
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.message, diagnostic.span.line) == (code, message, 3)
