"""What a user's files may be besides text: a FIFO, a device, a link loop, a folder, a file too large.

Each ends in one error line and exit 1 or 2 (never 3, which is for netspec's own bugs), in a process of its own
with a timeout far above the time it takes (a fraction of a second): a FIFO opened the wrong way would block
for ever, /dev/zero read to its end would never end.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_inputs import fixed_budget

NET = 'import "{name}"\nnetwork N {{\n  input x: [1, 8, 8]\n  relu()\n}}\n'
HANG = 60  # seconds: only a hang reaches it
PIPE_HINT = "  = hint: a spec is a file on disk; pipes and devices are not read"

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and device files are POSIX")


def netspec(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m netspec ARGUMENTS` in `cwd`, stopped if it outlives HANG."""
    return subprocess.run([sys.executable, "-m", "netspec", *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=HANG, env={**os.environ, "NETSPEC_DEBUG": "", "NETSPEC_PATH": ""})


def importing(folder: Path, name: str) -> Path:
    spec = folder / "spec.net"
    spec.write_text(NET.format(name=name))
    return spec


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return result.stderr.splitlines()


def test_a_fifo_as_the_spec(tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    result = netspec("check", "pipe.net", cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result) == ["error[NS209]: pipe.net is a FIFO (named pipe), not a regular file", PIPE_HINT,
                             "1 error found"]


def test_a_fifo_imported_from_the_specs_folder(tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    importing(tmp_path, "pipe.net")
    result = netspec("check", "spec.net", cwd=tmp_path)
    assert result.returncode == 1
    assert lines(result)[0] == "spec.net:1:1: error[NS209]: pipe.net is a FIFO (named pipe), not a regular file"
    assert result.stderr.count("error[") == 1 and PIPE_HINT in lines(result)


def test_a_fifo_found_on_the_import_path(tmp_path):
    """Not a file, so not found by the search's first pass; the second says what it is rather than
    `file not found`."""
    (tmp_path / "lib").mkdir()
    os.mkfifo(tmp_path / "lib" / "pipe.net")
    (tmp_path / "project").mkdir()
    importing(tmp_path / "project", "pipe.net")
    result = netspec("check", "project/spec.net", "--import-path", "lib", cwd=tmp_path)
    assert result.returncode == 1
    assert lines(result)[0] == ("project/spec.net:1:1: error[NS209]: lib/pipe.net is a FIFO (named pipe), "
                                "not a regular file")


def test_dev_zero_imported_through_a_link(tmp_path):
    (tmp_path / "x.net").symlink_to("/dev/zero")
    importing(tmp_path, "x.net")
    refused = netspec("check", "spec.net", cwd=tmp_path)  # outside the spec's folder, once the link is followed
    assert refused.returncode == 1
    assert lines(refused)[0] == (f"spec.net:1:1: error[NS214]: this import reads "
                                 f"{os.path.relpath('/dev/zero', tmp_path)}, outside the folders imports may read")
    result = netspec("check", "spec.net", "--allow-any-import", cwd=tmp_path)
    assert result.returncode == 1
    assert lines(result)[0] == "spec.net:1:1: error[NS209]: x.net is a character device, not a regular file"
    assert result.stderr.count("error[") == 1


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_character_device_as_the_spec(tmp_path, device):
    result = netspec("check", device, cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result) == [f"error[NS209]: {device} is a character device, not a regular file", PIPE_HINT,
                             "1 error found"]


def test_a_loop_of_links_as_the_spec_and_as_an_import(tmp_path):
    (tmp_path / "a.net").symlink_to("b.net")
    (tmp_path / "b.net").symlink_to("a.net")
    result = netspec("check", "a.net", cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result) == ["error[NS209]: cannot read a.net: a loop of symbolic links", "1 error found"]
    importing(tmp_path, "a.net")
    result = netspec("check", "spec.net", cwd=tmp_path)
    assert result.returncode == 1
    assert lines(result)[0] == "spec.net:1:1: error[NS209]: cannot read a.net: a loop of symbolic links"
    # On the import path too, where the search's first pass sees no file there.
    result = netspec("check", "spec.net", "--import-path", ".", cwd=tmp_path)
    assert lines(result)[0] == "spec.net:1:1: error[NS209]: cannot read a.net: a loop of symbolic links"


def test_a_folder_and_a_dangling_link_imported(tmp_path):
    (tmp_path / "folder.net").mkdir()
    (tmp_path / "gone.net").symlink_to("nowhere.net")
    importing(tmp_path, "folder.net")
    result = netspec("check", "spec.net", cwd=tmp_path)
    assert (result.returncode, lines(result)[0]) == (
        1, "spec.net:1:1: error[NS209]: folder.net is a directory, not a spec file")
    importing(tmp_path, "gone.net")
    result = netspec("check", "spec.net", cwd=tmp_path)
    assert (result.returncode, lines(result)[0]) == (
        1, "spec.net:1:1: error[NS209]: file not found: gone.net")


def test_fmt_refuses_pipes_and_devices_and_walks_a_looping_folder_once(tmp_path):
    os.mkfifo(tmp_path / "pipe.net")
    for target, shown in (("pipe.net", "pipe.net is a FIFO (named pipe)"),
                          ("/dev/zero", "/dev/zero is a character device")):
        result = netspec("fmt", target, cwd=tmp_path)
        assert result.returncode == 2
        assert lines(result)[0] == f"error[NS209]: {shown}, not a regular file"
        assert lines(result)[-1] == "0 files reformatted, 0 left unchanged, 1 not formatted (see above)"
    (tmp_path / "tidy.net").write_text("network N {\n  input x: [1, 8, 8]\n  relu()\n}\n")
    (tmp_path / "again").symlink_to(".")  # a folder that holds itself
    result = netspec("fmt", "--check", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert lines(result)[-1] == "0 files would be reformatted, 1 left unchanged, 1 not formatted (see above)"


def test_a_spec_larger_than_the_limit_counted_as_read(tmp_path):
    """The size is what was read, not what stat says: a file that grows is still refused at 4 MiB."""
    (tmp_path / "big.net").write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    result = netspec("check", "big.net", cwd=tmp_path)
    assert result.returncode == 1
    assert lines(result)[0] == "error[NS213]: big.net is 4,194,305 bytes; specs are limited to 4,194,304"


# The language server's positions on a hostile line ----------------------------------------------------------------

def naive_units(text: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) if encoding == "utf-32" else len(text.encode("utf-16-le", "surrogatepass")) // 2


def naive_offset(text: str, line_start: int, line_end: int, character: int, encoding: str) -> int:
    """The first offset of the line whose column reaches `character`, walking the line one character at a time
    (the conversion TextIndex replaced)."""
    counted = 0
    for offset in range(line_start, line_end):
        if counted >= character:
            return offset
        counted += naive_units(text[offset], encoding)
    return line_end


@fixed_budget(60)
@given(text=st.text(st.sampled_from(["a", " ", "é", "€", "😀", "\n", "\r", "\ud800", "\x7f"]), max_size=40),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]), data=st.data())
def test_text_index_positions_agree_with_a_walk_along_the_line(text, encoding, data):
    from lsprotocol import types as lsp

    from netspec.lsp.positions import TextIndex

    index = TextIndex(text)
    for offset in range(len(text) + 1):
        position = index.position(offset, encoding)
        start = index.lsp_lines[position.line]
        clamped = min(offset, index.line_end(position.line))
        assert position.character == naive_units(text[start:clamped], encoding)
    line = data.draw(st.integers(0, len(index.lsp_lines) - 1))
    character = data.draw(st.integers(0, 200))
    start, end = index.lsp_lines[line], index.line_end(line)
    assert index.from_position(lsp.Position(line, character), encoding) == \
        naive_offset(text, start, end, character, encoding)
