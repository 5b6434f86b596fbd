"""Person detectors: ``detect(frame_bgr) -> Detections`` over the same runners as the re-ID models.

One factory serves ``apnet-edge run``, ``apnet-edge mine`` and the library::

    det = load_detector("yolox_nano.onnx")                 # YOLOX ONNX (raw grid outputs)
    det = load_detector("yolo11n.onnx")                    # Ultralytics YOLOv8/YOLO11 ONNX export
    det = load_detector("yolo11n.pt", imgsz=640)           # Ultralytics .pt: exported to ONNX once (cached)
    det = load_detector("fall.onnx", classes=["Normal"], box_width_scale=0.6)

Beside a model, ``<stem>.detector.json`` (written by ``apnet-edge fetch-detector``) holds its default options
(``type``, ``classes``, ``score_threshold``, ``nms_threshold``, ``input_size``, ``box_width_scale``, ``names``);
options given explicitly (arguments, ``cams.yaml`` keys, CLI flags) win over it.

Importing this package needs numpy only; the detectors and their backends are imported when used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.errors import ModelError

PathLike = Union[str, Path]
DETECTOR_TYPES = ("auto", "yolox", "yolo")
DEFAULTS_SUFFIX = ".detector.json"
"""``<model stem>.detector.json`` beside a detector model: its default options (not a model-card sidecar, whose
names ``<stem>.json`` / ``<name>.json`` it avoids so that runners never mistake it for one)."""
DEFAULT_KEYS = ("type", "classes", "score_threshold", "nms_threshold", "input_size", "box_width_scale", "names")
PT_SUFFIXES = (".pt",)

__all__ = ["DEFAULTS_SUFFIX", "DETECTOR_TYPES", "defaults_path", "detector_type", "load_detector",
           "read_detector_defaults", "write_detector_defaults"]


def defaults_path(model_path: PathLike) -> Path:
    """Where the defaults of ``model_path`` live: ``<stem>.detector.json`` beside it."""
    p = Path(model_path)
    return p.with_name(p.stem + DEFAULTS_SUFFIX)


def read_detector_defaults(model_path: PathLike) -> dict[str, Any]:
    """The options stored in ``<stem>.detector.json`` beside ``model_path`` ({} when there is none).

    Only the keys of :data:`DEFAULT_KEYS` are returned; the others (``source``, ``licence`` ...) are notes.
    Raises ModelError naming the file when it exists but is not a JSON object.
    """
    p = defaults_path(model_path)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"detector defaults {str(p)!r} cannot be read as JSON: {exc}; fix or delete it") from None
    if not isinstance(data, dict):
        raise ModelError(f"detector defaults {str(p)!r} must hold a JSON object, found {type(data).__name__}")
    out = {k: data[k] for k in DEFAULT_KEYS if k in data and data[k] is not None}
    if "input_size" in out:
        v = out["input_size"]
        out["input_size"] = (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)
    if "names" in out and isinstance(out["names"], dict):
        out["names"] = {int(k): str(v) for k, v in out["names"].items()}
    return out


def write_detector_defaults(model_path: PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` (options plus free-form notes) as ``<stem>.detector.json`` beside ``model_path``."""
    p = defaults_path(model_path)
    p.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return p


def detector_type(path: PathLike, type: str = "auto") -> str:
    """``"yolox"`` or ``"yolo"`` for the model at ``path``.

    ``auto``: the ``type`` in the model's ``.detector.json``; else ``yolo`` for a ``.pt``; ``yolox`` when the file
    name says so; for an ONNX file, ``yolo`` when it carries Ultralytics metadata (``names``/``stride``) or its output
    is (N, 4 + classes, anchors), ``yolox`` when it is (N, anchors, 5 + classes) without Ultralytics metadata;
    otherwise ``yolo``.
    """
    kind = str(type).lower()
    if kind not in DETECTOR_TYPES:
        raise ModelError(f"detector type must be one of {DETECTOR_TYPES}, found {type!r}")
    if kind != "auto":
        return kind
    p = Path(path)
    stored = read_detector_defaults(p).get("type") if p.suffix.lower() not in PT_SUFFIXES else None
    if stored in ("yolox", "yolo"):
        return str(stored)
    if p.suffix.lower() in PT_SUFFIXES:
        return "yolo"
    if "yolox" in p.name.lower():
        return "yolox"
    if p.suffix.lower() == ".onnx" and p.is_file():
        from apnet_edge.detectors.onnx_info import read_onnx_info

        try:
            info = read_onnx_info(p)
        except ModelError:  # not readable: loading it says why
            return "yolo"
        if "names" in info.metadata or "stride" in info.metadata or info.metadata.get("author") == "Ultralytics":
            return "yolo"
        if info.outputs and info.inputs:
            out, inp = info.outputs[0][1], info.inputs[0][1]
            if len(out) == 3 and len(inp) == 4 and None not in inp[2:]:
                from apnet_edge.detectors.yolo import anchor_count

                anchors = anchor_count((int(inp[2]), int(inp[3])))  # type: ignore[arg-type]
                if out[1] == anchors and out[2] is not None and out[2] > 5:
                    return "yolox"
    return "yolo"


def load_detector(path: PathLike, type: str = "auto", *, score_threshold: Optional[float] = None,
                  nms_threshold: Optional[float] = None, input_size: Optional[tuple[int, int]] = None,
                  classes: Any = None, box_width_scale: Optional[float] = None, threads: Optional[int] = None,
                  backend: str = "auto", imgsz: Optional[int] = None, cache_dir: Optional[PathLike] = None,
                  **options: Any) -> Any:
    """The person detector at ``path``: a YOLOX or Ultralytics model, the same way everywhere.

    Args:
        path: ``.onnx`` / ``.xml`` / ``.engine`` (YOLOX or Ultralytics export) or an Ultralytics ``.pt``, which is
            exported to ONNX once (needs ``pip install 'apnet-edge[ultralytics]'``; cached by sha256 and size).
        type: ``"auto"`` (see :func:`detector_type`), ``"yolox"`` or ``"yolo"``.
        score_threshold, nms_threshold, input_size: None = the model's ``.detector.json``, else the detector's
            default.
        classes: Ultralytics models only: class names or ids kept as "person" (default: the class named person).
        box_width_scale: Ultralytics models only: multiply each box's width around its centre (e.g. 0.6).
        threads, backend: passed to the runner.
        imgsz: ``.pt`` only: export size (default: ``input_size``, else 640).
        cache_dir: ``.pt`` only: where the exported ONNX is kept.
        **options: passed to the detector class (``class_agnostic``, ``max_det``, ``providers`` ...).
    """
    p = Path(path)
    kind = detector_type(p, type)
    if p.suffix.lower() in PT_SUFFIXES:
        if kind != "yolo":
            raise ModelError(f"detector {str(p)!r}: a .pt detector must be an Ultralytics model (type yolo), "
                             f"found type {kind!r}; give the YOLOX model as ONNX")
        if not p.is_file():
            raise ModelError(f"detector model {str(p)!r} not found; check the path")
        size = imgsz or (max(input_size) if input_size else None)
        beside_pt = read_detector_defaults(p)  # <stem>.detector.json beside the .pt applies to its export
        size = size or (max(beside_pt["input_size"]) if "input_size" in beside_pt else None)
        p = ultralytics_pt_to_onnx(p, imgsz=size, cache_dir=cache_dir)
        score_threshold = beside_pt.get("score_threshold") if score_threshold is None else score_threshold
        nms_threshold = beside_pt.get("nms_threshold") if nms_threshold is None else nms_threshold
        classes = beside_pt.get("classes") if classes is None else classes
        box_width_scale = beside_pt.get("box_width_scale") if box_width_scale is None else box_width_scale
        if "names" in beside_pt and "names" not in options:
            options["names"] = beside_pt["names"]
    defaults = read_detector_defaults(p)
    given = {"score_threshold": score_threshold, "nms_threshold": nms_threshold, "input_size": input_size,
             "classes": classes, "box_width_scale": box_width_scale}
    if kind == "yolox":
        bad = [k for k in ("classes", "box_width_scale") if given[k] is not None]
        if bad:
            raise ModelError(f"detector {str(p)!r} is a YOLOX model: {' and '.join(bad)} apply to Ultralytics "
                             f"models only (YOLOX keeps COCO class 0, person)")
        from apnet_edge.detectors.yolox import YoloxDetector

        kw: dict[str, Any] = {k: given[k] if given[k] is not None else defaults.get(k)
              for k in ("score_threshold", "nms_threshold", "input_size")}
        kw = {k: v for k, v in kw.items() if v is not None}
        return YoloxDetector(p, threads=threads, backend=backend, **kw, **options)
    from apnet_edge.detectors.yolo import YoloDetector

    kw2: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    return YoloDetector(p, threads=threads, backend=backend, **kw2, **options)


def ultralytics_pt_to_onnx(pt: PathLike, imgsz: Optional[int] = None, cache_dir: Optional[PathLike] = None) -> Path:
    """The ONNX export of the Ultralytics checkpoint ``pt`` (made once, then reused from the cache).

    Lazily imports the export stage; raises MissingDependencyError naming ``apnet-edge[ultralytics]`` when
    Ultralytics (or PyTorch) is not installed.
    """
    from apnet_edge.errors import MissingDependencyError

    try:
        from export.detector import export_ultralytics_onnx
    except ImportError as exc:  # the export stage (or what it imports) is not installed
        raise MissingDependencyError(exc.name or "ultralytics", "ultralytics",
                                     f"exporting the Ultralytics model {str(pt)!r} to ONNX") from exc
    return export_ultralytics_onnx(pt, imgsz=imgsz, cache_dir=cache_dir)
