"""Identity (PK) batch sampler: P identities × K images per batch, seeded, resumable and DDP-aware.

How an epoch is drawn (all from ``numpy.random.default_rng([seed, epoch])``, so every rank
computes the same global plan without communication):

- Identities are visited in a shuffled order, reshuffled each time all have been visited; a
  *step* takes the next ``P × world_size`` distinct identities and rank ``r`` gets the slice
  ``[r·P, (r+1)·P)``. Ranks therefore never share an identity within a step, and over an epoch
  every identity is visited about equally often.
- For each visited identity, K images: identities with at least K images take the next K of
  their own shuffled queue (no repeats inside a batch, all images cycled before any repeats);
  identities with fewer than K images draw K with replacement.
- Epoch length (default): ``max(1, num_identities // (P·world_size))`` batches per rank, so
  that over all ranks an epoch visits every identity once, K images each. This is what both
  papers call an epoch: Mancs §4.3 "each epoch includes [N_c/P] mini-batches" (N_c identities),
  and BDB's public sampler (on which STADB's 600-epoch schedule was run) yields identities × K
  images per epoch. On Market-1501 with 32×4 that is 23 batches, not the 101 a pass over all
  12,936 images would take. ``num_batches`` overrides it.

``set_epoch(e)`` selects the plan; ``state_dict()`` records (epoch, position) so that a resumed
run yields exactly the batches the interrupted one had not yet yielded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from reidkit.errors import ConfigError


class PKSampler:
    """Yields lists of dataset indices: exactly ``p`` identities × ``k`` images each (see module doc).

    Use as a ``batch_sampler`` or iterate it directly; call ``set_epoch(e)`` before each epoch.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_batches: int | None = None,
    ) -> None:
        if p < 1 or k < 1:
            raise ConfigError(f"sampler: expected P >= 1 and K >= 1, got P={p}, K={k}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"sampler: expected 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if num_batches is not None and num_batches < 1:
            raise ConfigError(f"sampler: expected num_batches >= 1, got {num_batches}")
        self.pids = np.asarray(list(pids), dtype=np.int64)
        self.p, self.k = int(p), int(k)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        uniq, inverse = np.unique(self.pids, return_inverse=True)
        self.identities = uniq
        self._groups: list[np.ndarray] = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
        need = self.p * self.world_size
        if len(uniq) < need:
            raise ConfigError(
                f"sampler: the training set has {len(uniq)} identities, fewer than P × world_size = "
                f"{self.p} × {self.world_size} = {need}; expected a smaller P (e.g. --set sampler.p={max(1, len(uniq) // self.world_size)})"
            )
        default = max(1, len(uniq) // (self.p * self.world_size))
        self.num_batches = int(num_batches) if num_batches is not None else default
        self.epoch = 0
        self.position = 0
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return self.num_batches

    @property
    def batch_size(self) -> int:
        """P × K."""
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s plan; restarts at its first batch unless it is already the current epoch."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers that identify where in which epoch the sampler is (for checkpoints)."""
        return {
            "epoch": self.epoch, "position": self.position, "seed": self.seed, "p": self.p, "k": self.k,
            "world_size": self.world_size, "num_batches": self.num_batches, "num_samples": len(self.pids),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``; the next iteration resumes after the last yielded batch. A state of the
        wrong shape (not integers, a position past the epoch, another number of batches) is a one-line
        ``ConfigError``, and nothing is changed."""
        fields = ("epoch", "position", "seed", "p", "k", "world_size", "num_batches", "num_samples")
        if not isinstance(state, dict) or "epoch" not in state or "position" not in state or not all(
                isinstance(state.get(f, 0), int) and not isinstance(state.get(f, 0), bool) for f in fields):
            raise ConfigError("sampler: damaged sampler state in the checkpoint (expected integers)")
        for key in ("p", "k", "world_size", "num_samples", "num_batches"):
            mine = len(self.pids) if key == "num_samples" else getattr(self, key)
            if key in state and int(state[key]) != mine:
                raise ConfigError(f"sampler: checkpoint was made with {key}={state[key]}, this run has {key}={mine}; "
                                  "expected the same data and sampler settings to resume")
        if state["epoch"] < 0 or not 0 <= state["position"] <= self.num_batches or state.get("seed", 0) < 0:
            raise ConfigError("sampler: damaged sampler state in the checkpoint (epoch, position or seed out of "
                              "range)")
        self.seed = int(state.get("seed", self.seed))
        self.num_batches = int(state.get("num_batches", self.num_batches))
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])

    def _plan(self, epoch: int) -> list[list[int]]:
        """All batches of this rank for ``epoch`` (deterministic in (seed, epoch))."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        n_ids = len(self.identities)
        per_step = self.p * self.world_size
        id_queue: list[int] = []
        img_queues: list[list[int]] = [[] for _ in range(n_ids)]
        batches: list[list[int]] = []
        for _ in range(self.num_batches):
            chosen = _take_distinct(id_queue, per_step, n_ids, rng)
            mine = chosen[self.rank * self.p:(self.rank + 1) * self.p]
            # every rank draws the images of all chosen identities so that the rng stays in step
            batch: list[int] = []
            for j, ident in enumerate(chosen):
                group = self._groups[ident]
                if len(group) >= self.k:
                    picks = _take_distinct(img_queues[ident], self.k, len(group), rng)
                    imgs = group[picks]
                else:
                    imgs = rng.choice(group, size=self.k, replace=True)
                if self.rank * self.p <= j < (self.rank + 1) * self.p:
                    batch.extend(int(i) for i in imgs)
            assert len(mine) == self.p and len(batch) == self.p * self.k
            batches.append(batch)
        self._plan_cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's remaining batches of the current epoch (all of them after ``set_epoch``)."""
        if self.position >= self.num_batches:
            self.position = 0
        plan = self._plan(self.epoch)
        while self.position < self.num_batches:
            batch = plan[self.position]
            self.position += 1
            yield list(batch)


def _take_distinct(queue: list[int], n: int, size: int, rng: np.random.Generator) -> list[int]:
    """Pop ``n`` distinct items from ``queue`` (a shuffled cycle over ``range(size)``), refilling it as needed."""
    out: list[int] = []
    taken: set[int] = set()
    while len(out) < n:
        if not queue:
            queue.extend(int(i) for i in rng.permutation(size))
        # pop from the front, skipping (and deferring) items already in this draw
        deferred: list[int] = []
        while queue and len(out) < n:
            item = queue.pop(0)
            if item in taken:
                deferred.append(item)
            else:
                out.append(item)
                taken.add(item)
        queue[0:0] = deferred
        if len(out) < n and queue and all(q in taken for q in queue):
            # only already-taken items remain: start the next cycle now, keeping them for later
            fresh = [int(i) for i in rng.permutation(size)]
            queue.extend(fresh)
    return out
