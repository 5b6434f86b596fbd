"""Cross-camera matcher: a bounded gallery of global identities and one-to-one assignment of new tracks.

Tracks waiting for a global id are matched together, once per iteration, against the identities they may join:
cosine similarity of L2-normalised embeddings, pairs below ``threshold`` forbidden, then Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) so two simultaneous tracks never take the same identity. A track left
unassigned founds a new identity. An identity held by a live track of a camera cannot be taken by another track of
that same camera (one person is never twice in one view); it can be taken in another camera (overlapping views).
With a topology, a move from camera A to camera B is allowed only along a listed transit whose time window holds
the gap since the identity was last seen (a fitting transit adds ``topology_bonus``); re-entry into the same camera
is always allowed. The gallery is bounded: identities unseen for ``ttl_s`` are forgotten, and beyond
``gallery_size`` the least recently seen identity without a live track goes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from apnet_edge.pipeline.schema import MatcherConfig

Key = tuple[str, int]  # (camera id, local track id)


@dataclass
class Identity:
    """A global identity: embedding (D,) L2-normalised, times in seconds of stream time."""

    gid: int
    embedding: np.ndarray
    first_seen: float
    last_seen: float
    last_camera: str
    tracks: set[Key] = field(default_factory=set)  # live tracks bound to it
    cameras: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Assignment:
    """The outcome for one pending track: its global id, whether it is new, and the match evidence."""

    camera_id: str
    track_id: int
    gid: int
    created: bool
    similarity: Optional[float] = None  # cosine similarity to the identity (None when created)
    from_camera: Optional[str] = None  # the identity's last camera before this track
    gap_s: Optional[float] = None  # seconds since the identity was last seen


def _l2(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class CrossCameraMatcher:
    """Global identities across cameras; see the module docstring for the rules."""

    def __init__(self, cfg: MatcherConfig) -> None:
        self.cfg = cfg
        self.gallery: dict[int, Identity] = {}
        self.bound: dict[Key, int] = {}
        self._next_gid = 1
        self.evicted = 0
        self._transits: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for t in cfg.topology:
            self._transits.setdefault((t.src, t.dst), []).append((t.min_s, t.max_s))

    def _prior(self, ident: Identity, camera_id: str, now: float) -> Optional[float]:
        """Similarity bonus for ``ident`` appearing in ``camera_id`` at ``now``; None = not allowed."""
        if any(k[0] == camera_id for k in ident.tracks):
            return None
        if not self._transits or ident.last_camera == camera_id:
            return 0.0
        gap = now - ident.last_seen
        for lo, hi in self._transits.get((ident.last_camera, camera_id), []):
            if lo <= gap <= hi or (ident.tracks and lo == 0.0):
                return self.cfg.topology_bonus
        return None

    def assign(self, pending: list[tuple[str, int, np.ndarray]], now: float) -> list[Assignment]:
        """Give each pending (camera id, track id, embedding (D,)) a global id; ``now`` in seconds."""
        from scipy.optimize import linear_sum_assignment

        self.expire(now)
        pending = [(c, t, _l2(e)) for c, t, e in pending if (c, t) not in self.bound]
        if not pending:
            return []
        gids = list(self.gallery)
        out: list[Assignment] = []
        taken: set[int] = set()
        if gids:
            q = np.stack([e for _, _, e in pending])
            g = np.stack([self.gallery[i].embedding for i in gids])
            sim = q @ g.T
            score = np.full_like(sim, -np.inf)
            for r, (cam, _, _) in enumerate(pending):
                for c, gid in enumerate(gids):
                    bonus = self._prior(self.gallery[gid], cam, now)
                    if bonus is not None and sim[r, c] >= self.cfg.threshold:
                        score[r, c] = sim[r, c] + bonus
            big = 1e6
            cost = np.where(np.isfinite(score), -score, big)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if not np.isfinite(score[r, c]):
                    continue
                cam, tid, emb = pending[r]
                ident = self.gallery[gids[c]]
                out.append(Assignment(cam, tid, ident.gid, False, float(sim[r, c]), ident.last_camera,
                                      float(now - ident.last_seen)))
                self._bind(ident, cam, tid, emb, now)
                taken.add(r)
        for r, (cam, tid, emb) in enumerate(pending):
            if r in taken:
                continue
            ident = Identity(self._next_gid, emb, now, now, cam)
            self._next_gid += 1
            self.gallery[ident.gid] = ident
            self._bind(ident, cam, tid, emb, now)
            out.append(Assignment(cam, tid, ident.gid, True))
        self._bound_size()
        return out

    def _bind(self, ident: Identity, cam: str, tid: int, emb: np.ndarray, now: float) -> None:
        ident.tracks.add((cam, tid))
        ident.cameras.add(cam)
        self.bound[(cam, tid)] = ident.gid
        self.update(cam, tid, emb, now)

    def update(self, camera_id: str, track_id: int, embedding: Optional[np.ndarray], now: float) -> None:
        """A bound track was seen at ``now`` (and maybe re-embedded): refresh its identity."""
        gid = self.bound.get((camera_id, track_id))
        ident = self.gallery.get(gid) if gid is not None else None
        if ident is None:
            return
        ident.last_seen = max(ident.last_seen, now)
        ident.last_camera = camera_id
        if embedding is not None:
            m = self.cfg.identity_momentum
            ident.embedding = _l2(m * ident.embedding + (1.0 - m) * _l2(embedding))

    def release(self, camera_id: str, track_id: int) -> Optional[int]:
        """The track ended: unbind it; its identity stays in the gallery for re-entry. Returns the gid."""
        gid = self.bound.pop((camera_id, track_id), None)
        if gid is not None and gid in self.gallery:
            self.gallery[gid].tracks.discard((camera_id, track_id))
        return gid

    def gid_of(self, camera_id: str, track_id: int) -> Optional[int]:
        return self.bound.get((camera_id, track_id))

    def expire(self, now: float) -> None:
        """Forget identities without live tracks that were last seen more than ``ttl_s`` ago."""
        old = [g for g, i in self.gallery.items() if not i.tracks and now - i.last_seen > self.cfg.ttl_s]
        for g in old:
            del self.gallery[g]
        self.evicted += len(old)

    def _bound_size(self) -> None:
        excess = len(self.gallery) - self.cfg.gallery_size
        if excess <= 0:
            return
        order = sorted(self.gallery.values(), key=lambda i: (bool(i.tracks), i.last_seen))
        for ident in order[:excess]:
            for key in list(ident.tracks):
                self.bound.pop(key, None)
            del self.gallery[ident.gid]
            self.evicted += 1
