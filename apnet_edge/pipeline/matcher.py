"""Cross-camera matcher: a bounded gallery of global identities, one-to-one assignment of new tracks, and revision
of provisional ids.

Only trustworthy tracks are matched: the run loop hands a track to :meth:`CrossCameraMatcher.assign` once it was seen
for ``min_track_frames`` frames and ``min_good_crops`` *good* crops of it were embedded (not truncated at the frame
border, re-ID crop quality >= ``min_crop_quality``; see :mod:`apnet_edge.pipeline.scheduler`), with the mean
embedding of its good crops only. A thin slice of a person entering at the border never creates or joins an identity.

Tracks waiting for a global id are matched together, once per iteration, against the identities they may join:
cosine similarity of L2-normalised embeddings, pairs below ``threshold`` forbidden, then Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) so two simultaneous tracks never take the same identity. A track left
unassigned founds a new identity. An identity held by a live track of a camera cannot be taken by another track of
that same camera while both are in view (one person is never twice in one view); it can be taken in another camera
(overlapping views). A holder the tracker has lost (last seen before the new track was first seen; the tracker keeps
it for its lost buffer) does not block: the new track may take the identity, and the lost one is unbound (matched
anew should it resume).
With a topology, a move from camera A to camera B is allowed only along a listed transit whose time window holds
the gap from the identity's last sighting to the track's first one (not to the time it is matched, which waits for a
good crop) and, when the transit names them, across its ``exit`` edges of A and
``entry`` edges of B: the identity's last box and the new track's first box touch those edges, or (with
``max_speed``) lie short of them by no more than the person can have walked in the time the transit leaves
(``max_speed`` body heights per second times the gap minus ``min_s``, plus half a height): a person the detector
missed for a few frames near the cut. A fitting transit adds its ``bonus`` (default ``topology_bonus``) to the
similarity before the threshold, in full when both boxes touch the edges and less the longer the walk it needs
(linearly to 0 at the limit), so a nearer candidate wins a close call. Re-entry into the same camera needs no topology
but must be physically possible (``max_speed``): the new track must start within ``max_speed * gap + 1`` body heights
of where the identity was last seen in that camera, unless both places are at the frame edge (the person left the
view and came back). A re-entry first seen within ``resume_s`` of the identity's last sighting there gets
``resume_bonus``: the tracker lost the person for a moment (occlusion, a missed detection, a jump) and started a new
track where the old one stopped, a fragment that the weak appearance of a small, just-occluded crop would otherwise
leave with a new id. Where and when tracks start and identities were last seen comes from :meth:`observe`, which the
run loop calls for every tracked box; without it these place checks are skipped.

A distinctive match may lie a little under the threshold: when a waiting track's best candidate (similarity plus
bonuses) falls short of ``threshold`` by at most ``distinct_below`` but beats every other identity it may join by at
least ``distinct_margin``, it joins that candidate (with at least two candidates; ``distinct_margin: 0``, the
default, turns this off). A look that fits one identity far better than all others is most likely that identity seen
from a less helpful side, which a fixed threshold alone would turn into a new id; a new person in the common black
jacket and jeans has several candidates close together and stays new. How far apart different people's scores lie
depends on the model, so the margin is tuned per model like the threshold: with OpenVINO's 0248 on vtest.avi, 0.3
made 3 joins, all right by eye; with the demo's site-trained APNet (whose different people score lower against each
other) the same margin made 4, of which 1 was right by the pseudo ground truth. Each assignment reports the
runner-up's score.

An identity keeps a bank of at most ``bank_size`` per-track embeddings (the good-crop mean of each track bound to
it, newest kept), and a track's similarity to an identity is the best over the bank: one person seen from the front
in one camera and from the side in another keeps both looks, and bad early crops never reach the bank. (Keeping the
looks of all live tracks as well, for a person seen by two cameras at once, cost cross-camera precision on vtest.avi:
0.32 -> 0.24 with four cameras, by the pseudo ground truth of the time; not re-measured against the people labelled by
eye, which put ``bank_size`` 3 above 1.) The resume rule uses the identity's last sighting in the new track's own
camera, not wherever it was seen last, so it also holds for a person seen in another camera at the same time.

Provisional ids: for ``revise_window_s`` seconds of stream time after a track got its id, each new good embedding of
the track is re-checked (:meth:`CrossCameraMatcher.revise`). When another identity it may join (same rules as
above) now beats its own identity by ``revise_margin`` (and clears ``threshold``), the track moves there; an
identity that this track founded and that no other track ever held is merged away (deleted). Moves are one-to-one
per round (best gain first; an identity receives at most one moved track per round). Each move is returned as a
:class:`Revision` (the run loop writes an ``identity_revised`` event); outputs written before a revision keep the
old id (the MOT global file carries the current id from then on).

The gallery is bounded: identities unseen for ``ttl_s`` are forgotten, and beyond ``gallery_size`` the least
recently seen identity without a live track goes first; memory is at most ``gallery_size * bank_size`` vectors.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from apnet_edge.pipeline.schema import MatcherConfig, TransitConfig

Key = tuple[str, int]  # (camera id, local track id)
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the camera's (roi-cut) frame
REACH_SLACK = 1.0  # body heights a re-entering track may start from the last place at zero gap (box jitter)
TRANSIT_SLACK = 0.5  # body heights a transit allows between the edges and the boxes at zero gap


@dataclass
class Identity:
    """A global identity: a bank of per-track embeddings (D,) L2-normalised, times in seconds of stream time."""

    gid: int
    first_seen: float
    last_seen: float
    last_camera: str
    founder: Optional[Key] = None  # the track that created it
    tracks: set[Key] = field(default_factory=set)  # live tracks bound to it
    cameras: set[str] = field(default_factory=set)
    bank: dict[Key, np.ndarray] = field(default_factory=dict)  # track -> its good-crop embedding, oldest first
    n_tracks: int = 0  # tracks ever bound to it
    last_in: dict[str, tuple[float, Optional[Box]]] = field(default_factory=dict)  # camera -> (time, box) of its
    #                                                   # last sighting there (one entry per camera it was seen in)

    @property
    def last_box(self) -> Optional[Box]:
        """Where it was last seen, in ``last_camera`` (None: unknown)."""
        return self.last_in.get(self.last_camera, (0.0, None))[1]

    @property
    def embedding(self) -> np.ndarray:
        """(D,) L2-normalised mean of the bank (a summary; matching uses the best bank entry)."""
        return _l2(np.mean(np.stack(list(self.bank.values())), axis=0))

    def similarity(self, emb: np.ndarray, exclude: Optional[Key] = None) -> float:
        """Best cosine similarity of ``emb`` (D,) L2-normalised to the bank, without ``exclude``; -inf if empty."""
        vecs = [v for k, v in self.bank.items() if k != exclude]
        return float(np.max(np.stack(vecs) @ emb)) if vecs else float("-inf")


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
    score: Optional[float] = None  # similarity + the place bonuses (transit, resume): what the threshold is held to
    runner_up: Optional[float] = None  # the next-best identity's score (None: no other candidate)
    distinct: bool = False  # joined under the threshold as a distinctive match (see the module docstring)


@dataclass(frozen=True)
class Revision:
    """A provisional track moved from identity ``gid_from`` to ``gid_to`` (``merged``: ``gid_from`` was deleted)."""

    camera_id: str
    track_id: int
    gid_from: int
    gid_to: int
    similarity: float  # to gid_to (best bank entry)
    previous_similarity: Optional[float]  # to gid_from without the track's own entry (None: nobody else there)
    merged: bool


def _l2(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class CrossCameraMatcher:
    """Global identities across cameras; see the module docstring for the rules."""

    def __init__(self, cfg: MatcherConfig) -> None:
        self.cfg = cfg
        self.gallery: dict[int, Identity] = {}
        self.bound: dict[Key, int] = {}
        self.bound_at: dict[Key, float] = {}  # live track -> stream time it got its (first) id
        self._dirty: set[Key] = set()  # provisional tracks with a new embedding since the last revise()
        self._next_gid = 1
        self.evicted = 0
        self.revised = 0
        self._transits: dict[tuple[str, str], list[TransitConfig]] = {}
        for t in cfg.topology:
            self._transits.setdefault((t.src, t.dst), []).append(t)
        self._first: dict[Key, tuple[Box, float]] = {}  # live track -> (first box, stream time)
        self._last: dict[Key, Box] = {}  # live track -> latest box
        self._last_t: dict[Key, float] = {}  # live track -> stream time of its latest box
        self.superseded = 0  # lost tracks whose identity a new track of their camera took over
        self._size: dict[str, tuple[int, int]] = {}  # camera -> frame (width, height) in pixels

    def observe(self, camera_id: str, track_id: int, box: Box, frame_size: tuple[int, int], now: float) -> None:
        """Track ``track_id`` of ``camera_id`` is at ``box`` (pixels of a frame (width, height)) at ``now`` (s)."""
        key = (camera_id, track_id)
        b = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        self._size[camera_id] = (int(frame_size[0]), int(frame_size[1]))
        self._first.setdefault(key, (b, now))
        self._last[key] = b
        self._last_t[key] = now

    def _edge_gaps(self, camera_id: str, box: Box) -> Optional[dict[str, float]]:
        """Pixels from ``box`` to each frame edge of ``camera_id`` beyond ``edge_margin`` (<= 0: touching it);
        None when the frame size is unknown."""
        size = self._size.get(camera_id)
        if size is None:
            return None
        mx, my = self.cfg.edge_margin * size[0], self.cfg.edge_margin * size[1]
        return {"left": box[0] - mx, "top": box[1] - my, "right": size[0] - mx - box[2],
                "bottom": size[1] - my - box[3]}

    def _edges(self, camera_id: str, box: Optional[Box]) -> set[str]:
        """Frame edges of ``camera_id`` that ``box`` touches (within ``edge_margin``); empty when unknown."""
        gaps = self._edge_gaps(camera_id, box) if box is not None else None
        return {e for e, g in gaps.items() if g <= 0} if gaps else set()

    def _edge_distance(self, camera_id: str, box: Box, edges: tuple[str, ...]) -> float:
        """Pixels from ``box`` to the nearest of ``edges`` of ``camera_id``'s frame (0 within ``edge_margin``, and
        when the frame size is unknown: no place check without :meth:`observe`)."""
        gaps = self._edge_gaps(camera_id, box)
        return max(min(gaps[e] for e in edges), 0.0) if gaps else 0.0

    def _transit_fit(self, ident: Identity, camera_id: str, t: TransitConfig,
                     first: Optional[tuple[Box, float]]) -> Optional[float]:
        """How well ``ident`` (last seen in ``t.src``) leaving across ``t.exit`` and the track first seen at ``first``
        (box, time) in ``camera_id`` coming in across ``t.entry`` fit: 1.0 when both boxes touch those edges, None
        when impossible. With ``max_speed``, a box short of its edge is possible when the walks from the last box to
        the exit edge and from the entry edge to the first box, in body heights, fit in ``max_speed`` times the time
        the transit leaves for them (gap minus ``min_s``) plus :data:`TRANSIT_SLACK` heights (a person the detector
        missed near the edge for a few frames); the fit falls linearly to 0 at that limit. Without ``max_speed`` both
        boxes must touch."""
        last = ident.last_box
        if self.cfg.max_speed <= 0:
            if t.exit and last is not None and not self._edges(ident.last_camera, last) & set(t.exit):
                return None
            if t.entry and first is not None and not self._edges(camera_id, first[0]) & set(t.entry):
                return None
            return 1.0
        walk_px, height = 0.0, 1.0
        if t.exit and last is not None:
            walk_px += self._edge_distance(ident.last_camera, last, t.exit)
            height = max(height, last[3] - last[1])
        if t.entry and first is not None:
            walk_px += self._edge_distance(camera_id, first[0], t.entry)
            height = max(height, first[0][3] - first[0][1])
        t_first = first[1] if first is not None else ident.last_seen
        reach = self.cfg.max_speed * max(t_first - ident.last_seen - t.min_s, 0.0) + TRANSIT_SLACK
        fit = 1.0 - walk_px / height / reach
        return fit if fit >= 0.0 else None

    def _reachable(self, last: Optional[Box], last_t: float, camera_id: str,
                   first: Optional[tuple[Box, float]]) -> bool:
        """Whether a track of ``camera_id`` first seen at ``first`` (box, time) can be a person last seen in that
        camera at box ``last`` at time ``last_t``."""
        if self.cfg.max_speed <= 0 or first is None or last is None:
            return True
        box, t0 = first
        if self._edges(camera_id, last) and self._edges(camera_id, box):
            return True  # left the view and came back
        gap = max(t0 - last_t, 0.0)
        height = max(last[3] - last[1], box[3] - box[1], 1.0)
        dist = float(np.hypot((box[0] + box[2] - last[0] - last[2]) / 2, (box[1] + box[3] - last[1] - last[3]) / 2))
        return dist / height <= self.cfg.max_speed * gap + REACH_SLACK

    def _lost_before(self, holder: Key, first: Optional[tuple[Box, float]]) -> bool:
        """Whether live track ``holder`` was last seen before a track first seen at ``first`` (box, time) (the tracker
        still keeps it in its lost buffer, but the two never were in view together); False when either is unknown."""
        last_t = self._last_t.get(holder)
        return first is not None and last_t is not None and last_t < first[1]

    def _prior(self, ident: Identity, camera_id: str, now: float, key: Optional[Key] = None) -> Optional[float]:
        """Similarity bonus for ``ident`` appearing in ``camera_id`` at ``now`` as track ``key``; None = not allowed."""
        first = self._first.get(key) if key is not None else None
        if any(k[0] == camera_id and not self._lost_before(k, first) for k in ident.tracks):
            return None  # held by a track of this camera that is in view with this one: one person, one track
        # from the identity's last sighting to the track's FIRST one, not to now: a track is matched only after its
        # first good crop, which may come seconds after it appeared (at the entry edge, where it was lost)
        gap = (first[1] if first is not None else now) - ident.last_seen
        # its last sighting in this camera (time, box): where a re-entry or a resumed fragment must start from
        here = ident.last_in.get(camera_id)
        # a fragment: first seen within resume_s after that sighting; not a track that was in view while the identity
        # still was (negative gap: two people side by side)
        resumes = here is not None and first is not None and 0.0 <= first[1] - here[0] <= self.cfg.resume_s
        if ident.last_camera == camera_id:
            if not self._reachable(here[1], here[0], camera_id, first):
                return None
            return self.cfg.resume_bonus if resumes else 0.0
        if resumes and self.cfg.resume_bonus > 0 and self._reachable(here[1], here[0], camera_id, first):
            return self.cfg.resume_bonus  # lost here a moment ago while also seen in another camera
        if not self._transits:
            return 0.0
        gap = max(gap, 0.0)
        best: Optional[float] = None  # the best-fitting transit's bonus
        for t in self._transits.get((ident.last_camera, camera_id), []):
            if not (t.min_s <= gap <= t.max_s or (ident.tracks and t.min_s == 0.0)):
                continue
            fit = self._transit_fit(ident, camera_id, t, first)
            if fit is not None:
                bonus = fit * (self.cfg.topology_bonus if t.bonus is None else t.bonus)
                best = bonus if best is None else max(best, bonus)
        return best

    def _similarities(self, q: np.ndarray, gids: list[int]) -> np.ndarray:
        """(N, G) best-of-bank cosine similarity of embeddings q (N, D) to identities ``gids``."""
        owners = [c for c, g in enumerate(gids) for _ in self.gallery[g].bank]
        bank = np.stack([v for g in gids for v in self.gallery[g].bank.values()])
        flat = q @ bank.T
        sim = np.full((len(q), len(gids)), -np.inf, np.float32)
        np.maximum.at(sim.T, np.asarray(owners), flat.T)
        return sim

    def assign(self, pending: list[tuple[str, int, np.ndarray]], now: float) -> list[Assignment]:
        """Give each pending (camera id, track id, embedding (D,)) a global id; ``now`` in seconds."""
        from scipy.optimize import linear_sum_assignment

        self.expire(now)
        pending = [(c, t, _l2(e)) for c, t, e in pending if (c, t) not in self.bound]
        if not pending:
            return []
        gids = [g for g, i in self.gallery.items() if i.bank]
        out: list[Assignment] = []
        taken: set[int] = set()
        if gids:
            sim = self._similarities(np.stack([e for _, _, e in pending]), gids)
            score = np.full_like(sim, -np.inf)
            top2: list[list[tuple[float, int]]] = []  # per row: its two best (similarity + bonus, col) it may join
            distinct: set[tuple[int, int]] = set()
            for r, (cam, _, _) in enumerate(pending):
                allowed: list[tuple[float, int]] = []  # (similarity + bonus, col) of the identities it may join
                for c, gid in enumerate(gids):
                    bonus = self._prior(self.gallery[gid], cam, now, (cam, pending[r][1]))
                    if bonus is not None:
                        allowed.append((float(sim[r, c] + bonus), c))
                        if sim[r, c] + bonus >= self.cfg.threshold:
                            score[r, c] = sim[r, c] + bonus
                top2.append(heapq.nlargest(2, allowed))
                if self.cfg.distinct_margin > 0 and len(allowed) > 1:
                    (s1, c1), (s2, _) = top2[r]
                    if self.cfg.threshold - self.cfg.distinct_below <= s1 < self.cfg.threshold \
                            and s1 - s2 >= self.cfg.distinct_margin:
                        score[r, c1] = s1
                        distinct.add((r, c1))
            big = 1e6
            cost = np.where(np.isfinite(score), -score, big)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if not np.isfinite(score[r, c]):
                    continue
                cam, tid, emb = pending[r]
                ident = self.gallery[gids[c]]
                runner_up = next((s for s, col in top2[r] if col != c), None)  # the best other candidate
                out.append(Assignment(cam, tid, ident.gid, False, float(sim[r, c]), ident.last_camera,
                                      float(now - ident.last_seen), float(score[r, c]), runner_up, (r, c) in distinct))
                self._bind(ident, cam, tid, emb, now)
                taken.add(r)
        for r, (cam, tid, emb) in enumerate(pending):
            if r in taken:
                continue
            ident = Identity(self._next_gid, now, now, cam, founder=(cam, tid))
            self._next_gid += 1
            self.gallery[ident.gid] = ident
            self._bind(ident, cam, tid, emb, now)
            out.append(Assignment(cam, tid, ident.gid, True))
        self._bound_size()
        return out

    def _bind(self, ident: Identity, cam: str, tid: int, emb: np.ndarray, now: float,
              bound_at: Optional[float] = None) -> None:
        """Track (cam, tid) takes ``ident`` at ``now`` with its good-crop embedding ``emb``. ``bound_at``: when it
        first got an id (a revision keeps it, so moving does not extend the track's provisional window); default now."""
        self._supersede(ident, cam)
        ident.tracks.add((cam, tid))
        ident.cameras.add(cam)
        ident.n_tracks += 1
        self.bound[(cam, tid)] = ident.gid
        self.bound_at[(cam, tid)] = now if bound_at is None else bound_at
        self.update(cam, tid, emb, now)
        self._dirty.discard((cam, tid))

    def _bank_put(self, ident: Identity, key: Key, emb: np.ndarray) -> None:
        """Track ``key``'s look becomes the identity's newest bank entry; the oldest go beyond ``bank_size``."""
        ident.bank.pop(key, None)
        ident.bank[key] = _l2(emb)  # newest last
        while len(ident.bank) > self.cfg.bank_size:
            del ident.bank[next(iter(ident.bank))]

    def update(self, camera_id: str, track_id: int, embedding: Optional[np.ndarray], now: float) -> None:
        """A bound track was seen at ``now`` (and maybe has a new good-crop embedding): refresh its identity."""
        key = (camera_id, track_id)
        gid = self.bound.get(key)
        ident = self.gallery.get(gid) if gid is not None else None
        if ident is None:
            return
        ident.last_seen = max(ident.last_seen, now)
        box = self._last.get(key, ident.last_box)  # unknown without observe(): keep the last known place
        ident.last_camera = camera_id
        ident.last_in[camera_id] = (now, box)
        if embedding is not None:
            self._bank_put(ident, key, embedding)
            if self.provisional(camera_id, track_id, now):
                self._dirty.add(key)

    def provisional(self, camera_id: str, track_id: int, now: float) -> bool:
        """Whether the track's id may still be revised at ``now``."""
        t0 = self.bound_at.get((camera_id, track_id))
        return t0 is not None and now - t0 <= self.cfg.revise_window_s

    def revise(self, now: float) -> list[Revision]:
        """Re-check provisional tracks with a new embedding since the last call; move those that now clearly belong
        to another identity (see the module docstring). Returns the moves."""
        dirty, self._dirty = self._dirty, set()
        cands: list[tuple[float, Key, int, float, Optional[float], np.ndarray]] = []
        for key in sorted(dirty):  # a fixed order: ties in gain must not depend on string hashing
            gid = self.bound.get(key)
            cur = self.gallery.get(gid) if gid is not None else None
            if cur is None or key not in cur.bank or not self.provisional(key[0], key[1], now):
                continue
            emb = cur.bank[key]
            own = cur.similarity(emb, exclude=key)
            for g, ident in self.gallery.items():
                if g == gid or not ident.bank:
                    continue
                bonus = self._prior(ident, key[0], now, key)
                if bonus is None:
                    continue
                s = ident.similarity(emb)
                if s + bonus >= self.cfg.threshold and s + bonus >= own + self.cfg.revise_margin:
                    cands.append((s + bonus - own, key, g, s, own if np.isfinite(own) else None, emb))
        out: list[Revision] = []
        moved: set[Key] = set()
        received: set[int] = set()
        for _gain, key, g, s, own, emb in sorted(cands, key=lambda c: -c[0]):
            if key in moved or g in received or g not in self.gallery or self.bound.get(key) not in self.gallery:
                continue
            target = self.gallery[g]
            if self._prior(target, key[0], now, key) is None:  # a track of this camera moved there this round
                continue
            gid_from = self.bound[key]
            old = self.gallery[gid_from]
            old.bank.pop(key, None)  # may be gone already (a move into `old` this round filled its bank)
            old.tracks.discard(key)
            merged = old.founder == key and old.n_tracks == 1
            if merged:
                del self.gallery[gid_from]
            self._bind(target, key[0], key[1], emb, now, bound_at=self.bound_at.get(key))
            moved.add(key)
            received.add(g)
            self.revised += 1
            out.append(Revision(key[0], key[1], gid_from, g, s, own, merged))
        return out

    def _supersede(self, ident: Identity, camera_id: str) -> None:
        """A new track of ``camera_id`` takes ``ident``: unbind the lost track of that camera still holding it (only a
        lost one can, see :meth:`_prior`); its bank entry stays, and should it resume it is matched anew."""
        for key in [k for k in ident.tracks if k[0] == camera_id]:
            ident.tracks.discard(key)
            self.bound.pop(key, None)
            self.bound_at.pop(key, None)
            self._dirty.discard(key)
            self.superseded += 1

    def release(self, camera_id: str, track_id: int) -> Optional[int]:
        """The track ended: unbind it; its identity stays in the gallery for re-entry. Returns the gid."""
        key = (camera_id, track_id)
        gid = self.bound.pop(key, None)
        self.bound_at.pop(key, None)
        self._dirty.discard(key)
        self._first.pop(key, None)
        self._last.pop(key, None)
        self._last_t.pop(key, None)
        if gid is not None and gid in self.gallery:
            self.gallery[gid].tracks.discard(key)
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
                self.bound_at.pop(key, None)
                self._dirty.discard(key)
            del self.gallery[ident.gid]
            self.evicted += 1
