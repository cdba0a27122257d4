"""Attention-map pictures (STADB Fig. 3 style): each input crop, then its maps as jet heatmaps over it.

The maps come from the model contract's ``visual_maps(x)`` (N, h, w): for STADB the self-thresholding
attention (``sta_attention``), the drop mask (``drop_mask``), the CBAM spatial attention
(``spatial_attention``) and channel-mean activations; for Mancs the FAB masks (``fab1..fab3``). Each map is
upsampled to the crop size and min-max scaled per picture: red = high response, blue = low. The drop mask
(1 = kept, 0 = dropped) is drawn inverted and unsmoothed, so the dropped block is red. A constant map
(for example a saturated attention) is drawn uniformly blue with its value written on it.

Examples:
    >>> emb = reidkit.load("model.safetensors")  # doctest: +SKIP
    >>> draw_attention_maps(emb, ["a.jpg", "b.jpg"], "attention.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from reidkit.viz.ranklist import label_font, save_png

LABELS = {
    "activation": "activation",
    "sta_attention": "self-thresh. attention",
    "drop_mask": "drop mask (red = dropped)",
    "spatial_attention": "CBAM spatial att.",
    "attended_activation": "attended activation",
    "fab1": "FAB mask conv2",
    "fab2": "FAB mask conv3",
    "fab3": "FAB mask conv4",
}
# Preferred column order; other keys follow alphabetically.
ORDER = ("sta_attention", "drop_mask", "spatial_attention", "attended_activation", "fab1", "fab2", "fab3",
         "activation")


def _jet(values: np.ndarray) -> np.ndarray:
    """float array in [0, 1] → uint8 RGB through matplotlib's jet colormap."""
    from matplotlib import colormaps

    rgba = colormaps["jet"](np.clip(values, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


BINARY_INVERTED = ("drop_mask",)  # 1 = kept: drawn as 1 - mask with nearest upsampling


def overlay_heatmap(image_u8: torch.Tensor | np.ndarray, amap: torch.Tensor | np.ndarray,
                    alpha: float = 0.5, nearest: bool = False) -> np.ndarray:
    """Blend a jet heatmap of ``amap`` (h, w) over an RGB crop (3, H, W tensor or H×W×3 array).

    The map is upsampled to H×W (bilinear, or ``nearest``) and min-max scaled (a constant map becomes 0).
    Returns H×W×3 uint8.

    Examples:
        >>> overlay_heatmap(np.zeros((128, 64, 3), np.uint8), np.random.rand(16, 8)).shape
        (128, 64, 3)
    """
    img = image_u8.permute(1, 2, 0).cpu().numpy() if torch.is_tensor(image_u8) else np.asarray(image_u8)
    h, w = img.shape[:2]
    m = torch.as_tensor(np.asarray(amap, dtype=np.float32))[None, None]
    if nearest:
        m = F.interpolate(m, size=(h, w), mode="nearest")[0, 0].numpy()
    else:
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(m)
    heat = _jet(m).astype(np.float32)
    return (alpha * heat + (1.0 - alpha) * img.astype(np.float32)).round().clip(0, 255).astype(np.uint8)


def map_order(keys: Sequence[str]) -> list[str]:
    """Map names in drawing order: the known maps first (STADB, then Mancs), others alphabetically."""
    known = [k for k in ORDER if k in keys]
    return known + sorted(k for k in keys if k not in ORDER)


def _wrap(text: str, width: int, font: object, draw: ImageDraw.ImageDraw) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels (words are kept whole)."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textbbox((0, 0), trial, font=font)[2] <= width:  # type: ignore[arg-type]
            lines[-1] = trial
        else:
            lines.append(word)
    return lines or [""]


def render_attention_grid(images_u8: torch.Tensor, maps: Mapping[str, torch.Tensor],
                          names: Sequence[str] | None = None, keys: Sequence[str] | None = None,
                          alpha: float = 0.5, scale: int = 1) -> Image.Image:
    """A grid picture: one row per crop — the crop, then one heatmap overlay per map — with column labels.

    Examples:
        >>> u8 = torch.zeros(2, 3, 128, 64, dtype=torch.uint8)
        >>> render_attention_grid(u8, {"drop_mask": torch.rand(2, 8, 4)}).size
        (... , ...)  # doctest: +SKIP
    """
    n, _, h, w = images_u8.shape
    cols = list(keys) if keys is not None else map_order(list(maps))
    missing = [k for k in cols if k not in maps]
    if missing:
        raise KeyError(f"no map named {missing[0]!r}; available: {', '.join(maps)}")
    tw, th = w * scale, h * scale
    gap, name_w = 6, 0
    font = label_font(11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if names:
        name_w = 8 + max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), s, font=font)[2]
                         for s in names)
    headers = [_wrap(t, tw + gap - 2, font, measure) for t in ["input", *[LABELS.get(k, k) for k in cols]]]
    label_h = 6 + 13 * max(len(hd) for hd in headers)
    width = name_w + gap + (1 + len(cols)) * (tw + gap)
    height = label_h + n * (th + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(headers):
        x = name_w + gap + c * (tw + gap)
        for li, line in enumerate(lines):
            box = draw.textbbox((0, 0), line, font=font)
            draw.text((x + (tw - (box[2] - box[0])) / 2, 2 + 13 * li), line, font=font, fill=(20, 20, 20))
    for r in range(n):
        y = label_h + r * (th + gap)
        img = images_u8[r]
        if names:
            draw.text((4, y + th / 2 - 6), names[r], font=font, fill=(20, 20, 20))
        tiles = [img.permute(1, 2, 0).cpu().numpy()]
        notes: list[str | None] = [None]
        for k in cols:
            m = maps[k][r].float()
            if k in BINARY_INVERTED:
                m = 1.0 - m
            tiles.append(overlay_heatmap(img, m, alpha, nearest=k in BINARY_INVERTED))
            lo, hi = float(m.min()), float(m.max())
            notes.append(f"const {float(maps[k][r].float().mean()):.3g}" if hi - lo <= 1e-12 else None)
        for c, (arr, note) in enumerate(zip(tiles, notes, strict=True)):
            tile = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
            if scale != 1:
                tile = tile.resize((tw, th), Image.BILINEAR)
            x = name_w + gap + c * (tw + gap)
            canvas.paste(tile, (x, y))
            if note:
                draw.rectangle([x, y + th - 15, x + tw - 1, y + th - 1], fill=(255, 255, 255))
                draw.text((x + 2, y + th - 14), note, font=font, fill=(20, 20, 20))
    return canvas


def draw_attention_maps(embedder: Any, images: Any, out_png: str | os.PathLike[str],
                        names: Sequence[str] | None = None, keys: Sequence[str] | None = None,
                        alpha: float = 0.5) -> Path:
    """Compute ``visual_maps`` for ``images`` with a loaded ``reidkit.inference.Embedder`` and save the grid.

    ``images``: paths, PIL images or arrays (anything ``Embedder.embed`` accepts). Returns ``out_png``.

    Examples:
        >>> draw_attention_maps(reidkit.load("model.pt"), ["a.jpg"], "att.png")  # doctest: +SKIP
    """
    u8, maps = embedder.visual_maps(images)
    return save_png(render_attention_grid(u8, maps, names, keys, alpha), out_png)
