"""The run loop: cameras -> detect -> track -> embedding scheduler -> one batched re-ID call -> matcher -> sinks.

:func:`run_pipeline` builds both models before any camera opens (a bad model fails fast), then loops: one frame from
every camera that has one (files: the next frame; live: the newest), detection and tracking per camera, one re-ID call
for the crops the scheduler picked over all cameras, matching of tracks still without a global id, and the sinks.
A camera that fails ends alone (its error goes into the summary); the run ends when every camera has ended, when
``stop`` is set, or after ``max_frames`` per camera. The summary (per-camera throughput, per-stage latency
percentiles, peak memory, failures, sizes of the run's bounded state) is returned and written to ``summary.json``.

Model errors are isolated per camera, so one camera's bad frame or crop never ends the others:

- Detection: the batched call over all cameras' frames is retried camera by camera when it raises (or returns one
  result too few); a camera whose frame fails alone skips that frame (nothing tracked, ``frames_processed`` does not
  count it) and is ended after ``MAX_MODEL_FAILURES`` failing frames in a row (a success resets the count).
- Re-ID: the same for the one batched re-ID call: on an exception, an output that is not (N, D) with the run's D,
  or non-finite values, the crops are re-embedded camera by camera; a camera whose crops fail alone loses them this
  iteration (its tracks stay "new" and are asked for again) and is ended after ``MAX_MODEL_FAILURES`` failing
  iterations in a row.
- Tracking: a tracker that raises ends its camera at once (its state can no longer be trusted).

An ended camera gets a ``camera_ended`` event with the error, a line in ``failures``, and its tracks end with
reason ``camera_ended``. Errors in the matcher or the sinks are not per camera and still end the run.

Times (the matcher's gaps, transit windows and time-to-live, the events' ``t``, the report) are on one run clock:
seconds since each file/folder camera's first frame, and wall-clock seconds since the run started for live cameras
(:func:`_run_clock`). The MOT files and the events' ``frame`` keep the source's frame index.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from apnet_edge.crops import crop_box
from apnet_edge.errors import ConfigError, ModelError
from apnet_edge.pipeline.capture import CameraThread, EndOfStream, Frame
from apnet_edge.pipeline.gallery import IdentityGallery
from apnet_edge.pipeline.matcher import CrossCameraMatcher
from apnet_edge.pipeline.scheduler import EmbeddingScheduler, EmbedRequest, crop_quality
from apnet_edge.pipeline.schema import CamsConfig, DetectorConfig, ReidConfig
from apnet_edge.pipeline.sinks import EventLog, LatencyStats, MotWriter, VideoSink, annotate
from apnet_edge.pipeline.tracking import TrackedBox, Tracker, make_tracker

log = logging.getLogger(__name__)
PERSON = 0
MAX_MODEL_FAILURES = 3  # failing detection frames / re-ID iterations in a row before a camera is ended


def build_detector(cfg: DetectorConfig) -> Any:
    """The person detector named by ``cfg`` (an object with ``detect(frame_bgr) -> Detections``): YOLOX or
    Ultralytics (ONNX, OpenVINO, engine, or a .pt exported to ONNX once), through the shared
    :func:`apnet_edge.detectors.load_detector`."""
    from apnet_edge.detectors import load_detector

    if cfg.type not in ("auto", "yolox", "yolo"):
        raise ConfigError(f"'detector.type' must be auto, yolox or yolo, found {cfg.type!r}")
    return load_detector(cfg.model, cfg.type, score_threshold=cfg.score_threshold,
                         nms_threshold=cfg.nms_threshold, input_size=cfg.input_size,
                         classes=getattr(cfg, "classes", None), box_width_scale=getattr(cfg, "box_width_scale", None),
                         backend=cfg.backend, threads=cfg.threads or None)


def build_reid(cfg: ReidConfig) -> Any:
    """The re-ID runner: ``infer(list of BGR uint8 crops) -> (N, D) float32`` L2-normalised."""
    from apnet_edge.card import ModelCard
    from apnet_edge.runners import load_runner

    card = ModelCard.from_json(Path(cfg.card).read_text()) if cfg.card else None
    return load_runner(cfg.model, backend=cfg.backend, card=card, threads=cfg.threads or None)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _detect(detector: Any, images: list[np.ndarray]) -> list[Any]:
    """One detector call over ``images``; exactly one result per image or an exception."""
    if hasattr(detector, "detect_batch"):
        dets = list(detector.detect_batch(images))
    else:
        dets = [detector.detect(im) for im in images]
    if len(dets) != len(images):
        raise ModelError(f"the detector returned {len(dets)} results for {len(images)} frames")
    return dets


def _embed(reid: Any, crops: list[np.ndarray], dim: Optional[int], flip: bool = False) -> np.ndarray:
    """One re-ID call: (N, D) float32 for N crops, D = ``dim`` when given, finite; anything else raises. ``flip``:
    each crop averaged with its mirror image (:func:`apnet_edge.runners.infer_flip_averaged`, one call)."""
    if flip:
        from apnet_edge.runners import infer_flip_averaged

        emb = infer_flip_averaged(reid, crops)
    else:
        emb = np.asarray(reid.infer(crops), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(crops) or emb.shape[1] < 1 or (dim is not None and emb.shape[1] != dim):
        want = f"({len(crops)}, {dim if dim is not None else 'D'})"
        raise ModelError(f"the re-ID model returned shape {tuple(emb.shape)} for {len(crops)} crops; expected {want}")
    if not np.isfinite(emb).all():
        raise ModelError("the re-ID model returned non-finite values (NaN or inf)")
    return emb


def _why(stage: str, exc: BaseException) -> str:
    from apnet_edge.pipeline.schema import redact_url

    return redact_url(f"{stage} failed: {type(exc).__name__}: {exc}")


class _Camera:
    """Run-loop state of one camera."""

    def __init__(self, thread: CameraThread) -> None:
        self.thread = thread
        self.tracker: Optional[Tracker] = None
        self.mot: Optional[MotWriter] = None
        self.frames = 0
        self.first_t: Optional[float] = None
        self.clock0: Optional[float] = None  # source timestamp that is 0 s of the run clock (see _run_clock)
        self.last_t: Optional[float] = None
        self.ended = False
        self.error: Optional[str] = None
        self.live_tracks: dict[int, tuple[int, float]] = {}  # track id -> (first frame, first timestamp)
        self.det_failures = 0  # detection failures of this camera's frames in a row
        self.reid_failures = 0  # re-ID iterations in a row in which this camera's crops failed
        self.model_errors = 0  # all detection / re-ID failures of this camera (summary)


def run_pipeline(cfg: CamsConfig, stop: Optional[threading.Event] = None, detector: Any = None,
                 reid: Any = None, progress: Optional[Callable[[dict[str, Any]], None]] = None,
                 progress_every_s: float = 5.0) -> dict[str, Any]:
    """Run ``cfg`` to the end; return the summary dict (also written to ``<outputs.dir>/summary.json``).

    ``detector`` / ``reid`` may be passed in (already built) to share models between runs or tests.
    ``progress``, if given, is called about every ``progress_every_s`` seconds (from the run loop's thread) with
    the frames processed per camera and the sizes of the state the run keeps between frames (``summary["state"]``).
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
    gallery = IdentityGallery(out_dir / "report", cfg.reid) if cfg.outputs.report else None  # report pictures
    scheduler = EmbeddingScheduler(cfg.reid, good_quality=cfg.matcher.min_crop_quality)
    matcher = CrossCameraMatcher(cfg.matcher)
    failures: list[str] = []
    cams = {c.id: _Camera(CameraThread(c, cfg.max_frames)) for c in cfg.cameras}

    def emit(kind: str, **fields: Any) -> None:
        if events is not None:
            events.emit(kind, **fields)

    def end_camera(cam: _Camera, error: Optional[str]) -> None:
        """End one camera (end of its source, or a failure): event, failure line, its tracks end."""
        cid = cam.thread.cam.id
        cam.ended, cam.error = True, error
        cam.thread.stop()
        if error:
            failures.append(f"camera {cid}: {error}")
            log.error("camera %s ended: %s", cid, error)
        emit("camera_ended", camera=cid, error=error)
        _end_tracks(cam, cid, list(cam.live_tracks), scheduler, matcher, emit, None, reason="camera_ended")
        cam.tracker = None

    def model_failure(cam: _Camera, counter: str, error: str) -> None:
        """One more detection / re-ID failure of ``cam`` (``counter`` names its in-a-row count)."""
        n = getattr(cam, counter) + 1
        setattr(cam, counter, n)
        cam.model_errors += 1
        if n >= MAX_MODEL_FAILURES:
            end_camera(cam, f"{error} ({n} times in a row)")
        else:
            log.warning("camera %s: %s (%d of %d in a row before the camera is ended)", cam.thread.cam.id, error, n,
                        MAX_MODEL_FAILURES)

    def state() -> dict[str, Any]:
        """Frames per camera and the size of everything kept between frames (each one bounded)."""
        return {"frames": {cid: c.frames for cid, c in cams.items()},
                "gallery": len(matcher.gallery), "bound_tracks": len(matcher.bound),
                "scheduler_tracks": len(scheduler.tracks),
                "live_tracks": sum(len(c.live_tracks) for c in cams.values()),
                "tracker_tracks": sum(c.tracker.size() for c in cams.values()
                                      if c.tracker is not None and hasattr(c.tracker, "size")),
                "latency_samples": stats.stored(),
                "decode_samples": sum(len(c.thread.decode_ms) for c in cams.values()),
                "report_identities": len(gallery.sightings) if gallery is not None else 0}

    emit("run_started", cameras=[{"id": c.id, "source": c.display_source, "roi": c.roi, "start_frame": c.start_frame,
                                  "end_frame": c.end_frame, "loop": c.loop} for c in cfg.cameras])
    for cam in cams.values():
        cam.thread.start()
    t_start = time.perf_counter()
    run_wall0 = time.time()  # 0 s of the run clock for live sources
    last_log = last_progress = t_start
    # the re-ID output dimension: the runner's card says it; otherwise fixed by the first good call
    emb_dim: Optional[int] = int(getattr(getattr(reid, "card", None), "embedding_dim", 0) or 0) or None
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
                    end_camera(cam, item.error)
                    continue
                batch.append((cam, _run_clock(cam, item, run_wall0)))
            if not batch:
                continue
            candidates: list[EmbedRequest] = []
            per_frame: list[tuple[_Camera, Frame, list[TrackedBox]]] = []
            quality: dict[str, np.ndarray] = {}  # camera -> crop_quality of its tracked boxes (scheduler, gallery)
            # one detector call over the newest frame of every camera (split by the runner for fixed-batch models);
            # if it raises, camera by camera, so only the camera whose frame fails pays for it
            t = time.perf_counter()
            frames_in = [f.image for _, f in batch]
            results: list[Any]
            try:
                results = _detect(detector, frames_in)
            except Exception as exc:  # noqa: BLE001 - isolated per camera below
                results = [exc]
                if len(batch) > 1:
                    log.warning("batched detection over %d cameras failed (%s); retrying camera by camera",
                                len(batch), _why("detection", exc))
                    results = []
                    for im in frames_in:
                        try:
                            results.append(_detect(detector, [im])[0])
                        except Exception as exc1:  # noqa: BLE001 - counted against that camera
                            results.append(exc1)
            stats.add("detect", (time.perf_counter() - t) * 1000.0)
            stats.add("detect_per_frame", (time.perf_counter() - t) * 1000.0 / len(batch))
            for (cam, frame), det in zip(batch, results):
                cid = frame.camera_id
                if isinstance(det, BaseException):
                    model_failure(cam, "det_failures", _why("detection", det))
                    continue
                cam.det_failures = 0
                if cam.tracker is None:
                    cam.tracker = make_tracker(cfg.tracker, cam.thread.fps or 10.0)
                    if cfg.outputs.mot and cam.mot is None:
                        cam.mot = MotWriter(out_dir, cid)
                try:
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
                    quality[cid] = crop_quality(boxes, frame.image.shape[:2], cfg.reid)
                    wanted = scheduler.observe(cid, frame.index, [tb.track_id for tb in tracked], boxes,
                                               frame.image.shape[:2], quality=quality[cid])
                    _end_tracks(cam, cid, cam.tracker.ended(frame.index), scheduler, matcher, emit, frame,
                                reason="lost")
                except Exception as exc:  # noqa: BLE001 - a tracker in an unknown state ends its camera only
                    end_camera(cam, _why("tracking", exc))
                    continue
                candidates += wanted
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
                    crop = crop_box(images[r.camera_id], r.box, cfg.reid.crop_pad)
                    if crop is not None:
                        crops.append(crop)
                        reqs.append(r)
                if crops:
                    t = time.perf_counter()
                    done: list[tuple[list[EmbedRequest], np.ndarray]] = []
                    failed: dict[str, BaseException] = {}
                    try:
                        done.append((reqs, _embed(reid, crops, emb_dim, cfg.reid.flip)))
                    except Exception as exc:  # noqa: BLE001 - retried camera by camera
                        by_cam: dict[str, list[int]] = {}
                        for i, r in enumerate(reqs):
                            by_cam.setdefault(r.camera_id, []).append(i)
                        if len(by_cam) == 1:
                            failed = {reqs[0].camera_id: exc}
                        else:
                            log.warning("batched re-ID over %d cameras failed (%s); retrying camera by camera",
                                        len(by_cam), _why("re-ID", exc))
                            for rcid, idx in by_cam.items():
                                try:
                                    done.append(([reqs[i] for i in idx], _embed(reid, [crops[i] for i in idx],
                                                                                 emb_dim, cfg.reid.flip)))
                                except Exception as exc1:  # noqa: BLE001 - counted against that camera
                                    failed[rcid] = exc1
                    stats.add("embed", (time.perf_counter() - t) * 1000.0)
                    stats.add("embed_crops", float(len(crops)))
                    for rq, emb in done:
                        emb_dim = emb_dim or int(emb.shape[1])
                        scheduler.update(rq, emb)
                        for rcid in {r.camera_id for r in rq}:
                            cams[rcid].reid_failures = 0
                    for rcid, exc in failed.items():
                        model_failure(cams[rcid], "reid_failures", _why("re-ID", exc))
                    if failed:
                        per_frame = [p for p in per_frame if not p[0].ended]
            # matching
            t = time.perf_counter()
            now = max(f.timestamp for _, f in batch)
            pending = []
            for _cam, frame, tracked in per_frame:
                size = (frame.image.shape[1], frame.image.shape[0])
                for tb in tracked:
                    st = scheduler.tracks.get((frame.camera_id, tb.track_id))
                    if st is not None and st.switched:  # the tracker moved the track to someone else (switch_below)
                        st.switched = False
                        emit("track_switched", camera=frame.camera_id, track_id=tb.track_id, frame=frame.index,
                             t=round(frame.timestamp, 3), gid=matcher.release(frame.camera_id, tb.track_id),
                             box=[round(v, 1) for v in tb.box])
                    matcher.observe(frame.camera_id, tb.track_id, tb.box, size, frame.timestamp)
                    # only good crops (not truncated, quality >= matcher.min_crop_quality) reach the matcher; the
                    # good-crop mean is normalised only when it is handed over (a fresh crop, or a track to match)
                    if matcher.gid_of(frame.camera_id, tb.track_id) is not None:
                        fresh = st.good_embedding if st is not None and st.last_good_frame == frame.index else None
                        matcher.update(frame.camera_id, tb.track_id, fresh, frame.timestamp)
                    elif (st is not None and st.frames_seen >= cfg.matcher.min_track_frames
                          and st.good_count >= cfg.matcher.min_good_crops and (e := st.good_embedding) is not None):
                        pending.append((frame.camera_id, tb.track_id, e))
            for rv in matcher.revise(now):  # provisional ids that now clearly belong to another identity
                emit("identity_revised", gid_from=rv.gid_from, gid_to=rv.gid_to, camera=rv.camera_id,
                     track_id=rv.track_id, t=round(now, 3), similarity=round(rv.similarity, 4),
                     previous_similarity=(round(rv.previous_similarity, 4) if rv.previous_similarity is not None
                                          else None), merged=rv.merged)
            for a in matcher.assign(pending, now):
                box = next(tb.box for c, f, tr in per_frame if f.camera_id == a.camera_id
                           for tb in tr if tb.track_id == a.track_id)
                if a.created:
                    emit("identity_created", gid=a.gid, camera=a.camera_id, track_id=a.track_id, t=round(now, 3),
                         box=[round(v, 1) for v in box])
                else:
                    emit("handoff", gid=a.gid, from_camera=a.from_camera, to_camera=a.camera_id,
                         track_id=a.track_id, t=round(now, 3), gap_s=round(a.gap_s or 0.0, 3),
                         similarity=round(a.similarity or 0.0, 4), score=round(a.score or 0.0, 4),
                         runner_up=None if a.runner_up is None else round(a.runner_up, 4), distinct=a.distinct,
                         box=[round(v, 1) for v in box])
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
                if gallery is not None:
                    gallery.add(frame.camera_id, frame.index, frame.timestamp, frame.image, rows,
                                quality=quality.get(frame.camera_id))
            if video is not None:
                video.write_mosaic()
            stats.add("sinks", (time.perf_counter() - t) * 1000.0)
            stats.add("loop", (time.perf_counter() - t_loop) * 1000.0)
            if cfg.outputs.log_every_s and time.perf_counter() - last_log >= cfg.outputs.log_every_s:
                last_log = time.perf_counter()
                log.info("frames %s | identities %d", {c: s.frames for c, s in cams.items()}, len(matcher.gallery))
            if progress is not None and time.perf_counter() - last_progress >= progress_every_s:
                last_progress = time.perf_counter()
                progress(state())
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
        if gallery is not None:
            gallery.close()
    wall = time.perf_counter() - t_start
    for cam in cams.values():
        for ms in list(cam.thread.decode_ms):  # a copy: a thread that outlived join() may still append
            stats.add("decode", ms)
    summary = {
        "wall_s": round(wall, 3),
        "model_build_s": round(build_s, 3),
        "cameras": {cid: {"source": cam.thread.cam.display_source, "frames_processed": cam.frames,
                          "frames_read": cam.thread.frames_read, "frames_dropped": cam.thread.frames_dropped,
                          "reconnects": cam.thread.reconnects, "loops": cam.thread.loops,
                          "model_errors": cam.model_errors, "error": cam.error,
                          "fps": round(cam.frames / wall, 3) if wall > 0 else 0.0}
                    for cid, cam in cams.items()},
        "identities_created": events.counts.get("identity_created", 0) if events else None,
        "gallery_size": len(matcher.gallery),
        "gallery_evicted": matcher.evicted,
        "tracks_superseded": matcher.superseded,  # lost tracks whose identity a new track of their camera took
        "events": dict(events.counts) if events else {},
        "latency_ms": stats.summary(),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "state": state(),
        "failures": failures,
        "stopped": stop.is_set(),
    }
    if events is not None:
        events.emit("run_ended", failures=failures, wall_s=summary["wall_s"])
        events.close()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.outputs.report:  # after summary.json: the page reads it; a failure here loses none of the outputs
        summary.update(_build_report(out_dir))
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _build_report(out_dir: Path) -> dict[str, Any]:
    """``report.html`` of the run in ``out_dir``: ``{"report": path}``, or the error (logged, never raised)."""
    try:
        from apnet_edge.report import build_report

        return {"report": str(build_report(out_dir))}
    except Exception as exc:  # the run's other outputs are already written; report the failure, keep them
        log.exception("could not build the report of %s", out_dir)
        return {"report": None, "report_error": f"{type(exc).__name__}: {exc}"}


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


def _run_clock(cam: _Camera, frame: Frame, run_wall0: float) -> Frame:
    """``frame`` with its timestamp on the run clock that matching, events and the report share (seconds).

    Sources stamp frames in their own time: a file or folder by its position (``index / fps``, so a camera that starts
    at frame 398 starts at 39.8 s), a live source by the wall clock. Compared as they are, two cameras of one run would
    disagree by the start offset (the matcher would see a time-halves handoff as 40 s long, or a negative gap) or by
    ~1.8e9 s (a file next to a live camera). The run clock puts every file/folder camera's first frame at 0 (they are
    played side by side from the run's start) and a live camera's frames at wall-clock seconds since the run started.
    """
    if cam.clock0 is None:
        cam.clock0 = run_wall0 if cam.thread.cam.is_live else frame.timestamp
    return dataclasses.replace(frame, timestamp=frame.timestamp - cam.clock0)


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
