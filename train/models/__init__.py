"""APNet models: :func:`build_model` turns a :class:`~apnet_edge.config.ModelConfig` into an :class:`APNet`."""

from __future__ import annotations

from apnet_edge.config import ARCHS, ModelConfig
from apnet_edge.errors import ConfigError
from train.models.apnet import APNet, build_apnet
from train.models.backbones import BACKBONES, build_backbone, load_pretrained

# arch name -> model class (both variants are the same class; the attention is picked by cfg.arch)
MODEL_REGISTRY: dict[str, type[APNet]] = {arch: APNet for arch in ARCHS}


def available_backbones() -> list[str]:
    """Names accepted by ``model.backbone``."""
    return sorted(BACKBONES)


def build_model(cfg: ModelConfig, num_classes: int) -> APNet:
    """APNet for ``cfg`` with a ``num_classes``-way classifier (0: none); loads ``cfg.pretrained`` if set.

    Raises ConfigError for an unknown arch/backbone, CheckpointError for unusable pretrained weights.
    """
    if cfg.arch not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model.arch {cfg.arch!r}; available: {', '.join(sorted(MODEL_REGISTRY))}")
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"unknown model.backbone {cfg.backbone!r}; available backbones: "
                          f"{', '.join(available_backbones())}")
    return build_apnet(cfg, num_classes)


__all__ = ["APNet", "BACKBONES", "MODEL_REGISTRY", "available_backbones", "build_backbone", "build_model",
           "load_pretrained"]
