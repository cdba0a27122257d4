"""Every file reidkit writes, and the one rule for output paths (``docs/guarantees.md``, "Outputs").

- **A file** (``--out FILE``, and every file a command writes into a folder) is written to a temporary file
  beside it and renamed over it (``atomic_path``): a reader sees the old file or the new one, never half of
  one, and a failed or interrupted write leaves the old file as it was. An existing regular file is
  replaced, keeping its permission bits; a new file gets ``0666 & ~umask``, like any file a program
  creates. A symbolic link is followed: the file it points to is replaced, the link stays. A folder, a
  device, a named pipe or a socket at the path is refused (``output_file``), before any work.
- **A folder** (``--out DIR``) is created with its parents when missing; an existing folder is written
  into: a command replaces only the files it writes and removes none it did not write in this run
  (``output_folder``). A folder holding files another run left that a command would have to remove
  (training checkpoints, an index) is refused unless the user asks with a flag (``refuse_to_replace``).
- A write the system refuses (no space left, a read-only or immutable folder, no permission) is one
  ``OutputError`` line naming the file and the reason.
- **Temporary files** are named ``.<name>.rk<pid>-<host>.<random>.tmp`` (``<name>`` the target's name in
  printable ASCII, at most 100 characters, so a library that takes UTF-8 paths only can write it whatever
  the target is called; ``<pid>`` the writer's process id; ``<host>`` six hex digits of this boot and PID
  namespace). A writer killed with SIGKILL leaves its temporary file; the first atomic write of a process into
  a folder removes those that are stale (``remove_stale_temporaries``): of this machine (same ``<host>``) and
  of a process that no longer runs, or of another machine or boot and untouched for a day. A PID is only
  compared where it means something (the same boot and namespace); a PID reused by another process keeps the
  file (never a live writer's removed, at worst a stale one kept longer).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from reidkit.errors import OutputError

_REASONS = {
    errno.ENOSPC: "no space left on the device; free some or choose another output path",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another output path",
    errno.EROFS: "the file system is read-only; choose another output path",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "not permitted (an immutable or protected folder?); choose another output path",
    errno.EISDIR: "is a folder; expected a file path",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EFBIG: "the file would be too large for this file system",
}


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat_or_none(path: Path, failure: str) -> os.stat_result | None:
    """``os.stat(path)`` (links followed), None when nothing is there; any other failure is the one-line
    ``OutputError`` ``failure (reason)``."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{failure} ({_reason(exc)})") from None


def output_file(path: str | os.PathLike[str], what: str = "the output") -> Path:
    """The file to write for output path ``path``: ``path`` itself, or the file a symbolic link there points
    to. A folder, device, named pipe or socket there, or a parent that is not a folder, is a one-line
    ``OutputError``; nothing is created.

    Examples:
        >>> output_file("feats.safetensors")  # doctest: +SKIP
        PosixPath('feats.safetensors')
    """
    given = Path(path)
    if not str(path):
        raise OutputError(f"empty output path; expected a file name for {what}")
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    st = _stat_or_none(target, f"{given}: cannot write {what}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        expected = "a file path" if stat.S_ISDIR(st.st_mode) else "a path for a regular file"
        raise OutputError(f"{given}: is {_kind(st.st_mode)}; expected {expected} to write {what} to")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{given}: {parent} is not a folder; expected a file path to write {what} to")
    return target


def output_folder(path: str | os.PathLike[str], what: str = "the output", create: bool = True) -> Path:
    """Folder ``path`` for outputs, created with its parents when missing (with ``create``; a command checks
    its ``--out`` first with ``create=False``, before any work). A symbolic link to a folder is used as the
    folder; anything else there is a one-line ``OutputError``.

    Examples:
        >>> output_folder("runs/eval")  # doctest: +SKIP
        PosixPath('runs/eval')
    """
    folder = Path(path)
    if not str(path):
        raise OutputError(f"empty output path; expected a folder for {what}")
    st = _stat_or_none(folder, f"{folder}: cannot use it for {what}")
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{folder}: is {_kind(st.st_mode)}, not a folder; expected a folder for {what}")
    if not create:
        if st is None:
            output_file(folder, what)  # the nearest existing parent must be a folder
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder for {what} ({_reason(exc)})") from None
    return folder


def refuse_to_replace(folder: str | os.PathLike[str], names: Iterable[str], what: str, flag: str) -> None:
    """A one-line ``OutputError`` when ``folder`` holds any of ``names`` (files another run wrote that this
    command would remove or replace), unless the user passed ``flag`` (then the caller does not call this)."""
    found = [n for n in names if os.path.lexists(os.path.join(os.fspath(folder), n))]
    if found:
        raise OutputError(f"{folder}: holds {what} ({', '.join(found)}); pass {flag} to replace it, or choose "
                          "another output folder")


TEMP_NAME = re.compile(r"\..*\.rk(\d{1,10})-([0-9a-f]{6})\.[a-z0-9_]{8}\.tmp", re.DOTALL)  # what atomic_path makes
FOREIGN_TEMP_SECONDS = 24 * 3600  # a temporary file of another machine or boot is stale after a day untouched
_cleaned: set[str] = set()  # the folders this process has removed stale temporary files from


@functools.cache
def _host_tag() -> str:
    """Six hex digits naming this boot and PID namespace: where a process id in a temporary file's name means
    the same process."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        with contextlib.suppress(OSError):
            parts.append(read())
    return hashlib.sha256("\0".join(parts).encode("utf-8", "backslashreplace")).hexdigest()[:6]


def temporary_prefix(target: Path) -> str:
    """The start of an ``atomic_path`` temporary file's name for ``target`` (see the module docstring)."""
    safe = "".join(c if c.isascii() and c.isprintable() and c not in "/\\" else "_" for c in target.name)[:100]
    return f".{safe}.rk{os.getpid()}-{_host_tag()}."


def _running(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine (one of another user counts)."""
    if pid <= 0:
        return True  # not a writer's id: never judged dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[str]:
    """Remove from ``folder`` the temporary files of ``atomic_path`` whose writer is gone (see the module
    docstring); returns their names. Only regular files of that naming are considered; nothing else is touched,
    and a file that cannot be removed is left."""
    tag, now, removed = _host_tag(), time.time(), []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            m = TEMP_NAME.fullmatch(entry.name)
            if m is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            stale = (not _running(int(m.group(1))) if m.group(2) == tag
                     else now - st.st_mtime > FOREIGN_TEMP_SECONDS)
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


def _clean_once(folder: Path) -> None:
    """``remove_stale_temporaries(folder)`` on this process's first write into ``folder``."""
    key = os.path.realpath(folder)
    if key not in _cleaned:
        _cleaned.add(key)
        remove_stale_temporaries(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (named as the module docstring says; the first write of the
    process into the folder removes stale ones); on success it is fsynced and renamed over ``path``.

    ``path`` follows the rule of ``output_file``; its permissions that of the module docstring. On any
    exception the temporary file is removed and ``path`` is left untouched; a write the system refuses
    becomes a one-line ``OutputError``.

    Examples:
        >>> with atomic_path("out.bin") as tmp:  # doctest: +SKIP
        ...     torch.save(obj, tmp)
    """
    target = output_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target), suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from None
    _clean_once(target.parent)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(target))  # after the writer: some writers create the file anew (0600)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause = None if isinstance(exc, OutputError) else system_error(exc)
        if cause is not None and cause.errno in _REASONS:  # the system refused the write
            raise OutputError(f"{path}: cannot write ({_reason(cause)})") from None
        raise


def atomic_link(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Replace ``path`` atomically by a hard link to the file ``source`` (the same bytes, no more space), or by a
    copy where the file system has no hard links; returns whether it is a link. A later atomic write of either
    name (a new file renamed over it) leaves the other as it was."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
            linked = True
        except OSError:
            shutil.copyfile(source, tmp)
            linked = False
    return linked


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` atomically when closed without error."""
    if not any(m in mode for m in "wxa"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w").replace("a", "w"), **kwargs) as fh:
        yield fh


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8; characters that are not, as in a file name in other
    bytes, are written as backslash escapes)."""
    with atomic_open(path, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")


def system_error(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``: ``exc`` itself, one in its cause/context chain (torch's
    writers wrap it in a ``RuntimeError``), or one named in its text ("os error 28", as safetensors says)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        m = _OS_ERROR_IN_TEXT.search(str(e)) if isinstance(e, Exception) else None
        if m:
            code = int(m.group(1))
            return OSError(code, os.strerror(code))
        e = e.__cause__ or e.__context__
    return None


def _reason(exc: OSError) -> str:
    return _REASONS.get(exc.errno or -1, exc.strerror or type(exc).__name__)


def _mode_for(target: Path) -> int:
    """The permission bits of the file being replaced, else ``0666 & ~umask``."""
    try:
        st = os.stat(target)
    except OSError:
        return 0o666 & ~_umask()
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), so that no other
    thread ever creates a file under a zero umask."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
