"""The one way netspec opens a user's files (specs, imports, images, checkpoints, data sets) and writes its own.

Reading: regular files only (a FIFO would block for ever, a device such as /dev/zero never ends), opened
without blocking, the size limit counted on the bytes actually read (devices and /proc files report size 0),
and folders walked following each symbolic link at most once per real folder (a link to `.` loops).
Writing: to a temporary file beside the target, flushed, then renamed over it, so that a reader never sees half
of a file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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


class NotARegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a folder where a file's contents were wanted."""


class FileTooLarge(OSError):
    """A file larger than what may be read of it."""


def kind_of(mode: int) -> str:
    """What a stat mode names, as a person would say it."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file (after following links); never blocks on a
    FIFO. Raises NotARegularFile (errno EINVAL, or EISDIR for a folder) or the OSError of opening it."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
            raise NotARegularFile(code, f"{kind_of(mode)}, not a regular file", str(path))
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_bytes(path: str | Path, max_bytes: int | None = None) -> bytes:
    """A regular file's bytes (open_regular), at most `max_bytes` of them: one byte more is FileTooLarge
    (errno EFBIG), whatever the file's reported size."""
    with open_regular(path) as handle:
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLarge(errno.EFBIG, f"larger than {max_bytes:,} bytes", str(path))
    return data


def walk_once(folder: str | Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk(folder, followlinks=True), sorted, entering each real folder once: a link back to a folder above
    (`a -> .`) or two links to one folder give its files once, not again and again."""
    seen: set[tuple[int, int]] = set()
    for parent, folders, names in os.walk(folder, followlinks=True):
        try:
            info = os.stat(parent)
        except OSError:
            folders[:] = []
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            folders[:] = []
            continue
        seen.add(key)
        folders.sort()
        yield Path(parent), folders, sorted(names)


def read_source(path: Path, span: Span | None = None, max_bytes: int = DEFAULT.file_bytes,
                sources: Sources | None = None) -> str:
    """The file's text; a byte that is not UTF-8 is reported at its line and column (shown as U+FFFD)."""
    try:
        data = read_bytes(path, max_bytes)
        return data.decode("utf-8")
    except FileTooLarge:
        size = path.stat().st_size
        shown = f"{size:,} bytes" if size > max_bytes else f"larger than {max_bytes:,} bytes (as read)"
        raise NetspecError(Diagnostic("NS213", f"{path} is {shown}; specs are limited to {max_bytes:,}",
                                      span)) from None
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
    except (IsADirectoryError, NotARegularFile) as err:
        if err.errno == errno.EISDIR:
            raise NetspecError(Diagnostic("NS209", f"{path} is a directory, not a spec file", span)) from None
        raise NetspecError(Diagnostic("NS209", f"{path} is {err.strerror}", span,
                                      "a spec is a file on disk; pipes and devices are not read")) from None
    except OSError as err:
        raise NetspecError(Diagnostic("NS209", f"cannot read {path}: {err.strerror}", span)) from None
