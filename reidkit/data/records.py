"""The records every dataset reader returns: one (path, pid, camid) per image, grouped by split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "query", "gallery")


@dataclass(frozen=True)
class Record:
    """One image: its path, its person id and its camera id.

    In ``train`` pids are relabelled to ``0..num_train_pids-1``; in ``query``/``gallery`` they keep
    the dataset's own numbers (0 marks Market-1501 distractors). camids are 0-based.
    """

    path: str
    pid: int
    camid: int


@dataclass
class ReidDataset:
    """A dataset's three splits plus anything protocol-specific in ``extras``.

    ``extras`` keys used across reidkit:
      - ``"multi_query"``: dict mapping (pid, camid) -> list of image paths (Market-1501 ``gt_bbox``).
      - ``"skipped"``: list of (path, reason) for files left out while scanning.
      - ``"cuhk03_split"``: split index of the classic 1367/100 protocol, when relevant.
      - ``"train_pids"``: the dataset's pid of each training label (label ``i`` was ``train_pids[i]``).
      - ``"identity_names"``: for the user's own data with named identities (``alice/``), the name of
        each pid (pid ``i`` is ``identity_names[i]``); see ``identity_names``.
    """

    name: str
    root: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (the classifier size)."""
        return len({r.pid for r in self.train})

    def identity_names(self, split: str = "train") -> dict[int, str]:
        """The name of each pid of ``split`` (for ``train``: of each training label), for data whose
        identities are named rather than numbered; an empty dict otherwise."""
        names = self.extras.get("identity_names")
        if not names:
            return {}
        pids = sorted({r.pid for r in self.split(split)})
        if split == "train":
            originals = self.extras.get("train_pids") or pids
            return {label: names[originals[label]] for label in pids}
        return {pid: names[pid] for pid in pids}

    def split(self, name: str) -> list[Record]:
        """The records of split ``name`` (train, query or gallery)."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per split: number of identities, images and cameras."""
        out: dict[str, dict[str, int]] = {}
        for s in SPLITS:
            recs = self.split(s)
            out[s] = {
                "ids": len({r.pid for r in recs}),
                "images": len(recs),
                "cameras": len({r.camid for r in recs}),
            }
        return out

    def stats_table(self) -> str:
        """A printable table of ``stats``, as peers print on load."""
        st = self.stats()
        lines = [
            f"=> {self.name} ({self.root})",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
        ]
        for s in SPLITS:
            lines.append(f"  {s:<8} | {st[s]['ids']:5d} | {st[s]['images']:8d} | {st[s]['cameras']:9d}")
        lines.append("  ----------------------------------------")
        return "\n".join(lines)
