"""Learning-rate schedules: the STADB paper schedule checked by hand at several epochs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reidkit.engine.config import ScheduleConfig, load_config
from reidkit.engine.schedules import EpochSchedule, lr_at

REPO = Path(__file__).resolve().parents[2]

# the STADB paper, §4.2: lr = 1e-4 * (ep // 5 + 1) for ep < 50, 1e-3 until 200, 1e-4 until 300, 1e-5 after
STADB_BY_HAND = {
    0: 1e-4, 1: 1e-4, 4: 1e-4, 5: 2e-4, 9: 2e-4, 10: 3e-4, 24: 5e-4, 25: 6e-4, 44: 9e-4, 45: 1e-3, 49: 1e-3,
    50: 1e-3, 100: 1e-3, 199: 1e-3, 200: 1e-4, 250: 1e-4, 299: 1e-4, 300: 1e-5, 450: 1e-5, 599: 1e-5,
}


@pytest.mark.parametrize("epoch,expected", sorted(STADB_BY_HAND.items()))
def test_stadb_schedule_by_hand(epoch: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="stadb")
    assert lr_at(cfg, 1e-3, epoch, 600) == pytest.approx(expected, rel=1e-9)


def test_stadb_preset_uses_the_paper_schedule() -> None:
    cfg = load_config(REPO / "reidkit" / "configs" / "stadb_market1501.yaml")
    assert cfg.train.epochs == 600 and (cfg.sampler.p, cfg.sampler.k) == (32, 4) and cfg.optim.name == "adam"
    got = [lr_at(cfg.schedule, cfg.optim.lr, e, cfg.train.epochs) for e in sorted(STADB_BY_HAND)]
    assert got == pytest.approx([STADB_BY_HAND[e] for e in sorted(STADB_BY_HAND)], rel=1e-9)


def test_mancs_preset_constant_lr_and_clipping() -> None:
    cfg = load_config(REPO / "reidkit" / "configs" / "mancs_market1501.yaml")
    assert [lr_at(cfg.schedule, cfg.optim.lr, e, 160) for e in (0, 30, 60, 159)] == pytest.approx([3e-4] * 4)
    assert cfg.optim.grad_clip is not None and cfg.optim.grad_clip > 0
    assert cfg.train.epochs == 160 and (cfg.sampler.p, cfg.sampler.k) == (16, 16)
    cuhk = load_config(REPO / "reidkit" / "configs" / "mancs_cuhk03.yaml")
    assert (cuhk.sampler.p, cuhk.sampler.k) == (32, 8)


def test_step_constant_cosine() -> None:
    step = ScheduleConfig(kind="step", milestones=[10, 20], gamma=0.5)
    assert [lr_at(step, 1.0, e, 30) for e in (0, 9, 10, 19, 20, 29)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    warm = ScheduleConfig(kind="constant", warmup_epochs=4, warmup_step=1)
    assert [lr_at(warm, 1.0, e, 10) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = ScheduleConfig(kind="cosine", min_factor=0.1)
    assert lr_at(cos, 1.0, 0, 11) == pytest.approx(1.0)
    assert lr_at(cos, 1.0, 5, 11) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(cos, 1.0, 10, 11) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 1.0)))


def test_epoch_schedule_sets_every_param_group() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p1]}, {"params": [p2]}], lr=123.0)
    sched = EpochSchedule(ScheduleConfig(kind="stadb"), 1e-3, 600)
    assert sched.apply(opt, 7) == pytest.approx(2e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-4, 2e-4])
    state = sched.state_dict()
    other = EpochSchedule(ScheduleConfig(kind="stadb"), 1e-3, 600)
    other.load_state_dict(state)
    assert other.last_epoch == 7
