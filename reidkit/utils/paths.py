"""Paths named inside files (CSV lists, index manifests): where they lead, and whether that stays in a folder.

Two checks, one for each kind of trust:

- ``listed_path``: a path written in the user's own list (a CSV of images). An absolute path is taken
  as written; a relative one is read from the list's folder and must stay inside it after ``..`` is
  resolved (``imgs/../../x.png`` leaves it): the same rule for ``reidkit extract --csv``, ``reidkit
  index --csv`` and the ``csv`` dataset reader.
- ``inside``: a path a file names that reidkit should not follow out of a folder (an index manifest's
  entries): symbolic links are resolved first, so a link inside the folder that points elsewhere is
  outside.

Examples:
    >>> listed_path("imgs/a.png", "/data/list")
    '/data/list/imgs/a.png'
    >>> listed_path("../secret.png", "/data/list") is None
    True
    >>> within("/data/list/imgs/a.png", "/data/list"), within("/data/listing/a.png", "/data/list")
    (True, False)
"""

from __future__ import annotations

import os

OUTSIDE = "path leads outside"  # the start of every reason a listed path is skipped for


def within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether the absolute, normalised ``path`` is ``folder`` or below it (no file system access)."""
    p, f = os.path.normpath(os.fspath(path)), os.path.normpath(os.fspath(folder))
    try:
        return os.path.commonpath([p, f]) == f
    except ValueError:  # different drives, or one relative and one absolute
        return False


def listed_path(raw: str, folder: str | os.PathLike[str]) -> str | None:
    """The path a list in ``folder`` means by ``raw`` (absolute as written; relative from ``folder``),
    or ``None`` when a relative ``raw`` leads outside ``folder``."""
    base = os.path.abspath(os.fspath(folder))
    if os.path.isabs(raw):
        return os.path.normpath(raw)
    path = os.path.normpath(os.path.join(base, raw))
    return path if within(path, base) else None


def inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (relative ones from ``folder``) leads, once symbolic links are resolved, to
    ``folder`` or below it."""
    base = os.path.realpath(os.fspath(folder))
    target = os.path.realpath(os.path.join(base, os.fspath(path)))
    return within(target, base)
