"""Embedding scheduler: which tracks get a re-ID embedding this iteration, and each track's running embedding.

A track is embedded when it is new (never embedded), when a clearly better crop appears (quality above
``better_crop_ratio`` x its best so far), or when it has not been embedded for ``refresh_frames`` frames. At most
``budget_per_frame`` crops are chosen per iteration over all cameras (new tracks first, then better crops, then the
stalest), so re-ID cost stays bounded however crowded the scene is. Crop quality in [0, 1] is
``size * (0.5 if truncated at the border) * (1 - overlap with another person)``; crops below ``min_box_height`` or
overlapping more than ``max_overlap_iou`` are never embedded. A track's embedding is the quality-weighted mean of its
embeddings, L2-normalised.

A crop is *good* when it is not truncated at the frame border and its quality is at least ``good_quality`` (the
matcher's ``min_crop_quality``). Each track also keeps the quality-weighted mean of its good crops only
(:attr:`TrackEmbedding.good_embedding`): the cross-camera matcher matches and updates identities with that one, so a
thin slice of a person entering at the border never creates or joins an identity, nor pollutes one.

A tracker sometimes moves a track from one person to another (two people crossing). With ``switch_below`` > 0, a good
crop whose cosine similarity to the track's good-crop mean (of at least :data:`SWITCH_AFTER` crops) is under
``switch_below`` and, with ``switch_sigmas`` > 0, also under the track's own usual similarity (the mean of its folded
crops' similarities minus ``switch_sigmas`` standard deviations, floored at :data:`MIN_FIT_SD`; judged once
:data:`SWITCH_AFTER` of them were seen) is held back instead of folded in. ``switch_crops`` such crops in a row mean
the track now follows someone else: its good-crop mean restarts from them and :attr:`TrackEmbedding.switched` is set,
so the run loop unbinds the track from its identity and matches it anew. A crop that fits again drops the held ones
(an occlusion, a bad crop). The relative test keeps a model whose crops of one person scatter widely from seeing
switches everywhere, but not every model: on vtest.avi 31 of 35 detections were real with OpenVINO's 0248, none of
15 with the demo's site APNet (``scripts/pipeline_report.py --labels`` checks them). So the rule is off by default
(``switch_below: 0``) and the 0248 scene files turn it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from apnet_edge.mining import box_iou
from apnet_edge.pipeline.schema import ReidConfig

SWITCH_AFTER = 3  # good crops in a track's mean (and, with switch_sigmas, similarities seen) before judging a crop
MIN_FIT_SD = 0.05  # floor of the spread of a track's crop similarities (a track of near-identical crops)


def crop_quality(boxes: np.ndarray, frame_hw: tuple[int, int], cfg: ReidConfig) -> np.ndarray:
    """(N,) quality in [0, 1] of boxes (N,4) x1,y1,x2,y2 pixels in a frame of (height, width); 0 = never embed."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.float32)
    h, w = frame_hw
    heights = boxes[:, 3] - boxes[:, 1]
    size = np.clip(heights / float(cfg.ref_box_height), 0.0, 1.0)
    truncated = at_border(boxes, frame_hw, cfg.border_px)
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    overlap = iou.max(axis=1) if len(boxes) > 1 else np.zeros(len(boxes), np.float32)
    q = size * np.where(truncated, 0.5, 1.0) * (1.0 - overlap)
    q[(heights < cfg.min_box_height) | (overlap > cfg.max_overlap_iou)] = 0.0
    return q.astype(np.float32)


def at_border(boxes: np.ndarray, frame_hw: tuple[int, int], border_px: int) -> np.ndarray:
    """(N,) bool: boxes (N,4) x1,y1,x2,y2 within ``border_px`` of an edge of a (height, width) frame (truncated)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = frame_hw
    b = border_px
    return (boxes[:, 0] <= b) | (boxes[:, 1] <= b) | (boxes[:, 2] >= w - 1 - b) | (boxes[:, 3] >= h - 1 - b)


@dataclass
class TrackEmbedding:
    """Running embedding state of one local track (bounded: one vector and a few numbers)."""

    camera_id: str
    track_id: int
    first_frame: int
    frames_seen: int = 0
    last_embed_frame: int = -1
    best_quality: float = 0.0
    weight: float = 0.0
    good_count: int = 0  # embedded good crops (not truncated, quality >= the scheduler's good_quality)
    last_good_frame: int = -1
    switched: bool = False  # the good-crop mean restarted on another person (set by add, cleared by the run loop)
    _sum: Optional[np.ndarray] = field(default=None, repr=False)
    _good_sum: Optional[np.ndarray] = field(default=None, repr=False)
    _held: list[tuple[float, np.ndarray]] = field(default_factory=list, repr=False)  # (quality, (D,)) not fitting
    _fits: tuple[float, float, float] = (0.0, 0.0, 0.0)  # n, sum, sum of squares of the folded crops' similarities

    @property
    def embedding(self) -> Optional[np.ndarray]:
        """(D,) float32 L2-normalised quality-weighted mean embedding, or None before the first one."""
        if self._sum is None:
            return None
        n = float(np.linalg.norm(self._sum))
        return (self._sum / max(n, 1e-12)).astype(np.float32)

    @property
    def good_embedding(self) -> Optional[np.ndarray]:
        """(D,) float32 L2-normalised quality-weighted mean of the good crops only, or None before the first."""
        if self._good_sum is None:
            return None
        n = float(np.linalg.norm(self._good_sum))
        return (self._good_sum / max(n, 1e-12)).astype(np.float32)

    def switch_threshold(self, switch_below: float, switch_sigmas: float) -> Optional[float]:
        """Similarity to the good-crop mean under which a good crop does not fit the track; None: not judged yet."""
        if switch_below <= 0.0 or self.good_count < SWITCH_AFTER:
            return None
        if switch_sigmas <= 0.0:
            return switch_below
        n, total, squares = self._fits
        if n < SWITCH_AFTER:
            return None
        mean = total / n
        sd = max(float(np.sqrt(max(squares / n - mean * mean, 0.0))), MIN_FIT_SD)
        return min(switch_below, mean - switch_sigmas * sd)

    def add(self, emb: np.ndarray, quality: float, frame_index: int, good: bool = False, switch_below: float = 0.0,
            switch_crops: int = 2, switch_sigmas: float = 0.0) -> None:
        """Fold in one L2-normalised embedding (D,) with weight ``quality``; ``good``: also into the good mean, unless
        it does not fit that mean (see the module docstring and :meth:`switch_threshold`)."""
        q = max(float(quality), 1e-3)
        e = np.asarray(emb, np.float32).reshape(-1)
        self.last_embed_frame = frame_index
        self.best_quality = max(self.best_quality, float(quality))
        judged = good and switch_below > 0.0 and self.good_count >= SWITCH_AFTER
        fit = float(self.good_embedding @ e) if judged else None
        limit = self.switch_threshold(switch_below, switch_sigmas) if fit is not None else None
        if fit is not None and limit is not None and fit < limit:
            self._held.append((q, e))
            if len(self._held) < switch_crops:
                return  # held back: one crop that does not fit is not yet a switch
            self._good_sum = sum(hq * he for hq, he in self._held)
            self._sum = self._good_sum.copy()
            self.weight = sum(hq for hq, _ in self._held)
            self.good_count = len(self._held)
            self.last_good_frame = frame_index
            self._held, self._fits, self.switched = [], (0.0, 0.0, 0.0), True
            return
        if fit is not None:  # it fits: held crops before it were an occlusion or a bad crop
            self._held = []
            n, total, squares = self._fits
            self._fits = (n + 1, total + fit, squares + fit * fit)
        self._sum = q * e if self._sum is None else self._sum + q * e
        self.weight += q
        if good:
            self._good_sum = q * e if self._good_sum is None else self._good_sum + q * e
            self.good_count += 1
            self.last_good_frame = frame_index


@dataclass(frozen=True)
class EmbedRequest:
    """One crop to embed: camera, local track, frame index, box x1,y1,x2,y2 pixels, quality, reason."""

    camera_id: str
    track_id: int
    frame_index: int
    box: tuple[float, float, float, float]
    quality: float
    reason: str  # new | better | refresh
    truncated: bool = False  # the box touches the frame border (within reid.border_px)


class EmbeddingScheduler:
    """Keeps :class:`TrackEmbedding` per (camera, track) and picks crops under a per-iteration budget."""

    def __init__(self, cfg: ReidConfig, good_quality: float = 0.0) -> None:
        self.cfg = cfg
        self.good_quality = float(good_quality)  # a crop not truncated and at least this good is "good"
        self.tracks: dict[tuple[str, int], TrackEmbedding] = {}

    def observe(self, camera_id: str, frame_index: int, track_ids: list[int], boxes: np.ndarray,
                frame_hw: tuple[int, int], quality: Optional[np.ndarray] = None) -> list[EmbedRequest]:
        """Record one camera frame's tracks; return the candidate crops (not yet budgeted). ``quality``: the
        boxes' :func:`crop_quality` when the caller already has it (computed here otherwise)."""
        q = crop_quality(boxes, frame_hw, self.cfg) if quality is None else quality
        cut = at_border(boxes, frame_hw, self.cfg.border_px)
        out: list[EmbedRequest] = []
        for tid, box, qi, ci in zip(track_ids, np.asarray(boxes).reshape(-1, 4), q, cut):
            st = self.tracks.get((camera_id, tid))
            if st is None:
                st = self.tracks[(camera_id, tid)] = TrackEmbedding(camera_id, tid, frame_index)
            st.frames_seen += 1
            if qi <= 0.0:
                continue
            reason = None
            if st.last_embed_frame < 0:
                reason = "new"
            elif qi > st.best_quality * self.cfg.better_crop_ratio:
                reason = "better"
            elif frame_index - st.last_embed_frame >= self.cfg.refresh_frames:
                reason = "refresh"
            if reason:
                out.append(EmbedRequest(camera_id, tid, frame_index, tuple(float(v) for v in box),  # type: ignore[arg-type]
                                        float(qi), reason, bool(ci)))
        return out

    def select(self, candidates: list[EmbedRequest]) -> list[EmbedRequest]:
        """At most ``budget_per_frame`` requests: new tracks, then better crops, then the stalest refreshes."""
        rank = {"new": 0, "better": 1, "refresh": 2}

        def key(r: EmbedRequest) -> tuple:
            st = self.tracks[(r.camera_id, r.track_id)]
            return (rank[r.reason], st.last_embed_frame - r.frame_index, -r.quality)

        return sorted(candidates, key=key)[: self.cfg.budget_per_frame]

    def update(self, requests: list[EmbedRequest], embeddings: np.ndarray) -> None:
        """Fold the re-ID output (N, D) for ``requests`` into the tracks' running embeddings."""
        for r, e in zip(requests, embeddings):
            st = self.tracks.get((r.camera_id, r.track_id))
            if st is not None:
                st.add(e, r.quality, r.frame_index, good=not r.truncated and r.quality >= self.good_quality,
                       switch_below=self.cfg.switch_below, switch_crops=self.cfg.switch_crops,
                       switch_sigmas=self.cfg.switch_sigmas)

    def drop(self, camera_id: str, track_id: int) -> Optional[TrackEmbedding]:
        """Forget an ended track (keeps memory flat); returns its last state."""
        return self.tracks.pop((camera_id, track_id), None)
