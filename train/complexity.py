"""Model size and cost: parameters and multiply-accumulates (MACs) of an APNet.

MACs count convolutions, Linear layers and the RGA-S affinity matmul (APNet-S) for one image in eval mode
(the test-feature path, no flip); BatchNorm, activations, pooling and element-wise products are not counted.
One MAC is one multiply plus one add ("GFLOPs" in many papers are GMACs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
import torch.nn as nn

from apnet_edge.config import ModelConfig
from train.models.attention import Affinity


def _is_classifier(name: str) -> bool:
    return name.startswith("classifier") or name.startswith("part_classifiers")


def count_parameters(model: nn.Module, include_classifier: bool = False) -> int:
    """All parameters (trainable or frozen) of ``model``; the ID classifiers only if ``include_classifier``."""
    return sum(p.numel() for name, p in model.named_parameters() if include_classifier or not _is_classifier(name))


def count_macs(model: nn.Module, input_size: Optional[tuple[int, int]] = None) -> int:
    """MACs of one (1,3,H,W) forward in eval mode; ``input_size`` defaults to the model's configured size
    (``model.cfg.input_size``), else (256, 128). Works on models built on the ``meta`` device too."""
    if input_size is None:
        cfg = getattr(model, "cfg", None)
        input_size = tuple(cfg.input_size) if cfg is not None else (256, 128)
    total = 0

    def conv_hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def linear_hook(m: nn.Linear, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    def affinity_hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * inp[0].shape[-1]

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, Affinity):
            hooks.append(m.register_forward_hook(affinity_hook))
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(total)


def model_info(cfg: ModelConfig, num_classes: int = 0) -> dict[str, Any]:
    """Size and cost of the model ``cfg`` describes (built on the meta device: no weights, no pretrained load).

    Keys: arch, backbone, level, input_size, embedding_dim, num_classes, params_total (incl. classifier),
    params_backbone, params_attention, params_head (BNNecks), params_part_branch, params_classifier,
    params_total_m, macs, gmacs.
    """
    from train.models import build_model

    notes = []
    cfg = dataclasses.replace(cfg, pretrained=None)
    if cfg.test_feature == "logits" and num_classes == 0:
        cfg = dataclasses.replace(cfg, test_feature="after_bn")
        notes.append("test_feature 'logits' needs --num-classes; counted with the post-BN feature")
    with torch.device("meta"):
        model = build_model(cfg, num_classes)

    def params(prefixes: tuple[str, ...]) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))

    total = count_parameters(model, include_classifier=True)
    info: dict[str, Any] = {
        "arch": cfg.arch,
        "backbone": cfg.backbone,
        "level": cfg.level,
        "input_size": list(cfg.input_size),
        "multi_part": cfg.multi_part,
        "embedding_dim": model.embedding_dim,
        "num_classes": num_classes,
        "params_total": total,
        "params_total_m": round(total / 1e6, 2),
        "params_backbone": params(("backbone.",)),
        "params_attention": params(("pyramids.", "part_pyramid.")),
        "params_head": params(("bnneck.", "part_bnnecks.")),
        "params_part_branch": params(("part_layer4.",)),
        "params_classifier": params(("classifier.", "part_classifiers.")),
        "macs": count_macs(model, tuple(cfg.input_size)),
    }
    info["gmacs"] = round(info["macs"] / 1e9, 3)
    if notes:
        info["note"] = "; ".join(notes)
    return info
