"""Backbone naming/strides/weight loading, attention blocks and drop operations."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import pytest
import torch

import reidkit.models.backbones.resnet as resnet_mod
from reidkit.errors import CheckpointError, ReidkitError
from reidkit.models.attention import CBAM, FAB, SE, SRM, TripletAttention, build_attention
from reidkit.models.backbones.resnet import IMAGENET_URLS, resnet
from reidkit.models.drop import batch_drop, self_threshold_drop, self_threshold_mask

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
    with pytest.raises(ReidkitError, match=r"resnet18-f37072fd\.pth.*--pretrained PATH"):
        resnet(18, pretrained="imagenet")
    state = _tv_checkpoint(18, hub / "checkpoints" / Path(IMAGENET_URLS[18]).name)
    m = resnet(18, pretrained="imagenet")
    assert torch.equal(m.conv1.weight, state["conv1.weight"])
    assert resnet_mod._hub_cached_file(18) is not None


def test_self_threshold_mask_zeroes_exactly_above_alpha_max() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 8, 6, 4)
    alpha = 0.8
    mask = self_threshold_mask(x, alpha)
    att = x.mean(1)
    for n in range(3):
        thr = alpha * float(att[n].max())
        for i in range(6):
            for j in range(4):
                assert float(mask[n, i, j]) == (0.0 if float(att[n, i, j]) >= thr else 1.0)
    out, m2 = self_threshold_drop(x, alpha)
    assert torch.equal(out, x * mask[:, None]) and torch.equal(m2, mask)
    assert (mask == 0).any(dim=(1, 2)).all()  # the max position is always dropped (alpha <= 1)


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
