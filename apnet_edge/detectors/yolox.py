"""YOLOX detector (Megvii YOLOX ONNX export, raw grid outputs) on any runner backend.

Pre-processing is YOLOX's own (``yolox.data.data_augment.preproc`` since 0.2): resize keeping the aspect ratio
(cv2 INTER_LINEAR), paste top-left onto a canvas filled with 114, BGR, 0-255 float, NCHW, no normalisation.
The exported output is (1, A, 5 + C) per image with A = sum over strides 8, 16, 32 of (H/s)(W/s) anchors:
raw ``x, y, w, h`` offsets, sigmoid objectness, sigmoid class scores. Decoding: ``xy = (out + grid) * stride``,
``wh = exp(out) * stride``, ``score = obj * cls``; then NMS and scaling back to the frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError
from apnet_edge.types import Detections

STRIDES = (8, 16, 32)
PAD_VALUE = 114
PERSON = 0


def letterbox(frame: np.ndarray, size_hw: tuple[int, int], pad_value: int = PAD_VALUE) -> tuple[np.ndarray, float]:
    """Resize ``frame`` (H, W, 3) uint8 to fit ``size_hw`` keeping its aspect ratio, top-left on a ``pad_value``
    canvas. Returns the (h, w, 3) uint8 canvas and the scale ratio r (input pixels per frame pixel)."""
    import cv2

    h, w = int(size_hw[0]), int(size_hw[1])
    fh, fw = frame.shape[:2]
    r = min(h / fh, w / fw)
    nh, nw = min(h, int(fh * r)), min(w, int(fw * r))  # int(): as YOLOX's preproc
    canvas = np.full((h, w, 3), pad_value, np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, r


def check_frame(frame: Any, index: int) -> None:
    """Raise ModelError unless ``frame`` is a non-empty (H, W, 3) uint8 BGR image; ``index`` names it."""
    f = frame
    if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or min(f.shape[:2]) == 0:
        desc = f"{f.dtype} {tuple(f.shape)}" if isinstance(f, np.ndarray) else type(f).__name__
        raise ModelError(f"frame {index} is {desc}; expected a BGR uint8 image (H, W, 3)")


def yolox_grids(size_hw: tuple[int, int], strides: Sequence[int] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Anchor grid (A, 2) of cell ``x, y`` indices and strides (A, 1), in YOLOX's order (stride, row, column)."""
    grids, expanded = [], []
    for s in strides:
        hs, ws = int(size_hw[0]) // s, int(size_hw[1]) // s
        yv, xv = np.meshgrid(np.arange(hs), np.arange(ws), indexing="ij")
        grids.append(np.stack((xv, yv), axis=2).reshape(-1, 2))
        expanded.append(np.full((hs * ws, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode_yolox(raw: np.ndarray, size_hw: tuple[int, int], strides: Sequence[int] = STRIDES) -> np.ndarray:
    """Raw YOLOX output (A, 5 + C) or (N, A, 5 + C) -> same shape with ``cx, cy, w, h`` in input pixels."""
    grid, stride = yolox_grids(size_hw, strides)
    if raw.shape[-2] != grid.shape[0]:
        raise ModelError(f"YOLOX output has {raw.shape[-2]} anchors; an input of {tuple(size_hw)} with strides "
                         f"{tuple(strides)} has {grid.shape[0]}: wrong input_size, or not a raw-grid YOLOX export")
    out = np.array(raw, dtype=np.float32, copy=True)
    out[..., 0:2] = (out[..., 0:2] + grid) * stride
    out[..., 2:4] = np.exp(out[..., 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression. boxes (N, 4) x1,y1,x2,y2; returns kept indices, best score first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other (offset trick)."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    offset = (class_ids.astype(np.float32) * (float(boxes.max()) + 1.0))[:, None]
    return nms(boxes + offset, scores, iou_threshold)


def postprocess(decoded: np.ndarray, ratio: float, frame_hw: tuple[int, int], score_threshold: float = 0.3,
                nms_threshold: float = 0.45, person_only: bool = True, class_agnostic: bool = False) -> Detections:
    """One image's decoded output (A, 5 + C) (``cx, cy, w, h`` in input pixels) -> Detections in frame pixels."""
    obj = decoded[:, 4]
    if person_only:
        scores = obj * decoded[:, 5 + PERSON]
        cls = np.full(scores.shape, PERSON, np.int64)
    else:
        cls = np.argmax(decoded[:, 5:], axis=1)
        scores = obj * decoded[np.arange(decoded.shape[0]), 5 + cls]
    m = scores >= score_threshold
    if not np.any(m):
        return Detections.empty()
    d, scores, cls = decoded[m], scores[m], cls[m]
    boxes = np.empty((d.shape[0], 4), np.float32)
    boxes[:, 0:2] = d[:, 0:2] - d[:, 2:4] / 2
    boxes[:, 2:4] = d[:, 0:2] + d[:, 2:4] / 2
    boxes /= ratio
    fh, fw = frame_hw
    np.clip(boxes[:, 0::2], 0, fw, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, fh, out=boxes[:, 1::2])
    keep = nms(boxes, scores, nms_threshold) if (person_only or class_agnostic) else \
        batched_nms(boxes, scores, cls, nms_threshold)
    return Detections(boxes[keep], scores[keep], cls[keep])


class YoloxDetector:
    """YOLOX person (or COCO) detector.

    Args:
        path: the YOLOX model (``.onnx``, ``.xml``, ``.engine``); ignored when ``runner`` is given.
        input_size: network input (height, width) in pixels, multiples of 32.
        score_threshold: minimum ``objectness * class score``.
        nms_threshold: IoU above which the lower-scored box is dropped.
        person_only: keep COCO class 0 only (else every class, class-aware NMS unless ``class_agnostic``).
        runner: an existing detector-mode runner (``task="detector"``) to use instead of loading ``path``.
        threads, backend, **runner_kw: passed to :func:`apnet_edge.runners.load_runner`.
    """

    def __init__(self, path: Union[str, Path, None] = None, input_size: tuple[int, int] = (416, 416),
                 score_threshold: float = 0.3, nms_threshold: float = 0.45, person_only: bool = True,
                 runner: Any = None, threads: Optional[int] = None, backend: str = "auto",
                 class_agnostic: bool = False, **runner_kw: Any) -> None:
        if runner is None:
            if path is None:
                raise ModelError("YoloxDetector needs a model path or runner=")
            from apnet_edge.runners import load_runner

            card = ModelCard(arch="yolox", backbone="", level=0, input_size=tuple(input_size), mean=(0.0, 0.0, 0.0),
                             std=(1.0, 1.0, 1.0), color_order="BGR", pixel_scale=1.0, layout="NCHW",
                             embedding_dim=0, extra={"pad_value": PAD_VALUE})
            runner = load_runner(path, backend=backend, card=card, threads=threads, task="detector", **runner_kw)
        self.runner = runner
        self.input_size: tuple[int, int] = tuple(runner.card.input_size)  # type: ignore[assignment]
        if any(v % max(STRIDES) for v in self.input_size):
            raise ModelError(f"YOLOX input_size {self.input_size} must be multiples of {max(STRIDES)}")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.person_only = bool(person_only)
        self.class_agnostic = bool(class_agnostic)

    def __enter__(self) -> YoloxDetector:
        self.runner.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.runner.deactivate()

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[float]]:
        """Frames (H, W, 3) BGR uint8 -> (N, 3, h, w) float32 letterboxed input and each frame's ratio."""
        x = np.empty((len(frames), 3, *self.input_size), np.float32)
        ratios = []
        for i, f in enumerate(frames):
            check_frame(f, i)
            img, r = letterbox(f, self.input_size)
            x[i] = img.transpose(2, 0, 1)
            ratios.append(r)
        return x, ratios

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in several frames with one runner call (split by the runner if the model's batch is fixed)."""
        if len(frames) == 0:
            return []
        x, ratios = self.preprocess(frames)
        raw = np.asarray(self.runner.infer(x))
        if raw.ndim != 3 or raw.shape[0] != len(frames) or raw.shape[2] < 6:
            raise ModelError(f"YOLOX output has shape {tuple(raw.shape)}; expected ({len(frames)}, anchors, 5 + classes)")
        decoded = decode_yolox(raw, self.input_size)
        return [postprocess(decoded[i], ratios[i], frames[i].shape[:2], self.score_threshold, self.nms_threshold,
                            self.person_only, self.class_agnostic) for i in range(len(frames))]

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        """Detections in one BGR uint8 frame (H, W, 3), boxes in that frame's pixels."""
        return self.detect_batch([frame_bgr])[0]
