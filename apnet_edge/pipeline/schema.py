"""``cams.yaml``: frozen dataclasses, loading and validation before any camera opens.

Every check raises :class:`~apnet_edge.errors.ConfigError` with the key path (``cameras[1].roi``) and the fix.
Relative paths in the file are resolved against the folder that holds the YAML file, never the working directory.
Secrets in RTSP URLs are removed by :func:`redact_url` before a URL reaches a log line or an output file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from apnet_edge.config import from_dict
from apnet_edge.errors import ConfigError

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SECRET_QUERY_KEYS = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred", re.IGNORECASE)
TRACKERS = ("bytetrack",)
DETECTOR_TYPES = ("auto", "yolox", "yolo")
VIDEO_MODES = ("none", "per_camera", "mosaic", "both")
EDGES = ("left", "right", "top", "bottom")  # frame edges a topology transit can name (exit/entry)


def redact_url(text: str) -> str:
    """Return ``text`` with user:password in a URL and secret-looking query values replaced by ``***``.

    Works on a bare URL and on any log line that contains URLs (each ``scheme://...`` token is redacted).
    """

    def one(url: str) -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            return re.sub(r"//[^/@\s]*@", "//***@", url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = ("***:***@" if ":" in userinfo else "***@") + host
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+", lambda m: one(m.group(0)), text)


@dataclass(frozen=True)
class CameraConfig:
    """One camera. ``roi`` is x1, y1, x2, y2 in pixels of the source frame (``None`` = whole frame)."""

    id: str = ""
    source: str = ""  # video file, rtsp://..., USB index (0, 1, ...), or a folder of images
    start_frame: int = 0  # files and folders: skip this many frames first
    max_fps: float = 0.0  # 0 = no cap; otherwise frames are dropped to stay at or below this rate
    roi: Optional[tuple[int, int, int, int]] = None
    realtime: bool = False  # files and folders: pace reading to the source frame rate (like a live camera)
    folder_fps: float = 10.0  # frame rate given to an image folder (timestamps = index / folder_fps)
    queue_size: int = 4  # bounded frame queue between the capture thread and the run loop
    retry_max_s: float = 30.0  # live sources: longest wait between reconnect attempts (exponential back-off)
    retries: int = 0  # live sources: reconnect attempts before giving up (0 = forever)
    end_frame: int = 0  # files and folders: stop before this source frame (0 = at the end of the source)
    loop: bool = False  # files and folders: restart at start_frame at the end (long runs; time keeps counting)

    @property
    def kind(self) -> str:
        """``"usb"``, ``"live"`` (a URL), ``"folder"`` or ``"file"``."""
        if re.fullmatch(r"\d+", self.source):
            return "usb"
        scheme = urlsplit(self.source).scheme.lower() if "://" in self.source else ""
        if scheme in LIVE_SCHEMES:
            return "live"
        if Path(self.source).is_dir():
            return "folder"
        return "file"

    @property
    def is_live(self) -> bool:
        return self.kind in ("usb", "live")

    @property
    def display_source(self) -> str:
        """The source with credentials removed: the only form that may be logged or written."""
        return redact_url(self.source)


@dataclass(frozen=True)
class DetectorConfig:
    """Person detector. ``input_size`` is (height, width) in pixels; ``None`` = read from the model.

    Keys left out of the YAML take the values of ``<model stem>.detector.json`` beside the model when it exists
    (written by ``apnet-edge fetch-detector``), else the defaults below.
    """

    model: str = ""  # YOLOX ONNX | Ultralytics ONNX/OpenVINO/engine | Ultralytics .pt (exported to ONNX once)
    type: str = "auto"  # auto (file name, metadata, output shape) | yolox | yolo (Ultralytics export)
    input_size: Optional[tuple[int, int]] = None
    score_threshold: float = 0.3
    nms_threshold: float = 0.45
    backend: str = "auto"  # auto | onnxruntime | openvino | tensorrt
    threads: int = 0  # CPU threads for the backend (0 = library default)
    classes: Optional[tuple[Any, ...]] = None  # yolo: class names or ids kept as persons (None = "person")
    box_width_scale: Optional[float] = None  # yolo: multiply box widths around their centre (None = 1)


@dataclass(frozen=True)
class TrackerConfig:
    """Per-camera tracker (ByteTrack from ``supervision``); ``lost_track_buffer`` is in frames at 30 fps."""

    type: str = "bytetrack"
    track_activation_threshold: float = 0.25
    lost_track_buffer: int = 30
    minimum_matching_threshold: float = 0.8
    minimum_consecutive_frames: int = 1


@dataclass(frozen=True)
class ReidConfig:
    """Re-ID model and the embedding scheduler. Box sizes are pixels of the camera frame (after the roi)."""

    model: str = ""
    backend: str = "auto"
    card: Optional[str] = None  # model-card JSON for third-party models (layout, normalisation, colour order)
    threads: int = 0
    max_batch: int = 32  # most crops in one re-ID call (the runner splits larger batches)
    budget_per_frame: int = 8  # most crops embedded per loop iteration, all cameras together
    refresh_frames: int = 15  # re-embed a track not embedded for this many frames
    better_crop_ratio: float = 1.3  # re-embed when crop quality beats the track's best by this factor
    min_box_height: int = 48  # smaller boxes are never embedded
    border_px: int = 4  # a box within this many pixels of the frame edge counts as truncated
    max_overlap_iou: float = 0.5  # boxes overlapping another person more than this are not embedded
    ref_box_height: int = 160  # box height at which the size part of the quality reaches 1
    crop_pad: float = 0.0  # context around each box given to the re-ID model, a fraction of its width/height per side
    flip: bool = False  # embed each crop and its mirror image and average them (twice the re-ID work)
    switch_below: float = 0.0  # > 0: a good crop with cosine similarity under this to its track's look is held
    #                          (0 = off: the rule is right or wrong depending on the model; check it with --labels)
    switch_crops: int = 2  # that many held crops in a row: the tracker moved the track to someone else, matched anew
    switch_sigmas: float = 3.0  # > 0: and under the track's mean crop similarity minus this many standard deviations


@dataclass(frozen=True)
class TransitConfig:
    """A path people can walk: from camera ``src`` to camera ``dst`` in ``min_s``..``max_s`` seconds, optionally
    leaving ``src`` across some of its frame edges (``exit``) and appearing in ``dst`` at some of its edges
    (``entry``); edges are ``left``, ``right``, ``top``, ``bottom`` of the camera's (roi-cut) frame."""

    src: str = ""
    dst: str = ""
    min_s: float = 0.0
    max_s: float = 60.0
    exit: tuple[str, ...] = ()  # edges of src where people leave towards dst; () = anywhere
    entry: tuple[str, ...] = ()  # edges of dst where they appear; () = anywhere
    bonus: Optional[float] = None  # similarity bonus when this transit fits (None: matcher.topology_bonus)


@dataclass(frozen=True)
class MatcherConfig:
    """Cross-camera matcher: cosine-similarity threshold, bounded gallery, optional topology."""

    threshold: float = 0.6  # minimum cosine similarity to join an existing global identity (tune per site)
    gallery_size: int = 1000  # most identities kept (least recently seen evicted first)
    ttl_s: float = 600.0  # identities not seen for this long are forgotten (seconds of stream time)
    min_track_frames: int = 3  # a track is matched only after this many frames (avoids one-frame ghosts)
    min_crop_quality: float = 0.3  # a crop is "good" when not truncated at the border and its reid quality >= this
    min_good_crops: int = 1  # a track is matched only once this many good crops were embedded
    revise_window_s: float = 8.0  # seconds after a track gets its id during which its id is provisional (0 = never;
    #                             # on vtest, against people labelled by eye, 8 s with bank_size 3 raised cross-camera
    #                             # pair F1 with 0248 and with the demo's APNet, at the same precision)
    revise_margin: float = 0.05  # a provisional track moves when another identity beats its own by this much
    bank_size: int = 3  # per-identity bank of per-track embeddings, newest kept (matched by the best entry)
    identity_momentum: float = 0.9  # unused since identities keep a bank (bank_size); accepted for old files
    topology: tuple[TransitConfig, ...] = ()  # empty = any camera can follow any other at any time
    topology_bonus: float = 0.05  # added to similarity (before the threshold) when a transit fits the topology
    max_speed: float = 2.0  # body heights per second: re-entry into the SAME camera must start within reach of where
    #                       # the identity was last seen there (or both at the frame edge), and a transit's exit/entry
    #                       # boxes may lie short of their edges by what can be walked in the gap; 0 = no check
    #                       # (transits then need both boxes at their edges)
    edge_margin: float = 0.05  # fraction of the frame width/height that counts as its edge (exit/entry, re-entry)
    resume_bonus: float = 0.15  # added to similarity (before the threshold) when a track starts within resume_s of
    #                           # its identity's last sighting in the same camera, within max_speed reach: the
    #                           # tracker lost the person a moment and started a new track (0 = no bonus)
    resume_s: float = 1.0  # seconds from that last sighting to the new track's first one
    distinct_below: float = 0.1  # a track whose best candidate scores under the threshold by at most this much ...
    distinct_margin: float = 0.0  # ... still joins it when it beats every other candidate by this much (0 = off;
    #                             # like the threshold it depends on the model: 0.3 helped with 0248 on vtest.avi)


@dataclass(frozen=True)
class OutputsConfig:
    """What the run writes under ``dir``."""

    dir: str = "runs/latest"
    mot: bool = True  # <camera>.local.txt and <camera>.global.txt in MOTChallenge format
    events: bool = True  # events.jsonl
    video: str = "mosaic"  # none | per_camera | mosaic | both
    video_fps: float = 10.0
    mosaic_tile_width: int = 480  # pixels per camera tile in the mosaic
    log_every_s: float = 5.0  # progress line period (0 = quiet)
    report: bool = True  # report/ (best crop per identity and camera, thumbnails) during the run, report.html at the end


@dataclass(frozen=True)
class CamsConfig:
    """The whole ``cams.yaml``."""

    cameras: tuple[CameraConfig, ...] = ()
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    reid: ReidConfig = field(default_factory=ReidConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    max_frames: int = 0  # stop each camera after this many frames (0 = until the sources end or Ctrl-C)


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _camera(raw: Any, i: int, base: Path) -> CameraConfig:
    where = f"cameras[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping with at least id and source, found {raw!r}")
    raw = dict(raw)
    src = raw.get("source")
    if isinstance(src, int) and not isinstance(src, bool):
        raw["source"] = str(src)  # USB index
    if "id" in raw and isinstance(raw["id"], int) and not isinstance(raw["id"], bool):
        raw["id"] = str(raw["id"])
    cam = from_dict(CameraConfig, raw, where)
    if not cam.id or not re.fullmatch(r"[A-Za-z0-9_.-]+", cam.id):
        raise ConfigError(f"'{where}.id' must be a non-empty name of letters, digits, '_', '-' or '.' "
                          f"(it names output files), found {cam.id!r}")
    if not cam.source:
        raise ConfigError(f"'{where}.source' is missing; give a video file, an rtsp:// URL, a USB index or an "
                          f"image folder")
    if cam.kind in ("file", "folder"):
        resolved = _resolve(cam.source, base)
        if not Path(resolved).exists():
            raise ConfigError(f"'{where}.source': {resolved!r} does not exist; fix the path (relative paths are "
                              f"resolved against the folder of the cams file)")
        cam = replace(cam, source=resolved)
        if cam.kind == "folder" and not any(p.suffix.lower() in IMAGE_EXTS for p in Path(resolved).iterdir()):
            raise ConfigError(f"'{where}.source': folder {resolved!r} holds no images ({', '.join(IMAGE_EXTS)})")
    if cam.start_frame < 0:
        raise ConfigError(f"'{where}.start_frame' must be >= 0, found {cam.start_frame}")
    if cam.max_fps < 0 or cam.folder_fps <= 0:
        raise ConfigError(f"'{where}.max_fps' must be >= 0 and folder_fps > 0")
    if cam.queue_size < 1:
        raise ConfigError(f"'{where}.queue_size' must be >= 1, found {cam.queue_size}")
    if cam.is_live and (cam.loop or cam.end_frame):
        key = "loop" if cam.loop else "end_frame"
        raise ConfigError(f"'{where}.{key}' applies to video files and image folders only, not to the live source "
                          f"{cam.display_source!r}; remove it")
    if cam.end_frame and cam.end_frame <= cam.start_frame:
        raise ConfigError(f"'{where}.end_frame' must be 0 (to the end) or > start_frame ({cam.start_frame}), "
                          f"found {cam.end_frame}")
    if cam.roi is not None:
        x1, y1, x2, y2 = cam.roi
        if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
            raise ConfigError(f"'{where}.roi' must be [x1, y1, x2, y2] in pixels with x2 > x1 >= 0 and "
                              f"y2 > y1 >= 0, found {list(cam.roi)}")
    return cam


def _model_path(value: str, key: str, base: Path) -> str:
    if not value:
        raise ConfigError(f"'{key}' is missing; give the path of the model file (.onnx)")
    resolved = _resolve(value, base)
    if not Path(resolved).is_file():
        raise ConfigError(f"'{key}': {resolved!r} does not exist; fix the path (relative paths are resolved "
                          f"against the folder of the cams file)")
    return resolved


def _check_range(value: float, lo: float, hi: float, key: str) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"'{key}' must be between {lo} and {hi}, found {value}")


def _detector(raw: Any, base: Path) -> DetectorConfig:
    """The ``detector`` section: keys checked, ``classes`` normalised, keys left out taken from the model's
    ``<stem>.detector.json``, options that apply to Ultralytics models only refused for YOLOX."""
    from apnet_edge.detectors import detector_type, read_detector_defaults
    from apnet_edge.errors import ModelError

    if isinstance(raw, dict) and isinstance(raw.get("classes"), (str, int)) and not isinstance(raw["classes"], bool):
        c = raw["classes"]
        raw = {**raw, "classes": [c] if isinstance(c, int) else [x.strip() for x in c.split(",") if x.strip()]}
    det = from_dict(DetectorConfig, raw, "detector")
    det = replace(det, model=_model_path(det.model, "detector.model", base))
    if det.type not in DETECTOR_TYPES:
        raise ConfigError(f"'detector.type' must be one of {DETECTOR_TYPES}, found {det.type!r}")
    given = set(raw or {})
    try:
        stored = read_detector_defaults(det.model)
    except ModelError as exc:
        raise ConfigError(f"'detector.model': {exc}") from None
    kind = det.type
    if kind == "auto" and (stored or given & {"classes", "box_width_scale"}):
        kind = detector_type(det.model, "auto")  # reads the file name / ONNX header only
    fill = {k: v for k, v in stored.items() if k not in given and k in ("score_threshold", "nms_threshold",
                                                                        "input_size", "classes", "box_width_scale")}
    if kind == "yolox":
        fill.pop("classes", None)
        fill.pop("box_width_scale", None)
    if fill:
        det = from_dict(DetectorConfig, {**(raw or {}), **fill, "model": det.model}, "detector")
    for key in ("classes", "box_width_scale"):
        if kind == "yolox" and key in given and getattr(det, key) is not None:
            raise ConfigError(f"'detector.{key}' applies to Ultralytics (yolo) models only; {det.model!r} is a YOLOX "
                              f"model (it keeps COCO class 0, person): remove the key")
    if det.classes is not None:
        if not det.classes:
            raise ConfigError("'detector.classes' must name at least one class (names or ids), or be left out "
                              "for the class named person")
        for i, c in enumerate(det.classes):
            if isinstance(c, bool) or not isinstance(c, (str, int)) or (isinstance(c, int) and c < 0):
                raise ConfigError(f"'detector.classes[{i}]' must be a class name or an id >= 0, found {c!r}")
    if det.box_width_scale is not None and not 0.0 < det.box_width_scale <= 2.0:
        raise ConfigError(f"'detector.box_width_scale' must be > 0 and <= 2 (e.g. 0.6 narrows boxes to 60% of their "
                          f"width), found {det.box_width_scale}")
    if det.input_size is not None and (min(det.input_size) <= 0 or any(v % 32 for v in det.input_size)):
        raise ConfigError(f"'detector.input_size' must be [height, width], multiples of 32, found "
                          f"{list(det.input_size)}")
    _check_range(det.score_threshold, 0.0, 1.0, "detector.score_threshold")
    _check_range(det.nms_threshold, 0.0, 1.0, "detector.nms_threshold")
    return det


def parse_cams(data: Any, base: Union[str, Path] = ".") -> CamsConfig:
    """Build and validate a :class:`CamsConfig` from the YAML mapping; ``base`` resolves relative paths."""
    base = Path(base)
    if not isinstance(data, dict):
        raise ConfigError("a cams file must hold a mapping with the sections cameras, detector, tracker, reid, "
                          "matcher, outputs")
    known = {f.name for f in fields(CamsConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key '{unknown[0]}'; known keys here: {', '.join(sorted(known))}")
    raw_cams = data.get("cameras")
    if not isinstance(raw_cams, list) or not raw_cams:
        raise ConfigError("'cameras' must be a non-empty list; each item needs at least id and source")
    cams = tuple(_camera(c, i, base) for i, c in enumerate(raw_cams))
    seen: dict[str, int] = {}
    for i, c in enumerate(cams):
        if c.id in seen:
            raise ConfigError(f"'cameras[{i}].id': {c.id!r} is already used by cameras[{seen[c.id]}]; "
                              f"camera ids must be unique (they name the output files)")
        seen[c.id] = i
    det = _detector(data.get("detector"), base)
    trk = from_dict(TrackerConfig, data.get("tracker"), "tracker")
    if trk.type not in TRACKERS:
        raise ConfigError(f"'tracker.type' must be one of {TRACKERS}, found {trk.type!r}")
    if trk.lost_track_buffer < 1 or trk.minimum_consecutive_frames < 1:
        raise ConfigError("'tracker.lost_track_buffer' and 'tracker.minimum_consecutive_frames' must be >= 1")
    reid = from_dict(ReidConfig, data.get("reid"), "reid")
    reid = replace(reid, model=_model_path(reid.model, "reid.model", base))
    if reid.card is not None:
        reid = replace(reid, card=_model_path(reid.card, "reid.card", base))
    for key in ("max_batch", "budget_per_frame", "refresh_frames", "ref_box_height", "switch_crops"):
        if getattr(reid, key) < 1:
            raise ConfigError(f"'reid.{key}' must be >= 1, found {getattr(reid, key)}")
    _check_range(reid.crop_pad, 0.0, 0.5, "reid.crop_pad")
    _check_range(reid.switch_below, 0.0, 1.0, "reid.switch_below")
    if reid.switch_sigmas < 0:
        raise ConfigError(f"'reid.switch_sigmas' must be >= 0, found {reid.switch_sigmas}")
    if reid.better_crop_ratio < 1.0:
        raise ConfigError(f"'reid.better_crop_ratio' must be >= 1.0, found {reid.better_crop_ratio}")
    raw_match = dict(data.get("matcher") or {})
    if not isinstance(data.get("matcher") or {}, dict):
        raise ConfigError("config section 'matcher' must be a mapping")
    topo_raw = raw_match.pop("topology", None) or []
    if not isinstance(topo_raw, list):
        raise ConfigError("'matcher.topology' must be a list of {src, dst, min_s, max_s}")
    topo_raw = [{**t, **{k: [t[k]] for k in ("exit", "entry") if isinstance(t.get(k), str)}}
                if isinstance(t, dict) else t for t in topo_raw]  # `exit: right` = `exit: [right]`
    topo = tuple(from_dict(TransitConfig, t, f"matcher.topology[{i}]") for i, t in enumerate(topo_raw))
    for i, t in enumerate(topo):
        for key in ("exit", "entry"):
            bad = [e for e in getattr(t, key) if e not in EDGES]
            if bad:
                raise ConfigError(f"'matcher.topology[{i}].{key}': {bad[0]!r} is not a frame edge; use some of "
                                  f"{', '.join(EDGES)}")
        for key in ("src", "dst"):
            if getattr(t, key) not in seen:
                raise ConfigError(f"'matcher.topology[{i}].{key}': {getattr(t, key)!r} is not a camera id; "
                                  f"known: {', '.join(seen)}")
        if t.min_s < 0 or t.max_s < t.min_s:
            raise ConfigError(f"'matcher.topology[{i}]' needs 0 <= min_s <= max_s, found {t.min_s}..{t.max_s}")
    match = replace(from_dict(MatcherConfig, raw_match, "matcher"), topology=topo)
    _check_range(match.threshold, -1.0, 1.0, "matcher.threshold")
    _check_range(match.identity_momentum, 0.0, 1.0, "matcher.identity_momentum")
    _check_range(match.min_crop_quality, 0.0, 1.0, "matcher.min_crop_quality")
    _check_range(match.revise_margin, 0.0, 2.0, "matcher.revise_margin")
    _check_range(match.edge_margin, 0.0, 0.5, "matcher.edge_margin")
    _check_range(match.resume_bonus, 0.0, 1.0, "matcher.resume_bonus")
    _check_range(match.distinct_below, 0.0, 1.0, "matcher.distinct_below")
    _check_range(match.distinct_margin, 0.0, 2.0, "matcher.distinct_margin")
    if match.resume_s < 0:
        raise ConfigError(f"'matcher.resume_s' must be >= 0 seconds, found {match.resume_s}")
    if match.max_speed < 0:
        raise ConfigError(f"'matcher.max_speed' must be >= 0 (0 = no re-entry check), found {match.max_speed}")
    for key in ("min_track_frames", "min_good_crops", "bank_size"):
        if getattr(match, key) < 1:
            raise ConfigError(f"'matcher.{key}' must be >= 1, found {getattr(match, key)}")
    if match.revise_window_s < 0:
        raise ConfigError(f"'matcher.revise_window_s' must be >= 0 (0 = ids are never revised), found "
                          f"{match.revise_window_s}")
    if match.gallery_size < 1 or match.ttl_s <= 0:
        raise ConfigError("'matcher.gallery_size' must be >= 1 and 'matcher.ttl_s' > 0")
    out = from_dict(OutputsConfig, data.get("outputs"), "outputs")
    if out.video not in VIDEO_MODES:
        raise ConfigError(f"'outputs.video' must be one of {VIDEO_MODES}, found {out.video!r}")
    out = replace(out, dir=_resolve(out.dir, Path(".")))
    max_frames = data.get("max_frames", 0)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0:
        raise ConfigError(f"'max_frames' must be an integer >= 0, found {max_frames!r}")
    return CamsConfig(cameras=cams, detector=det, tracker=trk, reid=reid, matcher=match, outputs=out,
                      max_frames=max_frames)


def load_cams(path: Union[str, Path]) -> CamsConfig:
    """Read and validate a cams YAML file; every problem is a ConfigError that starts with the file name."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cams file {str(p)!r} does not exist; start from configs/cams.example.yaml")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"cams file {str(p)!r} is not valid YAML: {exc}") from exc
    try:
        return parse_cams(data, p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {redact_url(str(exc))}") from None
