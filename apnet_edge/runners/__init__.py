"""Inference runners: one interface over ONNX Runtime, OpenVINO, PyTorch and TensorRT.

    with load_runner("apnet.onnx") as runner:          # backend picked by suffix
        emb = runner.infer(crops)                      # BGR uint8 crops -> (N, D) float32, L2-normalised

Backends are imported lazily: ``import apnet_edge.runners`` needs numpy and OpenCV only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.card import ModelCard
from apnet_edge.errors import MissingDependencyError, ModelError, require
from apnet_edge.runners.base import Runner, infer_flip_averaged
from apnet_edge.runners.sidecar import find_sidecar, read_sidecar, write_sidecar

SUFFIX_BACKEND = {".onnx": "onnxruntime", ".xml": "openvino", ".pt": "torch", ".pth": "torch",
                  ".engine": "tensorrt", ".plan": "tensorrt"}
BACKEND_ALIASES = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "onnx": "onnxruntime",
                   "openvino": "openvino", "ov": "openvino", "torch": "torch", "pytorch": "torch",
                   "tensorrt": "tensorrt", "trt": "tensorrt"}
BACKEND_SUFFIXES = {"onnxruntime": (".onnx",), "openvino": (".xml", ".onnx"), "torch": (".pt", ".pth"),
                    "tensorrt": (".engine", ".plan")}

__all__ = ["Runner", "backend_for", "find_sidecar", "infer_flip_averaged", "load_runner", "read_sidecar",
           "write_sidecar"]


def _tensorrt_runner_class() -> Any:
    trt = require("tensorrt", "trt", "running TensorRT engines")
    if not hasattr(trt, "Runtime"):  # only type stubs (tensorrt-stubs) or a broken install: no real library
        raise MissingDependencyError("tensorrt", "trt", "running TensorRT engines; only stubs are installed")
    try:
        module = importlib.import_module("apnet_edge.runners.tensorrt_runner")
    except ModuleNotFoundError as exc:
        if exc.name == "apnet_edge.runners.tensorrt_runner":
            raise ModelError("this apnet-edge has no TensorRT runner yet; use the ONNX model with "
                             "backend='onnxruntime' or 'openvino'") from None
        raise MissingDependencyError(exc.name or "tensorrt", "trt", "running TensorRT engines") from exc
    return module.TensorRTRunner


def backend_for(path: Union[str, Path], backend: str = "auto") -> Optional[str]:
    """The runner :func:`load_runner` picks for ``path``: ``backend``'s alias resolved (``"ov"`` -> ``"openvino"``),
    or by the file's suffix for ``"auto"``; None when neither names one."""
    if backend != "auto":
        return BACKEND_ALIASES.get(str(backend).lower())
    return SUFFIX_BACKEND.get(Path(path).suffix.lower())


def load_runner(path: Union[str, Path], backend: str = "auto", card: Optional[ModelCard] = None,
                threads: Optional[int] = None, **kw: Any) -> Runner:
    """Open ``path`` with the runner of ``backend``.

    Args:
        path: ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO IR), ``.pt``/``.pth`` (PyTorch checkpoint),
            ``.engine``/``.plan`` (TensorRT).
        backend: ``"auto"`` (by suffix), ``"onnxruntime"``, ``"openvino"``, ``"torch"``, ``"tensorrt"``.
        card: a ModelCard overriding the model's own (metadata / sidecar).
        threads: CPU threads for inference.
        **kw: passed to the runner (e.g. ``providers=``, ``precision=``, ``device=``, ``task=``, ``max_batch=``).

    Raises ModelError for a missing file, an unknown suffix, a backend that cannot read the file or a corrupt
    model; MissingDependencyError (naming the extra to install) when the backend's library is absent.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    name = backend_for(p, backend)
    if backend != "auto" and name is None:
        raise ModelError(f"unknown backend {backend!r}; choose one of auto, onnxruntime, openvino, torch, tensorrt")
    if not p.exists():
        raise ModelError(f"model file {str(p)!r} not found; check the path")
    if p.is_dir():
        raise ModelError(f"model path {str(p)!r} is a folder; give the model file itself")
    if name is None:
        known = ", ".join(f"{s} ({b})" for s, b in SUFFIX_BACKEND.items())
        raise ModelError(f"cannot tell the backend of {str(p)!r} from its suffix {suffix or '(none)'!r}; "
                         f"known suffixes: {known}; or pass backend=")
    if suffix not in BACKEND_SUFFIXES[name]:
        raise ModelError(f"backend {name} cannot read {str(p)!r}; it reads {', '.join(BACKEND_SUFFIXES[name])} files")
    if name == "onnxruntime":
        from apnet_edge.runners.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(p, card=card, threads=threads, **kw)
    if name == "openvino":
        from apnet_edge.runners.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(p, card=card, threads=threads, **kw)
    if name == "torch":
        from apnet_edge.runners.torch_runner import TorchRunner

        return TorchRunner(p, card=card, threads=threads, **kw)
    cls = _tensorrt_runner_class()
    return cls(p, card=card, threads=threads, **kw)
