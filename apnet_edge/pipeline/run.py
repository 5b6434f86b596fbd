"""The run loop: cameras -> detect -> track -> embedding scheduler -> one batched re-ID call -> matcher -> sinks.

:func:`run_pipeline` builds both models before any camera opens (a bad model fails fast), then loops: one frame from
every camera that has one (files: the next frame; live: the newest), detection and tracking per camera, one re-ID call
for the crops the scheduler picked over all cameras, matching of tracks still without a global id, and the sinks.
A camera that fails ends alone (its error goes into the summary); the run ends when every camera has ended, when
``stop`` is set, or after ``max_frames`` per camera. The summary (per-camera throughput, per-stage latency
percentiles, peak memory, failures) is returned and written to ``summary.json`` in the output folder.
"""

from __future__ import annotations

import inspect
import json
import logging
import queue
import resource
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from apnet_edge.errors import ConfigError
from apnet_edge.pipeline.capture import CameraThread, EndOfStream, Frame
from apnet_edge.pipeline.matcher import CrossCameraMatcher
from apnet_edge.pipeline.scheduler import EmbeddingScheduler, EmbedRequest
from apnet_edge.pipeline.schema import CamsConfig, DetectorConfig, ReidConfig
from apnet_edge.pipeline.sinks import EventLog, LatencyStats, MotWriter, VideoSink, annotate
from apnet_edge.pipeline.tracking import TrackedBox, Tracker, make_tracker

log = logging.getLogger(__name__)
PERSON = 0


def build_detector(cfg: DetectorConfig) -> Any:
    """The person detector named by ``cfg`` (an object with ``detect(frame_bgr) -> Detections``)."""
    kind = cfg.type
    if kind == "auto":
        kind = "yolox" if "yolox" in Path(cfg.model).name.lower() else "yolo"
    if kind == "yolo":
        raise ConfigError(f"detector.model {cfg.model!r}: Ultralytics YOLO models are not supported by `run` yet; "
                          f"use a YOLOX ONNX model (detector.type: yolox)")
    try:
        from apnet_edge.detectors.yolox import YoloxDetector
    except ImportError as exc:
        raise ConfigError(f"the YOLOX detector is not available in this installation ({exc})") from exc
    wanted = {"score_threshold": cfg.score_threshold, "nms_threshold": cfg.nms_threshold, "backend": cfg.backend,
              "threads": cfg.threads or None, "input_size": cfg.input_size}
    params = inspect.signature(YoloxDetector).parameters
    kwargs = {k: v for k, v in wanted.items() if k in params and v is not None}
    return YoloxDetector(cfg.model, **kwargs)


def build_reid(cfg: ReidConfig) -> Any:
    """The re-ID runner: ``infer(list of BGR uint8 crops) -> (N, D) float32`` L2-normalised."""
    from apnet_edge.card import ModelCard
    from apnet_edge.runners import load_runner

    card = ModelCard.from_json(Path(cfg.card).read_text()) if cfg.card else None
    return load_runner(cfg.model, backend=cfg.backend, card=card, threads=cfg.threads or None)


def _crop(image: np.ndarray, box: tuple[float, ...]) -> Optional[np.ndarray]:
    h, w = image.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return image[y1:y2, x1:x2]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Camera:
    """Run-loop state of one camera."""

    def __init__(self, thread: CameraThread) -> None:
        self.thread = thread
        self.tracker: Optional[Tracker] = None
        self.mot: Optional[MotWriter] = None
        self.frames = 0
        self.first_t: Optional[float] = None
        self.last_t: Optional[float] = None
        self.ended = False
        self.error: Optional[str] = None
        self.live_tracks: dict[int, tuple[int, float]] = {}  # track id -> (first frame, first timestamp)


def run_pipeline(cfg: CamsConfig, stop: Optional[threading.Event] = None, detector: Any = None,
                 reid: Any = None) -> dict[str, Any]:
    """Run ``cfg`` to the end; return the summary dict (also written to ``<outputs.dir>/summary.json``).

    ``detector`` / ``reid`` may be passed in (already built) to share models between runs or tests.
    """
    stop = stop or threading.Event()
    out_dir = Path(cfg.outputs.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_build = time.perf_counter()
    detector = detector if detector is not None else build_detector(cfg.detector)
    reid = reid if reid is not None else build_reid(cfg.reid)
    build_s = time.perf_counter() - t_build
    stats = LatencyStats()
    events = EventLog(out_dir / "events.jsonl") if cfg.outputs.events else None
    video = (VideoSink(out_dir, [c.id for c in cfg.cameras], cfg.outputs.video, cfg.outputs.video_fps,
                       cfg.outputs.mosaic_tile_width) if cfg.outputs.video != "none" else None)
    scheduler = EmbeddingScheduler(cfg.reid)
    matcher = CrossCameraMatcher(cfg.matcher)
    failures: list[str] = []
    cams = {c.id: _Camera(CameraThread(c, cfg.max_frames)) for c in cfg.cameras}

    def emit(kind: str, **fields: Any) -> None:
        if events is not None:
            events.emit(kind, **fields)

    emit("run_started", cameras=[{"id": c.id, "source": c.display_source, "roi": c.roi} for c in cfg.cameras])
    for cam in cams.values():
        cam.thread.start()
    t_start = time.perf_counter()
    last_log = t_start
    try:
        while not stop.is_set() and not all(c.ended for c in cams.values()):
            t_loop = time.perf_counter()
            batch: list[tuple[_Camera, Frame]] = []
            for cam in cams.values():
                if cam.ended:
                    continue
                item = _next_item(cam.thread, stop)
                if item is None:
                    continue
                if isinstance(item, EndOfStream):
                    cam.ended = True
                    cam.error = item.error
                    if item.error:
                        failures.append(f"camera {item.camera_id}: {item.error}")
                    emit("camera_ended", camera=item.camera_id, error=item.error)
                    _end_tracks(cam, item.camera_id, list(cam.live_tracks), scheduler, matcher, emit, None,
                                reason="camera_ended")
                    continue
                batch.append((cam, item))
            if not batch:
                continue
            candidates: list[EmbedRequest] = []
            per_frame: list[tuple[_Camera, Frame, list[TrackedBox]]] = []
            # one detector call over the newest frame of every camera (split by the runner for fixed-batch models)
            t = time.perf_counter()
            if hasattr(detector, "detect_batch"):
                dets = detector.detect_batch([f.image for _, f in batch])
            else:
                dets = [detector.detect(f.image) for _, f in batch]
            stats.add("detect", (time.perf_counter() - t) * 1000.0)
            stats.add("detect_per_frame", (time.perf_counter() - t) * 1000.0 / len(batch))
            for (cam, frame), det in zip(batch, dets):
                cid = frame.camera_id
                if cam.tracker is None:
                    cam.tracker = make_tracker(cfg.tracker, cam.thread.fps or 10.0)
                    if cfg.outputs.mot:
                        cam.mot = MotWriter(out_dir, cid)
                if len(det):
                    det = det.filter(det.class_ids == PERSON)
                t = time.perf_counter()
                tracked = cam.tracker.update(det, frame.index)
                stats.add("track", (time.perf_counter() - t) * 1000.0)
                for tb in tracked:
                    if tb.track_id not in cam.live_tracks:
                        cam.live_tracks[tb.track_id] = (frame.index, frame.timestamp)
                        emit("track_started", camera=cid, track_id=tb.track_id, frame=frame.index,
                             t=round(frame.timestamp, 3), box=[round(v, 1) for v in tb.box])
                boxes = np.array([tb.box for tb in tracked], np.float32).reshape(-1, 4)
                candidates += scheduler.observe(cid, frame.index, [tb.track_id for tb in tracked], boxes,
                                                frame.image.shape[:2])
                _end_tracks(cam, cid, cam.tracker.ended(frame.index), scheduler, matcher, emit, frame,
                            reason="lost")
                per_frame.append((cam, frame, tracked))
                cam.frames += 1
                cam.first_t = cam.first_t or time.perf_counter()
                cam.last_t = time.perf_counter()
            # one batched re-ID call over all cameras
            chosen = scheduler.select(candidates)
            if chosen:
                images = {(c.thread.cam.id): f.image for c, f, _ in per_frame}
                crops, reqs = [], []
                for r in chosen:
                    crop = _crop(images[r.camera_id], r.box)
                    if crop is not None:
                        crops.append(crop)
                        reqs.append(r)
                if crops:
                    t = time.perf_counter()
                    emb = reid.infer(crops)
                    stats.add("embed", (time.perf_counter() - t) * 1000.0)
                    stats.add("embed_crops", float(len(crops)))
                    scheduler.update(reqs, emb)
            # matching
            t = time.perf_counter()
            now = max(f.timestamp for _, f in batch)
            pending = []
            for _cam, frame, tracked in per_frame:
                for tb in tracked:
                    st = scheduler.tracks.get((frame.camera_id, tb.track_id))
                    e = st.embedding if st is not None else None
                    if matcher.gid_of(frame.camera_id, tb.track_id) is not None:
                        fresh = st is not None and st.last_embed_frame == frame.index
                        matcher.update(frame.camera_id, tb.track_id, e if fresh else None, frame.timestamp)
                    elif e is not None and st is not None and st.frames_seen >= cfg.matcher.min_track_frames:
                        pending.append((frame.camera_id, tb.track_id, e))
            for a in matcher.assign(pending, now):
                box = next(tb.box for c, f, tr in per_frame if f.camera_id == a.camera_id
                           for tb in tr if tb.track_id == a.track_id)
                if a.created:
                    emit("identity_created", gid=a.gid, camera=a.camera_id, track_id=a.track_id, t=round(now, 3),
                         box=[round(v, 1) for v in box])
                else:
                    emit("handoff", gid=a.gid, from_camera=a.from_camera, to_camera=a.camera_id,
                         track_id=a.track_id, t=round(now, 3), gap_s=round(a.gap_s or 0.0, 3),
                         similarity=round(a.similarity or 0.0, 4), box=[round(v, 1) for v in box])
            stats.add("match", (time.perf_counter() - t) * 1000.0)
            # sinks
            t = time.perf_counter()
            for cam, frame, tracked in per_frame:
                rows = [(tb.track_id, matcher.gid_of(frame.camera_id, tb.track_id), tb.box) for tb in tracked]
                if cam.mot is not None:
                    for (tid, gid, box), tb in zip(rows, tracked):
                        cam.mot.write(frame.index, tid, gid, box, tb.score)
                if video is not None:
                    video.add(frame.camera_id, annotate(frame.image, frame.camera_id, frame.index, rows))
            if video is not None:
                video.write_mosaic()
            stats.add("sinks", (time.perf_counter() - t) * 1000.0)
            stats.add("loop", (time.perf_counter() - t_loop) * 1000.0)
            if cfg.outputs.log_every_s and time.perf_counter() - last_log >= cfg.outputs.log_every_s:
                last_log = time.perf_counter()
                log.info("frames %s | identities %d", {c: s.frames for c, s in cams.items()}, len(matcher.gallery))
    finally:
        for cam in cams.values():
            cam.thread.stop()
        for cid, cam in cams.items():
            _end_tracks(cam, cid, list(cam.live_tracks), scheduler, matcher, emit, None, reason="run_ended")
            cam.thread.join(timeout=5.0)
            if cam.mot is not None:
                cam.mot.close()
        if video is not None:
            video.close()
    wall = time.perf_counter() - t_start
    for cam in cams.values():
        for ms in cam.thread.decode_ms:
            stats.add("decode", ms)
    summary = {
        "wall_s": round(wall, 3),
        "model_build_s": round(build_s, 3),
        "cameras": {cid: {"source": cam.thread.cam.display_source, "frames_processed": cam.frames,
                          "frames_read": cam.thread.frames_read, "frames_dropped": cam.thread.frames_dropped,
                          "reconnects": cam.thread.reconnects, "error": cam.error,
                          "fps": round(cam.frames / wall, 3) if wall > 0 else 0.0}
                    for cid, cam in cams.items()},
        "identities_created": events.counts.get("identity_created", 0) if events else None,
        "gallery_size": len(matcher.gallery),
        "gallery_evicted": matcher.evicted,
        "events": dict(events.counts) if events else {},
        "latency_ms": stats.summary(),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "failures": failures,
        "stopped": stop.is_set(),
    }
    if events is not None:
        events.emit("run_ended", failures=failures, wall_s=summary["wall_s"])
        events.close()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _next_item(th: CameraThread, stop: threading.Event) -> Any:
    """Files/folders: wait (in 50 ms steps) for the next frame; live: the newest queued frame, or None."""
    if th.cam.is_live:
        try:
            return th.queue.get_nowait()
        except queue.Empty:
            time.sleep(0.002)
            return None
    while not stop.is_set():
        try:
            return th.queue.get(timeout=0.05)
        except queue.Empty:
            if not th.is_alive() and th.queue.empty():
                return EndOfStream(th.cam.id, th.error or "capture thread died")
    return None


def _end_tracks(cam: _Camera, cid: str, ended: list[int], scheduler: EmbeddingScheduler,
                matcher: CrossCameraMatcher, emit: Any, frame: Optional[Frame], reason: str) -> None:
    for tid in ended:
        first = cam.live_tracks.pop(tid, None)
        st = scheduler.drop(cid, tid)
        gid = matcher.release(cid, tid)
        if first is None:
            continue
        emit("track_ended", camera=cid, track_id=tid, gid=gid, first_frame=first[0], t_start=round(first[1], 3),
             frames_seen=st.frames_seen if st else None, reason=reason,
             frame=frame.index if frame is not None else None)
