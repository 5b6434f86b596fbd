"""APNet: ResNet backbone + five attention pyramids + BNNeck head (APNET.md 1.1-1.7).

Data flow (input (N,3,H,W) RGB, ImageNet mean/std normalised)::

    stem -> P0 -> layer1 -> P1 -> layer2 -> P2 -> layer3 -> P3 -> layer4 -> P4 -> GAP -> feat (N,2048)
    feat -> BNNeck (BatchNorm1d, bias frozen at 0) -> classifier (Linear, no bias, N(0, 0.001))

``P*`` are :class:`AttentionPyramidC` (apnet_c) or :class:`AttentionPyramidS` (apnet_s) modules.
With ``multi_part`` (CUHK03, APNET.md 1.7) a second branch forks after P3: its own copy of layer4 and of P4,
then 2 height stripes, each GAP -> BNNeck -> classifier; the test feature is concat(global, part1, part2).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from apnet_edge.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from apnet_edge.config import ModelConfig
from apnet_edge.errors import ConfigError
from train.models.attention import AttentionPyramidC, AttentionPyramidS, FrozenBiasBatchNorm1d
from train.models.backbones import build_backbone, load_pretrained

NUM_PARTS = 2


def _pooled(pyramid: nn.Module, x: torch.Tensor, stripes: int) -> list[torch.Tensor]:
    """Spatial means of ``pyramid(x)`` over ``stripes`` equal height stripes: ``stripes`` tensors (N, C).

    A fused APNet-C pyramid (set by the ONNX exporter) is applied to the means instead of the map: the mean of a
    per-channel affine map is that map of the mean, so the export saves a whole pass over the last feature map
    (the largest float pass left between INT8 convolutions); the pyramid's scale and shift still come from the
    whole map's mean, as in :meth:`AttentionPyramidC.forward`."""
    if isinstance(pyramid, AttentionPyramidC) and pyramid.applies_affine:
        mean = x.mean((2, 3))
        scale, shift = pyramid.affine(mean)
        means = [mean] if stripes == 1 else [s.mean((2, 3)) for s in x.chunk(stripes, dim=2)]
        return [m * scale + shift for m in means]
    y = pyramid(x)
    return [s.mean((2, 3)) for s in y.chunk(stripes, dim=2)]


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class APNet(nn.Module):
    """Attention Pyramid Network for person re-identification.

    Args:
        cfg: the model configuration (arch, backbone, level, input_size, ...).
        num_classes: training identities; 0 builds no classifier (test features only).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int = 0) -> None:
        super().__init__()
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, found {num_classes}")
        if cfg.test_feature == "logits" and num_classes == 0:
            raise ConfigError("model.test_feature 'logits' needs the classifier: build the model with num_classes > 0 "
                              "(the number of training identities)")
        self.cfg = cfg
        self.num_classes = num_classes
        self.trained_num_classes = num_classes  # what the card reports; set from a checkpoint when loaded
        self.pretrained_report: Optional[dict[str, Any]] = None  # filled by load_pretrained
        self.backbone = build_backbone(cfg.backbone, cfg.last_stride, cfg.stem_relu)
        self.sizes = self.backbone.feature_sizes(tuple(cfg.input_size))
        pyramids: list[nn.Module] = []
        for c, (h, w) in zip(self.backbone.channels, self.sizes):
            if cfg.arch == "apnet_c":
                pyramids.append(AttentionPyramidC(c, cfg.level, cfg.pyramid_order, cfg.se_reduction))
            else:
                pyramids.append(AttentionPyramidS(c, h, w, cfg.level, cfg.pyramid_order))
        self.pyramids = nn.ModuleList(pyramids)
        self.feat_dim = self.backbone.channels[-1]
        self.bnneck = FrozenBiasBatchNorm1d(self.feat_dim)
        self.classifier = _classifier(self.feat_dim, num_classes) if num_classes > 0 else None
        if cfg.multi_part:
            h4 = self.sizes[-1][0]
            if h4 % NUM_PARTS:
                raise ConfigError(f"multi_part needs an even layer4 map height, found {h4} for input "
                                  f"{tuple(cfg.input_size)}; use a larger input height or last_stride 1")
            self.part_layer4 = copy.deepcopy(self.backbone.layer4)
            self.part_pyramid = copy.deepcopy(self.pyramids[4])
            self.part_bnnecks = nn.ModuleList(FrozenBiasBatchNorm1d(self.feat_dim) for _ in range(NUM_PARTS))
            self.part_classifiers = (nn.ModuleList(_classifier(self.feat_dim, num_classes) for _ in range(NUM_PARTS))
                                     if num_classes > 0 else None)

    # ------------------------------------------------------------------ properties
    @property
    def embedding_dim(self) -> int:
        """Length of :meth:`embed`'s output."""
        base = self.num_classes if self.cfg.test_feature == "logits" else self.feat_dim
        return base * (1 + NUM_PARTS if self.cfg.multi_part else 1)

    @property
    def card(self) -> ModelCard:
        cfg = self.cfg
        return ModelCard(
            arch=cfg.arch, backbone=cfg.backbone, level=int(cfg.level), input_size=tuple(cfg.input_size),
            mean=IMAGENET_MEAN, std=IMAGENET_STD, color_order="RGB", pixel_scale=255.0, layout="NCHW",
            embedding_dim=self.embedding_dim, num_classes=int(self.trained_num_classes), multi_part=cfg.multi_part,
            extra={"last_stride": cfg.last_stride, "stem_relu": cfg.stem_relu, "pyramid_order": cfg.pyramid_order,
                   "test_feature": cfg.test_feature, "se_reduction": cfg.se_reduction,
                   "flip_test": "sum of image and mirror features, then L2 normalisation"},
        )

    def load_pretrained(self, path: Union[str, Path]) -> dict[str, Any]:
        """Load torchvision ImageNet weights into the backbone (and the multi-part layer4 copy)."""
        self.pretrained_report = load_pretrained(self.backbone, path)
        if self.cfg.multi_part:
            self.part_layer4.load_state_dict(self.backbone.layer4.state_dict())
        return self.pretrained_report

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"APNet expects a (N,3,H,W) RGB tensor, found shape {tuple(x.shape)}")
        if self.cfg.arch == "apnet_s" and tuple(x.shape[-2:]) != tuple(self.cfg.input_size):
            raise ConfigError(f"APNet-S was built for input {tuple(self.cfg.input_size)} (height, width), found "
                              f"{tuple(x.shape[-2:])}; resize the images to the model's input_size")

    def _global_and_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(N,3,H,W) -> pre-BN global feature (N,D) and pre-BN part features [(N,D)] * 2 (multi_part)."""
        self._check_input(x)
        pieces = self.backbone.pieces()
        for piece, pyramid in zip(pieces[:4], self.pyramids[:4]):
            x = pyramid(piece(x))
        fork = x
        feat = _pooled(self.pyramids[4], pieces[4](x), 1)[0]
        parts: list[torch.Tensor] = []
        if self.cfg.multi_part:
            parts = _pooled(self.part_pyramid, self.part_layer4(fork), NUM_PARTS)
        return feat, parts

    def _test_feature(self, x: torch.Tensor) -> torch.Tensor:
        feat, parts = self._global_and_parts(x)
        mode = self.cfg.test_feature
        if mode == "before_bn":
            outs = [feat, *parts]
        else:
            outs = [self.bnneck(feat)]
            if parts:
                outs += [bn(p) for bn, p in zip(self.part_bnnecks, parts)]
            if mode == "logits":
                heads = [self.classifier, *(self.part_classifiers if parts else [])]
                outs = [head(o) for head, o in zip(heads, outs)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def embed(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Test embedding (N, embedding_dim), L2-normalised; with ``flip`` the features of x and of its
        horizontal mirror are summed before normalisation. Call in eval mode."""
        f = self._test_feature(x)
        if flip:
            f = f + self._test_feature(torch.flip(x, dims=[3]))
        return F.normalize(f, p=2.0, dim=1)

    def forward(self, x: torch.Tensor) -> Any:
        """Train mode: ``{"logits", "features"[, "part_logits", "part_features"]}``; eval mode: ``embed(x)``.

        ``logits`` is the (N, num_classes) global logits (None without classifier), or with ``multi_part`` the
        list [global, part1, part2] so that a loss over ``logits`` trains every classifier; ``features`` is the
        pre-BN global feature (N, D) for the triplet loss; ``part_*`` hold the two stripes' logits/features.
        """
        if not self.training:
            return self.embed(x)
        feat, parts = self._global_and_parts(x)
        logits = self.classifier(self.bnneck(feat)) if self.classifier is not None else None
        out: dict[str, Any] = {"logits": logits, "features": feat}
        if self.cfg.multi_part:
            part_logits = ([head(bn(p)) for head, bn, p in zip(self.part_classifiers, self.part_bnnecks, parts)]
                           if self.part_classifiers is not None else [])
            if logits is not None:
                out["logits"] = [logits, *part_logits]
            out["part_logits"] = part_logits
            out["part_features"] = parts
        return out

    def extra_repr(self) -> str:
        c = self.cfg
        return f"arch={c.arch}, backbone={c.backbone}, level={c.level}, num_classes={self.num_classes}"


def build_apnet(cfg: ModelConfig, num_classes: int = 0, pretrained: Optional[Union[str, Path]] = None) -> APNet:
    """APNet for ``cfg``; loads ``pretrained`` (or ``cfg.pretrained``) ImageNet weights into the backbone."""
    model = APNet(cfg, num_classes)
    path = pretrained if pretrained is not None else cfg.pretrained
    if path:
        model.load_pretrained(path)
    return model
