"""Batched augmentation: exact flips, erasing rectangles and crops within the claimed ranges, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    TrainAugment,
    crop_resize,
    erase_masks,
    normalize,
    sample_crop,
    sample_erase,
    test_batch,
)
from reidkit.errors import ConfigError

LO = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
HI = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))


def _u8(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_normalize_hand_values() -> None:
    u8 = torch.zeros(1, 3, 1, 2, dtype=torch.uint8)
    u8[0, :, 0, 1] = 255
    x = normalize(u8)
    for c in range(3):
        assert x[0, c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], abs=1e-6)
        assert x[0, c, 0, 1].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], abs=1e-6)


def test_test_batch_resizes_only_when_needed() -> None:
    u8 = _u8(2, 16, 8)
    assert torch.equal(test_batch(u8, (16, 8)), normalize(u8))
    assert tuple(test_batch(u8, (32, 12)).shape) == (2, 3, 32, 12)
    const = torch.full((1, 3, 16, 8), 100, dtype=torch.uint8)  # resizing a constant keeps it
    assert torch.allclose(test_batch(const, (8, 4)), normalize(torch.full((1, 3, 8, 4), 100, dtype=torch.uint8)), atol=1e-5)


@pytest.mark.parametrize("pipeline", ["stadb", "mancs", "none"])
def test_shapes_ranges_determinism(pipeline: str) -> None:
    cfg = AugmentConfig.for_pipeline(pipeline, erase_value="random")
    aug = TrainAugment(cfg)
    h, w = cfg.size
    u8 = _u8(6, h, w)
    a = aug(u8, _gen(1))
    assert a.dtype == torch.float32 and tuple(a.shape) == (6, 3, h, w)
    assert float(a.min()) >= LO - 1e-4 and float(a.max()) <= HI + 1e-4
    assert torch.equal(a, aug(u8, _gen(1)))
    if pipeline != "none":
        assert not torch.equal(a, aug(u8, _gen(2)))
    # a cache at another size is resized first
    assert tuple(aug(_u8(2, 64, 32), _gen(0)).shape) == (2, 3, h, w)


def test_flip_is_exact() -> None:
    cfg = AugmentConfig(pipeline="stadb", size=(12, 6), erase_p=0.0)
    aug = TrainAugment(cfg)
    u8 = _u8(32, 12, 6)
    params = aug.sample_params(32, _gen(3))
    out = aug.apply(u8, params)
    flipped = params["flip"]
    assert 0 < int(flipped.sum()) < 32
    assert torch.equal(out[flipped], normalize(torch.flip(u8[flipped], dims=[-1])))
    assert torch.equal(out[~flipped], normalize(u8[~flipped]))
    assert torch.equal(aug(u8, _gen(3)), out)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 64), w=st.integers(4, 48), seed=st.integers(0, 1000), value=st.sampled_from(["mean", "zero", "random"]),
       vectorised=st.booleans())
def test_erasing_rectangles(h: int, w: int, seed: int, value: str, vectorised: bool) -> None:
    cfg = AugmentConfig(pipeline="stadb", size=(h, w), flip_p=0.0, erase_p=1.0, erase_value=value)
    aug = TrainAugment(cfg, vectorised=vectorised)
    u8 = _u8(16, h, w, seed)
    params = aug.sample_params(16, _gen(seed))
    out = aug.apply(u8, params)
    ref = normalize(u8)
    masks = erase_masks(params, h, w, torch.device("cpu"))[:, 0]
    for i in range(16):
        t, lft, eh, ew = (int(params[f"erase_{k}"][i]) for k in ("top", "left", "height", "width"))
        if not bool(params["erase"][i]):
            assert torch.equal(out[i], ref[i])
            assert not bool(masks[i].any())
            continue
        assert t >= 0 and t + eh <= h and lft >= 0 and lft + ew <= w and eh < h and ew < w
        # area fraction and aspect ratio within range, up to rounding each side to whole pixels
        area = eh * ew
        slack = 0.5 * (eh + ew + 1) + 0.25
        assert 0.02 * h * w - slack <= area <= 0.4 * h * w + slack
        assert (eh + 0.5) / (ew - 0.5) >= 0.3 - 1e-9 if ew > 0.5 else True
        assert (eh - 0.5) / (ew + 0.5) <= 3.33 + 1e-9
        m = masks[i]
        assert int(m.sum()) == area and bool(m[t:t + eh, lft:lft + ew].all())
        assert torch.equal(out[i][:, ~m], ref[i][:, ~m])
        inside = out[i][:, m]
        if value == "mean":
            assert torch.allclose(inside, torch.zeros_like(inside), atol=1e-5)
        elif value == "zero":
            expect = torch.tensor([-mm / s for mm, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
            assert torch.allclose(inside, expect[:, None].expand_as(inside), atol=1e-5)
        else:
            assert float(inside.min()) >= LO - 1e-5 and float(inside.max()) <= HI + 1e-5


@pytest.mark.parametrize("pipeline", ["stadb", "mancs"])
@pytest.mark.parametrize("value", ["mean", "zero"])
def test_vectorised_and_per_sample_paths_agree(pipeline: str, value: str) -> None:
    cfg = AugmentConfig.for_pipeline(pipeline, size=(48, 24), erase_value=value)
    u8 = _u8(16, 48, 24)
    a = TrainAugment(cfg, vectorised=True)(u8, _gen(9))
    b = TrainAugment(cfg, vectorised=False)(u8, _gen(9))
    assert torch.equal(a, b)
    # a cache at another size takes the resize path
    u8 = _u8(16, 40, 20)
    assert torch.allclose(TrainAugment(cfg, vectorised=True)(u8, _gen(9)), TrainAugment(cfg, vectorised=False)(u8, _gen(9)))


def test_erase_probability_and_no_fit() -> None:
    cfg = AugmentConfig(pipeline="stadb", size=(64, 32), erase_p=0.5)
    er = sample_erase(2000, 64, 32, cfg, _gen(0))
    assert 0.45 < er["erase"].float().mean().item() < 0.55
    tiny = sample_erase(50, 1, 1, AugmentConfig(size=(1, 1), erase_p=1.0), _gen(0))
    assert not bool(tiny["erase"].any())  # nothing fits in a 1×1 image


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_crop_scale_and_ratio(seed: int) -> None:
    cfg = AugmentConfig.for_pipeline("mancs")
    h, w = cfg.size
    c = sample_crop(64, h, w, cfg, _gen(seed))
    ch, cw = c["height"].double(), c["width"].double()
    assert bool((c["top"] >= 0).all() and (c["top"] + c["height"] <= h).all())
    assert bool((c["left"] >= 0).all() and (c["left"] + c["width"] <= w).all())
    scale = ch * cw / (h * w)
    # sides are rounded to whole pixels: allow half a pixel on each
    assert bool((scale >= 0.64 * (1 - 0.5 / cw) * (1 - 0.5 / ch) - 1e-9).all()) and bool((scale <= 1.0).all())
    ratio = ch / cw
    assert bool((ratio >= 2.0 * (ch - 0.5) / ch * cw / (cw + 0.5) - 1e-9).all())
    assert bool((ratio <= 3.0 * (ch + 0.5) / ch * cw / (cw - 0.5) + 1e-9).all())


def test_crop_fallback_clamps_ratio() -> None:
    cfg = AugmentConfig(pipeline="mancs", size=(10, 10), crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))
    c = sample_crop(4, 10, 10, cfg, _gen(0))  # a 2:1 crop of the whole area never fits a square
    assert c["height"].tolist() == [10] * 4 and c["width"].tolist() == [5] * 4
    assert c["left"].tolist() == [2] * 4 and c["top"].tolist() == [0] * 4


def test_crop_resize_samples_the_box() -> None:
    h, w = 32, 16
    ramp_x = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w).expand(3, 3, h, w).contiguous()
    ramp_y = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1).expand(3, 3, h, w).contiguous()
    top, left = torch.tensor([0, 4, 8]), torch.tensor([0, 2, 5])
    ch, cw = torch.tensor([32, 20, 24]), torch.tensor([16, 10, 8])
    ox, oy = crop_resize(ramp_x, top, left, ch, cw), crop_resize(ramp_y, top, left, ch, cw)
    for i in range(3):
        # bilinear resampling of a linear ramp is exact: output pixel q reads input at box start + (q + .5)·scale − .5
        qx = torch.arange(w, dtype=torch.float64)
        ex = (left[i] + (qx + 0.5) * cw[i] / w - 0.5).clamp(0, w - 1)
        qy = torch.arange(h, dtype=torch.float64)
        ey = (top[i] + (qy + 0.5) * ch[i] / h - 0.5).clamp(0, h - 1)
        assert torch.allclose(ox[i, 0, 5], ex, atol=1e-6)
        assert torch.allclose(oy[i, 0, :, 3], ey, atol=1e-6)
    assert torch.allclose(ox[0], ramp_x[0], atol=1e-9)  # whole-image box: identity


def test_mancs_pipeline_crops_then_flips() -> None:
    cfg = AugmentConfig.for_pipeline("mancs", flip_p=0.5, erase_p=0.0)
    aug = TrainAugment(cfg)
    u8 = _u8(8, 256, 128)
    params = aug.sample_params(8, _gen(5))
    assert 0 < int(params["flip"].sum()) < 8
    x = u8.float() / 255
    ref = crop_resize(x, params["crop_top"], params["crop_left"], params["crop_height"], params["crop_width"])
    ref = torch.where(params["flip"][:, None, None, None], ref.flip(-1), ref)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(aug.apply(u8, params), (ref - mean) / std, atol=1e-4)


@pytest.mark.parametrize("bad", [{"pipeline": "x"}, {"erase_value": "blue"}, {"flip_p": 1.5}, {"erase_area": (0.5, 0.1)},
                                 {"crop_scale": (0.5, 1.2)}, {"crop_ratio": (0, 1)}, {"size": (0, 4)}])
def test_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"augment\."):
        AugmentConfig(**bad)


def test_wrong_input() -> None:
    with pytest.raises(ConfigError, match="uint8"):
        TrainAugment(AugmentConfig())(torch.zeros(1, 3, 4, 4), _gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_same_on_gpu() -> None:
    cfg = AugmentConfig.for_pipeline("mancs", erase_value="mean")
    aug = TrainAugment(cfg)
    u8 = _u8(8, 256, 128)
    cpu = aug(u8, _gen(4))
    gpu = aug(u8.cuda(), _gen(4))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_defaults_follow_the_papers() -> None:
    s, m = AugmentConfig.for_pipeline("stadb"), AugmentConfig.for_pipeline("mancs")
    assert s.size == (384, 128) and m.size == (256, 128)
    assert m.crop_scale == (0.64, 1.0) and m.crop_ratio == (2.0, 3.0)
    assert s.flip_p == 0.5 and s.erase_p == 0.5 and math.isclose(s.erase_ratio[1], 3.33)


def test_cutout_hand_made_batch() -> None:
    """A 12×6 batch, Cutout side round(0.5·12) = 6 at centres (1, 4) and (8, 0), clipped at the border: the squares
    [0, 4) × [1, 6) and [5, 11) × [0, 3) become the mean pixel (0 after normalising), nothing else changes."""
    cfg = AugmentConfig(pipeline="stadb", size=(12, 6), flip_p=0.0, erase_p=0.0, cutout_p=1.0, cutout_size=0.5)
    aug = TrainAugment(cfg, vectorised=False)
    u8 = torch.full((2, 3, 12, 6), 200, dtype=torch.uint8)
    params = aug.sample_params(2, _gen(0))
    params.update(cutout=torch.tensor([True, True]), cutout_top=torch.tensor([0, 5]), cutout_left=torch.tensor([1, 0]),
                  cutout_height=torch.tensor([4, 6]), cutout_width=torch.tensor([5, 3]))
    x = aug.apply(u8, params)
    zero = torch.zeros(2, 12, 6, dtype=torch.bool)
    zero[0, 0:4, 1:6] = True
    zero[1, 5:11, 0:3] = True
    assert torch.equal((x == 0).all(dim=1), zero)
    assert torch.allclose(x[~zero[:, None].expand_as(x)], normalize(u8)[~zero[:, None].expand_as(x)])
    assert torch.equal(TrainAugment(cfg, vectorised=True).apply(u8, params), x)


@given(seed=st.integers(0, 2**31 - 1), h=st.integers(1, 40), w=st.integers(1, 40), size=st.floats(0.05, 1.0))
@settings(max_examples=60, deadline=None)
def test_cutout_squares_are_centred_and_clipped(seed: int, h: int, w: int, size: float) -> None:
    """Every drawn square is the side round(size·h) square around an in-image centre, clipped to the image."""
    from reidkit.data.augment import sample_cutout

    cfg = AugmentConfig(size=(h, w), cutout_p=1.0, cutout_size=size)
    c = sample_cutout(16, h, w, cfg, _gen(seed))
    side = max(1, round(size * h))
    top, left, ch, cw = c["top"], c["left"], c["height"], c["width"]
    assert bool(c["erase"].all())
    assert bool(((top >= 0) & (left >= 0) & (top + ch <= h) & (left + cw <= w)).all())
    assert bool(((ch <= 2 * (side // 2)) & (cw <= 2 * (side // 2))).all())
    # unclipped squares (centre far enough from every border) have the full side (even part of it)
    inner = (top > 0) & (left > 0) & (top + ch < h) & (left + cw < w)
    assert bool(((ch[inner] == 2 * (side // 2)) & (cw[inner] == 2 * (side // 2))).all())


def test_cutout_probability_and_independence_of_other_draws() -> None:
    """cutout_p is the share of images cut; switching Cutout on draws last, so flips and erasing are unchanged."""
    from reidkit.data.augment import sample_params

    off = AugmentConfig(size=(64, 32))
    on = AugmentConfig(size=(64, 32), cutout_p=0.5)
    a, b = sample_params(4000, off, _gen(7)), sample_params(4000, on, _gen(7))
    assert "cutout" not in a
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    assert abs(float(b["cutout"].float().mean()) - 0.5) < 0.04


@pytest.mark.parametrize("bad", [{"cutout_p": -0.1}, {"cutout_p": 1.5}, {"cutout_size": 0.0}, {"cutout_size": 1.5}])
def test_cutout_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"augment\.cutout"):
        AugmentConfig(**bad)
