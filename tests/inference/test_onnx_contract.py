"""The self-describing ONNX file: its plain metadata keys, and docs/export.md's "Without reidkit" program
(onnxruntime, numpy and Pillow only), run exactly as the page prints it, against reidkit's embeddings.

The program is the page's python block that reads ``custom_metadata_map``; it runs in a folder holding
``stadb.onnx`` (a float32 export, then an INT8 copy under the same name), ``a.jpg`` and ``b.jpg``. The crops
are larger and smaller than the model's 64×32 input (shrunk and enlarged by the resize) and not of its
aspect ratio. Bound: cosine similarity ≥ 0.99999 and a largest difference ≤ 1e-4 of the largest
|embedding| between the page's embeddings and ``reidkit.load(...).embed`` of the same files, for both files.
The pixels are the same (the same Pillow resize); what is left is float32 rounding in the normalisation.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.inference.export import input_contract, read_onnx_meta

EXPORT_MD = Path(__file__).resolve().parents[2] / "docs" / "export.md"


def doc_program() -> str:
    """The python block of docs/export.md that feeds the model from its metadata."""
    blocks = re.findall(r"^```python\n(.*?)^```", EXPORT_MD.read_text(encoding="utf-8"), re.M | re.S)
    found = [b for b in blocks if "custom_metadata_map" in b]
    assert len(found) == 1, "docs/export.md should hold one python block reading custom_metadata_map"
    return found[0]


def run_doc_program(folder: Path) -> dict[str, object]:
    """Execute the page's program in ``folder``; its variables after the run."""
    code = doc_program()
    for name in ("torch", "reidkit"):
        assert not re.search(rf"^\s*(import|from)\s+{name}\b", code, re.M), f"the page's program imports {name}"
    namespace: dict[str, object] = {"__name__": "__doc_program__"}
    here = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(code, str(EXPORT_MD), "exec"), namespace)  # the page's own example
    finally:
        os.chdir(here)
    return namespace


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two JPEG crops of synthetic pedestrians, 150×61 and 40×23 (neither 64×32 nor 2:1)."""
    from PIL import Image

    from reidkit.data.synthetic import render_bytes

    out = tmp_path_factory.mktemp("crops")
    paths = []
    for name, (h, w), pid in (("a.jpg", (150, 61), 1), ("b.jpg", (40, 23), 2)):
        img = Image.open(io.BytesIO(render_bytes(0, pid, 0, 0, size=(128, 64)))).convert("RGB")
        img.resize((w, h), Image.NEAREST).save(out / name, quality=90)
        paths.append(out / name)
    return paths


def test_plain_keys_restate_the_description(stadb_onnx: Path) -> None:
    import onnx

    props = {e.key: e.value for e in onnx.load(str(stadb_onnx)).metadata_props}
    meta = read_onnx_meta(stadb_onnx)
    assert {k: props[k] for k in input_contract(meta)} == input_contract(meta)
    assert props["input_name"] == "images" and props["output_name"] == "embeddings"
    assert (props["input_height"], props["input_width"]) == ("64", "32")
    assert props["output_dim"] == str(meta["embedding_dim"]) == "1536"
    assert props["input_layout"] == "NCHW" and props["input_channel_order"] == "RGB"
    assert props["output_normalized"] == "false" and props["quantization"].startswith("none")
    assert [float(v) for v in props["input_mean"].split(",")] == [0.485, 0.456, 0.406]
    assert [float(v) for v in props["input_std"].split(",")] == [0.229, 0.224, 0.225]
    assert "BILINEAR" in props["input_resize"] and props["input_resize_antialias"] == "true"


def test_the_pages_program_gives_reidkits_embeddings(stadb_onnx: Path, crops: list[Path], tmp_path: Path) -> None:
    import reidkit
    from reidkit.inference.quantize import quantize_onnx

    int8 = tmp_path / "q.onnx"
    quantize_onnx(stadb_onnx, int8, calibrate=crops[0].parent, calibration_images=2, check=False)
    for model in (stadb_onnx, int8):
        folder = tmp_path / model.stem
        folder.mkdir()
        shutil.copy(model, folder / "stadb.onnx")
        for c in crops:
            shutil.copy(c, folder / c.name)
        ns = run_doc_program(folder)
        got = torch.from_numpy(np.asarray(ns["embeddings"]))
        ref = reidkit.load(folder / "stadb.onnx", device="cpu").embed([str(folder / c.name) for c in crops])
        assert got.shape == ref.shape == (2, 1536)
        cos = torch.nn.functional.cosine_similarity(got.double(), ref.double(), dim=1)
        assert float(cos.min()) >= 0.99999, (model, cos)
        assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max()), model
