"""The defaults taken from the authors' code (BDB: daizuozhuo/batch-dropblock-network; STADB: wangxiao5791509/
STADB_ReID): initialisation statistics, branch fusion, flip averaging on a real network, the presets' Cutout and
flip settings, STADB's part_block and the Table 6 "Global" preset's size, Mancs' focal loss over all classes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reidkit.engine.config import load_config
from reidkit.engine.presets import preset_path
from reidkit.inference import Embedder
from reidkit.losses.focal import sigmoid_focal_loss
from reidkit.models import build
from reidkit.models.layers import bdb_init, classifier, kaiming_init


def _std_close(t: torch.Tensor, expected: float, rel: float = 0.05) -> bool:
    return math.isclose(float(t.detach().float().std()), expected, rel_tol=rel)


def test_bdb_init_statistics() -> None:
    """Kaiming-normal, a = 0: std √(2/fan). BDB's code takes fan-out for Linear (its out_features), fan-in for
    Conv (in_channels·k·k); BatchNorm weight N(1, 0.02²), bias 0."""
    torch.manual_seed(0)
    fc, conv, bn = nn.Linear(400, 600), nn.Conv2d(64, 200, 3), nn.BatchNorm1d(20000)
    for m in (fc, conv, bn):
        m.apply(bdb_init)
    assert _std_close(fc.weight, math.sqrt(2 / 600)) and float(fc.bias.detach().abs().max()) == 0
    assert _std_close(conv.weight, math.sqrt(2 / (64 * 9))) and float(conv.bias.detach().abs().max()) == 0
    assert _std_close(bn.weight - 1, 0.02) and abs(float(bn.weight.mean()) - 1) < 1e-3
    assert float(bn.bias.detach().abs().max()) == 0
    # the other scheme (Mancs): Linear fan-in, Conv fan-out, BatchNorm exactly 1 / 0
    fc2, conv2, bn2 = nn.Linear(400, 600), nn.Conv2d(64, 200, 3), nn.BatchNorm1d(8)
    for m in (fc2, conv2, bn2):
        m.apply(kaiming_init)
    assert _std_close(fc2.weight, math.sqrt(2 / 400)) and _std_close(conv2.weight, math.sqrt(2 / (200 * 9)))
    assert torch.equal(bn2.weight, torch.ones(8))


def test_classifier_inits() -> None:
    torch.manual_seed(0)
    code = classifier(512, 751, init="bdb")  # Kaiming fan-out: std √(2/751) ≈ 0.0516
    small = classifier(512, 751)
    assert _std_close(code.weight, math.sqrt(2 / 751)) and _std_close(small.weight, 0.001)
    assert float(code.bias.detach().abs().max()) == 0 == float(small.bias.detach().abs().max())


@pytest.mark.parametrize("name", ["bdb", "stadb", "baseline"])
def test_two_branch_and_baseline_heads_use_the_codes_init(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 751, backbone="resnet18")
    heads = [model.classifier] if name == "baseline" else [model.global_head.classifier, model.part_head.classifier]
    for fc in heads:
        assert _std_close(fc.weight, math.sqrt(2 / 751))
    if name != "baseline":
        red = model.global_head.reduction[0]  # 1×1 conv 512 → 512 on ResNet-18: fan-in 512
        assert _std_close(red.weight, math.sqrt(2 / red.in_channels))
        lin = model.part_head.reduction[0]  # Linear 512 → 1024: fan-out 1024
        assert _std_close(lin.weight, math.sqrt(2 / lin.out_features))


def test_mancs_keeps_its_init() -> None:
    torch.manual_seed(0)
    model = build("mancs", 751, backbone="resnet18")
    assert _std_close(model.classifier.weight, 0.001)


@pytest.mark.parametrize("name", ["bdb", "stadb"])
def test_normalized_fusion_concatenates_unit_branches(name: str) -> None:
    torch.manual_seed(0)
    raw = build(name, 7, backbone="resnet18", fuse="concat").eval()
    fused = build(name, 7, backbone="resnet18", fuse="normalized").eval()
    fused.load_state_dict(raw.state_dict())
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        a, b = raw(x), fused(x)
    g = raw.cfg.global_dim
    assert torch.allclose(b[:, :g], a[:, :g] / a[:, :g].norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(b[:, g:], a[:, g:] / a[:, g:].norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(b[:, :g].norm(dim=1), torch.ones(3)) and torch.allclose(b[:, g:].norm(dim=1), torch.ones(3))
    with pytest.raises(Exception, match="fuse"):
        build(name, 7, backbone="resnet18", fuse="sum")


def test_flip_averaging_of_a_stadb_equals_the_mean_of_both_embeddings() -> None:
    torch.manual_seed(0)
    model = build("stadb", 7, backbone="resnet18").eval()
    u8 = torch.randint(0, 256, (4, 3, 64, 32), dtype=torch.uint8)
    emb = Embedder(model, "cpu")
    plain, flipped = emb.embed_uint8(u8), emb.embed_uint8(u8.flip(-1))
    assert not torch.allclose(plain, flipped, atol=1e-3)  # a STADB is not mirror-invariant
    assert torch.allclose(emb.embed_uint8(u8, flip=True), (plain + flipped) / 2, atol=1e-5)


def test_presets_follow_the_codes() -> None:
    """STADB: Cutout, no random erasing, flip-averaged evaluation, no extra bottleneck; BDB: Cutout, no
    erasing, no flip (its eval_flip is off); the baseline is trained and evaluated as STADB."""
    stadb, bdb, base = (load_config(preset_path(n)) for n in ("stadb_market1501", "bdb_market1501",
                                                               "baseline_market1501"))
    for cfg in (stadb, bdb, base):
        assert cfg.augment.cutout_p == 0.5 and cfg.augment.erase_p == 0.0
        assert cfg.augment.cutout_size * 384 == pytest.approx(64)
    assert stadb.eval.flip and base.eval.flip and not bdb.eval.flip
    assert stadb.model.options["part_block"] == "none"
    assert load_config(preset_path("stadb_cuhk03_labeled")).augment.cutout_p == 0.5  # inherited


def test_table6_global_preset_is_stadbs_global_branch() -> None:
    """Table 6's "Global" row is STADB's global branch (GAP → 1×1 conv 2048→512 + BN + ReLU → BN neck →
    classifier), not the GAP + BNNeck baseline: 24,944,431 parameters at 751 classes — the 23.51M trunk, the
    conv 2048·512 + 512, its BN 2·512, the neck 2·512 and the classifier 512·751 + 751 — as STADB's public
    code builds it."""
    cfg = load_config(preset_path("ablations/table6_global"))
    assert cfg.model.name == "stadb" and cfg.model.options["branches"] == "global"
    with torch.device("meta"):
        model = build(cfg.model.name, 751, **{**cfg.model.options, "pretrained": None})
        trunk = sum(p.numel() for p in model.backbone.parameters())
        baseline = build("baseline", 751)
    head = 2048 * 512 + 512 + 2 * 512 + 2 * 512 + 512 * 751 + 751
    assert trunk == 23_508_032
    assert model.param_counts()["total"] == trunk + head == 24_944_431
    assert model.embedding_dim == 512 and baseline.embedding_dim == 2048
    assert baseline.param_counts()["total"] != model.param_counts()["total"]


def test_mancs_focal_default_is_over_all_classes() -> None:
    model = build("mancs", 5, backbone="resnet18")
    assert model.opts.focal_all_classes
    logits, pids = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    out = model.compute_losses({"cls_logits": logits, "rank_feat": torch.randn(6, 8),
                                "att_logits": torch.randn(6, 5)}, pids)
    assert torch.allclose(out["cls"], sigmoid_focal_loss(logits, pids, 2.0, True))
    assert not torch.allclose(out["cls"], sigmoid_focal_loss(logits, pids, 2.0, False))


@pytest.mark.parametrize(("preset", "ids"), [("mancs_market1501", 751), ("mancs_dukemtmcreid", 702),
                                             ("mancs_cuhk03", 767)])
def test_mancs_epoch_is_identities_over_p(preset: str, ids: int) -> None:
    """Mancs §4.3: "Each epoch includes [N_c/P] mini-batches", N_c the training identities."""
    cfg = load_config(preset_path(preset))
    assert cfg.sampler.num_batches == ids // cfg.sampler.p
