import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_repo(monkeypatch):
    """Run with the repository root as the working directory, so spec paths read as users type them."""
    monkeypatch.chdir(ROOT)
    return ROOT


def regenerate() -> bool:
    """NETSPEC_REGEN=1 rewrites golden files instead of comparing with them."""
    return os.environ.get("NETSPEC_REGEN") == "1"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A copy of specs/, so generated and mutated files sit beside the blocks they import."""
    import shutil

    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(ROOT / "specs", root / "specs")
    return root / "specs"
