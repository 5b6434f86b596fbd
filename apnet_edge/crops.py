"""Real person crops: frames from a video, crops cut at detections, image folders.

Used by tests, INT8 calibration, parity checks and benchmarks, so that they all run on real people.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.errors import ApnetError, DatasetError
from apnet_edge.types import Detections

PathLike = Union[str, Path]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _open_video(video_path: PathLike) -> Any:
    import cv2

    p = Path(video_path)
    if not p.is_file():
        raise ApnetError(f"video {str(p)!r} not found; check the path")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise ApnetError(f"cannot open video {str(p)!r}: unsupported codec or not a video file")
    return cap


def video_frame_count(video_path: PathLike) -> int:
    """Frames the container reports (0 when it does not say)."""
    import cv2

    cap = _open_video(video_path)
    try:
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    finally:
        cap.release()


def read_frames(video_path: PathLike, indices: Sequence[int]) -> list[np.ndarray]:
    """The frames at ``indices`` (0-based, any order, repeats allowed) as BGR uint8 (H, W, 3), in that order.

    Decodes sequentially (exact frame numbers; seeking is not frame-accurate in every codec) and only
    retrieves the frames asked for. Raises ApnetError naming the video when it cannot be read or is too short.
    """
    idx = [int(i) for i in indices]
    if not idx:
        return []
    if min(idx) < 0:
        raise ApnetError(f"frame indices must be >= 0, found {min(idx)}")
    wanted = set(idx)
    last = max(idx)
    cap = _open_video(video_path)
    got: dict[int, np.ndarray] = {}
    try:
        for i in range(last + 1):
            if not cap.grab():
                raise ApnetError(f"video {str(video_path)!r} has only {i} readable frames; frame {last} was asked for")
            if i in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise ApnetError(f"cannot decode frame {i} of video {str(video_path)!r}")
                got[i] = frame
    finally:
        cap.release()
    out, seen = [], set()
    for i in idx:  # a repeated index gets its own copy, so callers may draw on frames freely
        out.append(got[i].copy() if i in seen else got[i])
        seen.add(i)
    return out


def spread_indices(total: int, n: int, margin: float = 0.0) -> list[int]:
    """``n`` indices spread evenly over ``range(total)`` (fewer if ``total < n``), skipping ``margin`` of each end."""
    if total <= 0 or n <= 0:
        return []
    lo, hi = margin * (total - 1), (1.0 - margin) * (total - 1)
    return sorted({int(round(v)) for v in np.linspace(lo, hi, num=min(n, total))})


def cut_crops(frame: np.ndarray, detections: Detections, min_height: int = 48, pad: float = 0.0) -> list[np.ndarray]:
    """BGR uint8 crops of ``frame`` at each detection, in detection order.

    ``pad``: fraction of the box's width/height added on each side before clipping to the frame.
    Boxes shorter than ``min_height`` pixels (after clipping) or empty are skipped. Crops are copies.
    """
    return [c for _, c in _cut(frame, detections, min_height, pad)]


def _cut(frame: np.ndarray, detections: Detections, min_height: int, pad: float) -> list[tuple[int, np.ndarray]]:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ApnetError(f"frame has shape {tuple(frame.shape)}; expected (H, W, 3)")
    fh, fw = frame.shape[:2]
    out = []
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(detections.boxes, np.float64)):
        bw, bh = x2 - x1, y2 - y1
        x1, x2 = x1 - pad * bw, x2 + pad * bw
        y1, y2 = y1 - pad * bh, y2 + pad * bh
        ix1, iy1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
        ix2, iy2 = min(int(np.ceil(x2)), fw), min(int(np.ceil(y2)), fh)
        if ix2 <= ix1 or iy2 <= iy1 or (iy2 - iy1) < min_height:
            continue
        out.append((i, np.ascontiguousarray(frame[iy1:iy2, ix1:ix2]).copy()))
    return out


def crops_from_video(video_path: PathLike, detector: Any, max_crops: int = 64, num_frames: int = 16,
                     min_height: int = 48, pad: float = 0.0) -> list[np.ndarray]:
    """Up to ``max_crops`` person crops from ``num_frames`` frames spread over the video.

    ``detector``: anything with ``detect(frame_bgr) -> Detections``. Crops are taken round-robin over the frames so
    that they cover the whole video. Raises ApnetError when no person is found.
    """
    total = video_frame_count(video_path)
    indices = spread_indices(total, num_frames, margin=0.02) if total else list(range(num_frames))
    per_frame: list[list[np.ndarray]] = []
    for frame in read_frames(video_path, indices):
        per_frame.append(cut_crops(frame, detector.detect(frame), min_height=min_height, pad=pad))
    crops: list[np.ndarray] = []
    depth = 0
    while len(crops) < max_crops and any(depth < len(c) for c in per_frame):
        for c in per_frame:
            if depth < len(c) and len(crops) < max_crops:
                crops.append(c[depth])
        depth += 1
    if not crops:
        raise ApnetError(f"no person of at least {min_height} px found in {len(indices)} frames of {str(video_path)!r}")
    return crops


def crop_box(image: np.ndarray, box: Sequence[float], pad: float = 0.0) -> Optional[np.ndarray]:
    """The pixels of ``box`` (x1, y1, x2, y2 in pixels, clipped to the image) as a view of ``image``; None when the
    clipped box is narrower or lower than 2 pixels. ``pad``: widen the box by this fraction of its width (left and
    right) and height (top and bottom) first, for context."""
    h, w = image.shape[:2]
    if pad > 0.0:
        dx, dy = pad * (box[2] - box[0]), pad * (box[3] - box[1])
        box = (box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy)
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return image[y1:y2, x1:x2]


def list_images(folder: PathLike) -> list[Path]:
    """Image files (see :data:`IMAGE_SUFFIXES`, any case) under ``folder``, recursively, sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_images(paths: Sequence[PathLike]) -> list[np.ndarray]:
    """Read images as BGR uint8 arrays (H, W, 3); raise DatasetError naming an unreadable file."""
    import cv2

    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"cannot read image {str(p)!r}: not an image or unreadable; remove or replace it")
        out.append(img)
    return out


def read_image_folder(folder: PathLike, limit: Optional[int] = None) -> list[np.ndarray]:
    """Images under ``folder`` (recursively, sorted by path) as BGR uint8 arrays; with ``limit``, that many spread
    evenly over the sorted list. Raises DatasetError when the folder is missing, has no images or one is unreadable.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"image folder {str(root)!r} does not exist")
    paths = list_images(root)
    if not paths:
        raise DatasetError(f"image folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in spread_indices(len(paths), limit)]
    return read_images(paths)
