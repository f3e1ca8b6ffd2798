"""Reading spec files within the size limit, reporting what cannot be read at its place, and writing files so
that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from netspec.ground.errors import Diagnostic, NetspecError, Sources, Span
from netspec.ground.limits import DEFAULT


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_source(path: Path, span: Span | None = None, max_bytes: int = DEFAULT.file_bytes,
                sources: Sources | None = None) -> str:
    """The file's text; a byte that is not UTF-8 is reported at its line and column (shown as U+FFFD)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise NetspecError(Diagnostic("NS213", f"{path} is {size:,} bytes; specs are limited to "
                                                   f"{max_bytes:,}", span))
        data = path.read_bytes()
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[:err.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        if sources is not None:
            sources.texts[str(path)] = data.decode("utf-8", "replace")
        raise NetspecError(Diagnostic("NS100", f"byte 0x{data[err.start]:02x} is not UTF-8 text",
                                      Span(str(path), line, col, line, col + 1),
                                      "save the file as UTF-8")) from None
    except FileNotFoundError:
        raise NetspecError(Diagnostic("NS209", f"file not found: {path}", span)) from None
    except IsADirectoryError:
        raise NetspecError(Diagnostic("NS209", f"{path} is a directory, not a spec file", span)) from None
    except OSError as err:
        raise NetspecError(Diagnostic("NS209", f"cannot read {path}: {err.strerror}", span)) from None
