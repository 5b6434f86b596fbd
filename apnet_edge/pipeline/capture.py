"""Camera capture: one thread per camera feeding a bounded queue of :class:`Frame`.

Live sources (RTSP/HTTP URLs, USB indices) keep only the newest frame: when the queue is full the oldest frame is
dropped, so a slow pipeline never lags behind the camera. Files and image folders deliver every frame (the thread
blocks on a full queue) or, with ``realtime``, are paced to their own frame rate. A live source that fails to open or
stops delivering is reopened with exponential back-off while the other cameras keep running. The end of a file (or
its ``end_frame``) ends that camera, unless ``loop`` is set: then the source is reopened at ``start_frame`` and the
frame index (hence the timestamp ``index / fps``) keeps counting across laps, so downstream time never goes back.

Frame size: every frame a camera delivers keeps one size (tracker state, boxes and videos are in its pixels). A
source frame of another size mid-stream is accepted only when the camera has a ``roi`` that still fits inside it (the
delivered crop keeps its size); otherwise the camera ends with an error naming the frame, both sizes and the fix.
Nothing here ever logs a URL that was not passed through :func:`redact_url`.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from apnet_edge.pipeline.schema import IMAGE_EXTS, CameraConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One frame of one camera.

    Attributes:
        camera_id: the camera's id from cams.yaml.
        index: frame number in the source (files: position in the file, 0-based; live: count since start). With
            ``loop`` it keeps counting across laps (position in the file + frames of the earlier laps).
        timestamp: seconds; files and folders: stream time ``index / fps``; live: wall clock (``time.time()``).
        image: (H, W, 3) BGR uint8, already cut to the camera's roi.
    """

    camera_id: str
    index: int
    timestamp: float
    image: np.ndarray


@dataclass(frozen=True)
class EndOfStream:
    """Put on the queue when a camera ends; ``error`` is ``None`` for a clean end of file."""

    camera_id: str
    error: Optional[str] = None


class SourceError(Exception):
    """A source cannot be opened or read."""


class _VideoSource:
    """cv2.VideoCapture over a file, URL or USB index."""

    def __init__(self, cam: CameraConfig) -> None:
        import cv2

        self._cv2 = cv2
        target: Union[int, str] = int(cam.source) if cam.kind == "usb" else cam.source
        if cam.kind == "live":  # never hang on a URL that does not answer: 5 s open / read timeouts
            self.cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000,
                                                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
        else:
            self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open {cam.display_source}")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 0.0
        if cam.start_frame and cam.kind == "file":
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, cam.start_frame)

    def read(self) -> Optional[np.ndarray]:
        ok, img = self.cap.read()
        return img if ok and img is not None else None

    def close(self) -> None:
        self.cap.release()


class _FolderSource:
    """Sorted images of a folder, read with cv2.imread."""

    def __init__(self, cam: CameraConfig) -> None:
        import cv2

        self._cv2 = cv2
        self.paths = sorted(p for p in Path(cam.source).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        self.pos = cam.start_frame
        self.fps = cam.folder_fps

    def read(self) -> Optional[np.ndarray]:
        if self.pos >= len(self.paths):
            return None
        path = self.paths[self.pos]
        self.pos += 1
        img = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
        if img is None:
            raise SourceError(f"cannot decode image {path}")
        return img

    def close(self) -> None:
        pass


class CameraThread(threading.Thread):
    """Reads one camera into ``self.queue`` until the source ends, fails for good, or :meth:`stop` is called.

    Stats (read by the run loop, written only by this thread): ``frames_read``, ``frames_dropped``,
    ``reconnects``, ``loops`` (laps restarted with ``loop``), ``error``, ``decode_ms`` (the last 5000 read times).
    """

    def __init__(self, cam: CameraConfig, max_frames: int = 0) -> None:
        super().__init__(name=f"camera-{cam.id}", daemon=True)
        self.cam = cam
        self.max_frames = max_frames
        self.queue: queue.Queue[Union[Frame, EndOfStream]] = queue.Queue(maxsize=cam.queue_size)
        self._stop_event = threading.Event()
        self.frames_read = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.loops = 0
        self.error: Optional[str] = None
        self.decode_ms: collections.deque[float] = collections.deque(maxlen=5000)
        self._size_warned = False
        self.frame_shape: Optional[tuple[int, int]] = None
        self.fps = 0.0  # source frame rate (frames/s) once opened; 0 = unknown
        self.opened = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def _open(self) -> Any:
        return _FolderSource(self.cam) if self.cam.kind == "folder" else _VideoSource(self.cam)

    def _put(self, item: Union[Frame, EndOfStream]) -> None:
        if isinstance(item, Frame) and self.cam.is_live:
            while True:
                try:
                    self.queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self.queue.get_nowait()
                        self.frames_dropped += 1
                    except queue.Empty:
                        pass
        while not self._stop_event.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        if isinstance(item, EndOfStream):  # stopping: make room so the loop still sees the end
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.queue.put_nowait(item)

    def _crop(self, img: np.ndarray, pos: int) -> np.ndarray:
        """Cut the roi out of source frame ``pos``; see the module docstring for frames of another size."""
        h, w = img.shape[:2]
        if self.frame_shape is None:
            self.frame_shape = (h, w)
        elif (h, w) != self.frame_shape:
            fh, fw = self.frame_shape
            if self.cam.roi is None:
                raise SourceError(f"frame {pos} is {w}x{h} but the earlier frames were {fw}x{fh}; a camera keeps one "
                                  f"frame size (its tracks and videos are in those pixels): set cameras[].roi to a "
                                  f"region inside both sizes to keep such a source running")
            if not self._size_warned:
                self._size_warned = True
                log.warning("camera %s: frame %d is %dx%d, earlier frames %dx%d; the roi still fits, going on",
                            self.cam.id, pos, w, h, fw, fh)
        if self.cam.roi is None:
            return img
        x1, y1, x2, y2 = self.cam.roi
        if x2 > w or y2 > h:
            raise SourceError(f"roi {list(self.cam.roi)} lies outside frame {pos} ({w}x{h}); fix cameras[].roi")
        return np.ascontiguousarray(img[y1:y2, x1:x2])

    def run(self) -> None:  # noqa: C901 - one loop with the retry policy in plain sight
        cam = self.cam
        backoff = 0.5
        attempts = 0
        index = cam.start_frame if not cam.is_live else 0
        pos = index  # files/folders: position of the next frame in the source (back to start_frame each lap)
        lap_frames = 0  # frames read since the source was (re)opened
        src = None
        next_due = 0.0  # stream time of the next frame to keep (max_fps cap)
        t0 = time.monotonic()
        try:
            while not self._stop_event.is_set():
                if src is None:
                    try:
                        src = self._open()
                        self.fps = src.fps or 10.0
                        self.opened.set()
                        backoff, attempts = 0.5, 0
                        pos, lap_frames = (cam.start_frame if not cam.is_live else 0), 0
                    except SourceError as exc:
                        if not cam.is_live:
                            raise
                        attempts += 1
                        if cam.retries and attempts > cam.retries:
                            raise SourceError(f"{exc}; gave up after {cam.retries} attempts") from None
                        log.warning("camera %s: %s; retrying in %.1f s", cam.id, exc, backoff)
                        self._stop_event.wait(backoff)
                        backoff = min(backoff * 2.0, cam.retry_max_s)
                        continue
                t = time.perf_counter()
                img = None if cam.end_frame and pos >= cam.end_frame else src.read()
                if img is None:
                    if not cam.is_live:
                        if not cam.loop:
                            break  # end of file / folder / end_frame
                        if lap_frames == 0:
                            raise SourceError(f"loop: {cam.display_source} has no frame at start_frame "
                                              f"{cam.start_frame}; lower cameras[].start_frame")
                        src.close()  # loop: reopen at start_frame; index and timestamps keep counting
                        src = None
                        self.loops += 1
                        continue
                    log.warning("camera %s: stream stopped delivering; reconnecting", cam.id)
                    src.close()
                    src = None
                    self.reconnects += 1
                    continue
                image = self._crop(img, pos)
                pos += 1
                lap_frames += 1
                self.decode_ms.append((time.perf_counter() - t) * 1000.0)
                fps = src.fps or 10.0
                ts = time.time() if cam.is_live else index / fps
                i = index
                index += 1
                if cam.max_fps > 0:
                    clock = time.monotonic() if cam.is_live else ts
                    if clock + 1e-9 < next_due:
                        continue
                    next_due = max(next_due + 1.0 / cam.max_fps, clock)
                if cam.realtime and not cam.is_live:
                    wait = (i - cam.start_frame) / fps - (time.monotonic() - t0)
                    if wait > 0:
                        self._stop_event.wait(wait)
                self.frames_read += 1
                self._put(Frame(cam.id, i, ts, image))
                if self.max_frames and self.frames_read >= self.max_frames:
                    break
        except Exception as exc:  # noqa: BLE001 - a camera failure must never take the others down
            from apnet_edge.pipeline.schema import redact_url

            self.error = redact_url(f"{type(exc).__name__}: {exc}")
            log.error("camera %s failed: %s", cam.id, self.error)
        finally:
            if src is not None:
                src.close()
            self._put(EndOfStream(cam.id, self.error))
