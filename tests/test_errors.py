"""Each error class, rendered exactly as users see it (golden files in tests/errors/*.out).

Regenerate after an intended change with `NETSPEC_REGEN=1 pytest tests/test_errors.py`, then read the diff.
"""

import re
from pathlib import Path

import pytest

import netspec
from netspec import NetspecError, Sources, render_all

from conftest import regenerate

ERRORS = Path(__file__).parent / "errors"
WARNING_CASES = {"unused_value"}  # cases whose networks check, with warnings
CASES = sorted(p.stem for p in ERRORS.glob("*.net") if p.stem != "import_cycle_b")


def rendered(stem: str) -> tuple[str, list[str]]:
    """The errors of a case, or its warnings (a case of warnings alone loads, with them in `graph.warnings`); a
    file of several networks shows each network's, in order."""
    sources = Sources()
    path = Path(f"tests/errors/{stem}.net")
    networks = re.findall(r"^network (\w+)", path.read_text(), re.MULTILINE) if stem in WARNING_CASES else [None]
    diagnostics = []
    for network in networks:
        spec = f"{path}:{network}" if network else str(path)
        try:
            diagnostics += netspec.load(spec, sources).warnings
        except NetspecError as err:
            diagnostics += err.diagnostics
    assert diagnostics, stem
    return render_all(diagnostics, sources) + "\n", [d.code for d in diagnostics]


@pytest.mark.parametrize("stem", CASES)
def test_error_output_matches_golden(stem, in_repo):
    text, _ = rendered(stem)
    golden = ERRORS / f"{stem}.out"
    if regenerate():
        golden.write_text(text)
    assert text == golden.read_text()


# The codes each case must produce, so a golden file cannot drift into accepting the wrong error.
EXPECTED_CODES = {
    "syntax_unclosed_bracket": ["NS100"],
    "syntax_bad_character": ["NS100"],
    "syntax_end_of_file": ["NS100"],
    "unknown_layer": ["NS201"],
    "unknown_argument": ["NS202"],
    "wrong_type": ["NS203", "NS203"],
    "missing_argument": ["NS204"],
    "undefined_name": ["NS205", "NS205"],
    "duplicate_name": ["NS206"],
    "recursive_block": ["NS207"],
    "import_cycle_a": ["NS208"],
    "missing_import": ["NS209"],
    "add_shape_mismatch": ["NS301"],
    "concat_shape_mismatch": ["NS301"],
    "kernel_too_large": ["NS302"],
    "non_positive_input": ["NS303"],
    "non_positive_channels": ["NS303", "NS303"],
    "connection_table": ["NS304"],
    "rank_mismatch": ["NS305"],
    "block_input_contract": ["NS306"],
    "too_many_positional": ["NS211"],
    "arithmetic": ["NS212"],
    "absurd_sizes": ["NS213", "NS213"],
    "many_errors": ["NS201", "NS202", "NS205"],
    "ambiguous_modifier": ["NS215", "NS215"],
    "early_label": ["NS215"],
    "unused_value": ["NS401", "NS401"],
    "tensor_argument": ["NS203", "NS203"],
    "no_network": ["NS210"],
    "train_recipe": ["NS202", "NS203"],
    "import_outside": ["NS214"],
    "too_deep": ["NS213"],
    "too_many_params": ["NS213"],
    "not_utf8": ["NS100"],
    "not_capsules": ["NS305"],
    "reconstruction_size": ["NS301"],
    "ensemble_mismatch": ["NS301"],
}


def test_every_case_has_expected_codes():
    assert sorted(EXPECTED_CODES) == CASES


@pytest.mark.parametrize("stem", CASES)
def test_error_codes(stem, in_repo):
    _, codes = rendered(stem)
    assert codes == EXPECTED_CODES[stem]


def test_every_error_names_file_line_and_column(in_repo):
    for stem in CASES:
        text, _ = rendered(stem)
        first = text.splitlines()[0]
        if stem == "no_network":
            assert first.startswith("error[NS210]")
            continue
        path, line, col, rest = first.split(":", 3)
        assert path.startswith("tests/errors/") and int(line) >= 1 and int(col) >= 1, first
        assert "^" in text, stem


def test_the_catalogue_lists_and_tests_every_code():
    """docs/errors.md has a section for every code netspec can emit, and each code has a golden case."""
    import re

    root = Path(__file__).parent.parent
    emitted = set()
    for path in (root / "netspec").rglob("*.py"):
        emitted |= set(re.findall(r'"(NS\d{3})"', path.read_text()))
    catalogue = (root / "docs" / "errors.md").read_text()
    documented = set(re.findall(r"^## (NS\d{3}) — ", catalogue, re.MULTILINE))
    assert documented == emitted
    tested = {code for codes in EXPECTED_CODES.values() for code in codes}
    assert tested == emitted
    for code, body in re.findall(r"^## (NS\d{3}) — .*?\n(.*?)(?=^## |\Z)", catalogue, re.MULTILINE | re.DOTALL):
        named = [c for c in re.findall(r"`(\w+)`", body.split("Test")[-1]) if c in EXPECTED_CODES]
        assert named and all(code in EXPECTED_CODES[c] for c in named), code
