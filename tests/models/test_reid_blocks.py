"""Backbone naming/strides/weight loading, attention blocks and drop operations."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import pytest
import torch

import reidkit.models.backbones.resnet as resnet_mod
from reidkit.errors import CheckpointError, ReidkitError
from reidkit.models.attention import CBAM, SE, SRM, TripletAttention, build_attention
from reidkit.models.backbones.resnet import IMAGENET_URLS, resnet
from reidkit.models.drop import (
    THRESHOLDS,
    batch_drop,
    batch_drop_mask,
    drop_statistics,
    self_threshold_drop,
    self_threshold_mask,
)
from reidkit.models.mancs import FAB

# torchvision's parameter counts minus fc (fc: 512*1000+1000 or 2048*1000+1000)
TRUNK_PARAMS = {18: 11_689_512 - 513_000, 34: 21_797_672 - 513_000, 50: 25_557_032 - 2_049_000,
                101: 44_549_160 - 2_049_000}


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_resnet_param_counts_and_names(depth: int) -> None:
    with torch.device("meta"):
        m = resnet(depth)
    assert sum(p.numel() for p in m.parameters()) == TRUNK_PARAMS[depth]
    keys = set(m.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.0.downsample.0.weight",
            "layer4.0.downsample.1.num_batches_tracked"} <= keys
    assert ("layer4.0.conv3.weight" in keys) == (depth >= 50)
    assert not any(k.startswith("fc.") for k in keys)


def test_last_stride() -> None:
    x = torch.randn(1, 3, 64, 32)
    m2, m1 = resnet(50, last_stride=2).eval(), resnet(50, last_stride=1).eval()
    assert m1.layer4[0].conv2.stride == (1, 1) and m1.layer4[0].downsample[0].stride == (1, 1)
    assert m2.layer4[0].conv2.stride == (2, 2) and m2.layer4[0].conv1.stride == (1, 1)
    assert m2(x).shape == (1, 2048, 2, 1) and m1(x).shape == (1, 2048, 4, 2)
    b1 = resnet(18, last_stride=1).eval()
    assert b1(x).shape == (1, 512, 4, 2)


def _tv_checkpoint(depth: int, path: Path) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's layout (trunk + fc)."""
    src = resnet(depth)
    for p in src.parameters():
        torch.nn.init.normal_(p)
    state = dict(src.state_dict())
    feat = src.out_channels
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, feat), torch.randn(1000)
    torch.save(state, path)
    return state


def test_load_local_checkpoint_strict(tmp_path: Path) -> None:
    state = _tv_checkpoint(18, tmp_path / "r18.pth")
    m = resnet(18, pretrained=tmp_path / "r18.pth")
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    bad = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth.*missing 1 keys.*layer1\.0\.conv1\.weight.*unexpected"):
        resnet(18, pretrained=tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not found"):
        resnet(18, pretrained=tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):  # pragma: no cover - never executed by weights_only loading
        return (print, ("pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "evil.pth", "wb") as fh:
        torch.save({"conv1.weight": _Evil()}, fh, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"evil\.pth.*refused"):
        resnet(18, pretrained=tmp_path / "evil.pth")


def test_imagenet_from_hub_cache_and_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ReidkitError, match=r"resnet18-f37072fd\.pth.*--set model\.options\.pretrained=PATH"):
        resnet(18, pretrained="imagenet")
    state = _tv_checkpoint(18, hub / "checkpoints" / Path(IMAGENET_URLS[18]).name)
    m = resnet(18, pretrained="imagenet")
    assert torch.equal(m.conv1.weight, state["conv1.weight"])
    assert resnet_mod._hub_cached_file(18) is not None


def test_self_threshold_mask_max_rule_zeroes_exactly_from_alpha_max() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 8, 6, 4)
    alpha = 0.8
    mask = self_threshold_mask(x, alpha, "max")
    att = x.mean(1)
    for n in range(3):
        thr = alpha * float(att[n].max())
        for i in range(6):
            for j in range(4):
                assert float(mask[n, i, j]) == (0.0 if float(att[n, i, j]) >= thr else 1.0)
    assert (mask == 0).any(dim=(1, 2)).all()  # the max position is always dropped (alpha <= 1)


def _map(values: list[list[float]], channels: int = 3) -> torch.Tensor:
    """A (1, C, H, W) map whose channel mean is ``values`` (channels differ, the mean does not)."""
    att = torch.tensor(values, dtype=torch.float64)
    offsets = torch.linspace(-1.0, 1.0, channels, dtype=torch.float64)[:, None, None]
    return (att[None] + offsets)[None]


def _erased(mask: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(ij) for ij in (mask[0] == 0).nonzero().tolist()]


def test_self_threshold_mask_three_rules_on_a_hand_built_map() -> None:
    # attention (4x2): one peak at (0,0)=10, a plateau of 9s, a floor of 8.5 at (3,1)
    x = _map([[10, 9], [9, 9], [9, 9], [9, 8.5]])
    # max: α·max = 8 → every position reaches it → the sample is left whole instead of erased entirely
    assert _erased(self_threshold_mask(x, 0.8, "max")) == []
    # max at α = 0.95: 9.5 → only the peak
    assert _erased(self_threshold_mask(x, 0.95, "max")) == [(0, 0)]
    # minmax: 8.5 + 0.8·1.5 = 9.7 → only the peak; α = 0.3: 8.95 → everything but the floor
    assert _erased(self_threshold_mask(x, 0.8, "minmax")) == [(0, 0)]
    assert _erased(self_threshold_mask(x, 0.3, "minmax")) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1),
                                                               (3, 0)]
    # quantile: round(0.2·8) = 2 most attended, ties broken by position: the peak and the first 9
    assert _erased(self_threshold_mask(x, 0.8, "quantile")) == [(0, 0), (0, 1)]
    assert _erased(self_threshold_mask(x, 0.5, "quantile")) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert _erased(self_threshold_mask(x, 1.0, "quantile")) == []


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_self_threshold_drop_matches_the_mask(threshold: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 8, 6, 4)
    mask = self_threshold_mask(x, 0.8, threshold)
    out, m2 = self_threshold_drop(x, 0.8, threshold)
    assert torch.equal(out, x * mask[:, None]) and torch.equal(m2, mask) and mask.dtype == x.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_self_threshold_mask_never_erases_a_whole_sample() -> None:
    # flat, constant, all-zero and negative maps, under every rule and α of Table 11 (and α = 0)
    maps = torch.stack([torch.full((4, 6, 4), 2.0), torch.zeros(4, 6, 4), torch.full((4, 6, 4), -3.0),
                        torch.rand(4, 6, 4) * 0.1 + 5.0, torch.randn(4, 6, 4)])
    for threshold in THRESHOLDS:
        for alpha in (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
            mask = self_threshold_mask(maps, alpha, threshold)
            assert (mask.flatten(1).amax(dim=1) == 1).all(), (threshold, alpha)
    # the literal rule on a flat map (min/max = 0.97 ≥ α): left whole, not erased
    assert torch.equal(self_threshold_mask(maps[3:4], 0.8, "max"), torch.ones(1, 6, 4))


def test_quantile_erases_exactly_its_share_and_table11_presets_differ() -> None:
    torch.manual_seed(1)
    x = torch.rand(16, 5, 8, 4)  # 32 positions, as a 128x64 input gives with last stride 1
    erased = {}
    for alpha in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        mask = self_threshold_mask(x, alpha, "quantile")
        per_sample = (mask == 0).flatten(1).sum(dim=1)
        assert (per_sample == round((1 - alpha) * 32)).all()
        # the erased positions are the most attended: every erased one ≥ every kept one
        att = x.mean(dim=1).flatten(1)
        m = mask.flatten(1)
        assert all(att[n][m[n] == 0].min() >= att[n][m[n] == 1].max() for n in range(16) if (m[n] == 0).any())
        erased[alpha] = mask
    masks = list(erased.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1:])


def test_table11_presets_give_different_masks() -> None:
    from reidkit.engine.config import load_config

    torch.manual_seed(2)
    x = torch.rand(8, 6, 24, 8)  # a 384x128 input's layer4 map
    masks = []
    for path in sorted((Path(__file__).resolve().parents[2] / "reidkit" / "configs" / "ablations").glob("table11_alpha*.yaml")):
        opts = load_config(path).model.options
        from reidkit.models.registry import option_defaults

        threshold = opts.get("threshold", option_defaults("stadb")["threshold"])
        masks.append(self_threshold_mask(x, float(opts["alpha"]), threshold))
    assert len(masks) == 6
    assert all(not torch.equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1:])


def test_drop_statistics_hand_computed() -> None:
    mask = torch.ones(4, 2, 5)
    mask[0, 0, :3] = 0  # 3 of 10 erased
    mask[1] = 0  # everything (not what the drop produces, but the statistic must count it)
    mask[2, 1, 4] = 0  # 1 of 10
    stats = drop_statistics(mask)
    assert float(stats["erased"]) == pytest.approx((0.3 + 1.0 + 0.1 + 0.0) / 4)
    assert float(stats["whole"]) == pytest.approx(1 / 4)


def test_batch_drop_same_block_for_whole_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4, 10, 6) + 10
    for _ in range(10):
        out, mask = batch_drop(x, h_ratio=0.3, w_ratio=1.0)
        assert all(torch.equal(mask[0], mask[i]) for i in range(5))
        zero_rows = (mask[0] == 0).all(dim=1)
        assert int(zero_rows.sum()) == 3 and int((mask[0] == 0).sum()) == 3 * 6  # full width, 0.3*10 rows
        idx = zero_rows.nonzero()[:, 0]
        assert int(idx.max() - idx.min()) == 2  # contiguous
        assert torch.equal(out, x * mask[:, None])


@pytest.mark.parametrize(("height", "ratio", "rows"), [(24, 0.33, 8), (8, 0.33, 3), (16, 0.33, 5), (10, 0.5, 5),
                                                       (24, 0.3, 7), (4, 0.1, 1)])
def test_batch_drop_rounds_the_block_height(height: int, ratio: float, rows: int) -> None:
    # BDB's public code: rh = round(h_ratio·h) (int() would give 7 rows of 24 at 0.33)
    mask = batch_drop_mask(height, 8, ratio, 1.0, generator=torch.Generator().manual_seed(0))
    assert int((mask == 0).all(dim=1).sum()) == rows and int((mask == 0).sum()) == rows * 8


@pytest.mark.parametrize("name", ["cbam", "se", "triplet", "srm"])
def test_attention_keeps_shape(name: str) -> None:
    block = build_attention(name, 32, reduction=4)
    x = torch.randn(2, 32, 6, 4, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    assert isinstance(block, (CBAM, SE, TripletAttention, SRM))


def test_cbam_follows_eq_1_to_4() -> None:
    torch.manual_seed(1)
    block = CBAM(16, reduction=4).eval()
    block.sa.bn.running_mean.fill_(0.3)
    block.sa.bn.running_var.fill_(2.0)
    x = torch.randn(2, 16, 5, 3)
    mlp = block.ca.mlp
    mc = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    fc = mc * x
    conv = block.sa.conv(torch.cat([fc.mean(1, keepdim=True), fc.amax(1, keepdim=True)], 1))
    ms = torch.sigmoid((conv - 0.3) / torch.sqrt(torch.tensor(2.0 + block.sa.bn.eps)))  # BN in eval mode
    out, smap = block.attend(x)
    assert torch.allclose(out, ms * fc, atol=1e-6) and torch.allclose(smap, ms[:, 0], atol=1e-6)
    assert torch.equal(CBAM(16, use_ca=False, use_sa=False)(x), x)


def test_fab_is_f_times_m_plus_f() -> None:
    fab = FAB(32, reduction=16)
    x = torch.randn(2, 32, 5, 3)
    out, m = fab(x)
    expect_m = torch.sigmoid(fab.excite(torch.relu(fab.squeeze(x))))
    assert torch.allclose(m, expect_m) and torch.allclose(out, x * expect_m + x)
    assert fab.squeeze.out_channels == 2 and m.shape == x.shape
