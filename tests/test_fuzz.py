"""Fuzzing the front door: every input ends in a valid report or located errors, within 2 s.

The suite runs a short, derandomised budget (the same inputs every run, so CI is not flaky);
`python bench/fuzz.py` runs a long random one (docs/reliability.md has its figures).
"""


import pytest
from hypothesis import given

import netspec
from netspec.semantics.program import load_program
from fuzz_inputs import fixed_budget as fuzz  # noqa: E402
from fuzz_inputs import (SEEDS, SPECS, agrees_with_torch, check_front_door, mutated_spec, random_network,
                         syntax_valid)
from netspec.ground.errors import NetspecError

@fuzz(300)
@given(case=mutated_spec())
def test_mutated_specs_end_in_a_report_or_located_errors(case, workspace):
    name, data = case
    path = workspace / name
    path = path.with_name("_mutated.net")
    path.write_bytes(data)
    check_front_door(path)


@fuzz(150)
@given(text=syntax_valid())
def test_grammar_sentences_end_in_a_report_or_located_errors(text, workspace):
    path = workspace / "_sentence.net"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_front_door(path)


@fuzz(80)
@given(text=random_network())
def test_random_networks_check_and_agree_with_torch(text, workspace):
    pytest.importorskip("torch")
    path = workspace / "_network.net"
    path.write_text(text)
    try:
        graph = netspec.load(path)
    except NetspecError as err:  # shape mistakes the generator made on purpose: reported where they are
        assert all(d.span is not None and d.span.file == str(path) for d in err.diagnostics), err
        assert all(d.code in ("NS203", "NS301", "NS302", "NS303", "NS304") for d in err.diagnostics), err
        return
    agrees_with_torch(graph)
    assert check_front_door(path) == "ok"


def test_the_seeds_themselves_check(in_repo):
    """The mutations start from valid specs: the fuzz tests above would prove little otherwise."""
    assert len([name for name in SEEDS if not name.startswith("torchvision/")]) == 24
    for name in SEEDS:
        if "blocks/" in name:
            continue
        networks = load_program(SPECS / name).root.networks
        for network in networks if len(networks) > 1 else [None]:
            path = SPECS / name if network is None else f"{SPECS / name}:{network}"
            assert check_front_door(path) == "ok", path
