"""The accuracy gate for engines: the built engine against its FP32 ONNX on ONNX Runtime, through
:func:`apnet_edge.gate.compare_models` (mean cosine per precision; mAP drop on a labelled folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.errors import ModelError
from apnet_edge.runners.tensorrt_runner import read_engine_info

PathLike = Union[str, Path]


def verify_engine(engine: PathLike, onnx: PathLike, data_dir: PathLike, labelled: bool = False,
                  min_mean_cosine: Optional[float] = None, max_map_drop: float = 0.01,
                  min_worst_cosine: Optional[float] = None, max_crops: Optional[int] = 1000,
                  batch_size: int = 32, threads: Optional[int] = None) -> Any:
    """Compare ``engine`` (TensorRT) with the FP32 ``onnx`` (ONNX Runtime, CPU) on real crops.

    Args:
        engine: the ``.engine`` file (its sidecar tells the precision, hence the default cosine threshold).
        onnx: the FP32 reference ONNX (for an INT8 engine built from a Q/DQ ONNX: the FP32 ONNX it was quantized
            from, not the Q/DQ file).
        data_dir: a folder of person crops, or (``labelled=True``) a Market-1501-named folder (``query/``,
            ``bounding_box_test/``) whose images are the crops and which also gives mAP / rank-1.
        min_mean_cosine: required mean cosine; None: by precision (fp16 0.999, int8 0.98).
        max_map_drop: largest allowed mAP loss, a fraction (0.01 = one point).
        min_worst_cosine: if given, every crop must reach it.
        max_crops: at most this many crops (evenly spread).
        batch_size: crops per inference call.
        threads: CPU threads for ONNX Runtime.

    Returns:
        :class:`apnet_edge.gate.GateResult` (``passed``, ``summary()``, ``to_dict()``).

    Raises:
        ModelError: the engine is a detector (the gate compares re-ID embeddings), or a file is missing.
    """
    from apnet_edge.gate import compare_models

    engine, onnx, data_dir = Path(engine), Path(onnx), Path(data_dir)
    for p, what in ((engine, "engine"), (onnx, "reference ONNX")):
        if not p.is_file():
            raise ModelError(f"{what} {str(p)!r} not found; check the path")
    info = read_engine_info(engine)
    if info is not None and info.task != "reid":
        raise ModelError(f"{str(engine)!r} is a {info.task} engine; the accuracy gate compares re-ID embeddings "
                         f"(check a detector with apnet-edge bench / on a video instead)")
    return compare_models(onnx, engine, None if labelled else data_dir,
                          labelled_root=data_dir if labelled else None, min_mean_cosine=min_mean_cosine,
                          max_map_drop=max_map_drop, min_worst_cosine=min_worst_cosine,
                          precision=info.precision if info is not None and info.precision in ("fp32", "fp16", "int8")
                          else None, backend="onnxruntime", candidate_backend="tensorrt", threads=threads,
                          batch_size=batch_size, max_crops=max_crops)
