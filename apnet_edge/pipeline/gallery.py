"""The pictures of a run's report: the best crop per (global identity, camera) and a few thumbnails per camera.

:class:`IdentityGallery` is a sink of the run loop. Per frame it gets the camera's image and its rows
``(track id, global id or None, box)``; it keeps, per (global id, camera), the best crop seen so far (quality = the
embedding scheduler's :func:`~apnet_edge.pipeline.scheduler.crop_quality`, ties and zero-quality crops broken by box
height), the first/last seen stream timestamps and the seen intervals, and per camera at most ``max_thumbnails``
annotated thumbnails spread evenly over the run (when the slots are full every other one is dropped and the
interval doubles, so any run length ends with between ``max_thumbnails / 2`` and ``max_thumbnails`` of them).

Everything is bounded: crops and thumbnails are small JPEGs under ``<run>/report/`` overwritten on improvement
(``crops/g<gid>_<camera>.jpg``, ``thumbs/<camera>_<n>.jpg``), at most ``max_identities`` identities are kept (the
least recently seen is dropped with its files), at most ``max_intervals`` seen intervals per (identity, camera).
``report/index.json`` is rewritten atomically every ``flush_every_s`` seconds and at :meth:`close`, so a crash leaves
pictures and an index that is at most a few seconds old.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from apnet_edge.crops import crop_box
from apnet_edge.pipeline.schema import ReidConfig

log = logging.getLogger(__name__)
INDEX_NAME = "index.json"
INDEX_VERSION = 1
Row = tuple[int, Optional[int], tuple[float, ...]]


@dataclass
class Sighting:
    """One global identity in one camera: times, best crop so far and seen intervals (stream seconds)."""

    gid: int
    camera_id: str
    first_t: float
    last_t: float
    first_frame: int
    last_frame: int
    frames: int = 0
    quality: float = -1.0
    box_height: float = 0.0
    crop: Optional[str] = None  # file name relative to the gallery folder
    crop_t: Optional[float] = None
    tracks: list[int] = field(default_factory=list)
    intervals: list[list[float]] = field(default_factory=list)  # [[start_t, end_t], ...] sorted by time

    def to_json(self) -> dict[str, Any]:
        return {"first_t": round(self.first_t, 3), "last_t": round(self.last_t, 3), "first_frame": self.first_frame,
                "last_frame": self.last_frame, "frames": self.frames, "quality": round(self.quality, 4),
                "box_height": round(self.box_height, 1), "crop": self.crop,
                "crop_t": None if self.crop_t is None else round(self.crop_t, 3), "tracks": self.tracks,
                "intervals": [[round(a, 3), round(b, 3)] for a, b in self.intervals]}


@dataclass
class Thumbnail:
    file: str
    t: float
    frame: int


class IdentityGallery:
    """Best crop per (global id, camera) and thumbnails per camera, written as JPEGs plus ``index.json``.

    Args:
        out_dir: the gallery folder (normally ``<run>/report``); created if missing.
        reid_cfg: the run's re-ID config (its crop-quality settings); ``None`` ranks crops by box height only.
        thumb_every_s: stream seconds between thumbnails at the start of a run (doubles when the slots are full).
        max_thumbnails: most thumbnails kept per camera.
        thumb_width: thumbnail width in pixels.
        crop_height: crops are shrunk to at most this height in pixels (never enlarged).
        max_identities: most global identities kept; the least recently seen is dropped first.
        max_intervals: most seen intervals kept per (identity, camera); the closest two are merged beyond that.
        gap_s: a sighting within this many stream seconds of the previous one extends the same interval.
        min_gain: a crop replaces the kept one only when its quality is this factor higher (bounds JPEG writes).
        flush_every_s: wall seconds between rewrites of ``index.json`` (0 = after every frame).
        jpeg_quality: JPEG quality 0-100.
    """

    def __init__(self, out_dir: Path, reid_cfg: Optional[ReidConfig] = None, thumb_every_s: float = 2.0,
                 max_thumbnails: int = 12, thumb_width: int = 240, crop_height: int = 160,
                 max_identities: int = 300, max_intervals: int = 16, gap_s: float = 2.0, min_gain: float = 1.05,
                 flush_every_s: float = 2.0, jpeg_quality: int = 80) -> None:
        if max_thumbnails < 2 or thumb_every_s <= 0 or max_identities < 1 or max_intervals < 1:
            raise ValueError("IdentityGallery needs max_thumbnails >= 2, thumb_every_s > 0, max_identities >= 1 "
                             "and max_intervals >= 1")
        self.dir = Path(out_dir)
        (self.dir / "crops").mkdir(parents=True, exist_ok=True)
        (self.dir / "thumbs").mkdir(parents=True, exist_ok=True)
        self.reid_cfg = reid_cfg
        self.thumb_every_s, self.max_thumbnails, self.thumb_width = thumb_every_s, max_thumbnails, thumb_width
        self.crop_height, self.max_identities, self.max_intervals = crop_height, max_identities, max_intervals
        self.gap_s, self.min_gain, self.flush_every_s, self.jpeg_quality = gap_s, min_gain, flush_every_s, jpeg_quality
        self.sightings: dict[int, dict[str, Sighting]] = {}  # gid -> camera -> sighting
        self.last_seen: dict[int, float] = {}  # gid -> wall-clock order key (for eviction)
        self.thumbs: dict[str, list[Thumbnail]] = {}
        self.thumb_step: dict[str, float] = {}
        self.next_thumb_t: dict[str, float] = {}
        self.thumb_seq: dict[str, int] = {}
        self.frames: dict[str, int] = {}
        self.evicted = 0
        self.write_errors = 0
        self._last_flush = 0.0
        self._tick = 0

    # ------------------------------------------------------------------------------------------ per frame

    def add(self, camera_id: str, frame_index: int, timestamp: float, image: np.ndarray, rows: list[Row],
            quality: Optional[np.ndarray] = None) -> None:
        """Record one camera frame: ``image`` (H, W, 3) BGR uint8 and its tracks' rows (track id, gid, x1,y1,x2,y2).
        ``quality``: the rows' :func:`~apnet_edge.pipeline.scheduler.crop_quality` if the caller has it already."""
        self.frames[camera_id] = self.frames.get(camera_id, 0) + 1
        self._tick += 1
        self._maybe_thumbnail(camera_id, frame_index, timestamp, image, rows)
        if rows:
            boxes = np.array([r[2] for r in rows], np.float32).reshape(-1, 4)
            if quality is None:
                quality = self._quality(boxes, image.shape[:2])
            for (tid, gid, box), q in zip(rows, quality):
                if gid is not None:
                    self._sighting(camera_id, frame_index, timestamp, image, int(tid), int(gid), box, float(q))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def _quality(self, boxes: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        if self.reid_cfg is None:
            return np.zeros(len(boxes), np.float32)
        from apnet_edge.pipeline.scheduler import crop_quality

        return crop_quality(boxes, frame_hw, self.reid_cfg)

    def _sighting(self, cid: str, frame_index: int, t: float, image: np.ndarray, tid: int, gid: int,
                  box: tuple[float, ...], q: float) -> None:
        per_cam = self.sightings.get(gid)
        if per_cam is None:
            per_cam = self.sightings[gid] = {}
            if len(self.sightings) > self.max_identities:
                self._evict()
        s = per_cam.get(cid)
        if s is None:
            s = per_cam[cid] = Sighting(gid, cid, t, t, frame_index, frame_index)
        s.first_t, s.first_frame = min(s.first_t, t), min(s.first_frame, frame_index)
        s.last_t, s.last_frame = max(s.last_t, t), max(s.last_frame, frame_index)
        s.frames += 1
        if tid not in s.tracks and len(s.tracks) < 32:
            s.tracks.append(tid)
        self._extend_interval(s, t)
        self.last_seen[gid] = self._tick
        height = float(box[3] - box[1])
        better = (s.crop is None or q > s.quality * self.min_gain
                  or (q <= 0.0 and s.quality <= 0.0 and height > s.box_height * self.min_gain))
        if better:
            crop = crop_box(image, box)
            if crop is None:
                return
            name = f"crops/g{gid}_{cid}.jpg"
            if self._write_jpeg(name, _shrink(crop, self.crop_height)):
                s.crop, s.crop_t, s.quality, s.box_height = name, t, q, height

    def _extend_interval(self, s: Sighting, t: float) -> None:
        iv = s.intervals
        if iv and iv[-1][0] - self.gap_s <= t <= iv[-1][1] + self.gap_s:
            iv[-1][0], iv[-1][1] = min(iv[-1][0], t), max(iv[-1][1], t)
            return
        iv.append([t, t])
        iv.sort()
        if len(iv) > self.max_intervals:  # merge the two neighbours with the smallest gap
            k = min(range(len(iv) - 1), key=lambda i: iv[i + 1][0] - iv[i][1])
            iv[k][1] = max(iv[k][1], iv[k + 1][1])
            del iv[k + 1]

    def _evict(self) -> None:
        gid = min(self.last_seen, key=self.last_seen.__getitem__) if self.last_seen else next(iter(self.sightings))
        for s in self.sightings.pop(gid, {}).values():
            if s.crop:
                _unlink(self.dir / s.crop)
        self.last_seen.pop(gid, None)
        self.evicted += 1

    def _maybe_thumbnail(self, cid: str, frame_index: int, t: float, image: np.ndarray, rows: list[Row]) -> None:
        due = self.next_thumb_t.get(cid)
        if due is not None and t < due:
            return
        step = self.thumb_step.setdefault(cid, self.thumb_every_s)
        thumbs = self.thumbs.setdefault(cid, [])
        if len(thumbs) >= self.max_thumbnails:  # keep every other one, double the spacing
            for th in thumbs[1::2]:
                _unlink(self.dir / th.file)
            thumbs[:] = thumbs[0::2]
            step = self.thumb_step[cid] = step * 2.0
        from apnet_edge.pipeline.sinks import annotate

        n = self.thumb_seq.get(cid, 0)
        self.thumb_seq[cid] = n + 1
        h, w = image.shape[:2]
        small = _resize(annotate(image, cid, frame_index, rows), self.thumb_width, max(1, round(h * self.thumb_width / w)))
        name = f"thumbs/{cid}_{n:05d}.jpg"
        if self._write_jpeg(name, small):
            thumbs.append(Thumbnail(name, t, frame_index))
        first = thumbs[0].t if thumbs else t
        # the next thumbnail lies on the grid first + k * step, after t
        self.next_thumb_t[cid] = first + (np.floor((t - first) / step) + 1.0) * step

    # ------------------------------------------------------------------------------------------ output

    def _write_jpeg(self, name: str, image: np.ndarray) -> bool:
        import cv2

        try:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise OSError("cv2.imencode failed")
            tmp = self.dir / (name + ".tmp")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, self.dir / name)
            return True
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1:
                log.warning("report gallery: cannot write %s (%s); the report will lack some pictures",
                            self.dir / name, exc)
            return False

    def index(self) -> dict[str, Any]:
        """The JSON index: cameras (frames seen, thumbnails) and identities (per camera: times, crop, intervals)."""
        return {
            "version": INDEX_VERSION,
            "cameras": {cid: {"frames": self.frames.get(cid, 0),
                              "thumbnail_every_s": self.thumb_step.get(cid, self.thumb_every_s),
                              "thumbnails": [{"file": th.file, "t": round(th.t, 3), "frame": th.frame}
                                             for th in self.thumbs.get(cid, [])]}
                        for cid in self.frames},
            "identities": {str(gid): {cid: s.to_json() for cid, s in per_cam.items()}
                           for gid, per_cam in sorted(self.sightings.items())},
            "evicted_identities": self.evicted,
            "write_errors": self.write_errors,
            "limits": {"max_identities": self.max_identities, "max_thumbnails": self.max_thumbnails},
        }

    def flush(self) -> None:
        """Rewrite ``index.json`` atomically (a reader never sees half a file)."""
        self._last_flush = time.monotonic()
        tmp = self.dir / (INDEX_NAME + ".tmp")
        try:
            tmp.write_text(json.dumps(self.index(), indent=1))
            os.replace(tmp, self.dir / INDEX_NAME)
        except OSError as exc:
            self.write_errors += 1
            log.warning("report gallery: cannot write %s (%s)", self.dir / INDEX_NAME, exc)

    def close(self) -> None:
        self.flush()


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA)


def _shrink(crop: np.ndarray, max_h: int) -> np.ndarray:
    h, w = crop.shape[:2]
    if h <= max_h:
        return np.ascontiguousarray(crop)
    return _resize(crop, round(w * max_h / h), max_h)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
