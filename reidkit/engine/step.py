"""One optimisation step, shared by the trainer, the training benchmark and the tests, and the hooks that may
watch it.

A step: ``model(x)`` (train mode: a dict of outputs) → ``core.compute_losses(outputs, pids, epoch)`` (named,
weighted terms) → each hook's ``StepHook.on_losses`` → sum → a finiteness check (agreed across processes
under DDP) → backward → optional gradient clipping → optimiser step. The trainer calls each hook's
``StepHook.after_step`` once it has logged (and perhaps saved) the step.
``model`` is what runs the forward pass (possibly wrapped by DDP or ``torch.compile``), ``core`` the
``reidkit.models.ReIDModel`` inside it.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["KillAtStep", "NanAtStep", "NonFiniteLoss", "StepHook", "StepResult", "hooks_from_env", "train_step"]


class NonFiniteLoss(Exception):
    """The summed loss of a step was NaN or infinite (before any gradient was computed); ``terms`` holds the
    loss terms, ``bad`` the names of the non-finite ones (empty when only another process saw one)."""

    def __init__(self, terms: dict[str, float], bad: list[str]):
        super().__init__(", ".join(f"{k}={terms[k]:g}" for k in bad) or "another process's loss")
        self.terms, self.bad = terms, bad


@dataclass
class StepResult:
    """What one step did: each loss term and the total (``"loss"``) as floats, and the model's diagnostics."""

    losses: dict[str, float]
    diagnostics: dict[str, float] = field(default_factory=dict)


class StepHook:
    """Something that watches (or, for tests, disturbs) the steps; every method is a no-op by default."""

    def on_losses(self, step: int, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """May replace loss terms before they are summed; ``step`` is the running step's index (from 0)."""
        return losses

    def after_step(self, steps_done: int) -> None:
        """Called when ``steps_done`` steps of the run are complete, logged and (when due) saved."""


@dataclass
class NanAtStep(StepHook):
    """Makes the first loss term NaN at global step ``at`` (tests of the non-finite-loss stop)."""

    at: int

    def on_losses(self, step: int, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """The losses, the first one times NaN at step ``at``."""
        if step != self.at:
            return losses
        first = next(iter(losses))
        return {**losses, first: losses[first] * float("nan")}


@dataclass
class KillAtStep(StepHook):
    """Sends SIGKILL to this process once ``at`` steps are done (tests of interrupted runs)."""

    at: int

    def after_step(self, steps_done: int) -> None:
        """Kill the process when ``steps_done`` reaches ``at``."""
        if steps_done == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def hooks_from_env(environ: dict[str, str] | None = None) -> list[StepHook]:
    """The test hooks asked for in the environment, read once when a run starts: ``REIDKIT_DEBUG_NAN_AT_STEP=N``
    (``NanAtStep``: step N, from 0, gets a NaN loss) and ``REIDKIT_DEBUG_KILL_AT_STEP=N`` (``KillAtStep``:
    SIGKILL once N steps are done)."""
    env = os.environ if environ is None else environ
    hooks: list[StepHook] = []
    for key, cls in (("REIDKIT_DEBUG_NAN_AT_STEP", NanAtStep), ("REIDKIT_DEBUG_KILL_AT_STEP", KillAtStep)):
        raw = env.get(key, "").strip()
        if raw:
            hooks.append(cls(int(raw)))
    return hooks


def train_step(model: nn.Module, core: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, pids: Tensor,
               epoch: float, *, step: int = 0, autocast_dtype: torch.dtype | None = None,
               scaler: Any = None, grad_clip: float | None = None, hooks: Sequence[StepHook] = (),
               any_process: Any = None) -> StepResult:
    """Run one optimisation step (see the module docstring) and return its losses and diagnostics.

    ``autocast_dtype`` runs the forward pass and losses under ``torch.autocast`` on ``x``'s device; ``scaler``
    is a ``torch.amp.GradScaler`` for float16; ``any_process(flag) -> bool`` makes the finiteness check agree
    across processes (``reidkit.engine.distributed.all_reduce_flag``). A non-finite total raises
    ``NonFiniteLoss`` before the backward pass, so the weights stay as they were.
    """
    ctx = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        outputs = model(x)
        losses = core.compute_losses(outputs, pids, epoch)
    for hook in hooks:
        losses = hook.on_losses(step, losses)
    total = sum(v.float() for v in losses.values())
    bad = not bool(torch.isfinite(total).item())  # type: ignore[union-attr]
    if any_process is not None:
        bad = any_process(bad)
    values = {k: float(v.detach()) for k, v in losses.items()}
    if bad:
        raise NonFiniteLoss(values, [k for k, v in values.items() if not math.isfinite(v)])
    optimizer.zero_grad(set_to_none=True)
    params = core.parameters()
    if scaler is not None:
        scaler.scale(total).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()  # type: ignore[union-attr]
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    values["loss"] = float(total.detach())  # type: ignore[union-attr]
    diagnostics = {k: float(v) for k, v in core.diagnostics(outputs).items()} if hasattr(core, "diagnostics") else {}
    return StepResult(values, diagnostics)
