"""Batched training augmentation as tensor ops on the images' device (the same code on CPU and GPU).

Pipelines (from uint8 images, usually straight from ``reidkit.data.cache.ImageCache``):

- ``stadb`` (STADB's input, §4.2): resize to 384×128, horizontal flip, random erasing. The paper names no
  augmentation; the BDB and STADB presets follow the authors' code instead: ``erase_p`` 0 and Cutout
  (``cutout_p`` 0.5, below).
- ``mancs`` (the Mancs paper, §4.3): resize to 256×128, random crop with area fraction in
  ``crop_scale`` = [0.64, 1] and aspect ratio **height / width** in ``crop_ratio`` = [2, 3] (the
  paper's "aspect ratio in [2, 3]" read as a pedestrian's shape; a 256×128 image is 2:1), resized
  back to 256×128, flip, random erasing.
- ``none``: resize and normalise only.

Cutout (DeVries & Taylor, arXiv:1708.04552), off unless ``cutout_p`` > 0, as BDB's and STADB's public
code train (probability 0.5, a 64-pixel square at 384×128): with probability ``cutout_p`` a square of
side ``round(cutout_size · H)`` (``cutout_size`` 1/6: 64 of 384 rows) centred on a uniformly drawn pixel,
clipped at the image border, is set to the mean pixel (0 after normalisation, what the codes' multiply
by zero gives). It is drawn after every other choice and applied after random erasing.

Random erasing follows Zhong et al. (arXiv:1708.04896): with probability ``erase_p`` one
rectangle of area fraction U(``erase_area``) and aspect ratio (h/w) U(``erase_ratio``), placed
uniformly where it fits (up to ``ATTEMPTS`` tries; none fits → no erasing), filled with
``erase_value``: ``"mean"`` (the mean pixel, ≈0 after normalisation), ``"zero"`` (black pixels)
or ``"random"`` (uniform random pixels). Filling happens in pixel space just before the
normalisation (the same result as filling normalised values after it, in fewer passes). Random crops draw up to
``ATTEMPTS`` (scale, ratio) pairs and fall back to the whole image (ratio clamped into range),
as torchvision's ``RandomResizedCrop`` does.

Every random number is drawn from the ``torch.Generator`` passed in, in a fixed order, so a
generator seed fixes the output. ``sample_params`` / ``TrainAugment.apply`` split drawing
from applying; ``reidkit.data.per_image`` reuses the same draws with PIL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from reidkit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIPELINES = ("stadb", "mancs", "none")
ERASE_VALUES = ("random", "mean", "zero")
DEFAULT_SIZES = {"stadb": (384, 128), "mancs": (256, 128), "none": (256, 128)}
ATTEMPTS = 10


@dataclass
class AugmentConfig:
    """Parameters shared by the batched pipeline and the per-image one (see module doc)."""

    pipeline: str = "stadb"
    size: tuple[int, int] = (384, 128)
    flip_p: float = 0.5
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.4)
    erase_ratio: tuple[float, float] = (0.3, 3.33)
    erase_value: str = "mean"
    crop_scale: tuple[float, float] = (0.64, 1.0)
    crop_ratio: tuple[float, float] = (2.0, 3.0)
    cutout_p: float = 0.0
    cutout_size: float = 1.0 / 6.0
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        for name in ("erase_area", "erase_ratio", "crop_scale", "crop_ratio", "mean", "std"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        self.validate()

    @classmethod
    def for_pipeline(cls, pipeline: str, **overrides: object) -> AugmentConfig:
        """The paper's settings for ``pipeline`` (its input size), with ``overrides``."""
        if pipeline not in PIPELINES:
            raise ConfigError(f"augment.pipeline: expected one of {PIPELINES}, got {pipeline!r}")
        return cls(pipeline=pipeline, size=overrides.pop("size", DEFAULT_SIZES[pipeline]), **overrides)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        if self.pipeline not in PIPELINES:
            raise ConfigError(f"augment.pipeline: expected one of {PIPELINES}, got {self.pipeline!r}")
        if self.erase_value not in ERASE_VALUES:
            raise ConfigError(f"augment.erase_value: expected one of {ERASE_VALUES}, got {self.erase_value!r}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"augment.size: expected (H, W) positive, got {self.size}")
        for name in ("flip_p", "erase_p", "cutout_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"augment.{name}: expected a probability in [0, 1], got {v}")
        if not 0.0 < self.cutout_size <= 1.0:
            raise ConfigError(f"augment.cutout_size: expected a fraction of the height in (0, 1], got "
                              f"{self.cutout_size}")
        lo, hi = self.erase_area
        if not 0.0 < lo <= hi < 1.0:
            raise ConfigError(f"augment.erase_area: expected 0 < low <= high < 1, got {self.erase_area}")
        for name in ("erase_ratio", "crop_ratio"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ConfigError(f"augment.{name}: expected 0 < low <= high, got {getattr(self, name)}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"augment.crop_scale: expected 0 < low <= high <= 1, got {self.crop_scale}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("augment.mean/std: expected three means and three positive stds")


# ------------------------------------------------------------------------------------------------
# drawing parameters


def _uniform(n: tuple[int, ...], lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    dev = g.device if g is not None else torch.device("cpu")
    return lo + (hi - lo) * torch.rand(n, generator=g, device=dev, dtype=torch.float64)


def _first_valid(valid: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row, the values at the first True column of ``valid`` (n, T); row 0 where none."""
    idx = torch.argmax(valid.to(torch.int8), dim=1, keepdim=True)
    return (valid.any(dim=1), *(v.gather(1, idx).squeeze(1) for v in values))


def sample_erase(n: int, h: int, w: int, cfg: AugmentConfig, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Erasing rectangles for ``n`` images of ``h×w``: bool ``erase`` and int64 ``top, left, height, width``."""
    apply = torch.rand(n, generator=generator, device=_gdev(generator)) < cfg.erase_p
    area = _uniform((n, ATTEMPTS), *cfg.erase_area, generator) * (h * w)
    ratio = _uniform((n, ATTEMPTS), *cfg.erase_ratio, generator)
    eh = torch.round(torch.sqrt(area * ratio)).long()
    ew = torch.round(torch.sqrt(area / ratio)).long()
    valid = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    uy = _uniform((n, ATTEMPTS), 0.0, 1.0, generator)
    ux = _uniform((n, ATTEMPTS), 0.0, 1.0, generator)
    top = torch.floor(uy * (h - eh + 1).clamp(min=1)).long()
    left = torch.floor(ux * (w - ew + 1).clamp(min=1)).long()
    found, eh, ew, top, left = _first_valid(valid, eh, ew, top, left)
    return {"erase": (apply & found).cpu(), "top": top.cpu(), "left": left.cpu(), "height": eh.cpu(), "width": ew.cpu()}


def sample_cutout(n: int, h: int, w: int, cfg: AugmentConfig,
                  generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Cutout squares for ``n`` images of ``h×w``: bool ``erase`` and int64 ``top, left, height, width``
    (the square of side ``round(cutout_size·h)`` centred on a uniform pixel, clipped to the image)."""
    dev = _gdev(generator)
    apply = torch.rand(n, generator=generator, device=dev) < cfg.cutout_p
    side = max(1, round(cfg.cutout_size * h))
    cy = torch.randint(0, h, (n,), generator=generator, device=dev)
    cx = torch.randint(0, w, (n,), generator=generator, device=dev)
    y0, y1 = (cy - side // 2).clamp(0, h), (cy + side // 2).clamp(0, h)
    x0, x1 = (cx - side // 2).clamp(0, w), (cx + side // 2).clamp(0, w)
    return {"erase": apply.cpu(), "top": y0.cpu(), "left": x0.cpu(), "height": (y1 - y0).cpu(),
            "width": (x1 - x0).cpu()}


def sample_crop(n: int, h: int, w: int, cfg: AugmentConfig, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Random-resized-crop boxes for ``n`` images of ``h×w``: int64 ``top, left, height, width``."""
    area = _uniform((n, ATTEMPTS), *cfg.crop_scale, generator) * (h * w)
    ratio = _uniform((n, ATTEMPTS), *cfg.crop_ratio, generator)
    ch = torch.round(torch.sqrt(area * ratio)).long()
    cw = torch.round(torch.sqrt(area / ratio)).long()
    valid = (ch <= h) & (cw <= w) & (ch > 0) & (cw > 0)
    uy = _uniform((n, ATTEMPTS), 0.0, 1.0, generator)
    ux = _uniform((n, ATTEMPTS), 0.0, 1.0, generator)
    top = torch.floor(uy * (h - ch + 1).clamp(min=1)).long()
    left = torch.floor(ux * (w - cw + 1).clamp(min=1)).long()
    found, ch, cw, top, left = _first_valid(valid, ch, cw, top, left)
    # fallback: the whole image, its ratio clamped into range (centred)
    r0, r1 = cfg.crop_ratio
    if h / w < r0:
        fh, fw = h, min(w, max(1, round(h / r0)))
    elif h / w > r1:
        fh, fw = min(h, max(1, round(w * r1))), w
    else:
        fh, fw = h, w
    fb = {"top": (h - fh) // 2, "left": (w - fw) // 2, "height": fh, "width": fw}
    out = {"top": top, "left": left, "height": ch, "width": cw}
    return {k: torch.where(found, v, torch.full_like(v, fb[k])).cpu() for k, v in out.items()}


def _gdev(g: torch.Generator | None) -> torch.device:
    return g.device if g is not None else torch.device("cpu")


def sample_params(n: int, cfg: AugmentConfig, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """All random choices for a batch of ``n`` (drawn in a fixed order from ``generator``; CPU tensors).

    Keys: ``flip`` (bool), ``crop_*`` (mancs), ``erase``, ``erase_*`` and ``noise_seed`` (random fill),
    ``cutout`` and ``cutout_*`` (only when ``cutout_p`` > 0, drawn last: other draws do not depend on it).
    """
    h, w = cfg.size
    params: dict[str, torch.Tensor] = {}
    if cfg.pipeline == "mancs":
        for k, v in sample_crop(n, h, w, cfg, generator).items():
            params[f"crop_{k}"] = v
    if cfg.pipeline != "none":
        params["flip"] = (torch.rand(n, generator=generator, device=_gdev(generator)) < cfg.flip_p).cpu()
        er = sample_erase(n, h, w, cfg, generator)
        params["erase"] = er.pop("erase")
        for k, v in er.items():
            params[f"erase_{k}"] = v
        params["noise_seed"] = torch.randint(0, 2**62, (1,), generator=generator, device=_gdev(generator)).cpu()
        if cfg.cutout_p > 0:
            for k, v in sample_cutout(n, h, w, cfg, generator).items():
                params["cutout" if k == "erase" else f"cutout_{k}"] = v
    return params


def cutout_boxes(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The Cutout squares of ``params`` under the names ``erase_`` reads (None when there are none)."""
    if "cutout" not in params:
        return None
    boxes = {"erase": params["cutout"], "noise_seed": params.get("noise_seed", torch.zeros(1, dtype=torch.int64))}
    for k in ("top", "left", "height", "width"):
        boxes[f"erase_{k}"] = params[f"cutout_{k}"]
    return boxes


# ------------------------------------------------------------------------------------------------
# applying


def _check_u8(u8: torch.Tensor) -> None:
    if u8.dtype != torch.uint8 or u8.dim() != 4 or u8.shape[1] != 3:
        raise ConfigError(f"augment: expected uint8 images (N, 3, H, W), got {u8.dtype} {tuple(u8.shape)}")


def resize_float(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking, as PIL) of a float ``(N, C, H, W)`` batch; no-op at size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def normalize(
    u8: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` → float32 ``(x / 255 - mean) / std`` on the same device."""
    _check_u8(u8)
    return normalize_(u8.float(), mean, std)


def test_batch(
    u8: torch.Tensor, size: tuple[int, int], mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """Test-time input: resize to ``size`` = (H, W) if needed (bilinear, antialiased), then ``normalize``."""
    _check_u8(u8)
    x = resize_float(u8.float(), (int(size[0]), int(size[1])))
    return normalize_(x, mean, std)


test_batch.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def crop_resize(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, ch: torch.Tensor, cw: torch.Tensor,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample crop box (pixels) resized back to the input size with bilinear ``grid_sample``.

    ``flip`` (bool per sample) mirrors the result horizontally in the same pass.
    """
    n, _c, h, w = x.shape
    dev, dt = x.device, x.dtype
    top, left, ch, cw = (t.to(dev, dt) for t in (top, left, ch, cw))
    theta = torch.zeros(n, 2, 3, device=dev, dtype=dt)
    sx = cw / w
    if flip is not None:
        sx = torch.where(flip.to(dev), -sx, sx)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def erase_masks(params: dict[str, torch.Tensor], h: int, w: int, device: torch.device) -> torch.Tensor:
    """Bool ``(N, 1, H, W)``: True inside each sample's erasing rectangle (all False where not erased)."""
    top, left = params["erase_top"].to(device), params["erase_left"].to(device)
    eh, ew = params["erase_height"].to(device), params["erase_width"].to(device)
    rows = torch.arange(h, device=device).view(1, h)
    cols = torch.arange(w, device=device).view(1, w)
    rm = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    cm = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    m = rm[:, :, None] & cm[:, None, :] & params["erase"].to(device)[:, None, None]
    return m[:, None]


def erase_(
    x: torch.Tensor, params: dict[str, torch.Tensor], cfg: AugmentConfig, vectorised: bool | None = None
) -> torch.Tensor:
    """Fill each sample's erasing rectangle of the normalised batch ``x`` in place (see module doc).

    ``vectorised`` (default: on GPUs) builds one mask for the batch; otherwise each erased sample's
    rectangle is filled by slicing, which on a CPU touches only the erased pixels. ``mean`` and
    ``zero`` give identical results either way; ``random`` draws its pixels from a generator seeded
    with ``params["noise_seed"]`` on ``x``'s device, so its values differ between the two.
    """
    n, _c, h, w = x.shape
    if not bool(params["erase"].any()):
        return x
    mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(3, 1, 1)
    g = torch.Generator(device=x.device)
    g.manual_seed(int(params["noise_seed"][0]))
    if vectorised is None:
        vectorised = x.device.type != "cpu"
    if vectorised:
        mask = erase_masks(params, h, w, x.device)
        if cfg.erase_value == "mean":
            return x.masked_fill_(mask, 0.0)
        if cfg.erase_value == "zero":
            return torch.where(mask, (-mean / std)[None], x, out=x)
        noise = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype).sub_(mean).div_(std)
        return torch.where(mask, noise, x, out=x)
    er = params["erase"].tolist()
    tops, lefts = params["erase_top"].tolist(), params["erase_left"].tolist()
    hs, ws = params["erase_height"].tolist(), params["erase_width"].tolist()
    for i in range(n):
        if not er[i]:
            continue
        region = x[i, :, tops[i]:tops[i] + hs[i], lefts[i]:lefts[i] + ws[i]]
        if cfg.erase_value == "mean":
            region.zero_()
        elif cfg.erase_value == "zero":
            region.copy_((-mean / std).expand_as(region))
        else:
            noise = torch.rand(region.shape, generator=g, device=x.device, dtype=x.dtype)
            region.copy_((noise - mean) / std)
    return x


def normalize_(x: torch.Tensor, cfg_mean: tuple[float, ...], cfg_std: tuple[float, ...], peak: float = 255.0) -> torch.Tensor:
    """In place: ``(x / peak - mean) / std`` in one fused pass."""
    mean = torch.tensor(cfg_mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(cfg_std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    scale = 1.0 / (peak * std)
    bias = -mean / std
    return torch.addcmul(bias, x, scale, out=x)


def _flip_samples(x: torch.Tensor, flip: torch.Tensor, vectorised: bool) -> torch.Tensor:
    """A copy of ``x`` with the samples where ``flip`` is True mirrored horizontally."""
    if vectorised:
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    out = x.clone()
    for i in flip.nonzero().flatten().tolist():
        out[i] = x[i].flip(-1)
    return out


class TrainAugment:
    """The batched training pipeline of ``cfg.pipeline``: ``aug(u8, generator) -> normalised float``."""

    def __init__(self, cfg: AugmentConfig, vectorised: bool | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.cutout_fill = replace(cfg, erase_value="mean")
        self.vectorised = vectorised  # None: vectorised on GPUs, per affected sample on CPUs

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random choices for a batch of ``n`` (see ``sample_params``)."""
        return sample_params(n, self.cfg, generator)

    def apply(self, u8: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the pipeline with given random choices; float32 ``(N, 3, H, W)`` on ``u8``'s device.

        On a CPU, flips and erasing go sample by sample over the affected samples only (index
        and masked ops over the whole batch cost several times more there); on a GPU both are
        single vectorised ops. The results are the same (``random`` erasing values aside).
        """
        _check_u8(u8)
        cfg = self.cfg
        h, w = cfg.size
        dev = u8.device
        vec = self.vectorised if self.vectorised is not None else dev.type != "cpu"
        flip = params["flip"].to(dev) if "flip" in params else None
        if flip is not None and not bool(flip.any()):
            flip = None
        same_size = tuple(u8.shape[-2:]) == (h, w)
        if cfg.pipeline != "mancs" and flip is not None and same_size:
            u8 = _flip_samples(u8, flip, vec)  # on one byte per pixel, before converting
            flip = None
        x = torch.empty(u8.shape, dtype=torch.float32, device=dev).copy_(u8)
        if not same_size:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 255)
        normalize_(x, cfg.mean, cfg.std)
        if cfg.pipeline == "mancs":  # bilinear resampling commutes with the per-channel normalisation
            x = crop_resize(x, params["crop_top"], params["crop_left"], params["crop_height"], params["crop_width"], flip)
        elif flip is not None:
            x = _flip_samples(x, flip, vec)
        if "erase" in params:
            erase_(x, params, cfg, vectorised=vec)
        boxes = cutout_boxes(params)
        if boxes is not None:  # the mean pixel, whatever erase_value says
            erase_(x, boxes, self.cutout_fill, vectorised=vec)
        return x

    def __call__(self, u8: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 batch; every random choice comes from ``generator``."""
        return self.apply(u8, self.sample_params(int(u8.shape[0]), generator))

