"""Reading a file reidkit treats as text (configs, lists, manifests, JSON sidecars): a regular file, read with
a size cap, every problem one line naming the file.

A named pipe would block the reader forever and ``/dev/zero`` never ends, so the file is opened without
blocking, checked to be a regular file on the open descriptor (no race with a swap), and read up to the
cap (``reidkit.utils.limits``: ``MAX_CONFIG_BYTES``, ``MAX_LIST_BYTES``, ...) and not one byte further.

Examples:
    >>> read_text("run.yaml", limit=MAX_CONFIG_BYTES, what="a YAML config", error=ConfigError)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat

from reidkit.errors import ReidkitError

_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def read_bytes(path: str | os.PathLike[str], *, limit: int, what: str,
               error: type[ReidkitError] = ReidkitError) -> bytes:
    """The bytes of the regular file ``path``; ``error`` (one line naming ``path`` and ``what`` was expected)
    when it is missing, unreadable, not a regular file or larger than ``limit`` bytes."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{name}: file not found; expected {what}") from None
    except IsADirectoryError:
        raise error(f"{name}: a folder, not a regular file; expected {what}") from None
    except OSError as exc:
        raise error(f"{name}: cannot read ({exc.strerror or type(exc).__name__}); expected {what}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS if test(st.st_mode)), "a special file")
            raise error(f"{name}: {kind}, not a regular file; expected {what}")
        too_big = error(f"{name}: larger than {_size(limit)}, the most reidkit reads as {what}")
        if st.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        total = 0
        while True:  # the file may grow while it is read: never past the cap
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise too_big
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{name}: cannot read ({exc.strerror or type(exc).__name__}); expected {what}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], *, limit: int, what: str,
              error: type[ReidkitError] = ReidkitError, encoding: str = "utf-8") -> str:
    """``read_bytes`` decoded as ``encoding`` (``"utf-8-sig"`` drops a byte-order mark); bytes that are not
    such text are ``error`` too, naming the offset."""
    raw = read_bytes(path, limit=limit, what=what, error=error)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{os.fspath(path)}: not UTF-8 text (byte {exc.start}); expected {what}") from None
