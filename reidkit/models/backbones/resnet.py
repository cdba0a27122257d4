"""ResNet-18/34/50/101 trunks with torchvision's exact parameter names (``fc`` dropped).

``last_stride=1`` removes the down-sampling of ``layer4`` (on ``layer4.0.conv2`` for Bottleneck
networks, as torchvision's v1.5 Bottleneck puts the stride there, and on ``layer4.0.conv1`` for
BasicBlock networks; always on ``layer4.0.downsample.0``). ImageNet weights come from a local
checkpoint file or from the standard torchvision URL through ``torch.hub`` (cached).
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
from torch import Tensor, nn

from reidkit.errors import CheckpointError, ReidkitError
from reidkit.utils.safeload import safe_torch_load

# torchvision's IMAGENET1K_V1 checkpoints (the classic weights every re-ID paper starts from).
IMAGENET_URLS: dict[int, str] = {
    18: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    34: "https://download.pytorch.org/models/resnet34-b627a593.pth",
    50: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    101: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}
# Older file names of the same V1 weights, accepted when already in the hub cache.
LEGACY_FILENAMES: dict[int, str] = {
    18: "resnet18-5c106cde.pth",
    34: "resnet34-333f7ec4.pth",
    50: "resnet50-19c8e357.pth",
    101: "resnet101-5d3b4d8f.pth",
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.final_act: nn.Module | None = None  # replaces the last ReLU when set (Mancs' PReLU)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + identity
        return self.relu(out) if self.final_act is None else self.final_act(out)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here, torchvision v1.5) → 1×1 bottleneck with a residual connection."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.final_act: nn.Module | None = None  # replaces the last ReLU when set (Mancs' PReLU)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + identity
        return self.relu(out) if self.final_act is None else self.final_act(out)


def make_bottleneck(inplanes: int, planes: int, stride: int = 1) -> Bottleneck:
    """A Bottleneck with a 1×1 conv + BN projection shortcut when the shape changes (BDB's extra block)."""
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            _conv1x1(inplanes, planes * Bottleneck.expansion, stride), nn.BatchNorm2d(planes * Bottleneck.expansion)
        )
    return Bottleneck(inplanes, planes, stride, downsample)


_LAYERS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}


class ResNet(nn.Module):
    """A torchvision-named ResNet trunk: ``forward(x)`` returns the layer4 feature map (no pooling, no fc)."""

    def __init__(self, depth: int = 50, last_stride: int = 2):
        super().__init__()
        if depth not in _LAYERS:
            raise ReidkitError(f"backbone resnet{depth} is not available; expected one of "
                               f"{', '.join(f'resnet{d}' for d in _LAYERS)}")
        if last_stride not in (1, 2):
            raise ReidkitError(f"last_stride must be 1 or 2, got {last_stride!r}")
        block, layers = _LAYERS[depth]
        self.depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=last_stride)
        self.out_channels = 512 * block.expansion
        self.stage_channels = [64 * block.expansion * 2**i for i in range(4)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: Tensor) -> Tensor:
        """conv1 → bn1 → relu → maxpool."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """The layer4 feature map ``(N, out_channels, H/16 or H/32, W/16 or W/32)``."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _hub_cached_file(depth: int) -> Path | None:
    """The ImageNet checkpoint for ``depth`` if it is already in the torch.hub cache."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in (os.path.basename(IMAGENET_URLS[depth]), LEGACY_FILENAMES[depth]):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained checkpoint not found; expected a torchvision ResNet .pth file")
    obj = safe_torch_load(path, "a torchvision ResNet state dict")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors with torchvision ResNet key names")
    return obj


def _fetch_imagenet(depth: int) -> dict[str, Tensor]:
    cached = _hub_cached_file(depth)
    if cached is not None:
        return _read_state_dict(cached)
    url = IMAGENET_URLS[depth]
    try:  # torch.hub draws a download bar on stderr
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True, weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise ReidkitError(
            f"cannot download ImageNet weights for resnet{depth} ({type(exc).__name__}); download {url} "
            f"into {Path(torch.hub.get_dir()) / 'checkpoints'}, or give a local file with "
            "--set model.options.pretrained=PATH (or train from scratch with --set model.options.pretrained=null)"
        ) from None


def load_pretrained(model: ResNet, pretrained: str | os.PathLike[str] | None) -> None:
    """Load ImageNet weights into ``model`` in place.

    ``pretrained``: ``None``/``"none"`` (keep random init), ``"imagenet"`` (torchvision's URL through the
    torch.hub cache) or a path to a torchvision-layout checkpoint. ``fc.*`` keys are dropped and the
    rest must match the trunk exactly (strict), or a one-line ``CheckpointError`` names the keys.
    """
    if pretrained is None or (isinstance(pretrained, str) and pretrained.lower() in ("", "none")):
        return
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        state, source = _fetch_imagenet(model.depth), f"ImageNet resnet{model.depth}"
    else:
        path = Path(pretrained).expanduser()
        state, source = _read_state_dict(path), str(path)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = model.state_dict()
    own = {k: v for k, v in own.items() if ".final_act." not in k}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source}: not a torchvision resnet{model.depth} checkpoint: {'; '.join(parts)}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch for {bad[0]}: checkpoint {tuple(state[bad[0]].shape)}, "
                              f"resnet{model.depth} expects {tuple(own[bad[0]].shape)}")
    model.load_state_dict(state, strict=False)


def resnet(depth: int = 50, last_stride: int = 2, pretrained: str | os.PathLike[str] | None = None) -> ResNet:
    """Build a torchvision-named ResNet trunk and optionally load ImageNet weights (see ``load_pretrained``)."""
    model = ResNet(depth, last_stride)
    load_pretrained(model, pretrained)
    return model


def parse_backbone(name: str) -> int:
    """``"resnet50"`` → 50, with a clear error for anything else."""
    key = str(name).lower().removeprefix("resnet")
    if not key.isdigit() or int(key) not in _LAYERS:
        raise ReidkitError(f"unknown backbone {name!r}; expected one of resnet18, resnet34, resnet50, resnet101")
    return int(key)
