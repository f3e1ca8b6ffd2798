"""Fuzzing the front door: every input ends in a valid report or located errors, within 2 s.

The suite runs a short, derandomised budget (the same inputs every run, so CI is not flaky);
`python bench/fuzz.py` runs a long random one (docs/reliability.md has its figures).
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import netspec
from netspec.semantics.program import load_program
from fuzz_inputs import fixed_budget as fuzz  # noqa: E402
from fuzz_inputs import (FILE_KINDS, SEEDS, SPECS, agrees_with_torch, check_front_door, hostile_file,
                         mutated_spec, random_network, syntax_valid)
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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and device files are POSIX")
@pytest.mark.parametrize("imported", [False, True], ids=["spec", "import"])
@pytest.mark.parametrize("kind", FILE_KINDS)
@fuzz(2)
@given(data=st.data())
def test_files_of_every_kind_end_in_one_located_error(kind, imported, data):
    """`netspec check` on a FIFO, a folder, a link loop, a device... (or a spec importing one), in a process of
    its own: it ends (the timeout only stops a hang) with exit 1 or 2 and one error, at the import when it is
    imported; never 3."""
    case = data.draw(hostile_file([kind], imported))
    with tempfile.TemporaryDirectory() as folder:
        spec, target = case.make(Path(folder))
        result = subprocess.run([sys.executable, "-m", "netspec", *case.arguments(spec)], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "NETSPEC_DEBUG": "", "NETSPEC_PATH": ""})
    assert result.returncode in (1, 2), (case, result.stderr[-1000:])
    assert result.stderr.count("error[") == 1, (case, result.stderr[-1000:])
    first = result.stderr.splitlines()[0]
    assert re.fullmatch(r"(\S+:\d+:\d+: )?error\[NS\d{3}\]: .+", first), first
    if case.imported:  # at the import, or inside the imported file's text
        assert first.startswith((f"{spec}:1:1: error[", f"{target}:")), (case, first)
    else:
        assert first.startswith(("error[NS209]: ", "error[NS210]: ", f"{target}:")), (case, first)


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
