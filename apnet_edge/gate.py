"""The accuracy gate: is a converted model (ONNX, FP16/INT8 engine, INT8 Q/DQ ONNX) still the same re-ID model?

Two measurements, both through the inference runners (numpy only; no torch unless the reference *is* a
checkpoint, whose runner imports it):

1. **Embedding agreement** on real person crops: per crop, the cosine similarity of the reference's and the
   candidate's embeddings. The gate fails when the mean falls below a threshold that depends on the
   candidate's precision (:data:`DEFAULT_MIN_MEAN_COSINE`: fp32 0.9999, fp16 0.999, bf16 0.998 (OpenVINO on
   CPUs with AMX/AVX512-BF16), int8 0.98), or, when
   ``min_worst_cosine`` is given, when any single crop falls below it.
2. **Retrieval** on a labelled folder in Market-1501 naming (``query/`` + ``bounding_box_test/``): mAP and
   rank-1 of both models; the gate fails when the candidate's mAP is more than ``max_map_drop`` (a fraction,
   0.01 = one point) below the reference's.

Typical use: ``compare_models("best.pt", "apnet_int8.onnx", "crops/", labelled_root="my_cams/")``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.errors import DatasetError, ModelError

PathLike = Union[str, Path]
ModelLike = Union[str, Path, Any]  # a path the runners load, or an open runner (has .infer and .card)
CropsLike = Union[Sequence[np.ndarray], str, Path, None]

DEFAULT_MIN_MEAN_COSINE: dict[str, float] = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.998, "int8": 0.98}
"""Mean cosine (reference vs candidate) a candidate of each precision must reach by default."""
PRECISIONS = tuple(DEFAULT_MIN_MEAN_COSINE)


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`compare_models`. Cosines are in [-1, 1]; mAP / rank-1 are fractions in [0, 1].

    ``reference_metrics`` / ``candidate_metrics`` hold ``{"mAP", "rank1", ...}`` when a labelled folder was
    given, else None; ``map_drop`` = reference mAP - candidate mAP (positive = the candidate is worse).
    """

    reference: str
    candidate: str
    precision: str
    n_crops: int
    mean_cosine: float
    min_cosine: float
    worst_index: int
    p01_cosine: float
    min_mean_cosine: float
    min_worst_cosine: Optional[float]
    max_map_drop: float
    reference_metrics: Optional[dict[str, Any]]
    candidate_metrics: Optional[dict[str, Any]]
    map_drop: Optional[float]
    rank1_drop: Optional[float]
    passed: bool
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (floats rounded to 6 decimals)."""

        def r(v: Any) -> Any:
            if isinstance(v, float):
                return round(v, 6) if math.isfinite(v) else None
            if isinstance(v, dict):
                return {k: r(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [r(x) for x in v]
            return v

        return {
            "reference": self.reference, "candidate": self.candidate, "precision": self.precision,
            "n_crops": self.n_crops, "mean_cosine": r(self.mean_cosine), "min_cosine": r(self.min_cosine),
            "worst_index": self.worst_index, "p01_cosine": r(self.p01_cosine),
            "thresholds": {"min_mean_cosine": self.min_mean_cosine, "min_worst_cosine": self.min_worst_cosine,
                           "max_map_drop": self.max_map_drop},
            "reference_metrics": r(self.reference_metrics), "candidate_metrics": r(self.candidate_metrics),
            "map_drop": r(self.map_drop), "rank1_drop": r(self.rank1_drop), "passed": self.passed,
            "reasons": list(self.reasons), "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """A few human-readable lines (for the CLI)."""
        lines = [
            f"reference  {self.reference}",
            f"candidate  {self.candidate}  ({self.precision})",
            f"cosine     mean {self.mean_cosine:.5f}  worst {self.min_cosine:.5f} (crop {self.worst_index})  "
            f"1st percentile {self.p01_cosine:.5f}  over {self.n_crops} crops  (required mean >= "
            f"{self.min_mean_cosine})",
        ]
        if self.reference_metrics is not None and self.candidate_metrics is not None:
            rm, cm = self.reference_metrics, self.candidate_metrics
            lines.append(f"mAP        {100 * rm['mAP']:.2f} % -> {100 * cm['mAP']:.2f} %   rank-1 "
                         f"{100 * rm['rank1']:.2f} % -> {100 * cm['rank1']:.2f} %   (allowed mAP drop "
                         f"{100 * self.max_map_drop:.2f} points)")
        lines.append("PASSED" if self.passed else "FAILED: " + "; ".join(self.reasons))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ helpers


def precision_of(card: Any, runner: Any = None) -> str:
    """Precision a model computes in: the runner's ``precision`` attribute, else the card's
    ``extra["precision"]``, else ``"int8"`` when the card has ``extra["quantization"]``, else ``"fp32"``."""
    p = getattr(runner, "precision", None)
    if isinstance(p, str) and p.lower() in PRECISIONS:
        return p.lower()
    extra = getattr(card, "extra", None) or {}
    p = extra.get("precision")
    if isinstance(p, str) and p.lower() in PRECISIONS:
        return p.lower()
    if extra.get("quantization"):
        return "int8"
    return "fp32"


def _name(model: ModelLike) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    return str(getattr(model, "path", None) or getattr(model, "name", None) or type(model).__name__)


def _open(model: ModelLike, stack: contextlib.ExitStack, backend: str, threads: Optional[int]) -> Any:
    """An open runner for ``model`` (a path, loaded and closed by ``stack``; or an already open runner)."""
    if hasattr(model, "infer"):
        return model
    from apnet_edge.runners import load_runner

    return stack.enter_context(load_runner(str(model), backend=backend, threads=threads))


def embed(runner: Any, crops: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """(N, D) float32 embeddings of BGR uint8 ``crops``, L2-normalised again (runner outputs may drift)."""
    feats = [np.asarray(runner.infer(list(crops[i:i + batch_size])), np.float32)
             for i in range(0, len(crops), batch_size)]
    if not feats:
        return np.zeros((0, 0), np.float32)
    out = np.concatenate(feats, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def _retrieval(runner: Any, ds: Any, batch_size: int, flip: bool) -> dict[str, Any]:
    from apnet_edge.evaluation import extract_features
    from apnet_edge.metrics import evaluate_rank, pairwise_distance

    qf = extract_features(runner, [r.path for r in ds.query], flip, batch_size, "query")
    gf = extract_features(runner, [r.path for r in ds.gallery], flip, batch_size, "gallery")
    dist = pairwise_distance(qf, gf, "cosine")
    m = evaluate_rank(dist, np.asarray([r.pid for r in ds.query]), np.asarray([r.pid for r in ds.gallery]),
                      np.asarray([r.camid for r in ds.query]), np.asarray([r.camid for r in ds.gallery]))
    out = m.to_dict() if hasattr(m, "to_dict") else {}
    out["mAP"] = float(m.mAP)
    out["rank1"] = float(m.rank1)
    return out


# ------------------------------------------------------------------------------------------------ the gate


def compare_models(reference: ModelLike, candidate: ModelLike, crops: CropsLike,
                   labelled_root: Optional[PathLike] = None, min_mean_cosine: Optional[float] = None,
                   max_map_drop: float = 0.01, min_worst_cosine: Optional[float] = None,
                   precision: Optional[str] = None, backend: str = "auto", candidate_backend: Optional[str] = None,
                   threads: Optional[int] = None, batch_size: int = 32, max_crops: Optional[int] = 1000,
                   flip: bool = False) -> GateResult:
    """Compare ``candidate`` against ``reference`` on real crops (and optionally a labelled folder).

    Args:
        reference: the trusted model (checkpoint ``.pt``, FP32 ONNX, ...) as a path or an open runner.
        candidate: the converted model (INT8/FP16 ONNX, engine, ...) as a path or an open runner.
        crops: BGR uint8 person crops (H, W, 3), or a folder of crop images; None: the labelled folder's
            query + gallery images.
        labelled_root: a Market-1501-named folder (``query/``, ``bounding_box_test/``) for mAP / rank-1.
        min_mean_cosine: required mean cosine; None: by the candidate's precision (fp32 0.9999, fp16 0.999,
            int8 0.98).
        max_map_drop: largest allowed mAP loss, a fraction (0.01 = one mAP point).
        min_worst_cosine: if given, every crop must reach this cosine.
        precision: the candidate's precision (``"fp32"``, ``"fp16"``, ``"int8"``); None: read from its card.
        backend / candidate_backend: runner backends for the reference / the candidate (default: the same).
        threads: CPU threads for CPU runners.
        batch_size: crops per inference call.
        max_crops: at most this many crops from a folder (evenly spread).
        flip: flip-averaged features for the retrieval metrics.

    Raises:
        ModelError: the two models give embeddings of different lengths; unknown precision.
        DatasetError: no crops, or an unusable labelled folder.
    """
    t0 = time.perf_counter()
    if precision is not None and precision.lower() not in PRECISIONS:
        raise ModelError(f"precision must be one of {PRECISIONS}, found {precision!r}")
    if not 0.0 <= max_map_drop <= 1.0:
        raise ModelError(f"max_map_drop is a fraction in [0, 1] (0.01 = one mAP point), found {max_map_drop}")

    ds = None
    if labelled_root is not None:
        from apnet_edge.datasets import load_dataset

        ds = load_dataset("folder", labelled_root)
        if not ds.query or not ds.gallery:
            raise DatasetError(f"labelled folder {str(labelled_root)!r} has no query or no gallery images")
    if crops is None:
        if ds is None:
            raise DatasetError("no crops to compare on: pass crops (arrays or a folder) or a labelled folder")
        from apnet_edge.crops import read_images, spread_indices

        paths = [r.path for r in (*ds.query, *ds.gallery)]
        if max_crops is not None and len(paths) > max_crops:
            paths = [paths[i] for i in spread_indices(len(paths), max_crops)]
        crop_list = read_images(paths)
    elif isinstance(crops, (str, Path)):
        from apnet_edge.crops import read_image_folder

        crop_list = read_image_folder(crops, max_crops)
    else:
        crop_list = list(crops)
    if not crop_list:
        raise DatasetError("no crops to compare on: the crop list is empty")

    reasons: list[str] = []
    with contextlib.ExitStack() as stack:
        ref_runner = _open(reference, stack, backend, threads)
        cand_runner = _open(candidate, stack, candidate_backend or backend, threads)
        prec = precision.lower() if precision else precision_of(getattr(cand_runner, "card", None), cand_runner)
        threshold = float(min_mean_cosine) if min_mean_cosine is not None else DEFAULT_MIN_MEAN_COSINE[prec]

        ref = embed(ref_runner, crop_list, batch_size)
        cand = embed(cand_runner, crop_list, batch_size)
        if ref.shape != cand.shape:
            raise ModelError(f"the models are not comparable: reference {_name(reference)} gives embeddings of "
                             f"shape {ref.shape}, candidate {_name(candidate)} {cand.shape}")
        cos = (ref.astype(np.float64) * cand.astype(np.float64)).sum(1)
        bad = ~np.isfinite(cos)
        if bad.any():
            reasons.append(f"{int(bad.sum())} of {len(cos)} candidate embeddings are not finite (NaN/inf), "
                           f"e.g. crop {int(np.flatnonzero(bad)[0])}")
            cos = np.where(bad, -1.0, cos)
        worst = int(np.argmin(cos))
        mean_cos, min_cos = float(cos.mean()), float(cos[worst])
        p01 = float(np.percentile(cos, 1))
        if mean_cos < threshold:
            reasons.append(f"mean cosine {mean_cos:.5f} over {len(cos)} crops is below {threshold} "
                           f"(required for {prec})")
        if min_worst_cosine is not None and min_cos < min_worst_cosine:
            reasons.append(f"crop {worst} has cosine {min_cos:.5f}, below the required {min_worst_cosine}")

        ref_m = cand_m = None
        map_drop = rank1_drop = None
        if ds is not None:
            ref_m = _retrieval(ref_runner, ds, batch_size, flip)
            cand_m = _retrieval(cand_runner, ds, batch_size, flip)
            map_drop = ref_m["mAP"] - cand_m["mAP"]
            rank1_drop = ref_m["rank1"] - cand_m["rank1"]
            if map_drop > max_map_drop + 1e-12:
                reasons.append(f"mAP dropped by {100 * map_drop:.2f} points ({100 * ref_m['mAP']:.2f} % -> "
                               f"{100 * cand_m['mAP']:.2f} %), more than the allowed {100 * max_map_drop:.2f}")

    return GateResult(
        reference=_name(reference), candidate=_name(candidate), precision=prec, n_crops=len(crop_list),
        mean_cosine=mean_cos, min_cosine=min_cos, worst_index=worst, p01_cosine=p01, min_mean_cosine=threshold,
        min_worst_cosine=min_worst_cosine, max_map_drop=float(max_map_drop), reference_metrics=ref_m,
        candidate_metrics=cand_m, map_drop=map_drop, rank1_drop=rank1_drop, passed=not reasons, reasons=reasons,
        seconds=time.perf_counter() - t0,
    )
