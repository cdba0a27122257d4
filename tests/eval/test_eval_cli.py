"""``reidkit eval``: features files, the checkpoint path (model and extractor faked), errors, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from reidkit.cli import main
from reidkit.eval import evaluate


def _tensors(seed: int = 0, Q: int = 12, G: int = 40, D: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, D, generator=g)
    qp, gp = torch.randint(0, 6, (Q,), generator=g), torch.randint(0, 6, (G,), generator=g)
    return {
        "query_feats": centres[qp] + 0.7 * torch.randn(Q, D, generator=g),
        "query_pids": qp.long(),
        "query_camids": torch.zeros(Q, dtype=torch.long),
        "gallery_feats": centres[gp] + 0.7 * torch.randn(G, D, generator=g),
        "gallery_pids": gp.long(),
        "gallery_camids": torch.ones(G, dtype=torch.long),
    }


def _write(tmp_path: Path, tensors: dict[str, torch.Tensor], name: str = "f.safetensors") -> str:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def test_json_output_matches_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _tensors()
    path = _write(tmp_path, t)
    assert main(["eval", "--features", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = evaluate(t["query_feats"], t["gallery_feats"], t["query_pids"], t["gallery_pids"],
                   t["query_camids"], t["gallery_camids"])
    # the library's fractions, printed in percent as every reidkit metrics file
    assert out["units"] == "percent"
    assert out["mAP"] == pytest.approx(100 * ref["mAP"]) and out["mINP"] == pytest.approx(100 * ref["mINP"])
    assert out["cmc"] == pytest.approx([100 * c for c in ref["cmc"]]) and len(out["cmc"]) == 50
    assert out["rank1"] == pytest.approx(100 * ref["cmc"][0])
    assert out["num_valid_queries"] == ref["num_valid_queries"]
    assert 0.0 <= out["mAP"] <= 100.0


def test_rerank_table_and_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _tensors(1))
    out_dir = tmp_path / "ev"
    rc = main(["eval", "--features", path, "--rerank", "--k1", "5", "--k2", "2", "--lambda", "0.4",
               "--metric", "cosine", "--ap", "official", "--out", str(out_dir)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mAP" in text and "R10" in text and "mINP" in text
    assert "plain" in text and "rerank" in text
    metrics = json.loads((out_dir / "metrics.json").read_text())
    settings = metrics["settings"]
    assert settings["rerank"] is True and settings["rerank_params"] == {"k1": 5, "k2": 2, "lambda": 0.4}
    assert "without_rerank" in metrics and settings["ap"] == "official" and settings["metric"] == "cosine"
    assert (out_dir / "cmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_shot_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _tensors(2))
    assert main(["eval", "--features", path, "--single-shot", "--repeats", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["single_shot"]) >= {"rank1", "rank5", "rank10", "cmc"}


def _bad_cases(tmp_path: Path) -> list[tuple[str, str]]:
    cases = []
    t = _tensors()
    del t["gallery_camids"]
    cases.append((_write(tmp_path, t, "missing.safetensors"), "missing gallery_camids"))
    t = _tensors()
    t["query_pids"] = t["query_pids"][:-1].clone()
    cases.append((_write(tmp_path, t, "len.safetensors"), "query has 12 features but 11 pids"))
    t = _tensors()
    t["gallery_feats"], t["gallery_pids"], t["gallery_camids"] = (
        t["gallery_feats"][:0].clone(), t["gallery_pids"][:0].clone(), t["gallery_camids"][:0].clone())
    cases.append((_write(tmp_path, t, "empty.safetensors"), "expected at least one gallery row"))
    t = _tensors()
    t["query_feats"][3, 1] = float("nan")
    cases.append((_write(tmp_path, t, "nan.safetensors"), "NaN or inf"))
    cases.append((str(tmp_path / "absent.safetensors"), "not found"))
    return cases


def test_errors_are_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path, fragment in _bad_cases(tmp_path):
        assert main(["eval", "--features", path]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("reidkit: error: ") and Path(path).name in err and fragment in err, err
    assert main(["eval"]) == 2
    assert "either --features" in capsys.readouterr().err


def _tiny_market(root: Path) -> Path:
    from PIL import Image

    base = root / "Market-1501-v15.09.15"
    for sub in ("bounding_box_train", "bounding_box_test", "query", "gt_bbox"):
        (base / sub).mkdir(parents=True)
    names = {
        "bounding_box_train": ["0002_c1s1_000001_01.jpg", "0002_c2s1_000001_01.jpg"],
        "query": ["0005_c1s1_000001_00.jpg", "0006_c2s1_000001_00.jpg"],
        "bounding_box_test": ["0005_c2s1_000002_01.jpg", "0006_c1s1_000002_01.jpg", "0000_c3s1_000002_01.jpg",
                              "-1_c1s1_000003_01.jpg", "0005_c1s1_000004_01.jpg"],
        "gt_bbox": ["0005_c1s1_000001_00.jpg", "0005_c1s1_000009_00.jpg", "0006_c2s1_000001_00.jpg"],
    }
    for sub, files in names.items():
        for n in files:  # the colour encodes the identity, so a model of the mean colour matches identities
            pid = abs(int(n.split("_")[0]))
            Image.new("RGB", (8, 16), (40 * pid % 256, 30, 60)).save(base / sub / n)
    return root


def test_checkpoint_path_with_faked_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import reidkit.inference.modelfile as modelfile

    class FakeModel(torch.nn.Module):
        """The mean colour of the crop: equal for equal identities in :func:`_tiny_market`."""

        input_size = (16, 8)
        embedding_dim = 3
        name = "fake"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    def fake_load_model(path, device="cpu"):
        assert str(path).endswith("model.safetensors")
        return FakeModel()

    monkeypatch.setattr(modelfile, "load_model_file", fake_load_model)
    root = _tiny_market(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    saved = tmp_path / "feats.safetensors"
    common = ["--checkpoint", str(tmp_path / "model.safetensors"), "--dataset", "market1501", "--root", str(root),
              "--json", "--option", "verify_images=false", "--engine", "torch", "--no-progress"]
    assert main(["eval", *common, "--save-features", str(saved)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_queries"] == 2 and out["num_valid_queries"] == 2
    assert out["cmc"][0] == 100.0 and out["mAP"] == 100.0
    assert out["settings"]["flip"] is False and out["settings"]["protocol"] == "single-query"
    assert saved.is_file()
    # the saved features give the same metrics
    assert main(["eval", "--features", str(saved), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["mAP"] == 100.0 and again["settings"] == out["settings"]  # the file says how it was embedded
    assert main(["eval", *common, "--multi-query", "mean"]) == 0
    mq = json.loads(capsys.readouterr().out)
    assert mq["num_valid_queries"] == 2 and mq["settings"]["protocol"] == "multi-query"
    assert mq["settings"]["multi_query"] == "mean"
