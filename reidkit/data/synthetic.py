"""Procedurally drawn pedestrians written in the Market-1501 layout, so every path of reidkit runs offline.

An *identity* is a fixed appearance (proportions, skin, hair, hat, upper and lower garments with
texture and logo, shoes, bag). A *camera* is a fixed imaging condition (colour cast, illumination,
blur, noise, background, detector jitter, occlusion rate). Each image draws a pose and viewpoint,
scale and misalignment, clutter and occluders from its own seeded generator, so the same seed
gives the same bytes whatever the number of workers.

Garment colours come from a small weighted palette, so many identities share their coarse
colours and only local detail (stripes, checks, logo, bag, hat, hair) tells them apart.

Layout written (``generate_dataset`` returns the dataset folder):
    OUT/Market-1501-v15.09.15/
        bounding_box_train/PPPP_cXs1_FFFFFF_BB.jpg   half of the ids
        bounding_box_test/ ...                       the other half + 0000 distractors + -1 junk
        query/ ...                                   one image per (test id, camera)
        gt_bbox/ ...                                 well-aligned extra shots per (test id, camera)
        reidkit_synth.json                           the generation parameters
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reidkit.errors import DatasetError, OutputError, ReidkitError
from reidkit.utils.atomic import atomic_path, atomic_write_json, output_folder, system_error
from reidkit.utils.limits import (
    MAX_SIDECAR_BYTES,
    MAX_SYNTH_EXTRA,
    MAX_SYNTH_IMAGES_PER_ID_CAM,
    MAX_SYNTH_SIDE,
    THREADS_PER_CPU,
    max_threads,
)
from reidkit.utils.progress import progress as show_progress
from reidkit.utils.textfile import read_text

DATASET_FOLDER = "Market-1501-v15.09.15"
META_FILE = "reidkit_synth.json"
FORMAT_VERSION = 1

RGB = tuple[int, int, int]

# Garment palette: few colours, dark ones common (as in real surveillance footage), so that
# many identities share their coarse colours.
GARMENT_PALETTE: tuple[RGB, ...] = (
    (30, 30, 34),  # black
    (222, 222, 216),  # white
    (125, 125, 128),  # grey
    (36, 46, 92),  # navy
    (62, 100, 168),  # blue
    (168, 38, 42),  # red
    (42, 96, 58),  # green
    (188, 168, 128),  # beige
)
GARMENT_WEIGHTS = np.array([0.24, 0.14, 0.15, 0.13, 0.1, 0.08, 0.08, 0.08])
LOGO_PALETTE: tuple[RGB, ...] = (
    (235, 200, 40), (230, 230, 230), (210, 40, 40), (40, 160, 220), (40, 180, 80), (20, 20, 20), (240, 120, 30),
)
SKIN_TONES: tuple[RGB, ...] = ((236, 200, 170), (214, 170, 132), (180, 130, 95), (130, 90, 62), (95, 65, 45))
HAIR_COLOURS: tuple[RGB, ...] = ((20, 18, 16), (60, 40, 25), (110, 75, 40), (190, 160, 110), (150, 150, 150))
SHOE_COLOURS: tuple[RGB, ...] = ((25, 25, 25), (230, 230, 230), (100, 65, 40), (70, 70, 80))

TEXTURES = ("plain", "hstripes", "vstripes", "checks", "dots", "split")
LOGO_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")
BAGS = ("none", "backpack", "shoulder", "hand")


@dataclass(frozen=True)
class IdentityParams:
    """The fixed appearance of one synthetic person."""

    height: float  # fraction of the crop height the person fills (before per-image scale jitter)
    build: float  # width multiplier
    skin: RGB
    hair: RGB
    hair_style: str  # short | long | bald
    hat: str  # none | cap | beanie
    hat_colour: RGB
    upper: RGB
    upper2: RGB  # texture colour
    texture: str  # one of TEXTURES
    period: int  # texture period in pixels at 128 px height
    sleeves: str  # long | short
    logo: str  # none or one of LOGO_SHAPES
    logo_colour: RGB
    logo_size: float
    lower: RGB
    lower_style: str  # trousers | shorts | skirt
    shoes: RGB
    bag: str  # one of BAGS
    bag_colour: RGB


@dataclass(frozen=True)
class CameraParams:
    """The fixed imaging conditions of one synthetic camera."""

    gain: tuple[float, float, float]  # colour cast (per-channel multipliers)
    brightness: float
    gradient: float  # vertical illumination slope
    blur: float  # Gaussian blur radius at 128 px height
    noise: float  # Gaussian noise sigma (0-255 scale)
    wall: RGB
    floor: RGB
    horizon: float  # floor line as a fraction of the height
    clutter: int  # mean number of clutter shapes
    jitter: float  # detector misalignment (fraction of the width)
    occlusion: float  # probability of an occluder
    quality: int  # JPEG quality
    view_bias: float  # probability of a front view (the rest back/side)


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _garment(rng: np.random.Generator) -> RGB:
    return GARMENT_PALETTE[int(rng.choice(len(GARMENT_PALETTE), p=GARMENT_WEIGHTS / GARMENT_WEIGHTS.sum()))]


def make_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw a random identity appearance from ``rng``."""
    upper = _garment(rng)
    upper2 = _garment(rng)
    while upper2 == upper:
        upper2 = _garment(rng)
    hat = str(rng.choice(["none", "cap", "beanie"], p=[0.7, 0.18, 0.12]))
    return IdentityParams(
        height=float(rng.uniform(0.84, 0.96)),
        build=float(rng.uniform(0.85, 1.15)),
        skin=_pick(rng, SKIN_TONES),
        hair=_pick(rng, HAIR_COLOURS),
        hair_style=str(rng.choice(["short", "long", "bald"], p=[0.6, 0.32, 0.08])),
        hat=hat,
        hat_colour=_garment(rng),
        upper=upper,
        upper2=upper2,
        texture=str(rng.choice(TEXTURES, p=[0.3, 0.18, 0.12, 0.14, 0.12, 0.14])),
        period=int(rng.integers(5, 11)),
        sleeves=str(rng.choice(["long", "short"], p=[0.6, 0.4])),
        logo=str(rng.choice(("none", *LOGO_SHAPES), p=[0.3] + [0.7 / len(LOGO_SHAPES)] * len(LOGO_SHAPES))),
        logo_colour=_pick(rng, LOGO_PALETTE),
        logo_size=float(rng.uniform(0.3, 0.5)),
        lower=_garment(rng),
        lower_style=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.7, 0.15, 0.15])),
        shoes=_pick(rng, SHOE_COLOURS),
        bag=str(rng.choice(BAGS, p=[0.35, 0.3, 0.2, 0.15])),
        bag_colour=_garment(rng),
    )


def _muted(rng: np.random.Generator, lo: int, hi: int, tint: int) -> RGB:
    """A greyish colour: a grey level in [lo, hi) plus a small per-channel tint."""
    g = int(rng.integers(lo, hi))
    return tuple(int(min(255, max(0, g + int(t)))) for t in rng.integers(-tint, tint + 1, size=3))  # type: ignore[return-value]


def _clutter_colour(rng: np.random.Generator) -> tuple[int, ...]:
    if rng.random() < 0.2:  # a sign or a poster: saturated
        return tuple(int(v) for v in rng.integers(20, 235, size=3))
    return _muted(rng, 30, 220, 30)


def make_camera(rng: np.random.Generator) -> CameraParams:
    """Draw random camera conditions from ``rng``."""
    cast = rng.uniform(0.82, 1.18, size=3)
    cast = cast / cast.mean()
    wall = _muted(rng, 70, 200, 25)
    floor = _muted(rng, 55, 165, 18)
    return CameraParams(
        gain=(float(cast[0]), float(cast[1]), float(cast[2])),
        brightness=float(rng.uniform(0.75, 1.2)),
        gradient=float(rng.uniform(-0.25, 0.25)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(2.0, 9.0)),
        wall=wall,  # type: ignore[arg-type]
        floor=floor,  # type: ignore[arg-type]
        horizon=float(rng.uniform(0.55, 0.8)),
        clutter=int(rng.integers(2, 7)),
        jitter=float(rng.uniform(0.03, 0.1)),
        occlusion=float(rng.uniform(0.05, 0.3)),
        quality=int(rng.integers(82, 96)),
        view_bias=float(rng.uniform(0.25, 0.6)),
    )


def identity_params(seed: int, pid: int) -> IdentityParams:
    """The identity with number ``pid`` of the dataset generated with ``seed``."""
    return make_identity(np.random.default_rng([seed, 1, pid]))


def camera_params(seed: int, cam: int) -> CameraParams:
    """The camera with number ``cam`` of the dataset generated with ``seed``."""
    return make_camera(np.random.default_rng([seed, 2, cam]))


def _jit(colour: RGB, rng: np.random.Generator, amount: int = 10) -> RGB:
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(min(255, max(0, c + int(x)))) for c, x in zip(colour, d, strict=True))  # type: ignore[return-value]


def _texture(ident: IdentityParams, w: int, h: int, period: float, phase: int) -> Image.Image:
    """A (w, h) RGB patch of the upper garment's texture."""
    w, h = max(w, 1), max(h, 1)
    a = np.array(ident.upper, dtype=np.uint8)
    b = np.array(ident.upper2, dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    p = max(2, round(period))
    if ident.texture == "hstripes":
        m = ((yy + phase) // max(1, p // 2)) % 2 == 0
    elif ident.texture == "vstripes":
        m = ((xx + phase) // max(1, p // 2)) % 2 == 0
    elif ident.texture == "checks":
        m = (((yy + phase) // p) + ((xx + phase) // p)) % 2 == 0
    elif ident.texture == "dots":
        m = (((yy + phase) % p) - p / 2) ** 2 + (((xx + phase) % p) - p / 2) ** 2 > (p / 3.2) ** 2
    elif ident.texture == "split":
        m = yy < h * 0.5
    else:
        m = np.ones((h, w), dtype=bool)
    arr = np.where(m[..., None], a, b).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _logo(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour: RGB) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r * 1.2), (cx + r, cy), (cx, cy + r * 1.2), (cx - r, cy)], fill=colour)
    elif shape == "cross":
        t = r * 0.38
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=colour)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=colour)
    elif shape == "bar":
        draw.rectangle([cx - r * 1.3, cy - r * 0.45, cx + r * 1.3, cy + r * 0.45], fill=colour)


def _background(cam: CameraParams, rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), _jit(cam.wall, rng, 12))
    d = ImageDraw.Draw(img)
    hy = int(h * (cam.horizon + rng.uniform(-0.05, 0.05)))
    d.rectangle([0, hy, w, h], fill=_jit(cam.floor, rng, 12))
    n = int(rng.poisson(cam.clutter))
    for _ in range(n):
        kind = rng.integers(4)
        col = _clutter_colour(rng)
        x0, y0 = rng.uniform(-0.2 * w, w), rng.uniform(-0.1 * h, hy)
        if kind == 0:  # window / sign / shop front
            d.rectangle([x0, y0, x0 + rng.uniform(0.1, 0.6) * w, y0 + rng.uniform(0.05, 0.35) * h], fill=col)
        elif kind == 1:  # pole
            d.rectangle([x0, 0, x0 + rng.uniform(0.03, 0.09) * w, hy + rng.uniform(0, 0.1) * h], fill=col)
        elif kind == 2:  # lines (railings, kerbs)
            y = rng.uniform(0, h)
            d.line([(0, y), (w, y + rng.uniform(-0.2, 0.2) * h)], fill=col, width=max(1, int(rng.integers(1, 4))))
        else:  # blob (plant, bin)
            r = rng.uniform(0.05, 0.25) * w
            d.ellipse([x0, y0, x0 + 2 * r, y0 + 2 * r], fill=col)
    return img


def _person(img: Image.Image, ident: IdentityParams, rng: np.random.Generator, cam: CameraParams) -> None:
    """Draw one pedestrian on ``img`` in place."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    u = h / 128.0  # pixel unit at the 128 px reference height
    scale = ident.height * rng.uniform(0.9, 1.04)
    ph = h * scale
    top = (h - ph) * rng.uniform(0.1, 0.9) + rng.normal(0, 0.02) * h
    cx = w / 2 + rng.normal(0, cam.jitter) * w
    r = rng.random()
    view = "front" if r < cam.view_bias else ("back" if r < cam.view_bias + (1 - cam.view_bias) / 2 else "side")
    facing = 1 if rng.random() < 0.5 else -1  # side view: which way the person walks
    side = view == "side"
    bw = 0.135 * ph * ident.build * (0.62 if side else 1.0)  # half shoulder width
    stride = rng.uniform(0.0, 1.0)
    skin, upper, lower = _jit(ident.skin, rng, 6), _jit(ident.upper, rng, 8), _jit(ident.lower, rng, 8)

    y_head = top + 0.075 * ph
    hr = 0.068 * ph
    y_sh = top + 0.165 * ph
    y_waist = top + 0.5 * ph
    y_knee = top + 0.73 * ph
    y_foot = top + 0.97 * ph
    hip = bw * 0.78

    # bag behind the body (backpack from the back is drawn later, on top)
    if ident.bag == "backpack" and side:
        bx = cx - facing * (bw + 0.06 * ph)
        d.rounded_rectangle([bx - 0.08 * ph, y_sh + 0.02 * ph, bx + 0.08 * ph, y_sh + 0.26 * ph], radius=3 * u,
                            fill=ident.bag_colour)

    # legs
    leg_w = 0.06 * ph * ident.build
    sw = (stride - 0.5) * 0.22 * ph if side else (stride - 0.5) * 0.05 * ph
    legs_x = [(cx - 0.45 * hip, cx - 0.45 * hip - sw), (cx + 0.45 * hip, cx + 0.45 * hip + sw)] if not side else \
        [(cx, cx - sw), (cx, cx + sw)]
    for x_hip, x_foot in legs_x:
        x_knee = (x_hip + x_foot) / 2
        if ident.lower_style == "trousers":
            d.line([(x_hip, y_waist), (x_knee, y_knee), (x_foot, y_foot)], fill=lower, width=int(2 * leg_w))
        else:
            d.line([(x_hip, y_waist), (x_knee, y_knee), (x_foot, y_foot)], fill=skin, width=int(1.5 * leg_w))
            if ident.lower_style == "shorts":
                d.line([(x_hip, y_waist), ((x_hip + x_knee) / 2 + (x_knee - x_hip) * 0.3, (y_waist + y_knee) / 2 + 0.05 * ph)],
                       fill=lower, width=int(2.1 * leg_w))
        d.ellipse([x_foot - 1.3 * leg_w + facing * side * leg_w * 0.6, y_foot - 0.7 * leg_w,
                   x_foot + 1.3 * leg_w + facing * side * leg_w * 0.6, y_foot + 0.6 * leg_w], fill=ident.shoes)
    if ident.lower_style == "skirt":
        d.polygon([(cx - hip, y_waist - 0.01 * ph), (cx + hip, y_waist - 0.01 * ph),
                   (cx + hip * 1.45, y_knee - 0.02 * ph), (cx - hip * 1.45, y_knee - 0.02 * ph)], fill=lower)
    else:
        d.polygon([(cx - hip, y_waist - 0.01 * ph), (cx + hip, y_waist - 0.01 * ph),
                   (cx + hip * 0.9, y_waist + 0.07 * ph), (cx - hip * 0.9, y_waist + 0.07 * ph)], fill=lower)

    # arms (behind the torso in side view only for the far arm)
    arm_w = int(0.055 * ph * ident.build)
    swing = (stride - 0.5) * 0.16 * ph
    sleeve_end = 0.55 if ident.sleeves == "long" else 0.25
    arms = [(-1, swing), (1, -swing)]
    hands: list[tuple[float, float]] = []

    def arm(sign: int, sw_: float) -> None:
        sx = cx + sign * (bw * 0.88 if not side else bw * 0.2)
        hx = sx + (sw_ * facing if side else sign * 0.02 * ph)
        hy = y_waist + 0.05 * ph
        ex, ey = (sx + hx) / 2, (y_sh + hy) / 2
        mx, my = sx + (hx - sx) * sleeve_end * 2, y_sh + (hy - y_sh) * sleeve_end * 1.2
        d.line([(sx, y_sh + 0.02 * ph), (ex, ey), (hx, hy)], fill=skin, width=arm_w)
        d.line([(sx, y_sh + 0.02 * ph), (mx if sleeve_end < 0.5 else ex, my if sleeve_end < 0.5 else ey)]
               + ([] if sleeve_end < 0.5 else [(hx, hy - 0.05 * ph)]), fill=upper, width=arm_w + 1)
        d.ellipse([hx - arm_w * 0.6, hy - arm_w * 0.6, hx + arm_w * 0.6, hy + arm_w * 0.6], fill=skin)
        hands.append((hx, hy))

    if side:
        arm(*arms[0])

    # torso with texture, pasted through a polygon mask
    poly = [(cx - bw, y_sh), (cx + bw, y_sh), (cx + hip * 1.02, y_waist), (cx - hip * 1.02, y_waist)]
    x0, x1 = math.floor(cx - bw) - 1, math.ceil(cx + bw) + 1
    y0, y1 = math.floor(y_sh) - 1, math.ceil(y_waist) + 1
    mask = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in poly], fill=255)
    ident_j = replace(ident, upper=upper, upper2=_jit(ident.upper2, rng, 8))
    tex = _texture(ident_j, mask.width, mask.height, ident.period * u, int(rng.integers(0, 3)))
    img.paste(tex, (x0, y0), mask)

    if view == "front" and ident.logo != "none":
        _logo(d, ident.logo, cx + rng.normal(0, 0.01) * ph, y_sh + 0.12 * ph, ident.logo_size * bw * 0.8, ident.logo_colour)
    elif side and ident.logo != "none":
        _logo(d, ident.logo, cx + facing * bw * 0.35, y_sh + 0.12 * ph, ident.logo_size * bw * 0.7, ident.logo_colour)

    if side:
        arm(*arms[1])
    else:
        for a in arms:
            arm(*a)

    # head, hair, hat
    d.rectangle([cx - hr * 0.4, y_head + hr * 0.6, cx + hr * 0.4, y_sh + 0.01 * ph], fill=skin)
    hx = cx + (facing * hr * 0.15 if side else 0)
    if ident.hair_style == "long":
        back = 1.0 if view == "back" else 0.0
        d.rounded_rectangle([hx - hr * 1.05, y_head - hr * 0.8, hx + hr * 1.05, y_head + hr * (1.6 + 0.8 * back)],
                            radius=hr * 0.8, fill=ident.hair)
    d.ellipse([hx - hr * 0.85, y_head - hr, hx + hr * 0.85, y_head + hr], fill=skin)
    if ident.hair_style != "bald":
        if view == "back":
            d.ellipse([hx - hr * 0.9, y_head - hr * 1.05, hx + hr * 0.9, y_head + hr * 0.95], fill=ident.hair)
        else:
            d.chord([hx - hr * 0.9, y_head - hr * 1.08, hx + hr * 0.9, y_head + hr * 0.5], 180, 360, fill=ident.hair)
    if view == "front":
        for ex in (-0.35, 0.35):
            d.point([(hx + ex * hr, y_head)], fill=(30, 25, 25))
    if ident.hat == "cap":
        d.chord([hx - hr * 0.95, y_head - hr * 1.15, hx + hr * 0.95, y_head + hr * 0.3], 180, 360, fill=ident.hat_colour)
        brim = hr * 0.9 * (facing if side else 0)
        d.rectangle([hx - hr * 0.95 + min(brim, 0), y_head - hr * 0.42, hx + hr * 0.95 + max(brim, 0), y_head - hr * 0.25],
                    fill=ident.hat_colour)
    elif ident.hat == "beanie":
        d.chord([hx - hr * 0.95, y_head - hr * 1.3, hx + hr * 0.95, y_head + hr * 0.15], 180, 360, fill=ident.hat_colour)

    # bags in front of the body
    if ident.bag == "backpack":
        if view == "back":
            d.rounded_rectangle([cx - bw * 0.75, y_sh + 0.02 * ph, cx + bw * 0.75, y_sh + 0.27 * ph], radius=4 * u,
                                fill=ident.bag_colour)
            d.rectangle([cx - bw * 0.5, y_sh + 0.17 * ph, cx + bw * 0.5, y_sh + 0.24 * ph], fill=_jit(ident.bag_colour, rng, 30))
        elif view == "front":
            for sx in (-0.55, 0.55):
                d.line([(cx + sx * bw, y_sh), (cx + sx * bw * 0.9, y_sh + 0.2 * ph)], fill=ident.bag_colour, width=max(1, int(2 * u)))
    elif ident.bag == "shoulder":
        s = 1 if view != "back" else -1
        d.line([(cx - s * bw * 0.8, y_sh), (cx + s * hip * 1.1, y_waist - 0.02 * ph)], fill=ident.bag_colour,
               width=max(1, int(2 * u)))
        bx = cx + s * hip * 1.1
        d.rectangle([bx - 0.06 * ph, y_waist - 0.06 * ph, bx + 0.06 * ph, y_waist + 0.05 * ph], fill=ident.bag_colour)
    elif ident.bag == "hand" and hands:
        hx_, hy_ = hands[-1]
        d.rectangle([hx_ - 0.05 * ph, hy_, hx_ + 0.05 * ph, hy_ + 0.1 * ph], fill=ident.bag_colour)


def _occlude(img: Image.Image, rng: np.random.Generator) -> None:
    w, h = img.size
    d = ImageDraw.Draw(img)
    col = _clutter_colour(rng)
    kind = rng.integers(3)
    if kind == 0:  # something low in front (car, bench, bin)
        d.rectangle([-1, h * rng.uniform(0.65, 0.85), w + 1, h + 1], fill=col)
    elif kind == 1:  # pole or passer-by at a side
        x = rng.uniform(-0.1, 0.35) * w if rng.random() < 0.5 else rng.uniform(0.65, 1.0) * w
        d.rectangle([x, -1, x + rng.uniform(0.15, 0.35) * w, h + 1], fill=col)
    else:  # a passer-by's head and shoulder
        x = rng.uniform(-0.2, 0.8) * w
        d.ellipse([x, h * 0.55, x + 0.6 * w, h * 1.3], fill=col)


def _camera_effects(img: Image.Image, cam: CameraParams, rng: np.random.Generator) -> Image.Image:
    h = img.height
    if cam.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cam.blur * h / 128.0 * rng.uniform(0.7, 1.3)))
    arr = np.array(img, dtype=np.float32)
    gain = np.array(cam.gain, dtype=np.float32) * cam.brightness * rng.uniform(0.9, 1.1)
    ramp = 1.0 + cam.gradient * np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None]
    arr *= gain * ramp
    noise = rng.standard_normal(arr.shape, dtype=np.float32)
    noise *= cam.noise
    arr += noise
    arr += 0.5
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def render_person(
    identity_params: IdentityParams | None,
    camera_params: CameraParams,
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 64),
    occlusion: bool | None = None,
    aligned: bool = False,
) -> Image.Image:
    """Draw one crop of size ``(H, W)``: the identity (or only background when None) seen by the camera.

    ``occlusion`` forces or forbids an occluder (default: the camera's rate); ``aligned`` removes the
    detector misalignment (hand-drawn boxes, as Market-1501's ``gt_bbox``).
    """
    h, w = int(size[0]), int(size[1])
    ss = 2  # draw at twice the size, then reduce: smoother edges
    cam = camera_params
    img = _background(cam, rng, w * ss, h * ss)
    if identity_params is not None:
        c = replace(cam, jitter=0.01) if aligned else cam
        _person(img, identity_params, rng, c)
    occ = (rng.random() < cam.occlusion) if occlusion is None else occlusion
    if occ and not aligned:
        _occlude(img, rng)
    img = img.reduce(ss)
    return _camera_effects(img, cam, rng)


# ----------------------------------------------------------------------------------------------
# Dataset generation


@dataclass(frozen=True)
class _Job:
    folder: str
    name: str
    pid: int  # identity number used for drawing (-1: background only, 0: a fresh random person)
    cam: int  # 1-based
    key: tuple[int, ...]
    aligned: bool = False
    junk: bool = False


def _plan(ids: int, cams: int, seed: int, k: int, distractors: int, junk: int, gt_bbox: bool) -> list[_Job]:
    rng = np.random.default_rng([seed, 0])
    jobs: list[_Job] = []
    frame = [0] * (cams + 1)

    def name(pid: int, cam: int, bb: int) -> str:
        frame[cam] += 25
        p = f"{pid:04d}" if pid >= 0 else "-1"
        return f"{p}_c{cam}s1_{frame[cam]:06d}_{bb:02d}.jpg"

    for i in range(ids):
        pid = i + 1
        train = i % 2 == 0
        n_cams = int(rng.integers(2, cams + 1)) if cams > 2 else cams
        cam_set = sorted(int(c) + 1 for c in rng.choice(cams, size=n_cams, replace=False))
        for cam in cam_set:
            n = max(1, k + int(rng.integers(-1, 2))) if k > 1 else k
            folder = "bounding_box_train" if train else "bounding_box_test"
            for j in range(n):
                jobs.append(_Job(folder, name(pid, cam, 1 + j % 8), pid, cam, (seed, 3, pid, cam, j)))
            if not train:
                jobs.append(_Job("query", name(pid, cam, 0), pid, cam, (seed, 4, pid, cam)))
                if gt_bbox:
                    for j in range(2):
                        jobs.append(_Job("gt_bbox", name(pid, cam, 0), pid, cam, (seed, 5, pid, cam, j), aligned=True))
    for j in range(distractors):
        cam = int(rng.integers(cams)) + 1
        jobs.append(_Job("bounding_box_test", name(0, cam, 1 + j % 8), 0, cam, (seed, 6, j)))
    for j in range(junk):
        cam = int(rng.integers(cams)) + 1
        jobs.append(_Job("bounding_box_test", name(-1, cam, 1 + j % 8), -1, cam, (seed, 7, j), junk=True))
    return jobs


@functools.lru_cache(maxsize=4096)
def _ident_cached(seed: int, pid: int) -> IdentityParams:
    return identity_params(seed, pid)


@functools.lru_cache(maxsize=256)
def _cam_cached(seed: int, cam: int) -> CameraParams:
    return camera_params(seed, cam)


def _render_job(job: _Job, seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(list(job.key))
    cam = _cam_cached(seed, job.cam)
    if job.junk:
        # Market's junk: mostly background, a fragment of a body, or a badly cropped person.
        if rng.random() < 0.5:
            return render_person(None, cam, rng, size)
        ident = make_identity(rng)
        full = render_person(ident, cam, rng, (size[0] * 2, size[1] * 2), occlusion=False)
        x, y = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
        return full.crop((x, y, x + size[1], y + size[0]))
    ident = make_identity(rng) if job.pid == 0 else _ident_cached(seed, job.pid)
    return render_person(ident, cam, rng, size, aligned=job.aligned)


def _encode(img: Image.Image, quality: int) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _run_chunk(args: tuple[list[_Job], int, tuple[int, int], str]) -> int:
    jobs, seed, size, root = args
    for job in jobs:
        img = _render_job(job, seed, size)
        data = _encode(img, _cam_cached(seed, job.cam).quality)
        with open(os.path.join(root, job.folder, job.name), "wb") as fh:
            fh.write(data)
    return len(jobs)


def render_bytes(seed: int, pid: int, cam: int, index: int = 0, size: tuple[int, int] = (128, 64)) -> bytes:
    """The JPEG bytes of one training-style image (for benchmarks and tests)."""
    job = _Job("x", "x.jpg", pid, cam, (seed, 3, pid, cam, index))
    return _encode(_render_job(job, seed, size), _cam_cached(seed, cam).quality)


def generate_dataset(
    out: str | os.PathLike[str],
    ids: int = 100,
    cams: int = 4,
    seed: int = 0,
    images_per_id_cam: int = 4,
    size: tuple[int, int] = (128, 64),
    distractors: int | None = None,
    junk: int | None = None,
    gt_bbox: bool = True,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a synthetic Market-1501-layout dataset under ``out`` and return the dataset folder.

    Ids ``0001..ids``: odd numbers train, even numbers test. Each id is seen by 2..``cams`` cameras
    with about ``images_per_id_cam`` gallery/train images each; each test id has one query per camera
    (and two aligned ``gt_bbox`` shots). The gallery also holds ``distractors`` 0000 images (default
    ``ids``) and ``junk`` -1 images (default ``ids // 5``). The folder is built beside its final
    place and renamed when complete. If it already exists with the same parameters it is reused;
    with other parameters it is an error unless ``overwrite``. ``workers`` > 1 renders in processes
    (same bytes as with one).
    """
    if ids < 2:
        raise DatasetError(f"{out}: synthetic data needs --ids >= 2 (one train and one test identity), got {ids}")
    if ids > 9999:
        raise DatasetError(f"{out}: Market-1501 names hold 4-digit ids; expected --ids <= 9999, got {ids}")
    if not 2 <= cams <= 9:
        raise DatasetError(f"{out}: expected 2 <= --cams <= 9 (Market names use one digit), got {cams}")
    if not 1 <= images_per_id_cam <= MAX_SYNTH_IMAGES_PER_ID_CAM:
        raise DatasetError(f"{out}: expected 1 <= --images-per-id-cam <= {MAX_SYNTH_IMAGES_PER_ID_CAM}, got "
                           f"{images_per_id_cam}")
    h, w = int(size[0]), int(size[1])
    if not (16 <= h <= MAX_SYNTH_SIDE and 8 <= w <= MAX_SYNTH_SIDE):
        raise DatasetError(f"{out}: expected an image size from 16x8 to {MAX_SYNTH_SIDE}x{MAX_SYNTH_SIDE}, got {h}x{w}")
    if not 0 <= workers <= max_threads():
        raise DatasetError(f"{out}: expected 0 <= workers <= {max_threads()} ({THREADS_PER_CPU} per CPU), got {workers}")
    distractors = ids if distractors is None else int(distractors)
    junk = max(1, ids // 5) if junk is None else int(junk)
    if not (0 <= distractors <= MAX_SYNTH_EXTRA and 0 <= junk <= MAX_SYNTH_EXTRA):
        raise DatasetError(f"{out}: expected --distractors and --junk between 0 and {MAX_SYNTH_EXTRA}, got "
                           f"{distractors} and {junk}")

    out = Path(out)
    target = out / DATASET_FOLDER
    meta = {
        "generator": "reidkit.data.synthetic", "format": FORMAT_VERSION, "ids": ids, "cams": cams, "seed": seed,
        "images_per_id_cam": images_per_id_cam, "size": [h, w], "distractors": distractors, "junk": junk,
        "gt_bbox": gt_bbox,
    }
    jobs = _plan(ids, cams, seed, images_per_id_cam, distractors, junk, gt_bbox)
    if target.exists():
        old = _read_meta(target)
        if old == {**meta, "num_images": len(jobs)} and not overwrite:
            return target
        if not overwrite:
            raise DatasetError(f"{target}: already exists with other contents; expected an empty place "
                               "(pass --force / overwrite=True to replace it)")
    output_folder(out, "the synthetic dataset")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{DATASET_FOLDER}.", dir=out))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the dataset ({exc.strerror or type(exc).__name__})") from None
    try:
        for folder in {j.folder for j in jobs} | {"bounding_box_train", "bounding_box_test", "query"}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        chunk = 64
        chunks = [(jobs[i:i + chunk], seed, (h, w), str(tmp)) for i in range(0, len(jobs), chunk)]
        bar = show_progress(len(jobs), "synth", "img", enabled=progress)
        if workers and workers > 1:
            ctx = mp.get_context("spawn" if os.name == "nt" else "fork")
            with ctx.Pool(workers) as pool:
                for n in pool.imap_unordered(_run_chunk, chunks):
                    bar.update(n)
        else:
            for c in chunks:
                n = _run_chunk(c)
                bar.update(n)
        bar.close()
        atomic_write_json(tmp / META_FILE, {**meta, "num_images": len(jobs)})
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = system_error(exc)
        if cause is not None and not isinstance(exc, OutputError):  # a full disk, a read-only folder
            raise OutputError(f"{out}: cannot write the dataset ({cause.strerror or cause})") from None
        raise
    return target


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads(read_text(folder / META_FILE, limit=MAX_SIDECAR_BYTES, what="a synthetic dataset's "
                                    "metadata"))
    except (ReidkitError, ValueError, RecursionError):
        return None


def parse_name(name: str) -> tuple[int, int]:
    """(pid, camera number) of a Market-1501 file name such as ``0002_c1s1_000451_03.jpg``."""
    pid_s, rest = name.split("_", 1)
    return int(pid_s), int(rest[1])


def save_sample_grid(
    dataset_dir: str | os.PathLike[str], out_png: str | os.PathLike[str], ids: int = 8, per_id: int = 6
) -> Path:
    """Save a picture: ``ids`` identities (rows) × up to ``per_id`` images from different cameras (columns).

    Reads ``bounding_box_train`` (or ``bounding_box_test``) of a Market-layout folder.
    """
    root = Path(dataset_dir)
    if (root / DATASET_FOLDER).is_dir():
        root = root / DATASET_FOLDER
    folder = root / "bounding_box_train"
    if not folder.is_dir():
        folder = root / "bounding_box_test"
    if not folder.is_dir():
        raise DatasetError(f"{dataset_dir}: expected a Market-1501 folder with bounding_box_train/")
    by_pid: dict[int, list[Path]] = {}
    for p in sorted(folder.glob("*.jpg")):
        pid, _cam = parse_name(p.name)
        if pid > 0:
            by_pid.setdefault(pid, []).append(p)
    pids = sorted(by_pid)[:ids]
    if not pids:
        raise DatasetError(f"{folder}: no identity images found")
    # prefer one image per camera, then fill with others
    rows: list[list[Path]] = []
    for pid in pids:
        files = by_pid[pid]
        seen: set[int] = set()
        first = [f for f in files if not (parse_name(f.name)[1] in seen or seen.add(parse_name(f.name)[1]))]
        rest = [f for f in files if f not in first]
        rows.append((first + rest)[:per_id])
    tiles = [[Image.open(f).convert("RGB") for f in row] for row in rows]
    th, tw = tiles[0][0].height, tiles[0][0].width
    pad = 4
    grid = Image.new("RGB", (per_id * (tw + pad) + pad, len(tiles) * (th + pad) + pad), (255, 255, 255))
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            grid.paste(t.resize((tw, th)), (pad + c * (tw + pad), pad + r * (th + pad)))
    out = Path(out_png)
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return out
