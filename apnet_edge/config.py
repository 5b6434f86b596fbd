"""Frozen configuration dataclasses for training and evaluation, loaded from YAML.

A config file has the sections ``model``, ``data``, ``solver`` and ``train``; every key is checked, so a
misspelt key fails with its full path (``solver.base_lr``) and the keys that exist. Command-line overrides
use ``key=value`` with dotted paths (``solver.max_epochs=5``), values parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.errors import ConfigError

ARCHS = ("apnet_c", "apnet_s")


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``input_size`` is (height, width) in pixels."""

    arch: str = "apnet_c"  # apnet_c (channel attention, as released) or apnet_s (spatial attention)
    backbone: str = "resnet50"  # resnet18 | resnet34 | resnet50 | se_resnet50
    level: int = 2  # attention pyramid level: 0 baseline, 1 SE only, 2 published, 3 four parts
    input_size: tuple[int, int] = (256, 128)
    last_stride: int = 1
    stem_relu: bool = False  # the released code has no ReLU after the stem BN (quirk kept by default)
    pyramid_order: str = "fine_to_coarse"  # released order; "coarse_to_fine" is the figure's order
    se_reduction: int = 8
    multi_part: bool = False  # CUHK03 multi-part branch (2 height stripes forked after layer3)
    pretrained: Optional[str] = None  # path to ImageNet weights (torchvision state dict); never downloaded
    test_feature: str = "after_bn"  # after_bn (default) | before_bn | logits (the released MSMT17 trick)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch must be one of {ARCHS}, found {self.arch!r}")
        if not 0 <= int(self.level) <= 3:
            raise ConfigError(f"model.level must be 0, 1, 2 or 3, found {self.level!r}")
        if self.pyramid_order not in ("fine_to_coarse", "coarse_to_fine"):
            raise ConfigError(
                f"model.pyramid_order must be 'fine_to_coarse' or 'coarse_to_fine', found {self.pyramid_order!r}"
            )
        if self.test_feature not in ("after_bn", "before_bn", "logits"):
            raise ConfigError(
                f"model.test_feature must be 'after_bn', 'before_bn' or 'logits', found {self.test_feature!r}"
            )
        if self.last_stride not in (1, 2):
            raise ConfigError(f"model.last_stride must be 1 or 2, found {self.last_stride!r}")
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ConfigError(
                f"model.input_size must be (height, width) with both divisible by 32 (the backbone downsamples "
                f"by 32 and the pyramid splits the height), found {tuple(self.input_size)}; e.g. use (256, 128)"
            )


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "market1501"  # market1501 | dukemtmcreid | cuhk03 | msmt17 | viper | folder
    root: Optional[str] = None  # dataset folder; the CLI's --data-root overrides it
    cuhk03_variant: str = "labeled"  # labeled | detected
    num_instances: int = 4  # K of the P x K sampler
    batch_size: int = 80  # P x K
    flip_prob: float = 0.5
    pad: int = 10
    erasing_prob: float = 0.5
    num_workers: int = 4
    test_batch_size: int = 128


@dataclass(frozen=True)
class SolverConfig:
    optimizer: str = "adam"  # adam | sgd
    base_lr: float = 4e-4
    weight_decay: float = 1e-3
    momentum: float = 0.9
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    steps: tuple[int, ...] = (40, 80, 120)
    gamma: float = 0.1
    max_epochs: int = 160
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    triplet_weight: float = 1.0  # lambda
    amp: bool = True  # mixed precision, on a GPU only


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    eval_period: int = 40  # validate every N epochs (and at the end)
    eval_at_start: bool = False  # also validate the untrained model (logged as epoch 0)
    checkpoint_keep: int = 5
    flip_test: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_period: int = 20  # iterations between log lines
    max_iters_per_epoch: int = 0  # 0 = whole epoch; >0 caps it (quick experiments)


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert lists to tuples. Raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, getattr(types, "UnionType", ()))):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}' must be a list, found {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key '{path}' must have {len(args)} items, found {list(value)!r}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}' must be true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{path}' must be an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}' must be a number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{path}' must be a string, found {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{path or '<root>'}' must be a mapping, found {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"'{path}.{unknown[0]}'" if path else f"'{unknown[0]}'"
        raise ConfigError(f"unknown config key {where}; known keys here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        sub = f"{path}.{name}" if path else name
        tp = hints[name]
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, sub)
        else:
            kwargs[name] = _coerce(value, tp, sub)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section '{path or '<root>'}': {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-YAML-able dict of a config dataclass (tuples become lists)."""

    def conv(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["solver.max_epochs=5", "model.level=1"]`` into a nested dict (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. solver.max_epochs=5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        _set_path(out, key.strip(), value)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Load an :class:`ExperimentConfig` from a YAML file plus ``key=value`` overrides."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist; pass an existing YAML such as configs/apnet_c_market1501.yaml")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping with sections model/data/solver/train")
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from exc
        raise


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` re-exported for frozen configs."""
    return dataclasses.replace(cfg, **changes)
