"""The plain per-image pipeline, as peers do it: each file opened with PIL in DataLoader workers.

Kept for comparison with the batched cache + augmentation path (``benchmarks/bench_data.py``).
Both take the same ``reidkit.data.augment.AugmentConfig`` and draw their random choices with
the same functions (``reidkit.data.augment.sample_crop``, ``sample_erase``), here one image
at a time from torch's per-worker random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from reidkit.data.augment import (
    AugmentConfig,
    cutout_boxes,
    erase_,
    normalize_,
    sample_crop,
    sample_cutout,
    sample_erase,
)
from reidkit.errors import ConfigError
from reidkit.utils.images import read_image, resize_rgb


class PerImageDataset(Dataset):
    """``(image float (3, H, W), pid)`` per index: read, resize, crop/flip (train), normalise, erase and
    cutout (train)."""

    def __init__(self, paths: Sequence[str], pids: Sequence[int], cfg: AugmentConfig, train: bool = True) -> None:
        if len(paths) != len(pids):
            raise ConfigError(f"PerImageDataset: expected one pid per path, got {len(paths)} paths and {len(pids)} pids")
        cfg.validate()
        self.paths = [str(p) for p in paths]
        self.pids = [int(p) for p in pids]
        self.cfg = cfg
        self.train = train
        self.cutout_fill = replace(cfg, erase_value="mean")  # Cutout fills the mean pixel, whatever erasing does

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        cfg = self.cfg
        h, w = cfg.size
        img = resize_rgb(read_image(self.paths[index]), (h, w))
        train = self.train and cfg.pipeline != "none"
        if train and cfg.pipeline == "mancs":
            c = {k: int(v[0]) for k, v in sample_crop(1, h, w, cfg, None).items()}
            box = (c["left"], c["top"], c["left"] + c["width"], c["top"] + c["height"])
            img = resize_rgb(img, (h, w), box=box)
        if train and float(torch.rand(1)) < cfg.flip_p:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = normalize_(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float()[None], cfg.mean, cfg.std)
        if train:
            er = sample_erase(1, h, w, cfg, None)
            if bool(er["erase"][0]):
                params = {"erase": er["erase"], **{f"erase_{k}": er[k] for k in ("top", "left", "height", "width")},
                          "noise_seed": torch.randint(0, 2**62, (1,))}
                erase_(x, params, cfg, vectorised=False)
            if cfg.cutout_p > 0:
                cut = sample_cutout(1, h, w, cfg, None)
                boxes = cutout_boxes({"cutout": cut["erase"], **{f"cutout_{k}": cut[k]
                                                                 for k in ("top", "left", "height", "width")}})
                erase_(x, boxes, self.cutout_fill, vectorised=False)  # type: ignore[arg-type]
        x = x[0]
        return x, self.pids[index]


def make_loader(
    paths: Sequence[str],
    pids: Sequence[int],
    cfg: AugmentConfig,
    batch_size: int = 64,
    workers: int = 0,
    train: bool = True,
    batch_sampler: Sampler[list[int]] | None = None,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over ``PerImageDataset`` (shuffled batches, or ``batch_sampler`` such as ``PKSampler``)."""
    ds = PerImageDataset(paths, pids, cfg, train=train)
    g = torch.Generator()
    g.manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(ds, batch_sampler=batch_sampler, num_workers=workers, generator=g,
                          persistent_workers=workers > 0)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=workers, generator=g,
                      persistent_workers=workers > 0)
