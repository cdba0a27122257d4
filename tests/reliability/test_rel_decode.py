"""The decode path's pixel budget holds for every mode and bit depth, before any conversion, and the 16-bit,
32-bit and float conversion to 8 bits never makes a full-size float64 copy (a 16-bit 9450×9450 PNG used to
take ~2.3 GB a worker). The budget is patched small here, so the pictures stay tiny."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from reidkit.utils.images import ImageReadError, read_image, to_rgb

MODES = {
    "I;16": lambda a: Image.fromarray(a.astype(np.uint16)),
    "I": lambda a: Image.fromarray(a.astype(np.int32)),
    "F": lambda a: Image.fromarray(a.astype(np.float32)),
    "RGBA": lambda a: Image.fromarray(np.stack([a % 256] * 4, -1).astype(np.uint8)),
    "P": lambda a: Image.fromarray(np.stack([a % 256] * 3, -1).astype(np.uint8)).quantize(8),
    "CMYK": lambda a: Image.fromarray(np.stack([a % 256] * 3, -1).astype(np.uint8)).convert("CMYK"),
    "L": lambda a: Image.fromarray((a % 256).astype(np.uint8)),
}
FORMATS = {"I;16": "PNG", "I": "TIFF", "F": "TIFF", "RGBA": "PNG", "P": "PNG", "CMYK": "TIFF", "L": "PNG"}


def _picture(mode: str, h: int = 30, w: int = 40) -> Image.Image:
    img = MODES[mode](np.arange(h * w).reshape(h, w) * 37)
    assert img.mode == mode
    return img


@pytest.mark.parametrize("mode", sorted(MODES))
def test_pixel_budget_holds_for_every_mode_on_disk(tmp_path, monkeypatch, mode):
    """40×30 = 1200 pixels over a patched 1000-pixel budget: refused, naming the file, for each mode."""
    p = tmp_path / f"x.{FORMATS[mode].lower()}"
    _picture(mode).save(p)
    assert Image.open(p).mode == mode
    monkeypatch.setattr("reidkit.utils.limits.MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="1000-pixel limit") as info:
        read_image(p)
    assert str(p) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr("reidkit.utils.limits.MAX_IMAGE_PIXELS", 1200)
    assert read_image(p).size == (40, 30)


@pytest.mark.parametrize("mode", ["I;16", "F", "I", "RGBA", "CMYK"])
def test_pixel_budget_holds_for_pictures_in_memory(monkeypatch, mode):
    """A PIL image handed to the library (never opened by reidkit) meets the same budget before its
    conversion, and so does ``embed`` of it."""
    from reidkit.inference.images import images_to_uint8

    monkeypatch.setattr("reidkit.utils.limits.MAX_IMAGE_PIXELS", 1000)
    img = _picture(mode)
    with pytest.raises(ImageReadError, match="1000-pixel limit"):
        to_rgb(img)
    with pytest.raises(ImageReadError, match=r"images\[0\]: 40×30 pixels"):
        images_to_uint8([img], (16, 8))


def test_sixteen_bit_decodes_to_the_hand_computed_values(tmp_path):
    """v → v·255 // max when the largest value is over 255: 0, 1000, 30000, 60000 → 0, 4, 127, 255."""
    p = tmp_path / "d.png"
    Image.fromarray(np.array([[0, 1000], [30000, 60000]], np.uint16)).save(p)
    out = np.asarray(read_image(p))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert (out == out[..., :1]).all()  # grey
    assert out[..., 0].tolist() == [[0, 4], [127, 255]]
    # at most 255: kept as they are
    Image.fromarray(np.array([[0, 7], [200, 255]], np.uint16)).save(p)
    assert np.asarray(read_image(p))[..., 0].tolist() == [[0, 7], [200, 255]]
    # float and 32-bit pictures follow the same rule (negatives clipped to 0)
    f = Image.fromarray(np.array([[-5.0, 100.0], [255.0, 510.0]], np.float32))
    assert np.asarray(to_rgb(f))[..., 0].tolist() == [[0, 50], [127, 255]]
    i = Image.fromarray(np.array([[-1, 70000], [35000, 140000]], np.int32))
    assert np.asarray(to_rgb(i))[..., 0].tolist() == [[0, 127], [63, 255]]


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_deep_conversion_makes_no_float64_copy_of_the_picture(mode):
    """Converting a 2048×2048 picture allocates less (numpy memory, traced) than one float64 copy of it
    (32 MiB); the old conversion peaked at ~96 MiB."""
    arr = (np.arange(2048 * 2048, dtype=np.int64) % 65536).reshape(2048, 2048)
    img = MODES[mode](arr)
    tracemalloc.start()
    try:
        out = to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.mode == "RGB" and out.size == (2048, 2048)
    float64_copy = arr.size * 8
    assert peak < float64_copy + arr.size * np.dtype(np.asarray(img).dtype).itemsize * 2, peak / 2**20


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_non_finite_pixels_is_refused(tmp_path, bad):
    """A float TIFF holding NaN or ±inf: one line naming the file, never a picture of undefined bytes."""
    p = tmp_path / "f.tif"
    arr = np.linspace(0, 1000, 12, dtype=np.float32).reshape(3, 4)
    arr[1, 2] = bad
    Image.fromarray(arr).save(p)
    with pytest.raises(ImageReadError, match="NaN or infinite pixel values") as info:
        read_image(p)
    assert str(p) in str(info.value)
