"""The model card: everything a runner needs to feed a re-ID model correctly.

It is saved inside every checkpoint, written into ONNX ``metadata_props`` and into engine sidecars,
so that no caller ever hard-codes an input size, a normalisation or a colour order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from apnet_edge.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCard:
    """Description of a re-ID model's input and output.

    Attributes:
        arch: architecture name, e.g. ``"apnet_c"``, ``"apnet_s"`` or ``"external"``.
        backbone: backbone name, e.g. ``"resnet50"``.
        level: attention pyramid level (0 = baseline, 1 = SE only, 2 = published).
        input_size: (height, width) in pixels the model expects.
        mean, std: per-channel normalisation, applied to pixels scaled by ``pixel_scale`` first,
            in the order of ``color_order``.
        color_order: ``"RGB"`` or ``"BGR"``: channel order the model expects.
        pixel_scale: pixels are divided by this before mean/std (255 for 0-1 models, 1 for 0-255 models).
        layout: ``"NCHW"`` or ``"NHWC"``.
        embedding_dim: length of the output embedding.
        num_classes: identities of the classifier the model was trained with (0 if none).
        multi_part: whether the CUHK03 multi-part branch is part of the embedding.
        normalize_in_graph: the model takes raw uint8/float 0-255 pixels and normalises itself.
        extra: free-form facts (training dataset, quantization notes, sha256 of the source ...).
    """

    arch: str = "apnet_c"
    backbone: str = "resnet50"
    level: int = 2
    input_size: tuple[int, int] = (256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color_order: str = "RGB"
    pixel_scale: float = 255.0
    layout: str = "NCHW"
    embedding_dim: int = 2048
    num_classes: int = 0
    multi_part: bool = False
    normalize_in_graph: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.color_order not in ("RGB", "BGR"):
            raise ModelError(f"model card color_order must be 'RGB' or 'BGR', found {self.color_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"model card layout must be 'NCHW' or 'NHWC', found {self.layout!r}")
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise ModelError(f"model card input_size must be (height, width) > 0, found {self.input_size!r}")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"model card has unknown keys {unknown}; known keys: {sorted(known)}")
        kw = dict(data)
        for key in ("input_size", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        return cls.from_dict(json.loads(text))
