"""Several datasets at once: the sources a config or a command line names (``DatasetSource``), their labels in a
table (``source_labels``), and the training set made of several datasets' train splits (``combine``).

``combine`` keeps identities and cameras apart: dataset *i*'s train pids are shifted by the number of train
identities of the datasets before it, and its camids by the number of cameras before it, where a dataset's
number of cameras is its highest camid (over all its splits) + 1. Market-1501 (751 train ids, 6 cameras)
then DukeMTMC-reID (702, 8): Duke's pid 0 becomes 751 and its camid 0 becomes 6; 1,453 classes, 14 cameras.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reidkit.data.records import SPLITS, Record, ReidDataset
from reidkit.errors import DatasetError

__all__ = ["DatasetSource", "combine", "first_repeat", "source_labels"]


@dataclass
class DatasetSource:
    """One dataset as a config (``data.dataset``/``data.root``/``data.options``, an ``eval.datasets`` entry) or a
    command line (``--dataset``/``--root``/``--option``) names it: the reader's name, the folder, the reader's
    keyword options (``reidkit.data.datasets.load``)."""

    dataset: str = ""
    root: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> ReidDataset:
        """The dataset read from ``root`` (``reidkit.data.datasets.load``)."""
        from reidkit.data.datasets import load

        return load(self.dataset, self.root, **self.options)

    def key(self) -> tuple[str, str, str]:
        """What tells two sources apart: the canonical name, the absolute folder and the options (as sorted
        JSON). ``DatasetError`` for a name no reader has."""
        from reidkit.data.datasets import canonical_name

        return (canonical_name(self.dataset), os.path.abspath(os.path.expanduser(self.root)),
                json.dumps(self.options, sort_keys=True, default=str))


def first_repeat(sources: Sequence[DatasetSource]) -> tuple[int, int] | None:
    """The positions ``(i, j)``, ``i < j``, of the first source named twice (same ``key``), or None."""
    seen: dict[tuple[str, str, str], int] = {}
    for j, source in enumerate(sources):
        key = source.key()
        if key in seen:
            return seen[key], j
        seen[key] = j
    return None


def source_labels(sources: Sequence[DatasetSource]) -> list[str]:
    """A distinct row label per source, for tables: the dataset's canonical name, followed by its reader options
    (``cuhk03 (labeled=false)``) when it has some, and by its folder when two labels are still alike."""
    from reidkit.data.datasets import canonical_name

    def with_options(s: DatasetSource) -> str:
        name = canonical_name(s.dataset)
        if not s.options:
            return name
        opts = ", ".join(f"{k}={json.dumps(v, default=str) if not isinstance(v, str) else v}"
                         for k, v in sorted(s.options.items()))
        return f"{name} ({opts})"

    labels = [with_options(s) for s in sources]
    alike = {lab for lab in labels if labels.count(lab) > 1}
    return [f"{lab} [{s.root}]" if lab in alike else lab for lab, s in zip(labels, sources, strict=True)]


def _num_cameras(ds: ReidDataset) -> int:
    """The dataset's cameras as its camids number them: the highest camid of any split + 1."""
    return 1 + max((r.camid for s in SPLITS for r in ds.split(s)), default=-1)


def combine(parts: Sequence[ReidDataset]) -> ReidDataset:
    """One training set made of ``parts``' train splits, with person and camera ids that never collide.

    Dataset *i*'s train pids (relabelled ``0..n_i-1`` in their sorted order, as the readers give them) are
    shifted by ``n_0 + ... + n_{i-1}``; its camids by the numbers of cameras before it (``c_i``: its highest
    camid + 1). The result's ``query`` and ``gallery`` are ``parts[0]``'s, untouched (what a training run
    evaluates on every ``train.eval_every`` epochs); ``extras["datasets"]`` records, per part in order, its
    ``name``, ``root``, ``pid_offset``, ``ids``, ``camid_offset``, ``cameras`` and ``images`` (train images);
    ``extras["skipped"]`` joins the parts' skipped files. Raises ``DatasetError`` for no parts or a part
    without training images.
    """
    if not parts:
        raise DatasetError("combine: expected at least one dataset")
    train: list[Record] = []
    mapping: list[dict[str, Any]] = []
    skipped: list[Any] = []
    pid_offset = camid_offset = 0
    for ds in parts:
        if not ds.train:
            raise DatasetError(f"{ds.root}: dataset {ds.name!r} has no training images")
        label = {p: i for i, p in enumerate(sorted({r.pid for r in ds.train}))}
        cameras = _num_cameras(ds)
        train.extend(Record(r.path, label[r.pid] + pid_offset, r.camid + camid_offset) for r in ds.train)
        mapping.append({"name": ds.name, "root": str(ds.root), "pid_offset": pid_offset, "ids": len(label),
                        "camid_offset": camid_offset, "cameras": cameras, "images": len(ds.train)})
        skipped.extend(ds.extras.get("skipped", ()))
        pid_offset += len(label)
        camid_offset += cameras
    extras: dict[str, Any] = {"datasets": mapping}
    if skipped:
        extras["skipped"] = skipped
    first = parts[0]
    return ReidDataset("+".join(p.name for p in parts), " + ".join(str(p.root) for p in parts), train,
                       list(first.query), list(first.gallery), extras)
