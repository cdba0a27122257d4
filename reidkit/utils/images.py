"""Person crops on disk: listing them (loop-safe), decoding them into RGB whatever mode the file is stored in,
and the one resize every pipeline uses."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from reidkit.errors import ReidkitError
from reidkit.utils import limits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(ReidkitError):
    """An image file that cannot be decoded."""


_CHUNK_PIXELS = 1 << 18  # pixels converted at a time from a 16-bit, 32-bit or float picture (2 MiB of int64)


def pixel_budget() -> int:
    """The most pixels reidkit decodes or converts in one picture: ``limits.MAX_IMAGE_PIXELS``, or Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS`` when the host set it lower."""
    pil = Image.MAX_IMAGE_PIXELS
    return min(limits.MAX_IMAGE_PIXELS, int(pil)) if pil else limits.MAX_IMAGE_PIXELS


def check_pixels(width: int, height: int, what: object) -> None:
    """``ImageReadError`` naming ``what`` when a ``width``×``height`` picture has no pixels or more than
    ``pixel_budget()``."""
    if width < 1 or height < 1:
        raise ImageReadError(f"{what}: image has no pixels ({width}×{height}); expected a person crop")
    limit = pixel_budget()
    if width * height > limit:
        raise ImageReadError(f"{what}: {width}×{height} pixels, more than the {limit}-pixel limit "
                             "(reidkit.utils.limits.MAX_IMAGE_PIXELS, PIL.Image.MAX_IMAGE_PIXELS); expected a "
                             "person crop")


def to_8bit(arr: np.ndarray, what: object = "image") -> np.ndarray:
    """A 2-D array of 16-bit, 32-bit or float pixel values as uint8: divided by the largest value over 255 when
    there is one (``v * 255 // max``), negatives clipped to 0; ``ImageReadError`` when a value is NaN or
    infinite. Converted a few rows at a time: no full-size float copy is ever made."""
    if arr.size == 0:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = arr.min(), arr.max()
    floating = np.issubdtype(arr.dtype, np.floating)
    if floating and not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageReadError(f"{what}: NaN or infinite pixel values; expected finite pixels")
    out = np.empty(arr.shape, np.uint8)
    rows = max(1, _CHUNK_PIXELS // max(1, int(np.prod(arr.shape[1:]))))
    for r in range(0, arr.shape[0], rows):
        if floating:
            v = arr[r:r + rows].astype(np.float64)
            if hi > 255:
                v *= 255.0 / float(hi)
            np.clip(v, 0, 255, out=v)
        else:
            v = np.clip(arr[r:r + rows].astype(np.int64), 0, None)
            if hi > 255:
                v *= 255
                v //= int(hi)
        out[r:r + rows] = v  # float: truncated, as astype(uint8)
    return out


def to_rgb(img: Image.Image, what: object = "image") -> Image.Image:
    """Convert any PIL image (L, LA, P, RGBA, CMYK, I;16, I, F, 1) to 8-bit RGB; ``ImageReadError`` naming
    ``what`` when it has no pixels, more than ``pixel_budget()`` (checked before any conversion, whatever the
    mode) or NaN/infinite values."""
    check_pixels(img.width, img.height, what)
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return Image.fromarray(to_8bit(np.asarray(img), what), mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(path: str | os.PathLike[str] | BinaryIO) -> Image.Image:
    """Read an image file (or an open binary stream) as RGB; raise ``ImageReadError`` naming the file if it
    cannot be decoded.

    Only regular files are opened: a named pipe, socket or device called ``x.jpg`` is refused at once
    (opening a FIFO would block forever); a picture of more than ``pixel_budget()`` pixels is refused before
    its pixels are decoded, whatever its mode and bit depth; NaN or infinite pixels (float TIFFs) are refused. The process's warning filters are left alone (changing them is
    not thread-safe, and this runs in decoding threads): Pillow's own warnings reach the host application's
    filters; the ``reidkit`` command ignores them.
    """
    if isinstance(path, (str, os.PathLike)):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageReadError(f"{path}: file not found") from None
        except OSError as exc:  # permission denied on a parent, symlink loop, name too long
            raise ImageReadError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (pipe, socket or device)"
            raise ImageReadError(f"{path}: {kind}; expected an image file")
    try:
        with Image.open(path) as img:
            check_pixels(img.width, img.height, path)  # before a pixel is decoded
            img.load()
            return to_rgb(img, path)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: file not found") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def walk_files(directory: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """All files under ``directory`` whose name ends with one of ``extensions`` (case-insensitive),
    sorted. ``directory`` itself may be a symlink; symlinked folders below it are not followed (as
    ``os.walk(followlinks=False)``), so symlink loops cannot hang the scan nor repeat images under
    another folder's pid. Symlinked files are read; an image-named entry that cannot even be stat'ed (a
    symlink loop) is returned too, so that the image check lists it. Hidden files (leading dot) are
    ignored."""
    exts = tuple(e.lower() for e in extensions)
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(directory)]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            is_image_name = e.name.lower().endswith(exts)
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_symlink() and e.is_dir(follow_symlinks=True):
                    continue
                elif is_image_name:
                    out.append(e.path)
            except OSError:
                # e.g. an image-named symlink loop: returned, so the image check lists it as unreadable
                # instead of it vanishing without a word
                if is_image_name:
                    out.append(e.path)
    out.sort()
    return out


RESIZE_FILTER = Image.BILINEAR
# What ``resize_rgb`` does, in words a program without reidkit can follow (the ONNX metadata and docs/export.md
# say it): the whole crop is stretched to H×W, and Pillow's bilinear filter widens with the reduction factor,
# so a shrink averages every source pixel (antialiased), unlike OpenCV's INTER_LINEAR.
RESIZE_DESCRIPTION = ("Pillow Image.resize((width, height), Image.BILINEAR) of the whole RGB crop, no reducing_gap: "
                      "stretched to height×width (aspect ratio not kept, no padding, no cropping); Pillow's "
                      "bilinear filter is antialiased when shrinking (its support grows with the scale "
                      "factor), unlike cv2.resize(INTER_LINEAR)")


def resize_rgb(img: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
               ) -> Image.Image:
    """``img`` (or its ``box`` region) resized to ``size`` = (H, W) with PIL's bilinear filter: the one resize
    of the training cache, the per-image pipeline and inference, so every path sees the same pixels
    (``RESIZE_DESCRIPTION`` says it in words)."""
    h, w = int(size[0]), int(size[1])
    if box is None and img.size == (w, h):
        return img
    return img.resize((w, h), RESIZE_FILTER, box=box)


def is_readable_image(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` decodes as an image."""
    try:
        read_image(path)
    except ImageReadError:
        return False
    return True


def find_unreadable(paths: Sequence[str]) -> list[str]:
    """Return the paths among ``paths`` that do not decode (fully decoded, so truncated files are caught)."""
    return [p for p in paths if not is_readable_image(p)]
