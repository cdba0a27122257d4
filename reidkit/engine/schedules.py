"""Learning-rate schedules as plain functions of the (0-based) epoch.

The trainer sets the learning rate once at the start of every epoch from ``lr_at``,
so resuming needs nothing but the epoch number.

STADB (paper §4.2): Adam, ``lr = 1e-4·(⌊ep/5⌋+1)`` for ep = 0..49 (1e-4 … 1e-3), 1e-3
until epoch 200, 1e-4 until 300, 1e-5 after; 600 epochs. With ``kind="stadb"`` and
``optim.lr = 1e-3`` (the peak) this is exactly ``lr_at``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reidkit.engine.config import STADB_DEFAULTS as STADB_DEFAULTS  # kept importable from here
from reidkit.engine.config import ScheduleConfig, resolve_schedule
from reidkit.errors import ConfigError

__all__ = ["EpochSchedule", "lr_at", "resolve_schedule"]


def _warmup_factor(epoch: int, warmup_epochs: int, warmup_step: int) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return 1.0
    steps = math.ceil(warmup_epochs / warmup_step)
    return (epoch // warmup_step + 1) / steps


def lr_at(cfg: ScheduleConfig, base_lr: float, epoch: int, total_epochs: int) -> float:
    """The learning rate for 0-based ``epoch`` under schedule ``cfg`` with peak ``base_lr``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    cfg = resolve_schedule(cfg)
    warm = _warmup_factor(epoch, cfg.warmup_epochs, cfg.warmup_step)
    if cfg.kind == "constant":
        return base_lr * warm
    if cfg.kind == "step":
        passed = sum(1 for m in cfg.milestones if epoch >= m)
        return base_lr * warm * (cfg.gamma ** passed)
    if cfg.kind == "cosine":
        if epoch < cfg.warmup_epochs:
            return base_lr * warm
        span = max(1, total_epochs - 1 - cfg.warmup_epochs)  # the last epoch runs at min_factor·lr
        t = min(1.0, (epoch - cfg.warmup_epochs) / span)
        factor = cfg.min_factor + (1 - cfg.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        return base_lr * factor
    raise ConfigError(f"schedule.kind: unknown schedule {cfg.kind!r} (expected constant, step, stadb or cosine)")


@dataclass
class EpochSchedule:
    """Sets every param group's ``lr`` for an epoch; its state is just the last epoch applied."""

    cfg: ScheduleConfig
    base_lr: float
    total_epochs: int
    last_epoch: int = -1

    def lr(self, epoch: int) -> float:
        """The learning rate of ``epoch``."""
        return lr_at(self.cfg, self.base_lr, epoch, self.total_epochs)

    def apply(self, optimizer: object, epoch: int) -> float:
        """Set the optimiser's learning rate for ``epoch`` and return it."""
        value = self.lr(epoch)
        for group in optimizer.param_groups:  # type: ignore[attr-defined]
            group["lr"] = value
        self.last_epoch = epoch
        return value

    def state_dict(self) -> dict[str, object]:
        """Plain state for a checkpoint."""
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr, "total_epochs": self.total_epochs}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore ``state_dict`` (the schedule itself comes from the config)."""
        self.last_epoch = int(state.get("last_epoch", -1))  # type: ignore[arg-type]
