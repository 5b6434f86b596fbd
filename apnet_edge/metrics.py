"""Re-ID ranking metrics: distances, CMC / mAP / mINP, k-reciprocal re-ranking, multi-trial summaries.

numpy only (no torch, no scipy): this module runs on edge devices.

Protocol of :func:`evaluate_rank` (as in APNet / reid-strong-baseline / torchreid, APNET.md section 3): for each
query the gallery is sorted by distance (stable sort, ties keep gallery order), gallery items with the same
person ID *and* the same camera as the query are removed, queries left without any true match are skipped
(and counted), CMC is the cumulative hit at the first true match averaged over valid queries, AP is the mean
of the precision at each true match, and mINP is the mean over valid queries of
``number of true matches / rank of the hardest (last) true match``.
All metric values are fractions in [0, 1], not percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["ReidMetrics", "cmc_trials", "evaluate_rank", "pairwise_distance", "re_ranking"]

# Elements per working block (rows x columns) for the chunked computations: ~32 MB per int64 array.
_BLOCK = 1 << 22


def pairwise_distance(qf: np.ndarray, gf: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Distance matrix (Q, G) between query features (Q, D) and gallery features (G, D).

    ``"cosine"``: ``1 - cos(q, g)`` of the L2-normalised rows, in [0, 2] (an all-zero row has distance 1 to
    everything). ``"euclidean"``: plain Euclidean distance of the rows as given (no normalisation), >= 0.
    float32 inputs give a float32 result, float64 inputs a float64 one.
    """
    qf = np.asarray(qf)
    gf = np.asarray(gf)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D) with the same D, found {qf.shape} and {gf.shape}")
    dtype = np.result_type(qf.dtype, gf.dtype, np.float32)
    qf = qf.astype(dtype, copy=False)
    gf = gf.astype(dtype, copy=False)
    if metric == "cosine":
        qn = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gn = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
        return (1.0 - qn @ gn.T).astype(dtype, copy=False)
    if metric == "euclidean":
        sq = (qf * qf).sum(1)[:, None] + (gf * gf).sum(1)[None, :] - 2.0 * (qf @ gf.T)
        return np.sqrt(np.maximum(sq, 0.0)).astype(dtype, copy=False)
    raise ValueError(f"metric must be 'cosine' or 'euclidean', found {metric!r}")


@dataclass(frozen=True, eq=False)
class ReidMetrics:
    """Standard re-ID metrics of one query/gallery split; every value is a fraction in [0, 1] (not percent).

    ``cmc[k]`` is the fraction of valid queries whose first true match is within the top ``k + 1``
    (shape ``(max_rank,)``). Queries without a true match in the gallery are skipped:
    ``num_queries = num_valid_queries + num_skipped_queries``.
    """

    mAP: float
    mINP: float
    cmc: np.ndarray
    num_queries: int
    num_valid_queries: int
    num_skipped_queries: int

    def __post_init__(self) -> None:
        cmc = np.array(self.cmc, dtype=np.float64).reshape(-1)
        cmc.setflags(write=False)
        object.__setattr__(self, "cmc", cmc)

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based), a fraction; ValueError if ``k`` is beyond ``max_rank``."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank {k} is outside 1..{len(self.cmc)}; evaluate with max_rank >= {k}")
        return float(self.cmc[k - 1])

    @property
    def rank1(self) -> float:
        return self.rank(1)

    @property
    def rank5(self) -> float:
        return self.rank(5)

    @property
    def rank10(self) -> float:
        return self.rank(10)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: mAP, mINP, rank1/5/10 (fractions 0..1, ranks beyond max_rank left out),
        the full ``cmc`` list, and the query counts."""
        out: dict[str, Any] = {"mAP": float(self.mAP), "mINP": float(self.mINP)}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                out[f"rank{k}"] = float(self.cmc[k - 1])
        out.update({
            "cmc": [float(v) for v in self.cmc],
            "num_queries": int(self.num_queries),
            "num_valid_queries": int(self.num_valid_queries),
            "num_skipped_queries": int(self.num_skipped_queries),
        })
        return out


def _stable_argsort_rows(d: np.ndarray) -> np.ndarray:
    """Row-wise stable argsort of a 2-D array (ties keep column order).

    A fast unstable argsort, then only the runs of tied values are re-ordered by column index (a full
    stable sort is ~6x slower and float32 distances over a large gallery nearly always contain ties).
    """
    order = np.argsort(d, axis=1)
    s = np.take_along_axis(d, order, axis=1)
    eq = s[:, 1:] == s[:, :-1]  # eq[r, c]: sorted items c and c + 1 are tied
    if not eq.any():
        return order
    member = np.zeros(s.shape, dtype=bool)
    member[:, 1:] = eq
    member[:, :-1] |= eq
    r, c = np.nonzero(member)  # row-major: runs are contiguous in this list
    new_run = np.ones(len(r), dtype=bool)
    new_run[1:] = ~((r[1:] == r[:-1]) & (c[1:] == c[:-1] + 1) & eq[r[1:], np.maximum(c[1:] - 1, 0)])
    run = np.cumsum(new_run)
    cols = order[r, c]
    order[r, c] = cols[np.lexsort((cols, run))]
    return order


def evaluate_rank(distmat: np.ndarray, q_pids: Sequence[Any], g_pids: Sequence[Any], q_camids: Sequence[Any],
                  g_camids: Sequence[Any], max_rank: int = 50) -> ReidMetrics:
    """Standard single-query re-ID evaluation of a (Q, G) distance matrix (smaller = more similar).

    ``q_pids``/``q_camids`` have length Q, ``g_pids``/``g_camids`` length G. Same-ID same-camera gallery items
    are removed per query; queries with no true match left are skipped. ``cmc`` always has ``max_rank``
    entries: when fewer than ``max_rank`` gallery items remain the curve is continued with its final value
    (torchreid truncates it instead; the values it does report are identical).
    Raises ValueError when no query has a true match in the gallery.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids).reshape(-1), np.asarray(g_pids).reshape(-1)
    q_camids, g_camids = np.asarray(q_camids).reshape(-1), np.asarray(g_camids).reshape(-1)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), found shape {distmat.shape}")
    nq, ng = distmat.shape
    if len(q_pids) != nq or len(q_camids) != nq or len(g_pids) != ng or len(g_camids) != ng:
        raise ValueError(
            f"distmat is {distmat.shape} but got {len(q_pids)} query pids, {len(q_camids)} query camids, "
            f"{len(g_pids)} gallery pids and {len(g_camids)} gallery camids; they must match its rows/columns")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, found {max_rank}")

    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    ranks = np.arange(max_rank)
    rows = max(1, _BLOCK // max(ng, 1))
    for a in range(0, nq, rows):
        b = min(a + rows, nq)
        order = _stable_argsort_rows(distmat[a:b])  # (R, G) gallery indices, nearest first
        match = g_pids[order] == q_pids[a:b, None]
        keep = ~(match & (g_camids[order] == q_camids[a:b, None]))
        match &= keep  # true matches that count
        num_rel = match.sum(1)
        valid = num_rel > 0
        if not valid.any():
            continue
        match, keep, num_rel = match[valid], keep[valid], num_rel[valid]
        kept_rank = np.cumsum(keep, axis=1, dtype=np.int32)  # 1-based rank among the kept gallery items
        hits = np.cumsum(match, axis=1, dtype=np.int32)  # true matches seen so far
        # AP: mean over true matches of precision = hits / rank at that match.
        ap = np.where(match, hits / np.maximum(kept_rank, 1), 0.0).sum(1) / num_rel
        # CMC: position (0-based, among kept items) of the first true match.
        first = kept_rank[np.arange(len(match)), match.argmax(1)] - 1
        cmc_sum += (ranks[None, :] >= first[:, None]).sum(0)
        # INP: num_rel / rank of the last true match.
        last = match.shape[1] - 1 - match[:, ::-1].argmax(1)
        inp = num_rel / kept_rank[np.arange(len(match)), last]
        ap_sum += float(ap.sum())
        inp_sum += float(inp.sum())
        num_valid += int(valid.sum())
    if num_valid == 0:
        raise ValueError(f"none of the {nq} queries has a true match in the gallery (other than same-camera "
                         f"images of the same ID); check the query/gallery pids and camids")
    return ReidMetrics(mAP=ap_sum / num_valid, mINP=inp_sum / num_valid, cmc=cmc_sum / num_valid,
                       num_queries=nq, num_valid_queries=num_valid, num_skipped_queries=nq - num_valid)


def cmc_trials(results: Sequence[ReidMetrics]) -> dict[str, Any]:
    """Summary over several trials (e.g. VIPeR's 10 random splits), values as fractions 0..1.

    Returns ``{"mAP"|"mINP"|"rank1"|"rank5"|"rank10": {"mean", "std", "values"}, "cmc": mean curve (list),
    "num_trials": n}``; ``std`` is the sample standard deviation (ddof=1; 0.0 for one trial) and ``values``
    keeps the per-trial numbers in order. Ranks beyond the shortest ``max_rank`` are left out.
    """
    results = list(results)
    if not results:
        raise ValueError("cmc_trials needs at least one ReidMetrics result")
    n_rank = min(len(r.cmc) for r in results)
    per: dict[str, list[float]] = {"mAP": [float(r.mAP) for r in results],
                                   "mINP": [float(r.mINP) for r in results]}
    for k in (1, 5, 10):
        if k <= n_rank:
            per[f"rank{k}"] = [float(r.cmc[k - 1]) for r in results]
    out: dict[str, Any] = {}
    for key, values in per.items():
        arr = np.asarray(values, dtype=np.float64)
        out[key] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                    "values": values}
    out["cmc"] = [float(v) for v in np.mean([r.cmc[:n_rank] for r in results], axis=0)]
    out["num_trials"] = len(results)
    return out


# --------------------------------------------------------------------------------------------------- re-ranking
def _ragged_gather(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the ranges ``[starts[i], starts[i] + lengths[i])`` and, for each, its range number i."""
    lengths = lengths.astype(np.int64)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.cumsum(lengths) - lengths
    flat = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets, lengths) + np.repeat(starts, lengths)
    return flat, owner


def re_ranking(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of distance matrices; returns the new (Q, G) distance.

    Inputs are distances (not features): ``q_g`` (Q, G), ``q_q`` (Q, Q), ``g_g`` (G, G). Follows the authors'
    released Python code (the version taking distance matrices, used by reid-strong-baseline/APNet):
    distances are squared and each column of the joint (Q+G) matrix divided by its maximum; k-reciprocal
    sets of size ``k1`` expanded by the ``k1/2`` rule (overlap > 2/3), Gaussian-weighted, query-expanded
    over ``k2`` neighbours; final = ``(1 - lambda) * Jaccard + lambda * normalised squared distance``.
    Neighbour ranking uses a stable order (ties broken by index). Memory stays O((Q+G) * k1 * k2) instead
    of the reference's dense (Q+G)^2 matrices; result is float32.
    """
    q_g, q_q, g_g = np.asarray(q_g), np.asarray(q_q), np.asarray(g_g)
    nq, ng = q_g.shape if q_g.ndim == 2 else (-1, -1)
    if q_g.ndim != 2 or q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(f"re_ranking needs q_g (Q, G), q_q (Q, Q), g_g (G, G); found {q_g.shape}, {q_q.shape}, "
                         f"{g_g.shape}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"need k1 >= 1, k2 >= 1, 0 <= lambda_value <= 1; found {k1}, {k2}, {lambda_value}")
    n = nq + ng
    if nq == 0 or ng == 0:
        return np.zeros((nq, ng), np.float32)

    def raw_rows(a: int, b: int) -> np.ndarray:
        """Rows a..b of the transposed joint matrix (row i = column i of [[q_q, q_g], [q_g.T, g_g]])."""
        parts = []
        if a < nq:
            e = min(b, nq)
            parts.append(np.concatenate([q_q[:, a:e].T, q_g[a:e]], axis=1))
        if b > nq:
            s = max(a, nq)
            parts.append(np.concatenate([q_g[:, s - nq:b - nq].T, g_g[:, s - nq:b - nq].T], axis=1))
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    def squared(x: np.ndarray) -> np.ndarray:
        return np.power(x, 2).astype(np.float32)

    # Pass 1: per row, the max of the squared distances and the first K neighbours in stable order.
    kf = min(k1 + 1, n)
    kk = min(max(k1 + 1, k2), n)
    colmax = np.empty(n, np.float32)
    top = np.empty((n, kk), np.int64)
    rows = max(1, _BLOCK // n)
    index = np.arange(n, dtype=np.int64)
    for a in range(0, n, rows):
        b = min(a + rows, n)
        d = squared(raw_rows(a, b))
        cm = d.max(1)
        colmax[a:b] = np.where(cm > 0, cm, np.float32(1.0))  # an all-zero column stays all zero
        d = d / colmax[a:b, None]
        # Non-negative float32 bits order like the values; (bits, index) keys are unique => stable top-k.
        keys = np.maximum(d, 0).view(np.int32).astype(np.int64) * n + index[None, :]
        part = np.argpartition(keys, kk - 1, axis=1)[:, :kk] if kk < n else np.broadcast_to(index, keys.shape)
        part_keys = np.take_along_axis(keys, part, axis=1)
        top[a:b] = np.take_along_axis(part, np.argsort(part_keys, axis=1), axis=1)

    def dist_at(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Normalised squared distance of row i, column j of the (transposed) joint matrix."""
        out = np.empty(len(i), dtype=np.float32)
        qi, qj = i < nq, j < nq
        for m, src, r, c in ((qi & qj, q_q, j, i), (qi & ~qj, q_g, i, j - nq), (~qi & qj, q_g, j, i - nq),
                             (~qi & ~qj, g_g, j - nq, i - nq)):
            out[m] = squared(src[r[m], c[m]])
        return out / colmax[i]

    # Pass 2: k-reciprocal sets R(i, k1) and R(c, k1/2) as masks over the forward neighbour lists.
    kh = min(int(np.around(k1 / 2.0)) + 1, n)
    fwd, half = top[:, :kf], top[:, :kh]
    recip = np.empty((n, kf), bool)
    recip_half = np.empty((n, kh), bool)
    rows = max(1, _BLOCK // (kf * kf * 8))
    for a in range(0, n, rows):
        b = min(a + rows, n)
        me = index[a:b, None, None]
        recip[a:b] = (fwd[fwd[a:b]] == me).any(-1)
        recip_half[a:b] = (half[half[a:b]] == me).any(-1)

    # Expansion: add R(c, k1/2) of each c in R(i, k1) when more than 2/3 of it lies in R(i, k1); weights
    # exp(-d) normalised per row. V is kept as COO triplets (row, col, value) sorted by row then col.
    v_rows, v_cols, v_vals = [], [], []
    sentinel = n
    for a in range(0, n, rows):
        b = min(a + rows, n)
        r_set = np.where(recip[a:b], fwd[a:b], -1)  # (R, kf), -1 = not in the set
        cand_sets = half[fwd[a:b]]  # (R, kf, kh)
        cand_mask = recip_half[fwd[a:b]]
        inside = (cand_sets[..., None] == r_set[:, None, None, :]).any(-1) & cand_mask
        accept = recip[a:b] & (inside.sum(-1) > 2.0 / 3.0 * cand_mask.sum(-1))
        expand = np.where(cand_mask & accept[..., None], cand_sets, sentinel).reshape(b - a, -1)
        members = np.sort(np.concatenate([np.where(r_set >= 0, r_set, sentinel), expand], axis=1), axis=1)
        first = np.ones_like(members, dtype=bool)
        first[:, 1:] = members[:, 1:] != members[:, :-1]
        r_idx, c_pos = np.nonzero(first & (members != sentinel))
        i_glob = r_idx + a
        cols = members[r_idx, c_pos]
        w = np.exp(-dist_at(i_glob, cols))
        sums = np.bincount(r_idx, weights=w, minlength=b - a)
        v_rows.append(i_glob)
        v_cols.append(cols)
        v_vals.append((w / sums[r_idx]).astype(np.float32))
    vr, vc, vv = np.concatenate(v_rows), np.concatenate(v_cols), np.concatenate(v_vals)

    def csr_ptr(r: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))]).astype(np.int64)

    # Local query expansion: V_qe[i] = mean of V over the k2 nearest neighbours of i (i included).
    if k2 != 1:
        ptr = csr_ptr(vr)
        nb = top[:, :k2]
        new_r, new_c, new_v = [], [], []
        rows = max(1, _BLOCK // max(1, k2 * int(np.diff(ptr).max())))
        for a in range(0, n, rows):
            b = min(a + rows, n)
            nbs = nb[a:b].reshape(-1)
            flat, owner = _ragged_gather(ptr[nbs], np.diff(ptr)[nbs])
            i_loc = owner // nb.shape[1]
            keys, inv = np.unique(i_loc * n + vc[flat], return_inverse=True)
            sums = np.bincount(inv.reshape(-1), weights=vv[flat], minlength=len(keys))
            new_r.append(keys // n + a)
            new_c.append(keys % n)
            new_v.append((sums / nb.shape[1]).astype(np.float32))
        vr, vc, vv = np.concatenate(new_r), np.concatenate(new_c), np.concatenate(new_v)

    # Jaccard distance of each query to every image: 1 - sum_k min(V_ik, V_jk) / sum_k max(V_ik, V_jk),
    # computed as in the reference: m = sum_k min(...), jaccard = 1 - m / (2 - m) (rows of V sum to 1).
    ptr = csr_ptr(vr)
    by_col = np.argsort(vc, kind="stable")
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(vc, minlength=n))]).astype(np.int64)
    col_rows, col_vals = vr[by_col], vv[by_col]
    out = np.empty((nq, ng), np.float32)
    rows = max(1, min(nq, _BLOCK // n))
    for a in range(0, nq, rows):
        b = min(a + rows, nq)
        ent = np.arange(ptr[a], ptr[b])
        flat, owner = _ragged_gather(col_ptr[vc[ent]], np.diff(col_ptr)[vc[ent]])
        src = ent[owner]
        mins = np.minimum(vv[src], col_vals[flat])
        tmin = np.bincount((vr[src] - a) * n + col_rows[flat], weights=mins, minlength=(b - a) * n)
        tmin = tmin.reshape(b - a, n)[:, nq:].astype(np.float32)
        jaccard = 1.0 - tmin / (2.0 - tmin)
        orig = squared(q_g[a:b]) / colmax[a:b, None]
        out[a:b] = jaccard * (1.0 - lambda_value) + orig * lambda_value
    return out
