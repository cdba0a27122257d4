"""Choosing the torch device a command or a run works on."""

from __future__ import annotations

import torch

from reidkit.errors import ConfigError


def resolve_device(name: str | torch.device | None, local_rank: int = 0, option: str = "--device") -> torch.device:
    """``"auto"`` (or None) → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``"cuda"`` →
    ``cuda:<local_rank>``; other names as given. A device that is not there is a one-line
    ``ConfigError`` naming ``option``."""
    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option} {name!r}: expected cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {name!r}: CUDA is not available on this machine; use cpu or auto")
        if dev.index is None:
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"{option} 'mps': not available on this machine; use cpu or auto")
    return dev
