"""Run outputs: MOTChallenge track files, JSON-lines events, annotated mosaic / per-camera video, latency stats.

Every writer is line-buffered or flushed per record, so a crash loses nothing already written, and holds no
per-frame state in memory (latency samples are kept in a bounded reservoir).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np


class MotWriter:
    """``<dir>/<camera>.local.txt`` and ``<camera>.global.txt``: ``frame,id,x,y,w,h,score,-1,-1,-1``.

    Frames are 1-based (MOTChallenge); x, y, w, h in pixels of the camera frame (after its roi). Tracks without a
    global id yet are left out of the global file.
    """

    def __init__(self, out_dir: Path, camera_id: str) -> None:
        self.local = open(out_dir / f"{camera_id}.local.txt", "w", buffering=1)
        self.glob = open(out_dir / f"{camera_id}.global.txt", "w", buffering=1)

    def write(self, frame_index: int, track_id: int, gid: Optional[int], box: tuple[float, ...], score: float) -> None:
        x1, y1, x2, y2 = box
        tail = f"{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1\n"
        self.local.write(f"{frame_index + 1},{track_id},{tail}")
        if gid is not None:
            self.glob.write(f"{frame_index + 1},{gid},{tail}")

    def close(self) -> None:
        self.local.close()
        self.glob.close()


class EventLog:
    """``events.jsonl``: one JSON object per line, flushed on write; every event has ``type`` and ``wall_time``."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "w", buffering=1)
        self.counts: dict[str, int] = {}

    def emit(self, type_: str, **fields: Any) -> None:
        rec = {"type": type_, "wall_time": round(time.time(), 3), **fields}
        self.f.write(json.dumps(rec, default=_jsonable) + "\n")
        self.f.flush()
        self.counts[type_] = self.counts.get(type_, 0) + 1

    def close(self) -> None:
        self.f.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


class LatencyStats:
    """Per-stage latencies in milliseconds, kept in a bounded reservoir (flat memory on long runs).

    Each stage's reservoir is one float32 array of ``capacity`` allocated (and written) in full at its first
    sample, so memory does not creep while the reservoir fills.
    """

    def __init__(self, capacity: int = 20000, seed: int = 0) -> None:
        self.capacity = capacity
        self._buf: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self._rng = random.Random(seed)

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """{stage: the stored samples (at most ``capacity``)}."""
        return {k: b[: min(self.counts[k], self.capacity)] for k, b in self._buf.items()}

    def stored(self) -> int:
        """Number of samples held over all stages (at most ``capacity`` per stage)."""
        return sum(min(n, self.capacity) for n in self.counts.values())

    def add(self, stage: str, ms: float) -> None:
        buf = self._buf.get(stage)
        if buf is None:
            buf = self._buf[stage] = np.full(self.capacity, np.nan, np.float32)
        n = self.counts.get(stage, 0) + 1
        self.counts[stage] = n
        if n <= self.capacity:
            buf[n - 1] = ms
        else:
            j = self._rng.randrange(n)
            if j < self.capacity:
                buf[j] = ms

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {count, mean_ms, p50_ms, p95_ms, p99_ms, max_ms}}."""
        out = {}
        for stage, buf in self.samples.items():
            a = np.asarray(buf, np.float64)
            out[stage] = {"count": self.counts[stage], "mean_ms": round(float(a.mean()), 3),
                          "p50_ms": round(float(np.percentile(a, 50)), 3),
                          "p95_ms": round(float(np.percentile(a, 95)), 3),
                          "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}
        return out


def color_of(gid: Optional[int]) -> tuple[int, int, int]:
    """A stable BGR colour per global id (grey when there is none yet)."""
    if gid is None:
        return (160, 160, 160)
    rng = np.random.default_rng(gid * 7919)
    c = rng.integers(60, 256, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def annotate(image: np.ndarray, camera_id: str, frame_index: int,
             tracks: list[tuple[int, Optional[int], tuple[float, ...]]]) -> np.ndarray:
    """A copy of BGR ``image`` with a box, ``local id`` and ``G<global id>`` per track, coloured by global id."""
    import cv2

    img = image.copy()
    for tid, gid, box in tracks:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        col = color_of(gid)
        cv2.rectangle(img, (x1, y1), (x2, y2), col, 2)
        label = f"{tid}" + (f" G{gid}" if gid is not None else "")
        cv2.putText(img, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, col, 1, cv2.LINE_AA)
    cv2.putText(img, f"{camera_id} #{frame_index}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                cv2.LINE_AA)
    return img


class VideoSink:
    """Per-camera videos (``<camera>.mp4``) and/or a mosaic (``mosaic.mp4``): camera tiles side by side in rows.

    Each camera's last annotated frame is kept (one image per camera), so the mosaic shows every camera's newest
    view each time :meth:`write_mosaic` is called.
    """

    def __init__(self, out_dir: Path, camera_ids: list[str], mode: str, fps: float, tile_width: int) -> None:
        self.out_dir, self.ids, self.mode, self.fps, self.tile_w = out_dir, camera_ids, mode, fps, tile_width
        self.per_camera: dict[str, Any] = {}
        self.last: dict[str, np.ndarray] = {}
        self.mosaic: Any = None
        self.tile_h: Optional[int] = None
        self.cols = min(len(camera_ids), 2) if len(camera_ids) <= 4 else 3

    def _writer(self, path: Path, w: int, h: int) -> Any:
        import cv2

        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not vw.isOpened():
            raise OSError(f"cannot write video {path} (OpenCV has no mp4v encoder?); set outputs.video: none")
        return vw

    def add(self, camera_id: str, annotated: np.ndarray) -> None:
        if self.mode in ("per_camera", "both"):
            vw = self.per_camera.get(camera_id)
            if vw is None:
                h, w = annotated.shape[:2]
                vw = self.per_camera[camera_id] = self._writer(self.out_dir / f"{camera_id}.mp4", w, h)
            vw.write(annotated)
        if self.mode in ("mosaic", "both"):
            import cv2

            h, w = annotated.shape[:2]
            th = int(round(h * self.tile_w / w))
            self.last[camera_id] = cv2.resize(annotated, (self.tile_w, th))

    def write_mosaic(self) -> None:
        if self.mode not in ("mosaic", "both") or not self.last:
            return
        if self.tile_h is None:
            self.tile_h = max(t.shape[0] for t in self.last.values())
        th = self.tile_h
        rows = (len(self.ids) + self.cols - 1) // self.cols
        canvas = np.zeros((rows * th, self.cols * self.tile_w, 3), np.uint8)
        for k, cid in enumerate(self.ids):
            tile = self.last.get(cid)
            if tile is None:
                continue
            r, c = divmod(k, self.cols)
            hh = min(tile.shape[0], th)
            canvas[r * th:r * th + hh, c * self.tile_w:(c + 1) * self.tile_w] = tile[:hh]
        if self.mosaic is None:
            self.mosaic = self._writer(self.out_dir / "mosaic.mp4", canvas.shape[1], canvas.shape[0])
        self.mosaic.write(canvas)

    def close(self) -> None:
        for vw in self.per_camera.values():
            vw.release()
        if self.mosaic is not None:
            self.mosaic.release()
