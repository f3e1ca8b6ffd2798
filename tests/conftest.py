import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One torch thread for the suite and the commands it starts (set before anything imports torch): its tensors are
# small, where a second thread costs more than it gives, and on a 2-core machine busy with other work two threads
# made tests/test_codegen.py take 47.6 s instead of 29.7 s (29-31 s both ways when the machine was idle).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def in_repo(monkeypatch):
    """Run with the repository root as the working directory, so spec paths read as users type them."""
    monkeypatch.chdir(ROOT)
    return ROOT


def regenerate() -> bool:
    """NETSPEC_REGEN=1 rewrites golden files instead of comparing with them."""
    return os.environ.get("NETSPEC_REGEN") == "1"


@pytest.fixture
def spec(tmp_path):
    """`spec(text)` writes a spec into the test's folder and returns its path (`name`: another file beside it)."""
    def write(text, name="net.net"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


def only_error(path):
    """The one diagnostic loading `path` raises."""
    import netspec

    with pytest.raises(netspec.NetspecError) as caught:
        netspec.load(path)
    [diagnostic] = caught.value.diagnostics
    return diagnostic


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A copy of specs/, so generated and mutated files sit beside the blocks they import."""
    import shutil

    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(ROOT / "specs", root / "specs")
    return root / "specs"
