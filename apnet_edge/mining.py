"""Mine a pseudo-labelled re-ID dataset from a video: detect people, link boxes into tracks, write crops.

Each track becomes one identity. The folder is written in Market-1501 naming, so every reader, the trainer and
``apnet-edge eval`` take it as it is (``--dataset folder``):

- tracks are split by identity into training ids and test ids (``test_fraction``);
- within a track, the first half in time is "camera 1" and the second half "camera 2", so a query (camera 2)
  must be found among earlier views of the same person (camera 1) — the standard protocol drops same-camera
  matches;
- ``bounding_box_train``: crops of training ids; ``query``: camera-2 crops of test ids; ``bounding_box_test``:
  camera-1 crops of test ids.

Tracks are linked with greedy IoU association between consecutive frames, which is enough for mining short,
clean tracks (boxes must be tall enough, inside the frame and not overlapping another person); tracks are
ended at the first miss, so an identity switch inside a track is rare. Labels are still pseudo-labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from apnet_edge.errors import ApnetError


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (N,4) and (M,4), x1,y1,x2,y2 in pixels -> (N,M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class MinedTrack:
    track_id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    clean: list[bool] = field(default_factory=list)  # box usable as a crop (size, border, overlap)


def usable_boxes(boxes: np.ndarray, frame_shape: tuple[int, int], min_height: int, border: int,
                 max_overlap: float) -> np.ndarray:
    """Boolean mask of boxes tall enough, not cut by the frame border, not overlapping another box."""
    h, w = frame_shape
    heights = boxes[:, 3] - boxes[:, 1]
    inside = (boxes[:, 0] >= border) & (boxes[:, 1] >= border) & (boxes[:, 2] <= w - border) & (boxes[:, 3] <= h - border)
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    alone = iou.max(axis=1, initial=0.0) <= max_overlap
    return (heights >= min_height) & inside & alone


def link_tracks(detections_per_frame: list[tuple[int, np.ndarray, np.ndarray]], iou_threshold: float = 0.5
                ) -> list[MinedTrack]:
    """Greedy IoU linking of consecutive frames. Input: (frame index, boxes (N,4), clean mask (N,)) per frame."""
    tracks: list[MinedTrack] = []
    active: dict[int, MinedTrack] = {}
    prev_frame = None
    for frame_idx, boxes, clean in detections_per_frame:
        if prev_frame is not None and frame_idx != prev_frame + 1:
            active = {}
        prev_frame = frame_idx
        ids = list(active)
        last = np.array([active[i].boxes[-1] for i in ids], np.float32).reshape(-1, 4)
        iou = box_iou(last, boxes)
        new_active: dict[int, MinedTrack] = {}
        taken: set[int] = set()
        for flat in np.argsort(-iou, axis=None):
            r, c = divmod(int(flat), iou.shape[1]) if iou.size else (0, 0)
            if not iou.size or iou[r, c] < iou_threshold:
                break
            if ids[r] in new_active or c in taken:
                continue
            t = active[ids[r]]
            t.frames.append(frame_idx)
            t.boxes.append(boxes[c])
            t.clean.append(bool(clean[c]))
            new_active[ids[r]] = t
            taken.add(c)
        for c in range(len(boxes)):
            if c not in taken:
                t = MinedTrack(len(tracks), [frame_idx], [boxes[c]], [bool(clean[c])])
                tracks.append(t)
                new_active[t.track_id] = t
        active = new_active
    return tracks


def mine_video(video: str | Path, detector: Any, out: str | Path, min_track_length: int = 20,
               crops_per_track: int = 16, min_height: int = 64, test_fraction: float = 0.5,
               max_frames: Optional[int] = None, seed: int = 0,
               progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Detect people in ``video`` with ``detector`` (``.detect(frame_bgr) -> Detections``), link them into tracks
    and write a Market-1501-named folder to ``out``. Returns a summary (also written to ``out/mining.json``)."""
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ApnetError(f"cannot open video {str(video)!r}: missing file or unsupported codec")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    per_frame: list[tuple[int, np.ndarray, np.ndarray]] = []
    bar = tqdm(total=total or None, desc="detect", unit="frame")
    idx = 0
    frame_shape = (0, 0)
    while max_frames is None or idx < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        frame_shape = frame.shape[:2]
        det = detector.detect(frame)
        boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
        per_frame.append((idx, boxes, usable_boxes(boxes, frame_shape, min_height, 2, 0.05)))
        idx += 1
        bar.update(1)
        if progress:
            progress(idx, total)
    bar.close()
    cap.release()
    if idx == 0:
        raise ApnetError(f"video {str(video)!r} has no readable frames")

    tracks = [t for t in link_tracks(per_frame) if sum(t.clean) >= min_track_length]
    if len(tracks) < 4:
        raise ApnetError(f"only {len(tracks)} usable tracks found in {str(video)!r} (need at least 4); "
                         f"lower --min-track-length or --min-height, or use a longer video")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tracks))
    n_test = max(2, int(round(test_fraction * len(tracks))))
    test_ids = {tracks[i].track_id for i in order[:n_test]}

    out = Path(out)
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plan: list[tuple[int, str, int, int, np.ndarray]] = []  # frame, split, pid, cam, box
    for pid, t in enumerate(sorted(tracks, key=lambda t: t.track_id), start=1):
        clean_idx = [i for i, c in enumerate(t.clean) if c]
        half = len(clean_idx) // 2
        for part, cam in ((clean_idx[:half], 1), (clean_idx[half:], 2)):
            pick = np.linspace(0, len(part) - 1, num=min(len(part), crops_per_track // 2)).round().astype(int)
            for j in sorted(set(pick.tolist())):
                i = part[j]
                if t.track_id in test_ids:
                    split = "query" if cam == 2 else "bounding_box_test"
                else:
                    split = "bounding_box_train"
                plan.append((t.frames[i], split, pid, cam, t.boxes[i]))
    _write_crops(video, plan, out)
    summary = {
        "video": str(video),
        "frames": idx,
        "tracks": len(tracks),
        "train_ids": len(tracks) - len(test_ids),
        "test_ids": len(test_ids),
        "images": {s: sum(1 for p in plan if p[1] == s) for s in ("bounding_box_train", "query", "bounding_box_test")},
        "min_track_length": min_track_length,
        "min_height": min_height,
        "seed": seed,
    }
    (out / "mining.json").write_text(json.dumps(summary, indent=2))
    return summary


def _write_crops(video: str | Path, plan: list, out: Path) -> None:
    """Second pass over the video: cut and save the planned crops (BGR JPEG, Market-1501 names)."""
    import cv2

    by_frame: dict[int, list] = {}
    for item in plan:
        by_frame.setdefault(item[0], []).append(item)
    cap = cv2.VideoCapture(str(video))
    idx = 0
    last = max(by_frame) if by_frame else -1
    while idx <= last:
        ok, frame = cap.read()
        if not ok:
            break
        for frame_idx, split, pid, cam, box in by_frame.get(idx, []):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            crop = frame[max(y1, 0):y2, max(x1, 0):x2]
            if crop.size:
                cv2.imwrite(str(out / split / f"{pid:04d}_c{cam}s1_{frame_idx:06d}_00.jpg"), crop)
        idx += 1
    cap.release()
