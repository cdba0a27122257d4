"""Each loss equals a brute-force Python loop over the batch; curriculum sampling follows Mancs eq. 3–6."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidkit.losses import (
    attention_bce,
    batch_hard_triplet_loss,
    cross_entropy,
    curriculum_mu_sigma,
    curriculum_sample,
    curriculum_triplet_loss,
    euclidean_dist,
    sigmoid_focal_loss,
)


def _pk(p: int = 4, k: int = 3, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(p * k, d, generator=g, dtype=torch.float64)
    pids = torch.arange(p).repeat_interleave(k)
    perm = torch.randperm(p * k, generator=g)
    return feats[perm], pids[perm]


def _d(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_loop(eps: float) -> None:
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    total = 0.0
    for i in range(6):
        z = [float(v) for v in logits[i]]
        lse = math.log(sum(math.exp(v) for v in z))
        q = [eps / 5 + (1 - eps) * (c == int(targets[i])) for c in range(5)]
        total += -sum(qc * (zc - lse) for qc, zc in zip(q, z, strict=True))
    assert float(cross_entropy(logits, targets, eps)) == pytest.approx(total / 6, abs=1e-5)
    assert float(cross_entropy(logits, targets, eps)) == pytest.approx(
        float(F.cross_entropy(logits, targets, label_smoothing=eps)), abs=1e-5)


@pytest.mark.parametrize("margin", [None, 0.3])
def test_batch_hard_triplet_matches_loop(margin: float | None) -> None:
    feats, pids = _pk()
    n = len(pids)
    total = 0.0
    for i in range(n):
        dp = max(_d(feats[i], feats[j]) for j in range(n) if j != i and pids[j] == pids[i])
        dn = min(_d(feats[i], feats[j]) for j in range(n) if pids[j] != pids[i])
        total += math.log1p(math.exp(dp - dn)) if margin is None else max(0.0, margin + dp - dn)
    assert float(batch_hard_triplet_loss(feats, pids, margin)) == pytest.approx(total / n, abs=1e-5)


def test_batch_hard_triplet_gradients_and_degenerate_batch() -> None:
    feats, pids = _pk()
    feats = feats.float().requires_grad_()
    batch_hard_triplet_loss(feats, pids).backward()
    assert torch.isfinite(feats.grad).all()
    single = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(single, torch.tensor([0, 1, 2]))
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_euclidean_dist() -> None:
    a, b = torch.randn(3, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    got = euclidean_dist(a, b)
    for i in range(3):
        for j in range(4):
            assert float(got[i, j]) == pytest.approx(_d(a[i], b[j]), abs=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_sigmoid_focal_eq8_matches_loop(gamma: float) -> None:
    g = torch.Generator().manual_seed(2)
    logits, targets = torch.randn(7, 4, generator=g), torch.randint(0, 4, (7,), generator=g)
    total = 0.0
    for i in range(7):
        p = 1 / (1 + math.exp(-float(logits[i, int(targets[i])])))
        total += -((1 - p) ** gamma) * math.log(p)
    assert float(sigmoid_focal_loss(logits, targets, gamma)) == pytest.approx(total / 7, abs=1e-5)


def test_sigmoid_focal_all_classes_matches_loop() -> None:
    g = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(5, 4, generator=g), torch.randint(0, 4, (5,), generator=g)
    total = 0.0
    for i in range(5):
        for c in range(4):
            p = 1 / (1 + math.exp(-float(logits[i, c])))
            pt = p if c == int(targets[i]) else 1 - p
            total += -((1 - pt) ** 2) * math.log(pt)
    assert float(sigmoid_focal_loss(logits, targets, 2.0, all_classes=True)) == pytest.approx(total / 5, abs=1e-5)


def test_attention_bce_eq10_matches_loop() -> None:
    g = torch.Generator().manual_seed(4)
    logits, targets = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    total = 0.0
    for i in range(6):
        for c in range(5):
            q = 1 / (1 + math.exp(-float(logits[i, c])))
            y = 1.0 if c == int(targets[i]) else 0.0
            total += y * math.log(q) + (1 - y) * math.log(1 - q)
    assert float(attention_bce(logits, targets)) == pytest.approx(-total / 30, abs=1e-5)


def test_curriculum_mu_sigma_eq3_4() -> None:
    n = 60
    assert curriculum_mu_sigma(0, n) == pytest.approx((60.0, 15.0))
    assert curriculum_mu_sigma(15, n) == pytest.approx((30.0, 15.0))  # before t0: ceil(<0) -> [.]_+ = 0
    assert curriculum_mu_sigma(30, n) == pytest.approx((0.0, 15.0))  # t0: ceil(0) = 0
    assert curriculum_mu_sigma(45, n) == pytest.approx((0.0, 15 * 0.001))  # between t0 and t1: ceil = 1
    assert curriculum_mu_sigma(60, n) == pytest.approx((0.0, 15 * 0.001))  # t1: ceil(1) = 1
    assert curriculum_mu_sigma(61, n) == pytest.approx((0.0, 15 * 0.001**2))  # after t1: ceil = 2
    assert curriculum_mu_sigma(100, n)[0] == 0.0


def test_curriculum_triplets_structure_and_loss_matches_loop() -> None:
    p, k = 4, 3
    feats, pids = _pk(p, k)
    dist = euclidean_dist(feats, feats)
    trip = curriculum_sample(dist, pids, epoch=10, generator=torch.Generator().manual_seed(7))
    assert len(trip["anchor"]) == p * k * (k - 1)
    n = len(pids)
    for a, pos, neg, rank in zip(*(trip[x].tolist() for x in ("anchor", "positive", "negative", "position")), strict=True):
        assert pids[a] == pids[pos] and a != pos and pids[neg] != pids[a]
        negs = sorted((_d(feats[a], feats[j]), j) for j in range(n) if pids[j] != pids[a])
        assert negs[rank][1] == neg
    # every (anchor, positive) pair exactly once
    pairs = set(zip(trip["anchor"].tolist(), trip["positive"].tolist(), strict=True))
    assert len(pairs) == p * k * (k - 1)
    loss = curriculum_triplet_loss(feats, pids, 10, generator=torch.Generator().manual_seed(7), margin=0.5)
    total = sum(max(0.0, 0.5 + _d(feats[a], feats[q]) - _d(feats[a], feats[m]))
                for a, q, m in zip(trip["anchor"].tolist(), trip["positive"].tolist(), trip["negative"].tolist(), strict=True))
    assert float(loss) == pytest.approx(total / len(pairs), abs=1e-5)


def test_curriculum_late_epochs_pick_the_hardest_negative() -> None:
    feats, pids = _pk(5, 4)
    dist = euclidean_dist(feats, feats)
    for epoch in (45, 100):
        trip = curriculum_sample(dist, pids, epoch, generator=torch.Generator().manual_seed(0))
        assert (trip["position"] == 0).all()
    # epoch 0: mu = N_n (the easiest end)
    trip = curriculum_sample(dist, pids, 0, generator=torch.Generator().manual_seed(0), a=0.5)
    assert (trip["position"] == 16 - 1).float().mean() > 0.6  # N_n = 4 ids x 4


def test_curriculum_positions_follow_the_gaussian() -> None:
    p, k = 4, 4
    feats, pids = _pk(p, k, seed=5)
    dist = euclidean_dist(feats, feats)
    n_neg = (p - 1) * k  # 12
    epoch, a = 15.0, 3.0  # mu = 6, sigma = 3
    mu, sigma = curriculum_mu_sigma(epoch, n_neg, a=a)
    assert (mu, sigma) == (6.0, 3.0)
    g = torch.Generator().manual_seed(123)
    counts = torch.zeros(n_neg)
    for _ in range(300):
        pos = curriculum_sample(dist, pids, epoch, generator=g, a=a)["position"]
        counts += torch.bincount(pos, minlength=n_neg).float()
    dens = torch.tensor([math.exp(-((i - mu) ** 2) / (2 * sigma**2)) for i in range(n_neg)])
    expected = dens / dens.sum() * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 31.26  # chi-square, 11 d.o.f., p = 0.001
    emp_mean = float((counts * torch.arange(n_neg)).sum() / counts.sum())
    exp_mean = float((dens / dens.sum() * torch.arange(n_neg)).sum())
    assert emp_mean == pytest.approx(exp_mean, abs=0.1)
