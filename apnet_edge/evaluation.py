"""Evaluate any re-ID model the runners accept on a re-ID dataset (numpy + OpenCV; no torch needed).

The protocol is the standard one (see :func:`apnet_edge.metrics.evaluate_rank`): features of query and gallery
images, optionally flip-averaged, ranked by cosine or Euclidean distance, optional k-reciprocal re-ranking.
VIPeR uses its own protocol: random 316/316 identity splits, CMC averaged over trials.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from apnet_edge.errors import DatasetError


def extract_features(runner: Any, paths: Sequence[str], flip: bool = True, batch_size: int = 64,
                     desc: str = "features") -> np.ndarray:
    """Embed the images at ``paths`` with ``runner``: (N, D) float32, L2-normalised.

    With ``flip``, the embedding of each image and of its horizontal mirror are summed and re-normalised
    (runners that embed flipped pairs themselves, e.g. PyTorch checkpoints, do it before normalisation).
    """
    from tqdm import tqdm

    from apnet_edge.crops import read_images
    from apnet_edge.runners.base import infer_flip_averaged

    feats: list[np.ndarray] = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False,
                      disable=len(paths) <= batch_size):
        crops = read_images(paths[start:start + batch_size])
        f = infer_flip_averaged(runner, crops) if flip else runner.infer(crops)
        feats.append(np.asarray(f, dtype=np.float32))
    if not feats:
        return np.zeros((0, 0), np.float32)
    out = np.concatenate(feats, axis=0)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def rank_features(qf: np.ndarray, gf: np.ndarray, q_pids, g_pids, q_camids, g_camids, metric: str = "cosine",
                  rerank: bool = False):
    """Distances (optionally re-ranked) and the standard metrics for one query/gallery split."""
    from apnet_edge.metrics import evaluate_rank, pairwise_distance, re_ranking

    dist = pairwise_distance(qf, gf, metric)
    if rerank:
        dist = re_ranking(dist, pairwise_distance(qf, qf, metric), pairwise_distance(gf, gf, metric))
    return evaluate_rank(dist, np.asarray(q_pids), np.asarray(g_pids), np.asarray(q_camids), np.asarray(g_camids))


def evaluate_model(model: str, dataset: str, data_root: str, cuhk03_variant: str = "labeled", backend: str = "auto",
                   metric: str = "cosine", flip: bool = True, rerank: bool = False, batch_size: int = 64,
                   device: str = "auto", trials: int = 10, seed: int = 0, threads: Optional[int] = None) -> dict[str, Any]:
    """Evaluate ``model`` (checkpoint, ONNX, OpenVINO IR or engine) on ``dataset``; returns a JSON-able dict."""
    from apnet_edge.datasets import load_dataset
    from apnet_edge.runners import load_runner

    options: dict[str, Any] = {}
    if dataset == "cuhk03":
        options["variant"] = cuhk03_variant
    ds = load_dataset(dataset, data_root, **options)
    runner_kw: dict[str, Any] = {}
    if Path(model).suffix in (".pt", ".pth"):
        runner_kw["device"] = device
    t0 = time.perf_counter()
    with load_runner(model, backend=backend, threads=threads, **runner_kw) as runner:
        if dataset == "viper":
            result = _evaluate_viper(runner, ds, flip, batch_size, metric, rerank, trials, seed)
        else:
            if not ds.query or not ds.gallery:
                raise DatasetError(f"dataset {dataset!r} at {data_root!r} has no query or no gallery images to evaluate")
            qf = extract_features(runner, [r.path for r in ds.query], flip, batch_size, "query")
            gf = extract_features(runner, [r.path for r in ds.gallery], flip, batch_size, "gallery")
            m = rank_features(qf, gf, [r.pid for r in ds.query], [r.pid for r in ds.gallery],
                              [r.camid for r in ds.query], [r.camid for r in ds.gallery], metric, rerank)
            result = {"metrics": m.to_dict()}
        result.update({
            "model": str(model),
            "backend": runner.backend,
            "dataset": dataset,
            "data_root": str(data_root),
            "num_query": len(ds.query),
            "num_gallery": len(ds.gallery),
            "flip": flip,
            "metric": metric,
            "rerank": rerank,
            "seconds": round(time.perf_counter() - t0, 2),
            "host": platform.node(),
        })
    return result


def _evaluate_viper(runner: Any, ds: Any, flip: bool, batch_size: int, metric: str, rerank: bool, trials: int,
                    seed: int) -> dict[str, Any]:
    """VIPeR: embed all images once, then score ``trials`` random 316/316 identity splits."""
    from apnet_edge.datasets.viper import viper_splits
    from apnet_edge.metrics import cmc_trials

    splits = viper_splits(ds, trials=trials, seed=seed)
    images = sorted({r.path: r for s in splits for r in (*s.query, *s.gallery)}.values(), key=lambda r: r.path)
    feats = extract_features(runner, [r.path for r in images], flip, batch_size, "viper")
    index = {r.path: i for i, r in enumerate(images)}
    per_trial = []
    for s in splits:
        qf = feats[[index[r.path] for r in s.query]]
        gf = feats[[index[r.path] for r in s.gallery]]
        per_trial.append(rank_features(qf, gf, [r.pid for r in s.query], [r.pid for r in s.gallery],
                                       [r.camid for r in s.query], [r.camid for r in s.gallery], metric, rerank))
    summary = cmc_trials(per_trial)
    summary["seeds"] = [s.seed for s in splits]
    return {"metrics": summary, "protocol": f"VIPeR {trials} random 316/316 identity splits"}


def format_metrics_table(result: dict[str, Any]) -> str:
    """A readable table of the metrics in ``result`` (values in percent)."""
    m = result["metrics"]
    lines = [f"model    {result.get('model')}  ({result.get('backend')})",
             f"dataset  {result.get('dataset')}  query {result.get('num_query')}  gallery {result.get('num_gallery')}"]
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        if key in m and isinstance(m[key], (int, float)):
            lines.append(f"{key:<8} {100 * m[key]:6.2f} %")
        elif key in m and isinstance(m[key], dict) and "mean" in m[key]:
            lines.append(f"{key:<8} {100 * m[key]['mean']:6.2f} % +- {100 * m[key].get('std', 0.0):.2f}")
    return "\n".join(lines)
