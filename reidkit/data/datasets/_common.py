"""Helpers shared by the dataset readers: finding the dataset folder, image checks, train-pid relabelling and assembling a ``ReidDataset``.

Image checks (the ``verify_images`` option of every reader):

- ``True`` or ``"full"``: every image is fully decoded with ``reidkit.utils.images.read_image``
  (catches truncated and corrupt files; costs a decode per file). Default for the user's own data.
- ``"header"``: the file must be a non-empty regular file that starts with a known image signature
  (JPEG, PNG, BMP, GIF, WebP, TIFF). It reads 16 bytes per file, so the 126k files of MSMT17 are
  checked in about two seconds. Default for the benchmarks. A truncated body is not caught here; the
  image cache reports such files when it decodes them (``reidkit.data.cache.decode_images``).
- ``False`` or ``"none"``: no per-file check (list-based readers then trust their list files).

Files that fail go to ``extras["skipped"]`` as ``(path, reason)`` and are named, with a count, in a
``DatasetWarning``; they are never returned as records.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reidkit.data.records import SPLITS, Record, ReidDataset
from reidkit.errors import DatasetError
from reidkit.utils.images import ImageReadError, read_image

VerifyMode = bool | str

# (path, pid, camid) before relabelling
RawRecord = tuple[str, int, int]

_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),  # PNG
    (0, b"BM"),  # BMP
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"II*\x00"),  # TIFF little-endian
    (0, b"MM\x00*"),  # TIFF big-endian
    (8, b"WEBP"),  # RIFF....WEBP
)


class DatasetWarning(UserWarning):
    """Files left out of a dataset while scanning (unreadable, misnamed, missing)."""


def normalize_verify(value: VerifyMode) -> str:
    """Map a ``verify_images`` option to ``"full"``, ``"header"`` or ``"none"``."""
    if value is True:
        return "full"
    if value is False or value is None:
        return "none"
    if isinstance(value, str) and value.lower() in ("full", "header", "none"):
        return value.lower()
    raise DatasetError(f"verify_images={value!r}: expected True, False, 'full', 'header' or 'none'")


def find_dataset_dir(
    root: str | os.PathLike[str],
    *,
    dataset: str,
    candidates: Sequence[str],
    markers: Sequence[str],
    layout: str,
) -> Path:
    """Return the dataset's own folder: ``root`` itself when it holds one of ``markers``, else the
    first ``root/<candidate>`` that does. Raise ``DatasetError`` naming what was expected."""
    base = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not base.exists():
        raise DatasetError(f"{dataset}: root folder {base} does not exist (expected {layout})")
    if not base.is_dir():
        raise DatasetError(f"{dataset}: root {base} is not a folder (expected {layout})")
    for cand in ("", *candidates):
        d = base / cand if cand else base
        if d.is_dir() and any((d / m).exists() for m in markers):
            return d
    tried = ", ".join(candidates)
    raise DatasetError(
        f"{dataset}: no dataset folder found at {base}: expected {layout} in {base} or in one of its "
        f"subfolders {{{tried}}}"
    )


def require_entries(base: Path, entries: Sequence[str], *, dataset: str, layout: str) -> None:
    """Raise ``DatasetError`` naming the missing entries if any of ``entries`` is absent in ``base``."""
    missing = [e for e in entries if not (base / e).exists()]
    if missing:
        raise DatasetError(
            f"{dataset}: {base} lacks {', '.join(missing)} (expected {layout})"
        )


def _has_image_signature(head: bytes) -> bool:
    return any(head[off : off + len(sig)] == sig for off, sig in _SIGNATURES)


def check_file(path: str, mode: str) -> str | None:
    """Return why ``path`` is unusable under check ``mode`` (see module docstring), or None if fine."""
    if mode == "none":
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot stat ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if mode == "header":
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            return f"cannot read ({exc.strerror or exc})"
        return None if _has_image_signature(head) else "not an image (unknown file signature)"
    try:
        read_image(path)
    except ImageReadError as exc:
        msg = str(exc)
        return msg[len(path) + 2 :] if msg.startswith(path + ": ") else msg
    return None


def check_files(paths: Iterable[str], mode: str) -> dict[str, str]:
    """Map each unusable path among ``paths`` to its reason (empty dict when all pass)."""
    bad: dict[str, str] = {}
    if mode == "none":
        return bad
    paths = list(paths)
    if mode == "full" and len(paths) > 64:  # decoding releases the GIL: use a few threads
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            reasons = list(pool.map(lambda p: check_file(p, mode), paths, chunksize=64))
    else:
        reasons = [check_file(p, mode) for p in paths]
    for p, reason in zip(paths, reasons, strict=True):
        if reason is not None:
            bad[p] = reason
    return bad


def warn_skipped(dataset: str, skipped: Sequence[tuple[str, str]], total: int | None = None) -> None:
    """Issue one ``DatasetWarning`` listing (up to five of) the skipped files with their count."""
    if not skipped:
        return
    shown = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    of = f" of {total}" if total is not None else ""
    warnings.warn(
        f"{dataset}: left out {len(skipped)}{of} files: {shown}{more} (all in extras['skipped'])",
        DatasetWarning,
        stacklevel=3,
    )


def _count_reasons(items: Iterable[tuple[str, str]]) -> str:
    """``reason (count)`` for the three commonest reasons among ``(path, reason)`` items."""
    counts: dict[str, int] = {}
    for _, reason in items:
        counts[reason] = counts.get(reason, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    more = f"; and {len(top) - 3} other reasons" if len(top) > 3 else ""
    return "; ".join(f"{r} ({n})" for r, n in top[:3]) + more


def relabel(records: Sequence[RawRecord]) -> tuple[list[Record], list[int]]:
    """Relabel pids to ``0..N-1`` in increasing order of the original pid; also return the originals
    (label ``i`` is original pid ``originals[i]``)."""
    originals = sorted({pid for _, pid, _ in records})
    mapping = {pid: i for i, pid in enumerate(originals)}
    return [Record(p, mapping[pid], cam) for p, pid, cam in records], originals


def assemble(
    name: str,
    root: str | os.PathLike[str],
    splits: Mapping[str, Sequence[RawRecord]],
    *,
    verify: VerifyMode,
    sources: Mapping[str, str],
    skipped: Sequence[tuple[str, str]] = (),
    extras: Mapping[str, Any] | None = None,
    relabel_train: bool = True,
    why_empty: Mapping[str, str] | None = None,
) -> ReidDataset:
    """Check the images of every split, drop the unusable ones, relabel train pids and build the dataset.

    ``sources`` names, per split, where its images were looked for (for the empty-split error);
    ``skipped`` holds files already left out while parsing (misnamed and the like); ``why_empty`` says, per
    split the reader found nothing in, why (otherwise the error counts the files left out, by reason).
    """
    mode = normalize_verify(verify)
    all_skipped: list[tuple[str, str]] = list(skipped)
    kept: dict[str, list[RawRecord]] = {}
    unique = list(dict.fromkeys(r[0] for s in SPLITS for r in splits.get(s, ())))
    total = len(unique)
    bad = check_files(unique, mode)  # a file shared by two splits is checked and listed once
    all_skipped.extend((p, bad[p]) for p in unique if p in bad)
    for s in SPLITS:
        kept[s] = [r for r in splits.get(s, ()) if r[0] not in bad]
    warn_skipped(name, all_skipped, total + len(skipped))
    for s in SPLITS:
        if not kept[s]:
            found = [r[0] for r in splits.get(s, ())]
            if found:
                why = f"{len(found)} found, all unusable: " + _count_reasons((p, bad[p]) for p in found)
            elif why_empty and s in why_empty:
                why = why_empty[s]
            else:
                source = str(sources.get(s, root))
                left = [(p, r) for p, r in skipped if str(p).startswith(source)]
                why = (f"{len(left)} files seen, all left out: {_count_reasons(left)}" if left else
                       "no image files found there")
            raise DatasetError(f"{name}: split '{s}' is empty: no usable images in {sources.get(s, root)} ({why})")
    out_extras: dict[str, Any] = dict(extras or {})
    if relabel_train:
        train, originals = relabel(kept["train"])
        out_extras["train_pids"] = originals
    else:
        train = [Record(*r) for r in kept["train"]]
    if all_skipped:
        out_extras["skipped"] = all_skipped
    return ReidDataset(
        name=name,
        root=os.fspath(root),
        train=train,
        query=[Record(*r) for r in kept["query"]],
        gallery=[Record(*r) for r in kept["gallery"]],
        extras=out_extras,
    )
