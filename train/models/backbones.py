"""ResNet backbones for APNet, with torchvision's state-dict naming (``conv1``, ``bn1``, ``layer1.0.conv1`` ...).

A backbone is cut into five pieces (APNET.md 1.1): the stem (conv1 -> bn1 -> [relu] -> maxpool), layer1,
layer2, layer3 and layer4. ``channels`` gives the channel count after each piece and ``strides`` the total
downsampling after each piece. Two reid-strong-baseline details are configurable:

* ``last_stride`` (default 1): layer4's first block keeps layer3's resolution;
* ``stem_relu`` (default False): the released code has no ReLU after the stem BN (a quirk kept by default).

ImageNet weights are never downloaded: :func:`load_pretrained` reads a torchvision ``.pth`` the user gives.
``se_resnet50`` is ResNet-50 with an SE block (reduction 16, bias-free) inside every bottleneck, keys
``layerX.Y.se.fc.{0,2}.weight``; torchvision ResNet-50 weights load into it with only the SE keys missing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from apnet_edge.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


class SEBottleneck(Bottleneck):
    """torchvision bottleneck with a squeeze-and-excitation gate (Hu et al.) before the residual add."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 reduction: int = 16) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        c = planes * self.expansion
        self.se = nn.Sequential(nn.Linear(c, c // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // reduction, c, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out * self.se(out.mean((2, 3)))[:, :, None, None]
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """ResNet without ``fc``/``avgpool``; ``forward`` returns layer4's map (N, channels[-1], H/16 or H/32, W/..)."""

    def __init__(self, block: type, layers: tuple[int, int, int, int], last_stride: int = 1,
                 stem_relu: bool = False, name: str = "resnet") -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, found {last_stride!r}")
        self.name = name
        self.last_stride = last_stride
        self.stem_relu = stem_relu
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True) if stem_relu else nn.Identity()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], last_stride)
        e = block.expansion
        self.channels: tuple[int, ...] = (64, 64 * e, 128 * e, 256 * e, 512 * e)
        self.strides: tuple[int, ...] = (4, 4, 8, 16, 16 * last_stride)
        del self.inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> (N,64,H/4,W/4): conv1 -> bn1 -> [relu if stem_relu] -> maxpool."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def pieces(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The five pieces in order: stem, layer1, layer2, layer3, layer4."""
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def feature_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]:
        """(height, width) of the map after each of the five pieces for an input of ``input_size``."""

        def down(v: int, k: int, s: int, p: int) -> int:
            return (v + 2 * p - k) // s + 1

        h, w = input_size
        h, w = down(down(h, 7, 2, 3), 3, 2, 1), down(down(w, 7, 2, 3), 3, 2, 1)
        sizes = [(h, w), (h, w)]
        for s in (2, 2, self.last_stride):
            if s == 2:
                h, w = down(h, 3, 2, 1), down(w, 3, 2, 1)
            sizes.append((h, w))
        return sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for piece in self.pieces():
            x = piece(x)
        return x


def resnet18(last_stride: int = 1, stem_relu: bool = False) -> ResNetBackbone:
    return ResNetBackbone(BasicBlock, (2, 2, 2, 2), last_stride, stem_relu, "resnet18")


def resnet34(last_stride: int = 1, stem_relu: bool = False) -> ResNetBackbone:
    return ResNetBackbone(BasicBlock, (3, 4, 6, 3), last_stride, stem_relu, "resnet34")


def resnet50(last_stride: int = 1, stem_relu: bool = False) -> ResNetBackbone:
    return ResNetBackbone(Bottleneck, (3, 4, 6, 3), last_stride, stem_relu, "resnet50")


def se_resnet50(last_stride: int = 1, stem_relu: bool = False) -> ResNetBackbone:
    return ResNetBackbone(SEBottleneck, (3, 4, 6, 3), last_stride, stem_relu, "se_resnet50")


BACKBONES: dict[str, Callable[..., ResNetBackbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "se_resnet50": se_resnet50,
}


def build_backbone(name: str, last_stride: int = 1, stem_relu: bool = False) -> ResNetBackbone:
    """Backbone ``name`` from :data:`BACKBONES`; ConfigError listing the names if unknown."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; available backbones: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](last_stride=last_stride, stem_relu=stem_relu)


def _read_state_dict(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"pretrained weights {str(p)!r} do not exist; give the path of a torchvision ImageNet state dict "
            f"(e.g. resnet50-19c8e357.pth) in model.pretrained, or set model.pretrained: null (nothing is downloaded)")
    try:
        obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"pretrained weights {str(p)!r} cannot be read as a PyTorch state dict: {exc}") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"pretrained weights {str(p)!r} are not a state dict (a mapping of names to tensors)")
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_pretrained(backbone: ResNetBackbone, path: Union[str, Path], min_fraction: float = 0.5) -> dict[str, Any]:
    """Load a torchvision-style ResNet state dict from ``path`` into ``backbone`` (``fc.*`` skipped).

    Returns ``{"loaded": n, "missing": [...], "unexpected": [...], "mismatched": [...]}``; missing and
    unexpected keys are also logged. Raises CheckpointError if the file is missing/unreadable or fewer than
    ``min_fraction`` of the backbone's tensors could be loaded (another architecture).
    """
    src = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    ok = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in src.items() if k in own and own[k].shape != v.shape]
    unexpected = sorted(k for k in src if k not in own)
    # old torchvision files have no BN ``num_batches_tracked`` counters; they are not weights
    missing = sorted(k for k in own if k not in ok and not k.endswith("num_batches_tracked"))
    n_weights = sum(not k.endswith("num_batches_tracked") for k in own)
    if len(ok) < min_fraction * n_weights:
        example = (mismatched or unexpected or missing)[:3]
        raise CheckpointError(
            f"pretrained weights {str(path)!r} do not fit backbone {backbone.name}: only {len(ok)} of {n_weights} "
            f"tensors match ({len(mismatched)} shape mismatches, {len(unexpected)} unexpected keys; e.g. {example}); "
            f"give the torchvision ImageNet weights of {backbone.name.replace('se_', '')}")
    backbone.load_state_dict(ok, strict=False)
    if missing or unexpected or mismatched:
        log.warning("pretrained %s: %d tensors loaded, %d missing (e.g. %s), %d unexpected (e.g. %s), %d shape mismatches",
                    path, len(ok), len(missing), missing[:3], len(unexpected), unexpected[:3], len(mismatched))
    return {"loaded": len(ok), "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
