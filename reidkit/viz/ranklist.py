"""Rank-list pictures: a query and its top-k gallery images, framed green (same person) or red (another
person), as in STADB Fig. 4 and Mancs Fig. 5. Unknown correctness (``None``) gets a grey frame.

Examples:
    >>> draw_rank_list("q.jpg", ["g1.jpg", "g2.jpg"], [True, False], "rank.png",
    ...                distances=[0.31, 0.52], title="query 0001_c1")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from reidkit.errors import ReidkitError
from reidkit.utils.atomic import atomic_path
from reidkit.utils.images import ImageReadError, read_image

TILE = (64, 128)  # (W, H) of one crop in the picture
BORDER = 5
GAP = 6
QUERY_GAP = 18
GREEN = (0, 170, 0)
RED = (220, 0, 0)
GREY = (150, 150, 150)
QUERY = (40, 40, 40)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font of picture labels, ``size`` pixels high (PIL's default font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _tile(path: str | os.PathLike[str] | Image.Image, size: tuple[int, int]) -> Image.Image:
    if isinstance(path, Image.Image):
        img = path.convert("RGB")
    else:
        try:
            img = read_image(path)
        except ImageReadError:
            img = Image.new("RGB", size, (200, 200, 200))
            d = ImageDraw.Draw(img)
            d.line([(0, 0), size], fill=(120, 120, 120), width=2)
            d.line([(0, size[1]), (size[0], 0)], fill=(120, 120, 120), width=2)
            return img
    return img.resize(size, Image.BILINEAR)


def _text_center(draw: ImageDraw.ImageDraw, cx: float, y: float, text: str,
                 font: ImageFont.ImageFont | ImageFont.FreeTypeFont, fill: tuple[int, int, int]) -> None:
    box = draw.textbbox((0, 0), text, font=font)
    draw.text((cx - (box[2] - box[0]) / 2, y), text, font=font, fill=fill)


def _fmt_distance(d: float) -> str:
    return f"{d:.3f}" if abs(d) < 10 else f"{d:.1f}"


def render_rank_list(
    query_path: str | os.PathLike[str] | Image.Image,
    gallery_paths: Sequence[str | os.PathLike[str] | Image.Image],
    matches: Sequence[bool | None],
    distances: Sequence[float] | None = None,
    title: str | None = None,
    tile: tuple[int, int] = TILE,
) -> Image.Image:
    """The rank-list picture as a PIL image (see ``draw_rank_list``).

    Examples:
        >>> img = render_rank_list("q.jpg", ["g.jpg"], [True])  # doctest: +SKIP
    """
    if len(matches) != len(gallery_paths):
        raise ValueError(f"{len(matches)} match flags for {len(gallery_paths)} gallery images")
    if distances is not None and len(distances) != len(gallery_paths):
        raise ValueError(f"{len(distances)} distances for {len(gallery_paths)} gallery images")
    tw, th = tile
    cell_w = tw + 2 * BORDER
    font = label_font(12)
    title_h = 20 if title else 0
    label_h = 16
    dist_h = 14 if distances is not None else 0
    k = len(gallery_paths)
    width = GAP + cell_w + QUERY_GAP + k * (cell_w + GAP)
    height = GAP + title_h + label_h + th + 2 * BORDER + dist_h + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GAP, GAP), title, font=label_font(14), fill=TEXT)
    top = GAP + title_h

    def cell(x: int, img_src: str | os.PathLike[str] | Image.Image, colour: tuple[int, int, int],
             label: str, below: str | None) -> None:
        _text_center(draw, x + cell_w / 2, top, label, font, TEXT)
        y = top + label_h
        draw.rectangle([x, y, x + cell_w - 1, y + th + 2 * BORDER - 1], fill=colour)
        canvas.paste(_tile(img_src, tile), (x + BORDER, y + BORDER))
        if below is not None:
            _text_center(draw, x + cell_w / 2, y + th + 2 * BORDER + 1, below, font, TEXT)

    cell(GAP, query_path, QUERY, "query", None)
    x0 = GAP + cell_w + QUERY_GAP
    sep_x = GAP + cell_w + QUERY_GAP // 2
    draw.line([(sep_x, top + label_h), (sep_x, top + label_h + th + 2 * BORDER)], fill=GREY, width=1)
    for i, (g, m) in enumerate(zip(gallery_paths, matches, strict=True)):
        colour = GREEN if m is True else RED if m is False else GREY
        below = _fmt_distance(float(distances[i])) if distances is not None else None
        cell(x0 + i * (cell_w + GAP), g, colour, str(i + 1), below)
    return canvas


def stack_pictures(pictures: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Stack pictures vertically on a white background (one rank list per row, Fig. 5 style)."""
    if not pictures:
        raise ValueError("no pictures to stack")
    w = max(p.width for p in pictures)
    h = sum(p.height for p in pictures) + gap * (len(pictures) - 1)
    out = Image.new("RGB", (w, h), BACKGROUND)
    y = 0
    for p in pictures:
        out.paste(p, (0, y))
        y += p.height + gap
    return out


def save_png(img: Image.Image, out_png: str | os.PathLike[str]) -> Path:
    """Save a PIL image as PNG atomically (an existing file is replaced only when the new one is complete)."""
    out = Path(out_png)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def draw_rank_list(
    query_path: str | os.PathLike[str],
    gallery_paths: Sequence[str | os.PathLike[str]],
    matches: list[bool | None],
    out_png: str | os.PathLike[str],
    distances: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Draw a query and its ranked gallery images into ``out_png``; returns the path.

    ``matches[i]`` is True (same identity: green frame), False (red frame) or None (unknown: grey frame).
    ``distances`` are printed under each gallery image; unreadable images are drawn as a crossed grey box.

    Examples:
        >>> draw_rank_list("q.jpg", ["a.jpg", "b.jpg", "c.jpg"], [False, True, None], "rank.png",
        ...                distances=[0.2, 0.3, 0.4], title="query 0001")  # doctest: +SKIP
    """
    return save_png(render_rank_list(query_path, gallery_paths, matches, distances, title), out_png)


@dataclass
class RankRow:
    """One query's ranked result: what ``draw_rank_list`` draws, plus its AP and first-match rank."""

    query_index: int
    query_path: str
    gallery_paths: list[str]
    matches: list[bool | None]
    distances: list[float]
    ap: float | None = None
    first_match: int | None = None
    query_pid: int | None = None
    query_camid: int | None = None

    @property
    def title(self) -> str:
        """A short caption: query file, pid/camera, AP and the rank of the first correct match."""
        parts = [f"query #{self.query_index} {Path(self.query_path).name}"]
        if self.query_pid is not None:
            parts.append(f"pid {self.query_pid} camera {self.query_camid + 1}")
        if self.ap is not None and self.ap == self.ap:
            parts.append(f"AP {self.ap:.3f}")
        if self.first_match is not None:
            parts.append(f"first match at rank {self.first_match}")
        return " | ".join(parts)

    def render(self) -> Image.Image:
        """The rank-list picture of this row."""
        return render_rank_list(self.query_path, self.gallery_paths, self.matches, self.distances, self.title)


def dataset_rank_rows(data: Any, k: int = 10, metric: str = "euclidean", rerank: bool = False,
                      queries: int = 8, worst: bool = False, indices: Sequence[int] | None = None,
                      seed: int = 0) -> tuple[dict[str, Any], list[RankRow]]:
    """Evaluate a ``reidkit.inference.DatasetFeatures`` and pick queries to draw.

    Returns ``(metrics, rows)``: ``metrics`` from ``reidkit.eval.metrics.evaluate_distmat`` (mAP, mINP,
    cmc, per-query AP); ``rows`` for ``indices`` if given, else the ``queries`` lowest-AP queries when
    ``worst``, else ``queries`` queries drawn at random with ``seed``. Gallery items with the query's pid and
    camera are left out of the rank list (Market protocol); a match is a gallery item with the query's pid.

    Examples:
        >>> metrics, rows = dataset_rank_rows(read_dataset_features("f.safetensors"), worst=True)  # doctest: +SKIP
    """
    from reidkit.eval.distance import pairwise_distance
    from reidkit.eval.metrics import evaluate_distmat
    from reidkit.inference.features import check_finite

    check_finite(data.query_feats, "query_feats")
    check_finite(data.gallery_feats, "gallery_feats")
    if rerank:
        from reidkit.eval.rerank import rerank_distance

        dist = rerank_distance(data.query_feats, data.gallery_feats, metric=metric)
    else:
        dist = pairwise_distance(data.query_feats, data.gallery_feats, metric=metric)
    dist = dist.float().cpu()
    metrics = evaluate_distmat(dist, data.query_pids, data.gallery_pids, data.query_camids,
                               data.gallery_camids, per_query=True)
    ap = np.asarray(metrics["ap_per_query"], dtype=np.float64)
    nq = dist.shape[0]
    if indices is not None:
        bad = [i for i in indices if not 0 <= int(i) < nq]
        if bad:
            raise ReidkitError(f"query index {bad[0]} out of range; the features hold {nq} queries")
        chosen = [int(i) for i in indices]
    elif worst:
        valid = np.flatnonzero(~np.isnan(ap))
        chosen = [int(i) for i in valid[np.argsort(ap[valid], kind="stable")][:queries]]
    else:
        rng = np.random.default_rng(seed)
        chosen = sorted(int(i) for i in rng.choice(nq, size=min(queries, nq), replace=False))
    qp, gp = data.query_pids.tolist(), data.gallery_pids.tolist()
    qc, gc = data.query_camids.tolist(), data.gallery_camids.tolist()
    qpaths = data.query_paths or [f"query #{i}" for i in range(nq)]
    gpaths = data.gallery_paths or [f"gallery #{j}" for j in range(len(gp))]
    rows = []
    for i in chosen:
        order = torch.argsort(dist[i], stable=True).tolist()
        kept = [j for j in order if not (gp[j] == qp[i] and gc[j] == qc[i])]
        hits = [gp[j] == qp[i] for j in kept]
        first = hits.index(True) + 1 if True in hits else None
        top = kept[:k]
        rows.append(RankRow(i, qpaths[i], [gpaths[j] for j in top], [hits[t] for t in range(len(top))],
                            [float(dist[i, j]) for j in top], float(ap[i]) if not np.isnan(ap[i]) else None,
                            first, int(qp[i]), int(qc[i])))
    return metrics, rows
