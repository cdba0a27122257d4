"""One unit in every metrics file: percent, with the evaluation settings recorded beside the numbers.

The writers: ``reidkit eval --json`` and ``--out`` (``metrics.json``), a training run's ``final_metrics.json``
and the demo's ``metrics.json``. ``reidkit.eval.evaluate`` itself returns fractions (the library's unit).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from reidkit.cli import main
from reidkit.eval import evaluate, evaluation_settings, to_percent

SETTING_KEYS = {"protocol", "multi_query", "metric", "flip", "rerank", "ap", "max_rank"}


def hand_built() -> dict[str, torch.Tensor]:
    """Two queries on a line, worked out by hand.

    Query 0 (pid 1, x=0): gallery by distance 0.5 (pid 2), 1 (pid 1), 2 (pid 2), 3 (pid 1): matches at ranks 2
    and 4, AP = (1/2 + 2/4) / 2 = 0.5. Query 1 (pid 2, x=2): 2 (pid 2), 1 and 3 (pid 1, tied), 0.5 (pid 2):
    matches at ranks 1 and 4, AP = (1 + 2/4) / 2 = 0.75. mAP = 0.625; CMC (first match) 1/2, 1, 1, 1.
    """
    return {
        "query_feats": torch.tensor([[0.0], [2.0]]),
        "query_pids": torch.tensor([1, 2]),
        "query_camids": torch.tensor([0, 0]),
        "gallery_feats": torch.tensor([[1.0], [0.5], [3.0], [2.0]]),
        "gallery_pids": torch.tensor([1, 2, 1, 2]),
        "gallery_camids": torch.tensor([1, 1, 1, 1]),
    }


def test_library_fractions_and_percent_by_hand() -> None:
    t = hand_built()
    res = evaluate(t["query_feats"], t["gallery_feats"], t["query_pids"], t["gallery_pids"],
                   t["query_camids"], t["gallery_camids"], max_rank=4)
    assert res["mAP"] == pytest.approx(0.625) and res["cmc"] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    pct = to_percent(res)
    assert pct["mAP"] == pytest.approx(62.5) and pct["rank1"] == pytest.approx(50.0)
    assert pct["cmc"] == pytest.approx([50.0, 100.0, 100.0, 100.0]) and "rank5" not in pct
    assert pct["num_queries"] == 2 and pct["num_valid_queries"] == 2


def test_eval_json_and_out_are_percent_with_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.safetensors"
    save_file(hand_built(), str(path), metadata={"flip": "true", "multi_query": '"none"'})
    assert main(["eval", "--features", str(path), "--json", "--max-rank", "4", "--out", str(tmp_path / "ev")]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert printed == written
    assert written["units"] == "percent"
    assert written["mAP"] == pytest.approx(62.5) and written["rank1"] == pytest.approx(50.0)
    assert written["cmc"] == pytest.approx([50.0, 100.0, 100.0, 100.0])
    assert written["settings"] == {"protocol": "single-query", "multi_query": "none", "metric": "euclidean",
                                   "flip": True, "rerank": False, "ap": "noninterp", "max_rank": 4}
    # re-ranking: both results in percent, the parameters recorded; a file that does not say how it was
    # embedded records flip and protocol as unknown
    save_file(hand_built(), str(path))
    assert main(["eval", "--features", str(path), "--json", "--rerank", "--k1", "3", "--k2", "1", "--lambda", "0.5",
                 "--ap", "official", "--metric", "cosine", "--single-shot", "--repeats", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"] == {"protocol": None, "multi_query": None, "metric": "cosine", "flip": None,
                               "rerank": True, "ap": "official", "max_rank": 50,
                               "rerank_params": {"k1": 3, "k2": 1, "lambda": 0.5}}
    plain = evaluate(*(hand_built()[k] for k in ("query_feats", "gallery_feats", "query_pids", "gallery_pids",
                                                 "query_camids", "gallery_camids")), metric="cosine", ap="official")
    assert out["without_rerank"]["mAP"] == pytest.approx(100 * plain["mAP"])
    assert all(0 <= v <= 100 for v in out["single_shot"]["cmc"]) and out["single_shot"]["cmc"][-1] == 100.0


def test_every_writer_same_unit_same_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's metrics.json, its run's final_metrics.json and 'reidkit eval --json' on the model it wrote agree."""
    out, data = tmp_path / "demo", tmp_path / "data"
    rc = main(["demo", "--out", str(out), "--data", str(data), "--ids", "12", "--epochs", "1", "--quiet",
               "--set", "data.size=[64, 32]", "--set", "sampler.p=3", "--set", "sampler.k=2",
               "--set", "sampler.num_batches=1", "--set", "data.workers=0", "--set", "train.plots=false"])
    assert rc == 0
    capsys.readouterr()
    demo = json.loads((out / "metrics.json").read_text())
    final = json.loads((out / "final_metrics.json").read_text())
    assert main(["eval", "--checkpoint", str(out / "model.safetensors"), "--dataset", "market1501", "--root",
                 str(data), "--engine", "torch", "--no-progress", "--workers", "0", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert demo["units"] == final["units"] == ev["units"] == "percent"
    expected = evaluation_settings()  # the defaults: what the demo's config and eval's defaults both use
    assert demo["settings"] == final["settings"] == ev["settings"] == expected
    assert set(expected) >= SETTING_KEYS
    for key in ("mAP", "rank1", "rank5", "mINP"):
        assert demo["trained"][key] == pytest.approx(ev[key], abs=1e-3), key
        assert final["final"][key] == pytest.approx(ev[key], abs=1e-3), key
    assert ev["mAP"] > 1.0 or ev["rank1"] > 1.0  # percent, not a fraction that happens to be small
