"""Pictures in any form a caller has them (paths, PIL images, arrays, tensors) → a uint8 batch at the model's
input size, resized exactly as the training image cache resizes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from reidkit.errors import ReidkitError
from reidkit.utils.images import check_pixels, read_image, resize_rgb, to_rgb

ImageLike = Any  # path | PIL.Image | HxWx3 uint8 array | tensor batch, or a list of them


def pil_to_uint8(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB PIL image → uint8 ``(3, H, W)`` tensor at ``size`` (H, W)."""
    arr = np.asarray(resize_rgb(img, size), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _array_to_pil(arr: np.ndarray, bgr: bool, what: str) -> Image.Image:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ReidkitError(f"{what}: expected an H×W×3 image array, got shape {arr.shape}")
    check_pixels(arr.shape[1], arr.shape[0], what)  # before any copy
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "biuf":
            raise ReidkitError(f"{what}: expected an image array of numbers, got {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ReidkitError(f"{what}: NaN or infinite pixel values; expected finite pixels")
        if np.issubdtype(arr.dtype, np.floating) and float(np.max(arr)) <= 1.0:
            arr = np.round(arr * 255.0)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    arr = arr[..., :3]
    if bgr:
        arr = arr[..., ::-1]
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def images_to_uint8(images: ImageLike, size: tuple[int, int], bgr: bool = False) -> torch.Tensor:
    """Any supported image input → uint8 (N, 3, H, W) tensor at ``size``.

    Accepts a path, a PIL image, an H×W×3 uint8 array (RGB, or BGR with ``bgr=True``), a list of these,
    or a tensor batch: uint8 (N, 3, H, W) or float (N, 3, H, W) in [0, 1] (tensors are RGB). Pictures of
    another size are resized (bilinear) to ``size``.

    Examples:
        >>> images_to_uint8(np.zeros((64, 32, 3), np.uint8), (128, 64)).shape
        torch.Size([1, 3, 128, 64])
    """
    h, w = size
    if torch.is_tensor(images):
        t = images.detach().to("cpu")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[1] != 3:
            raise ReidkitError(f"image tensor: expected (N, 3, H, W), got shape {tuple(t.shape)}")
        check_pixels(int(t.shape[3]), int(t.shape[2]), f"image tensor of shape {tuple(t.shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ReidkitError("image tensor: NaN or infinite pixel values; expected floats in [0, 1]")
        if t.is_floating_point():
            t = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        elif t.dtype != torch.uint8:
            raise ReidkitError(f"image tensor: expected uint8 or float in [0, 1], got {t.dtype}")
        if bgr:
            t = t.flip(1)
        if tuple(t.shape[2:]) == (h, w):
            return t.contiguous()
        return torch.stack([pil_to_uint8(Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB"), size) for x in t])
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise ReidkitError(f"images: expected paths, PIL images, arrays or a tensor, got {type(images).__name__}")
    out = []
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            img = read_image(item)
        elif isinstance(item, Image.Image):
            img = to_rgb(item, f"images[{i}]")
        elif isinstance(item, np.ndarray):
            img = _array_to_pil(item, bgr, f"images[{i}]")
        else:
            raise ReidkitError(f"images[{i}]: expected a path, a PIL image or an H×W×3 array, "
                               f"got {type(item).__name__}")
        out.append(pil_to_uint8(img, size))
    if not out:
        return torch.zeros(0, 3, h, w, dtype=torch.uint8)
    return torch.stack(out)
