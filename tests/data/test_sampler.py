"""PKSampler: exact P×K batches, (seed, epoch) determinism, exact resume, DDP partition."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit.data.sampler import PKSampler
from reidkit.errors import ConfigError


def _pids(counts: list[int]) -> list[int]:
    """pid i repeated counts[i] times, interleaved so indices of one id are not contiguous."""
    out: list[int] = []
    left = list(counts)
    while any(left):
        for i, c in enumerate(left):
            if c:
                out.append(100 + i)
                left[i] -= 1
    return out


def _check_batch(batch: list[int], pids: list[int], p: int, k: int) -> None:
    assert len(batch) == p * k
    groups = [batch[i * k:(i + 1) * k] for i in range(p)]
    ids = [pids[g[0]] for g in groups]
    assert len(set(ids)) == p  # P distinct identities
    size = Counter(pids)
    for g in groups:
        assert len({pids[i] for i in g}) == 1  # K images of one identity
        if size[pids[g[0]]] >= k:
            assert len(set(g)) == k  # without replacement


def test_epoch_visits_every_identity_once() -> None:
    pids = [i for i in range(751) for _ in range(17)]  # Market-1501-like: 751 ids
    s = PKSampler(pids, p=32, k=4, seed=0)
    assert len(s) == 751 // 32 == 23  # Mancs' [N_c/P]; BDB: identities × K images per epoch
    seen = [pids[i] for b in s for i in b]
    assert len(set(seen)) == 23 * 32  # no identity twice within the epoch


def test_hand_example() -> None:
    pids = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    s = PKSampler(pids, p=2, k=2, seed=0)
    assert len(s) == 4 // 2 == 2  # an epoch visits each of the 4 identities once
    batches = list(s)
    assert len(batches) == 2
    for b in batches:
        _check_batch(b, pids, 2, 2)
    # identities cycle: 2 batches × 2 ids cover all 4 identities exactly once
    assert sorted(pids[b[0]] for b in batches for b in (b[:2], b[2:])) == [0, 1, 2, 3]
    # id 3 has one image: drawn with replacement
    for b in batches:
        for g in (b[:2], b[2:]):
            if pids[g[0]] == 3:
                assert g == [9, 9]


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(1, 9), min_size=2, max_size=20), p=st.integers(1, 6), k=st.integers(1, 5),
       seed=st.integers(0, 5), world=st.integers(1, 3))
def test_property_batches(counts: list[int], p: int, k: int, seed: int, world: int) -> None:
    pids = _pids(counts)
    if len(counts) < p * world:
        with pytest.raises(ConfigError, match="identities"):
            PKSampler(pids, p, k, seed=seed, world_size=world)
        return
    samplers = [PKSampler(pids, p, k, seed=seed, rank=r, world_size=world, num_batches=7) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    for step in range(7):
        step_ids = []
        for r in range(world):
            b = per_rank[r][step]
            _check_batch(b, pids, p, k)
            step_ids += [pids[b[i * k]] for i in range(p)]
        assert len(set(step_ids)) == p * world  # ranks take different identities in a step
    # identities are visited evenly over the epoch (counts differ by at most one)
    visits = Counter(pids[b[i * k]] for r in range(world) for b in per_rank[r] for i in range(p))
    full = [visits.get(100 + i, 0) for i in range(len(counts))]
    assert max(full) - min(full) <= 1


def test_epoch_length_and_override() -> None:
    pids = _pids([4] * 20)  # 20 identities, 80 images
    assert len(PKSampler(pids, 4, 4)) == 5  # 20 // 4
    assert len(PKSampler(pids, 4, 4, world_size=2, rank=1)) == 2  # 20 // (4 * 2)
    assert len(PKSampler(pids, 3, 16)) == 6  # K does not change the count of identity visits
    assert len(PKSampler(pids, 20, 4)) == 1  # never zero
    assert len(list(PKSampler(pids, 4, 4, num_batches=9))) == 9


def test_determinism_per_seed_and_epoch() -> None:
    pids = _pids([5] * 12)
    a, b = PKSampler(pids, 3, 4, seed=1), PKSampler(pids, 3, 4, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    e1 = list(a)
    assert e1 == list(b)
    a.set_epoch(0)
    assert list(a) != e1
    assert list(PKSampler(pids, 3, 4, seed=2)) != list(PKSampler(pids, 3, 4, seed=1))


def test_images_cycle_without_repeats_before_all_seen() -> None:
    pids = [0] * 8 + [1] * 8
    s = PKSampler(pids, p=2, k=2, num_batches=8)
    seen: dict[int, Counter] = {0: Counter(), 1: Counter()}
    for b in s:
        for i in b:
            seen[pids[i]][i] += 1
    for c in seen.values():
        assert set(c.values()) == {2}  # 16 draws of 8 images each: every image exactly twice


def test_resume_exactly() -> None:
    pids = _pids([6] * 10)
    full = PKSampler(pids, 2, 3, seed=3, num_batches=6)
    full.set_epoch(4)
    expected = list(full)
    s = PKSampler(pids, 2, 3, seed=3, num_batches=6)
    s.set_epoch(4)
    it = iter(s)
    head = [next(it) for _ in range(2)]
    state = s.state_dict()
    assert state["epoch"] == 4 and state["position"] == 2
    r = PKSampler(pids, 2, 3, seed=0, num_batches=6)
    r.load_state_dict(state)
    r.set_epoch(4)  # the trainer calls this again: same epoch keeps the position
    assert head + list(r) == expected
    r.set_epoch(5)
    assert r.state_dict()["position"] == 0
    with pytest.raises(ConfigError, match="k=3"):
        PKSampler(pids, 2, 4).load_state_dict(state)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="fewer than P"):
        PKSampler([0, 0, 1, 1], p=3, k=2)
    with pytest.raises(ConfigError):
        PKSampler([0, 1], p=1, k=0)
    with pytest.raises(ConfigError):
        PKSampler([0, 1], p=1, k=1, rank=2, world_size=2)
