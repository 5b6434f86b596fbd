"""Training checkpoints: save atomically, load safely, rebuild the model they describe.

A checkpoint is a ``torch.save``d dict::

    {"format": "apnet-edge-checkpoint", "format_version": 1, "model_card": {...}, "model_config": {...},
     "experiment_config": {...} | None, "num_classes": int, "state_dict": {...}, "epoch": int,
     "optimizer": {...} | None, "scheduler": {...} | None, "metrics": {...}, "extra": {...},
     "torch_version": str, "created": float}

It holds only tensors and plain Python values, so it is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from apnet_edge.config import ExperimentConfig, ModelConfig, from_dict, to_dict
from apnet_edge.errors import CheckpointError, ConfigError

FORMAT = "apnet-edge-checkpoint"
FORMAT_VERSION = 1
_CLASSIFIER_PREFIXES = ("classifier.", "part_classifiers.")
PathLike = Union[str, Path]


def _plain(obj: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and Paths into plain Python so ``weights_only`` loading works."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, (int, float)):
        return type(obj)(obj) if type(obj) in (int, float) else float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    return str(obj)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def save_checkpoint(path: PathLike, model: nn.Module, cfg: Union[ExperimentConfig, ModelConfig], epoch: int,
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
                    metrics: Optional[dict[str, Any]] = None, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model`` (an APNet, or a DDP wrapper of one) to ``path`` atomically (temp file, then rename)."""
    model = _unwrap(model)
    model_cfg = cfg.model if isinstance(cfg, ExperimentConfig) else cfg
    if not isinstance(model_cfg, ModelConfig):
        raise ConfigError(f"save_checkpoint needs an ExperimentConfig or ModelConfig, found {type(cfg).__name__}")
    card = model.card.to_dict() if hasattr(model, "card") else None
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_card": _plain(card),
        "model_config": to_dict(model_cfg),
        "experiment_config": to_dict(cfg) if isinstance(cfg, ExperimentConfig) else None,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "metrics": _plain(metrics or {}),
        "extra": _plain(extra or {}),
        "torch_version": str(torch.__version__),
        "created": time.time(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; ``ckpt["source"]`` is set to ``path``.

    Raises CheckpointError if the file is missing, corrupt or not an apnet-edge checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass the .pt file a training run wrote "
                              f"(e.g. RUN/best.pt)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        first = next((ln for ln in lines if "error:" in ln.lower()), lines[0])
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read (corrupt, truncated or not a PyTorch file "
                              f"with plain contents): {first}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "state_dict" not in ckpt:
        hint = ""
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            hint = " (it looks like a bare state dict: ImageNet backbone weights go in model.pretrained)"
        raise CheckpointError(f"{str(p)!r} is not an apnet-edge checkpoint{hint}")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(p)!r} has format_version {version!r}; this apnet-edge reads "
                              f"versions up to {FORMAT_VERSION}: upgrade apnet-edge")
    for key in ("model_config", "num_classes"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {str(p)!r} lacks {key!r}; it is damaged or not an apnet-edge checkpoint")
    ckpt["source"] = str(p)
    return ckpt


def checkpoint_model_config(ckpt: dict[str, Any]) -> ModelConfig:
    """The ModelConfig stored in ``ckpt`` (``pretrained`` cleared: the weights are in the checkpoint)."""
    data = dict(ckpt["model_config"])
    data["pretrained"] = None
    try:
        return from_dict(ModelConfig, data, "model")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {ckpt.get('source', '<dict>')!r} has an unusable model config: {exc}") from exc


def _describe(cfg: Any) -> str:
    if isinstance(cfg, ModelConfig):
        cfg = to_dict(cfg)
    if not isinstance(cfg, dict):
        return "an unknown model"
    s = f"{cfg.get('arch')} level {cfg.get('level')} on {cfg.get('backbone')}"
    if cfg.get("multi_part"):
        s += " with the multi-part branch"
    if cfg.get("arch") == "apnet_s":
        s += f" at input {tuple(cfg.get('input_size') or ())}"
    return s


def _examples(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (" ..." if len(items) > n else "")


def load_weights_into(model: nn.Module, ckpt: Union[PathLike, dict[str, Any]]) -> nn.Module:
    """Copy the checkpoint's weights into ``model`` (an APNet or its DDP wrapper); returns the model.

    A checkpoint classifier is ignored when ``model`` has none. Raises CheckpointError, in one line, when the
    number of identities differs or any other tensor is missing/unexpected/of another shape.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    src = ckpt.get("source", "<in memory>")
    target = _unwrap(model)
    state = ckpt["state_dict"] if "state_dict" in ckpt else ckpt
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    own = target.state_dict()
    own_has_cls = any(k.startswith(_CLASSIFIER_PREFIXES) for k in own)
    ck_cls = state.get("classifier.weight")
    if own_has_cls:
        if ck_cls is None:
            raise CheckpointError(f"checkpoint {src} has no classifier but this model has "
                                  f"{getattr(target, 'num_classes', '?')} classes; build the model with "
                                  f"num_classes=0 (e.g. --no-classifier) to load it")
        own_n, ck_n = own["classifier.weight"].shape[0], ck_cls.shape[0]
        if own_n != ck_n:
            raise CheckpointError(
                f"checkpoint {src} was trained with {ck_n} identities, this run has {own_n} classes; pass "
                f"--no-classifier (model_from_checkpoint(..., with_classifier=False)) to use it for features, "
                f"or start from it as pretrained backbone weights instead of resuming")
    else:
        state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                    if k in own and tuple(v.shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing from the checkpoint ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (checkpoint vs model: {_examples(shapes)})")
        mine = getattr(target, "cfg", None)
        raise CheckpointError(f"checkpoint {src} holds {_describe(ckpt.get('model_config'))}, this model is "
                              f"{_describe(mine)}: {'; '.join(parts)}; use the config the checkpoint was trained with")
    target.load_state_dict(state, strict=True)
    return model


def model_from_checkpoint(path_or_dict: Union[PathLike, dict[str, Any]], with_classifier: bool = True,
                          map_location: Any = "cpu") -> nn.Module:
    """Rebuild the APNet a checkpoint describes, load its weights and return it in eval mode.

    ``with_classifier=False`` drops the ID classifier (test features only), except when the stored
    ``test_feature`` is ``"logits"``: the classifier *is* the feature then and is kept.
    """
    from train.models import build_model

    ckpt = path_or_dict if isinstance(path_or_dict, dict) else load_checkpoint(path_or_dict, map_location)
    cfg = checkpoint_model_config(ckpt)
    trained = int(ckpt.get("num_classes") or 0)
    keep = with_classifier or cfg.test_feature == "logits"
    model = build_model(cfg, trained if keep else 0)
    load_weights_into(model, ckpt)
    model.trained_num_classes = trained
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model.eval()


def summarize(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Short JSON-able description of a loaded checkpoint (for logs and ``inspect`` commands)."""
    m = ckpt.get("metrics") or {}
    return {"source": ckpt.get("source"), "model": _describe(ckpt.get("model_config")), "epoch": ckpt.get("epoch"),
            "num_classes": ckpt.get("num_classes"),
            "mAP": m.get("mAP") if isinstance(m.get("mAP"), (int, float)) and not math.isnan(m["mAP"]) else None}
