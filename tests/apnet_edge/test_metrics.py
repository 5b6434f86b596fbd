"""Re-ID metrics: evaluate_rank against a plain reference, a hand-computed case, distances, re-ranking."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from apnet_edge.metrics import ReidMetrics, cmc_trials, evaluate_rank, pairwise_distance, re_ranking


# ----------------------------------------------------------------------------------------------- references
def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Plain loops, torchreid-style: returns (mAP, mINP, cmc, num_valid)."""
    aps, inps, cmcs = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        hits = []
        for j in order:
            if g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                continue  # junk: same ID, same camera
            hits.append(1 if g_pids[j] == q_pids[i] else 0)
        if sum(hits) == 0:
            continue
        cmc = np.zeros(max_rank)
        first = hits.index(1)
        cmc[first:] = 1
        cmcs.append(cmc)
        found, precisions, last = 0, [], 0
        for r, h in enumerate(hits, start=1):
            if h:
                found += 1
                precisions.append(found / r)
                last = r
        aps.append(sum(precisions) / found)
        inps.append(found / last)
    return float(np.mean(aps)), float(np.mean(inps)), np.mean(cmcs, axis=0), len(aps)


def reference_re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al.'s released algorithm written as plain dense loops (stable argsort for ties)."""
    nq = q_g.shape[0]
    d = np.concatenate([np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0)
    d = np.power(d, 2).astype(np.float32)
    d = np.transpose(d / np.max(d, axis=0))
    n = d.shape[0]
    V = np.zeros_like(d, dtype=np.float32)
    rank = np.argsort(d, axis=1, kind="stable")
    for i in range(n):
        fwd = rank[i, :k1 + 1]
        back = rank[fwd, :k1 + 1]
        recip = fwd[np.where(back == i)[0]]
        expansion = recip
        for c in recip:
            half = int(np.around(k1 / 2.0)) + 1
            cf = rank[c, :half]
            cb = rank[cf, :half]
            c_recip = cf[np.where(cb == c)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2.0 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        w = np.exp(-d[i, expansion])
        V[i, expansion] = w / np.sum(w)
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.zeros((nq, n), np.float32)
    for i in range(nq):
        m = np.zeros(n, np.float32)
        for j in range(n):
            m[j] = np.minimum(V[i], V[j]).sum()
        jac[i] = 1 - m / (2 - m)
    final = jac * (1 - lambda_value) + d[:nq] * lambda_value
    return final[:, nq:]


def random_split(rng, nq=40, ng=150, n_ids=15, n_cams=4):
    q_pids, g_pids = rng.integers(0, n_ids, nq), rng.integers(0, n_ids, ng)
    q_cams, g_cams = rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)
    return q_pids, g_pids, q_cams, g_cams


# ----------------------------------------------------------------------------------------------- evaluate_rank
@pytest.mark.parametrize("ties", [False, True])
def test_matches_reference_on_random_data(ties):
    rng = np.random.default_rng(3)
    q_pids, g_pids, q_cams, g_cams = random_split(rng)
    dist = rng.integers(0, 5, (40, 150)).astype(np.float32) if ties else rng.random((40, 150))
    m = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    ref_map, ref_inp, ref_cmc, n_valid = reference_eval(dist, q_pids, g_pids, q_cams, g_cams)
    assert m.mAP == pytest.approx(ref_map, abs=1e-12)
    assert m.mINP == pytest.approx(ref_inp, abs=1e-12)
    np.testing.assert_allclose(m.cmc, ref_cmc, atol=1e-12)
    assert m.num_valid_queries == n_valid and m.num_skipped_queries == 40 - n_valid


def test_hand_computed_example():
    # Gallery: g0 (pid 1, cam 0), g1 (2, 1), g2 (1, 1), g3 (3, 1), g4 (1, 2).
    g_pids, g_cams = [1, 2, 1, 3, 1], [0, 1, 1, 1, 2]
    q_pids, q_cams = [1, 2, 4, 3, 1], [0, 0, 0, 1, 1]
    dist = np.array([
        [0.1, 0.2, 0.3, 0.4, 0.5],   # q0: g0 junk; kept g1 x, g2 v, g3 x, g4 v -> matches at ranks 2, 4
        [0.5, 0.1, 0.2, 0.3, 0.4],   # q1: g1 v first, only match -> rank 1
        [0.1, 0.2, 0.3, 0.4, 0.5],   # q2: pid 4 not in gallery -> skipped
        [0.4, 0.3, 0.2, 0.1, 0.0],   # q3: only pid-3 image g3 has the same camera -> removed -> skipped
        [0.05, 0.1, 0.2, 0.4, 0.3],  # q4: g0 v, g1 x, g2 junk, g4 v, g3 x -> matches at ranks 1, 3
    ])
    m = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    # AP: q0 (1/2 + 2/4)/2 = 1/2; q1 1; q4 (1/1 + 2/3)/2 = 5/6 -> mAP = (1/2 + 1 + 5/6)/3 = 7/9
    assert m.mAP == pytest.approx(7 / 9)
    # INP = matches / rank of last match: q0 2/4, q1 1/1, q4 2/3 -> mINP = (1/2 + 1 + 2/3)/3 = 13/18
    assert m.mINP == pytest.approx(13 / 18)
    # first match: q0 rank 2, q1 rank 1, q4 rank 1 -> CMC = [2/3, 1, 1, 1, 1]
    np.testing.assert_allclose(m.cmc, [2 / 3, 1, 1, 1, 1])
    assert (m.num_queries, m.num_valid_queries, m.num_skipped_queries) == (5, 3, 2)
    assert m.rank1 == pytest.approx(2 / 3) and m.rank5 == 1.0
    with pytest.raises(ValueError, match="max_rank >= 10"):
        _ = m.rank10
    d = m.to_dict()
    json.dumps(d)
    assert d["mAP"] == pytest.approx(7 / 9) and "rank10" not in d and d["num_skipped_queries"] == 2


def test_ties_keep_gallery_order():
    # equal distances: the stable sort puts the non-match g0 first -> rank-1 miss, AP = 1/2
    m = evaluate_rank(np.array([[0.5, 0.5]]), [1], [2, 1], [0], [1, 1], max_rank=2)
    assert m.rank1 == 0.0 and m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)


def test_stable_row_sort_with_adjacent_tie_runs():
    from apnet_edge.metrics import _stable_argsort_rows

    rng = np.random.default_rng(11)
    d = rng.integers(0, 4, (30, 40)).astype(np.float32)  # many ties, adjacent runs of different values
    d[0] = 1.0
    d[1] = np.arange(40)  # no ties
    np.testing.assert_array_equal(_stable_argsort_rows(d), np.argsort(d, axis=1, kind="stable"))


def test_skips_and_errors():
    # every query only has same-camera matches -> nothing to evaluate
    with pytest.raises(ValueError, match="none of the 2 queries"):
        evaluate_rank(np.zeros((2, 2)), [1, 2], [1, 2], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="must match"):
        evaluate_rank(np.zeros((2, 3)), [1, 2], [1, 2], [0, 0], [0, 0])
    # a short gallery still gives max_rank CMC entries, continued with the final value
    m = evaluate_rank(np.array([[0.3, 0.1, 0.2]]), [1], [1, 2, 3], [0], [1, 1, 1], max_rank=10)
    assert m.cmc.shape == (10,) and m.rank1 == 0.0 and m.cmc[2] == 1.0 and m.rank10 == 1.0
    assert m.num_skipped_queries == 0


def test_metric_values_are_fractions_and_perfect_ranking():
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = random_split(rng, 20, 60, 10, 3)
    dist = (g_pids[None, :] != q_pids[:, None]).astype(float) + rng.random((20, 60)) * 0.1
    m = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    assert m.mAP == pytest.approx(1.0) and m.mINP == pytest.approx(1.0) and m.rank1 == 1.0


# ----------------------------------------------------------------------------------------------- distances
def test_pairwise_distance():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(4, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    eu = pairwise_distance(q, g, "euclidean")
    co = pairwise_distance(q, g, "cosine")
    assert eu.shape == co.shape == (4, 5) and eu.dtype == co.dtype == np.float32
    for i in range(4):
        for j in range(5):
            assert eu[i, j] == pytest.approx(np.sqrt(((q[i] - g[j]) ** 2).sum()), rel=1e-4)
            cos = q[i] @ g[j] / np.linalg.norm(q[i]) / np.linalg.norm(g[j])
            assert co[i, j] == pytest.approx(1 - cos, abs=1e-5)
    # cosine is scale-invariant; Euclidean of unit vectors^2 = 2 * cosine distance
    np.testing.assert_allclose(pairwise_distance(3 * q, g), co, atol=1e-5)
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(pairwise_distance(qn, gn, "euclidean") ** 2, 2 * co, atol=1e-5)
    assert np.all(np.abs(np.diag(pairwise_distance(q, q, "euclidean"))) < 1e-3)
    assert pairwise_distance(q.astype(np.float64), g.astype(np.float64)).dtype == np.float64
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(q, g, "manhattan")
    with pytest.raises(ValueError, match="same D"):
        pairwise_distance(q, g[:, :3])


def test_metrics_module_imports_numpy_only():
    code = "import sys, apnet_edge.metrics; print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------- re-ranking
@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 3, 0.5), (3, 1, 0.0), (30, 40, 1.0)])
def test_re_ranking_matches_plain_reference(k1, k2, lam):
    rng = np.random.default_rng(k1 + k2)
    qf, gf = rng.normal(size=(6, 8)), rng.normal(size=(24, 8))
    q_g, q_q, g_g = (pairwise_distance(a, b, "euclidean") for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    out = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    assert out.shape == (6, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference_re_ranking(q_g, q_q, g_g, k1, k2, lam), atol=2e-6)


def test_re_ranking_improves_clustered_retrieval():
    rng = np.random.default_rng(7)
    n_ids, per_id = 12, 6
    centres = rng.normal(size=(n_ids, 16))
    pids = np.repeat(np.arange(n_ids), per_id)
    feats = centres[pids] + rng.normal(scale=0.9, size=(len(pids), 16))
    is_q = np.tile(np.arange(per_id) == 0, n_ids)  # first image of each ID is the query
    qf, gf, q_pids, g_pids = feats[is_q], feats[~is_q], pids[is_q], pids[~is_q]
    q_cams, g_cams = np.zeros(len(qf), int), np.ones(len(gf), int)
    q_g = pairwise_distance(qf, gf)
    base = evaluate_rank(q_g, q_pids, g_pids, q_cams, g_cams)
    rr = re_ranking(q_g, pairwise_distance(qf, qf), pairwise_distance(gf, gf), k1=6, k2=3)
    rer = evaluate_rank(rr, q_pids, g_pids, q_cams, g_cams)
    assert base.mAP < 0.95  # the example is not trivial
    assert rer.mAP > base.mAP + 0.02


def test_re_ranking_validates_shapes():
    with pytest.raises(ValueError, match="q_g"):
        re_ranking(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))


# ----------------------------------------------------------------------------------------------- trials
def test_cmc_trials():
    a = ReidMetrics(mAP=0.5, mINP=0.2, cmc=np.linspace(0.6, 1.0, 20), num_queries=3, num_valid_queries=3,
                    num_skipped_queries=0)
    b = ReidMetrics(mAP=0.7, mINP=0.4, cmc=np.linspace(0.8, 1.0, 20), num_queries=3, num_valid_queries=3,
                    num_skipped_queries=0)
    s = cmc_trials([a, b])
    assert s["num_trials"] == 2
    assert s["mAP"]["mean"] == pytest.approx(0.6) and s["mAP"]["values"] == [0.5, 0.7]
    assert s["mAP"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s["rank1"]["mean"] == pytest.approx(0.7) and s["rank1"]["values"] == pytest.approx([0.6, 0.8])
    assert len(s["cmc"]) == 20 and s["cmc"][-1] == pytest.approx(1.0)
    json.dumps(s)
    assert cmc_trials([a])["mAP"]["std"] == 0.0
    with pytest.raises(ValueError):
        cmc_trials([])
