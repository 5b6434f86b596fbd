"""Typed values passed between runtime stages, validated where they are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from apnet_edge.errors import ApnetError


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Detections:
    """Detections in one frame.

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in pixels of the frame (x right, y down).
        scores: (N,) float32 confidence in [0, 1].
        class_ids: (N,) int64 class index (COCO: 0 = person).

    The arrays are copies made read-only, so a ``Detections`` never changes after it is made.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.array(self.boxes, dtype=np.float32, copy=True)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = np.array(self.scores, dtype=np.float32, copy=True).reshape(-1)
        class_ids = np.array(self.class_ids, dtype=np.int64, copy=True).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ApnetError(f"Detections.boxes must be (N, 4) x1,y1,x2,y2, found shape {tuple(boxes.shape)}")
        n = boxes.shape[0]
        if scores.shape != (n,) or class_ids.shape != (n,):
            raise ApnetError(f"Detections: {n} boxes but scores {tuple(scores.shape)} and class_ids "
                             f"{tuple(class_ids.shape)}; all three must have N = {n} rows")
        object.__setattr__(self, "boxes", _frozen(boxes))
        object.__setattr__(self, "scores", _frozen(scores))
        object.__setattr__(self, "class_ids", _frozen(class_ids))

    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def filter(self, mask: Any) -> Detections:
        """The detections selected by ``mask``: a boolean (N,) array or an array of indices."""
        m = np.asarray(mask)
        if m.dtype == bool and m.shape != (len(self),):
            raise ApnetError(f"Detections.filter: boolean mask of shape {m.shape} for {len(self)} detections")
        if m.dtype != bool:
            m = m.astype(np.int64).reshape(-1)
        return Detections(self.boxes[m], self.scores[m], self.class_ids[m])

    @property
    def widths(self) -> np.ndarray:
        """(N,) box widths in pixels."""
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        """(N,) box heights in pixels."""
        return self.boxes[:, 3] - self.boxes[:, 1]
