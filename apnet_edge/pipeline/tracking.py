"""Tracker interface and the ByteTrack adapter (``supervision.ByteTrack``), one state per camera.

We do not implement ByteTrack: the association logic is the library's. This module only converts our
:class:`~apnet_edge.types.Detections` in and :class:`TrackedBox` out, and tells when a track has ended (not reported
for longer than the library's lost buffer), so the run loop can emit ``track_ended`` and free its state.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from apnet_edge.errors import MissingDependencyError
from apnet_edge.pipeline.schema import TrackerConfig
from apnet_edge.types import Detections


@dataclass(frozen=True)
class TrackedBox:
    """One tracked person in one frame: local ``track_id`` (unique per camera), box x1,y1,x2,y2 in pixels."""

    track_id: int
    box: tuple[float, float, float, float]
    score: float


class Tracker(Protocol):
    """One camera's tracker: ``update`` once per frame, in frame order."""

    def update(self, detections: Detections, frame_index: int) -> list[TrackedBox]: ...

    def ended(self, frame_index: int) -> list[int]:
        """Track ids that ended by ``frame_index``; each id is reported once."""
        ...


class ByteTrackTracker:
    """``supervision.ByteTrack`` behind our :class:`Tracker` interface.

    ``frame_rate`` is the camera's frame rate (frames/s); the library scales ``lost_track_buffer`` by
    ``frame_rate / 30``, and a track not reported for that many frames (plus one) is reported as ended.
    """

    def __init__(self, cfg: TrackerConfig, frame_rate: float = 30.0) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                import supervision as sv
        except ImportError as exc:
            raise MissingDependencyError("supervision", "run", "the ByteTrack tracker") from exc
        self._sv = sv
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self._bt = sv.ByteTrack(
                track_activation_threshold=cfg.track_activation_threshold,
                lost_track_buffer=cfg.lost_track_buffer,
                minimum_matching_threshold=cfg.minimum_matching_threshold,
                frame_rate=frame_rate,
                minimum_consecutive_frames=cfg.minimum_consecutive_frames,
            )
        self.max_lost = max(1, int(frame_rate / 30.0 * cfg.lost_track_buffer)) + 1
        self._last_seen: dict[int, int] = {}

    def update(self, detections: Detections, frame_index: int) -> list[TrackedBox]:
        sv = self._sv
        det = sv.Detections(
            xyxy=np.asarray(detections.boxes, np.float32).reshape(-1, 4).copy(),
            confidence=np.asarray(detections.scores, np.float32).copy(),
            class_id=np.asarray(detections.class_ids, int).copy(),
        )
        out = self._bt.update_with_detections(det)
        boxes: list[TrackedBox] = []
        for xyxy, conf, tid in zip(out.xyxy, out.confidence, out.tracker_id):
            tid = int(tid)
            if tid < 0:
                continue
            self._last_seen[tid] = frame_index
            boxes.append(TrackedBox(tid, tuple(float(v) for v in xyxy), float(conf)))  # type: ignore[arg-type]
        return boxes

    def ended(self, frame_index: int) -> list[int]:
        gone = [t for t, f in self._last_seen.items() if frame_index - f > self.max_lost]
        for t in gone:
            del self._last_seen[t]
        return gone

    def active(self) -> list[int]:
        """Track ids not yet ended."""
        return list(self._last_seen)

    def size(self) -> int:
        """Tracks held in memory: ours not yet ended plus the library's tracked, lost and removed lists."""
        bt = self._bt
        return len(self._last_seen) + sum(len(getattr(bt, k, ())) for k in ("tracked_tracks", "lost_tracks",
                                                                              "removed_tracks"))


def make_tracker(cfg: TrackerConfig, frame_rate: float) -> Tracker:
    """The tracker named by ``cfg.type`` (only ``bytetrack`` for now)."""
    if cfg.type == "bytetrack":
        return ByteTrackTracker(cfg, frame_rate)
    raise ValueError(f"unknown tracker type {cfg.type!r}")  # schema validation prevents this
