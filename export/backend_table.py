"""One model on every CPU backend, and the supplementary's Table III, measured in one run.

:func:`backend_matrix` takes a trained checkpoint through the whole chain (ONNX export with parity check, CPU INT8
quantization on real crops), then measures each variant at the given batch sizes and runs the accuracy gate of
each against the FP32 ONNX model on ONNX Runtime (mean / worst cosine on the same real crops, mAP when a labelled
folder is given). Variants (:data:`VARIANTS`):

==================  =========================  ===========
label               model                      backend
==================  =========================  ===========
torch-fp32          the checkpoint             PyTorch eager
ort-fp32            FP32 ONNX                  ONNX Runtime
ort-int8            CPU INT8 Q/DQ ONNX         ONNX Runtime
openvino-default    FP32 ONNX                  OpenVINO, its default precision (bf16 where the CPU has it)
openvino-int8       CPU INT8 Q/DQ ONNX         OpenVINO
==================  =========================  ===========

:func:`table3` builds the plain ResNet-50 (level 0), SE only (level 1) and APNet-C (level 2) with the same random
initialisation, exports and quantizes each, and measures all of them on every variant, interleaved round by round
(the machine may be shared: each cell keeps the best of ``rounds`` measurements, and every level of a variant is
measured within seconds of the others). The attention overhead of a variant is ``1 - ips(level 2) / ips(level 0)``,
and ``1 - ips(level 2) / ips(level 1)`` is the cost of the pyramid beyond SE (``pyramid_over_se``). The limit
(:data:`MAX_ATTENTION_OVERHEAD`, 15 %) is judged on both: ``passed`` on the pyramid beyond SE, the comparison behind
the supplementary's 25 % (APNet-C 395 against SE-ResNet 526 images/s), and ``passed_vs_plain`` on the whole attention
against the plain ResNet-50, which also charges SE's own cost to the pyramid (stricter than the paper).
Throughput does not depend on the weights' values, so random weights measure speed correctly; the gate cosines of
:func:`backend_matrix` need a trained model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.errors import ApnetError

PathLike = Union[str, Path]

VARIANTS: dict[str, tuple[str, str, str]] = {
    # label: (model file kind, runner backend, human-readable name)
    "torch-fp32": ("checkpoint", "torch", "PyTorch eager FP32"),
    "ort-fp32": ("fp32", "onnxruntime", "ONNX Runtime FP32"),
    "ort-int8": ("int8", "onnxruntime", "ONNX Runtime INT8 (uint8 act., int8 per-channel weights)"),
    "openvino-default": ("fp32", "openvino", "OpenVINO default precision"),
    "openvino-int8": ("int8", "openvino", "OpenVINO on the INT8 Q/DQ model"),
}
TABLE3_LEVELS = (0, 1, 2)
MAX_ATTENTION_OVERHEAD = 0.15


def parse_variants(text: Union[str, Sequence[str], None]) -> list[str]:
    """``"ort-fp32,ort-int8"`` -> a validated list; None or ``"all"``: every variant."""
    if text is None or text == "all":
        return list(VARIANTS)
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in VARIANTS]
    if unknown or not items:
        raise ApnetError(f"unknown backend variant(s) {unknown or items}; choose from {', '.join(VARIANTS)}")
    return items


def _available(backend: str) -> bool:
    import importlib.util

    module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[backend]
    return importlib.util.find_spec(module) is not None


@dataclasses.dataclass
class ModelFiles:
    """The three files of one model: training checkpoint, FP32 ONNX and CPU INT8 Q/DQ ONNX."""

    checkpoint: Path
    fp32: Path
    int8: Path
    export_seconds: float = 0.0
    quantize_seconds: float = 0.0
    parity_min_cosine: Optional[float] = None

    def path(self, kind: str) -> Path:
        return {"checkpoint": self.checkpoint, "fp32": self.fp32, "int8": self.int8}[kind]


def prepare_model(checkpoint: PathLike, calib: Sequence[np.ndarray], out_dir: PathLike, name: str = "model",
                  progress: bool = True, keep_float: Optional[str] = None) -> ModelFiles:
    """Export ``checkpoint`` to ``<out_dir>/<name>.onnx`` and quantize it for the CPU to ``<name>.int8.onnx``
    (``<name>.int8-<keep_float>.onnx`` with a ``keep_float`` preset of :func:`export.quantize.quantize_onnx`);
    files already there are reused (delete them to redo). ``calib``: BGR uint8 crops."""
    from export.onnx_export import export_onnx
    from export.quantize import quantize_onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    int8_name = f"{name}.int8-{keep_float}.onnx" if keep_float else f"{name}.int8.onnx"
    files = ModelFiles(Path(checkpoint), out / f"{name}.onnx", out / int8_name)
    if not files.fp32.is_file():
        t = time.perf_counter()
        res = export_onnx(checkpoint, files.fp32, parity_crops=list(calib[:32]))
        files.export_seconds = round(time.perf_counter() - t, 1)
        files.parity_min_cosine = res.parity.min_cosine if res.parity is not None else None
    if not files.int8.is_file():
        t = time.perf_counter()
        quantize_onnx(files.fp32, list(calib), files.int8, target="cpu", progress=progress, keep_float=keep_float)
        files.quantize_seconds = round(time.perf_counter() - t, 1)
    return files


def _bench(files: ModelFiles, variant: str, batches: Sequence[int], threads: Optional[int], seconds: float,
           crops: Sequence[np.ndarray], static_shapes: bool = True) -> dict[int, dict[str, float]]:
    from apnet_edge.bench import bench_model

    kind, backend, _ = VARIANTS[variant]
    res = bench_model(str(files.path(kind)), backend, batches, threads, min_seconds=seconds, crops=crops,
                      static_shapes=static_shapes)
    return {t.batch: {"images_per_s": t.images_per_s, "p50_ms": t.p50_ms, "p95_ms": t.p95_ms} for t in res.timings}


def _keep_best(cell: dict[int, dict[str, float]], new: dict[int, dict[str, float]]) -> None:
    for b, v in new.items():
        if b not in cell or v["images_per_s"] > cell[b]["images_per_s"]:
            cell[b] = v


def backend_matrix(checkpoint: PathLike, calib: Sequence[np.ndarray], out_dir: PathLike,
                   variants: Sequence[str] = tuple(VARIANTS), batches: Sequence[int] = (1, 16),
                   threads: Optional[int] = None, seconds: float = 3.0, rounds: int = 2,
                   gate_crops: Optional[Sequence[np.ndarray]] = None, labelled_root: Optional[PathLike] = None,
                   progress: bool = True, keep_float: Optional[str] = None,
                   static_shapes: bool = True) -> dict[str, Any]:
    """Speed of every variant of one trained model, and its gate against FP32 ONNX Runtime (see module doc).
    ``keep_float``: the INT8 variants use a mixed-precision model (``quantize --keep-float``: a preset or auto).
    ``static_shapes``: OpenVINO runs each batch size on a copy compiled for it (see ``bench_model``).
    The gate's cosines run on ``gate_crops`` if given, else on the held-out query + gallery crops of
    ``labelled_root`` if given, else on the calibration crops (``gate_crops`` in the result says which).

    Returns a JSON-ready dict: ``rows`` (one per variant: images/s and p50 per batch, mean/worst cosine, mAP),
    ``files``, ``machine``. Variants whose library is not installed are reported as skipped.
    """
    from apnet_edge.bench import machine_info
    from apnet_edge.gate import compare_models

    files = prepare_model(checkpoint, calib, out_dir, "model", progress=progress, keep_float=keep_float)
    rows: dict[str, dict[str, Any]] = {}
    skipped = {v: f"{VARIANTS[v][1]} is not installed" for v in variants if not _available(VARIANTS[v][1])}
    active = [v for v in variants if v not in skipped]
    speed: dict[str, dict[int, dict[str, float]]] = {v: {} for v in active}
    for _ in range(max(1, rounds)):
        for v in active:
            _keep_best(speed[v], _bench(files, v, batches, threads, seconds, calib, static_shapes))
    if gate_crops is not None:
        crops_for_gate, gate_source = list(gate_crops), "given crops"
    elif labelled_root is not None:  # held out: calibration (and a keep_float search) never saw them
        crops_for_gate, gate_source = None, f"query + gallery of {labelled_root}"
    else:
        crops_for_gate, gate_source = list(calib), "the calibration crops"
    for v in active:
        kind, backend, label = VARIANTS[v]
        # OpenVINO's default precision is bf16 on CPUs that have it: judge it by the bf16 threshold
        precision = "int8" if kind == "int8" else ("bf16" if v == "openvino-default" else "fp32")
        gate = compare_models(str(files.fp32), str(files.path(kind)), crops_for_gate,
                              labelled_root=labelled_root, backend="onnxruntime", candidate_backend=backend,
                              precision=precision, threads=threads)
        ref, cand = gate.reference_metrics or {}, gate.candidate_metrics or {}
        if kind == "int8" and keep_float:
            label = f"{label}, --keep-float {keep_float}"
        rows[v] = {"label": label, "model": str(files.path(kind)), "backend": backend, "gate_precision": precision,
                   "speed": {str(b): s for b, s in sorted(speed[v].items())},
                   "mean_cosine": round(gate.mean_cosine, 6), "worst_cosine": round(gate.min_cosine, 6),
                   "map_reference": ref.get("mAP"), "map_candidate": cand.get("mAP"),
                   "rank1_reference": ref.get("rank1"), "rank1_candidate": cand.get("rank1"),
                   "gate_passed": gate.passed, "gate_reasons": list(gate.reasons), "gate_n_crops": gate.n_crops}
    return {"checkpoint": str(checkpoint), "batches": list(batches), "rounds": rounds, "seconds": seconds,
            "threads": threads, "keep_float": keep_float, "gate_crops": gate_source, "rows": rows, "skipped": skipped,
            "openvino_static_shapes": static_shapes,
            "files": {k: str(v) for k, v in dataclasses.asdict(files).items()}, "machine": machine_info()}


def format_matrix(result: dict[str, Any]) -> str:
    """Markdown table of :func:`backend_matrix`'s result (images/s per batch, cosines, mAP)."""
    batches = result["batches"]
    head = ("| backend | " + " | ".join(f"b{b} img/s" for b in batches)
            + " | mean cosine | worst cosine | mAP (FP32 ORT -> this) |")
    lines = [head, "|" + "---|" * (len(batches) + 4)]
    for row in result["rows"].values():
        ips = " | ".join(f"{row['speed'][str(b)]['images_per_s']:.1f}" for b in batches)
        m = (f"{100 * row['map_reference']:.2f} -> {100 * row['map_candidate']:.2f} %"
             if row.get("map_candidate") is not None else "-")
        lines.append(f"| {row['label']} | {ips} | {row['mean_cosine']:.4f} | {row['worst_cosine']:.4f} | {m} |")
    for v, why in result.get("skipped", {}).items():
        lines.append(f"| {VARIANTS[v][2]} | skipped: {why} |")
    if result.get("gate_crops"):
        n = next((r.get("gate_n_crops") for r in result["rows"].values()), None)
        lines.append(f"\ncosines over {n} crops: {result['gate_crops']}")
    lines.append(_shapes_line(result))
    return "\n".join(lines)


def _shapes_line(result: dict[str, Any]) -> str:
    static = result.get("openvino_static_shapes", False)
    return ("OpenVINO: each batch size on a copy compiled for that static batch (a size OpenVINO cannot compile "
            "statically runs on the dynamic model, with a warning)" if static else "OpenVINO: the dynamic-batch model")


def _level_checkpoint(level: int, out: Path, base: Any, seed: int) -> Path:
    import torch

    from train.checkpoint import save_checkpoint
    from train.models import build_model

    path = out / f"level{level}.pt"
    if not path.is_file():
        torch.manual_seed(seed)
        model = build_model(dataclasses.replace(base, level=level, pretrained=None), num_classes=0).eval()
        save_checkpoint(path, model, dataclasses.replace(base, level=level, pretrained=None), epoch=0,
                        extra={"purpose": "table3 timing; random weights"})
    return path


def table3(calib: Sequence[np.ndarray], out_dir: PathLike, variants: Sequence[str] = tuple(VARIANTS),
           batches: Sequence[int] = (16,), threads: Optional[int] = None, seconds: float = 3.0, rounds: int = 3,
           backbone: str = "resnet50", input_size: Sequence[int] = (256, 128), seed: int = 0,
           progress: bool = True, static_shapes: bool = True) -> dict[str, Any]:
    """Table III of the supplementary on this machine: parameters, G-MACs and images/s of levels 0, 1, 2.
    ``static_shapes``: OpenVINO runs each batch size on a copy compiled for it (see ``bench_model``)."""
    from apnet_edge.bench import machine_info
    from apnet_edge.config import ModelConfig
    from train.complexity import model_info

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = ModelConfig(arch="apnet_c", backbone=backbone, input_size=(int(input_size[0]), int(input_size[1])))
    files: dict[int, ModelFiles] = {}
    info: dict[int, dict[str, Any]] = {}
    for level in TABLE3_LEVELS:
        ckpt = _level_checkpoint(level, out, base, seed)
        files[level] = prepare_model(ckpt, calib, out, f"level{level}", progress=progress)
        mi = model_info(dataclasses.replace(base, level=level))
        info[level] = {"params_m": round(mi["params_total"] / 1e6, 2), "gmacs": mi["gmacs"]}
    skipped = {v: f"{VARIANTS[v][1]} is not installed" for v in variants if not _available(VARIANTS[v][1])}
    active = [v for v in variants if v not in skipped]
    speed: dict[str, dict[int, dict[int, dict[str, float]]]] = {v: {lv: {} for lv in TABLE3_LEVELS} for v in active}
    for r in range(max(1, rounds)):
        for v in active:
            order = TABLE3_LEVELS if r % 2 == 0 else tuple(reversed(TABLE3_LEVELS))  # no level always goes first
            for level in order:
                _keep_best(speed[v][level], _bench(files[level], v, batches, threads, seconds, calib, static_shapes))
    return {"backbone": backbone, "input_size": list(input_size), "batches": list(batches), "rounds": rounds,
            "seconds": seconds, "threads": threads, "levels": {str(k): v for k, v in info.items()},
            "speed": {v: {str(lv): {str(b): s for b, s in cell.items()} for lv, cell in per.items()}
                      for v, per in speed.items()},
            **judge_overheads(speed, batches), "skipped": skipped,
            "openvino_static_shapes": static_shapes, "machine": machine_info()}


def judge_overheads(speed: dict[str, dict[int, dict[int, dict[str, float]]]], batches: Sequence[int]) -> dict[str, Any]:
    """The attention's cost per variant and batch size from ``speed`` (variant -> level -> batch -> {"images_per_s"}):
    ``attention_overhead`` 1 - L2/L0 and ``pyramid_over_se`` 1 - L2/L1, their worst cells, and the verdicts on
    :data:`MAX_ATTENTION_OVERHEAD`: ``passed`` on the pyramid beyond SE (the supplementary's comparison, APNet-C against
    SE-ResNet), ``passed_vs_plain`` on the whole attention against the plain ResNet-50."""
    def cost(base: int) -> dict[str, dict[str, float]]:
        return {v: {str(b): round(1.0 - per[2][b]["images_per_s"] / per[base][b]["images_per_s"], 4) for b in batches}
                for v, per in speed.items()}

    overhead, over_se = cost(0), cost(1)
    worst = max((o for per in overhead.values() for o in per.values()), default=None)
    worst_se = max((o for per in over_se.values() for o in per.values()), default=None)
    return {"attention_overhead": overhead, "pyramid_over_se": over_se, "worst_overhead": worst,
            "worst_pyramid_over_se": worst_se, "max_allowed_overhead": MAX_ATTENTION_OVERHEAD,
            "passed": worst_se is not None and worst_se <= MAX_ATTENTION_OVERHEAD,
            "passed_vs_plain": worst is not None and worst <= MAX_ATTENTION_OVERHEAD}


def format_table3(result: dict[str, Any]) -> str:
    """Markdown table of :func:`table3`'s result, one column block per variant and batch size."""
    names = {0: "level 0 (ResNet-50)", 1: "level 1 (SE only)", 2: "level 2 (APNet-C)"}
    cols = [(v, b) for v in result["speed"] for b in result["batches"]]
    head = "| model | params (M) | G-MACs | " + " | ".join(f"{v} b{b} img/s" for v, b in cols) + " |"
    lines = [head, "|" + "---|" * (3 + len(cols))]
    for lv in TABLE3_LEVELS:
        li = result["levels"][str(lv)]
        cells = " | ".join(f"{result['speed'][v][str(lv)][str(b)]['images_per_s']:.1f}" for v, b in cols)
        lines.append(f"| {names[lv]} | {li['params_m']:.2f} | {li['gmacs']:.3f} | {cells} |")
    over = " | ".join(f"{100 * result['attention_overhead'][v][str(b)]:.1f} %" for v, b in cols)
    lines.append(f"| attention overhead (1 - L2/L0) | | | {over} |")
    if "pyramid_over_se" in result:  # results written before it was recorded lack it
        se = " | ".join(f"{100 * result['pyramid_over_se'][v][str(b)]:.1f} %" for v, b in cols)
        lines.append(f"| pyramid beyond SE (1 - L2/L1; the paper's 25 % is this comparison) | | | {se} |")
    def verdict(what: str, worst: Optional[float], passed: bool) -> str:
        return (f"{what} {100 * (worst or 0):.1f} % (limit {100 * result['max_allowed_overhead']:.0f} %): "
                f"{'passed' if passed else 'FAILED'}")

    if "worst_pyramid_over_se" in result:
        lines.append(verdict("\npyramid beyond SE (the paper's comparison), worst cell",
                             result["worst_pyramid_over_se"], result["passed"]))
        lines.append(verdict("whole attention against the plain ResNet-50 (stricter), worst cell",
                             result["worst_overhead"], result["passed_vs_plain"]))
    else:  # a result written before the verdict was judged on the pyramid beyond SE: passed was on level 0
        lines.append(verdict("\nworst overhead", result["worst_overhead"], result["passed"]))
    for v, why in result.get("skipped", {}).items():
        lines.append(f"skipped {v}: {why}")
    lines.append(_shapes_line(result))
    return "\n".join(lines)


def write_result(result: dict[str, Any], path: PathLike) -> Path:
    """Write ``result`` as JSON (atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(p)
    return p
