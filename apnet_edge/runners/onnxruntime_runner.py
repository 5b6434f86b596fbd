"""ONNX Runtime runner: any ONNX re-ID model (ours, with the card in ``metadata_props``, or a third party's, with a
sidecar card) or detector, on the CPU by default, on CUDA / TensorRT execution providers when asked and present."""

from __future__ import annotations

import bisect
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError, require
from apnet_edge.profiling import ExecutionProfile, mean_node_times
from apnet_edge.runners.base import CARD_KEY, Runner, graph_facts, one_line, resolve_card

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
ProviderSpec = Union[str, tuple[str, dict[str, Any]]]


def resolve_providers(providers: Union[None, str, Sequence[ProviderSpec]], available: Sequence[str]) -> list:
    """Execution providers to ask ONNX Runtime for, best first, always ending with the CPU.

    ``providers``: None or ``"cpu"`` (CPU only), ``"auto"`` (TensorRT > CUDA > CPU, whichever are present),
    or a list of names / aliases (``"cuda"``, ``"tensorrt"``) / ``(name, options)`` pairs. A provider asked for
    but not present in this onnxruntime build is skipped with a warning (the CPU runs instead).
    """
    if providers is None:
        providers = ["cpu"]
    elif isinstance(providers, str):
        if providers == "auto":
            providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        else:
            providers = [providers]
    out: list = []
    for spec in providers:
        name, opts = (spec if isinstance(spec, tuple) else (spec, None))
        full = PROVIDER_ALIASES.get(str(name).lower(), str(name))
        if full not in available:
            warnings.warn(f"onnxruntime execution provider {full} was asked for but this onnxruntime has only "
                          f"{list(available)}; skipping it (install onnxruntime-gpu for CUDA/TensorRT)",
                          RuntimeWarning, stacklevel=3)
            continue
        if any((o[0] if isinstance(o, tuple) else o) == full for o in out):
            continue
        out.append((full, opts) if opts else full)
    if not any((o[0] if isinstance(o, tuple) else o) == "CPUExecutionProvider" for o in out):
        out.append("CPUExecutionProvider")
    return out


class OnnxRuntimeRunner(Runner):
    """Run an ONNX model with ONNX Runtime.

    Args:
        path: the ``.onnx`` file.
        card: a ModelCard overriding the model's own; otherwise the card comes from ``metadata_props``
            key ``apnet_edge.card``, then from a sidecar JSON beside the file (see :mod:`apnet_edge.runners.sidecar`).
        threads: ``intra_op_num_threads`` (None: ONNX Runtime's default, one per core).
        providers: see :func:`resolve_providers`; CPU by default.
        task: ``"reid"`` (rank-4 input, rank-2 output, L2-normalised output) or ``"detector"`` (raw output).
        normalize_output: L2-normalise the output rows (default: True for re-ID, False for detectors).
        max_batch: cap on the crops per call for dynamic-batch models (fixed-batch models use their batch).
        output_name: which output to return (default: the first).
        profile: run the session with ONNX Runtime's profiler on, for :meth:`node_profile` (profiles once; costs
            time per call, for ``bench --profile`` only).
    """

    backend = "onnxruntime"

    def __init__(self, path: Union[str, Path], card: Optional[ModelCard] = None, threads: Optional[int] = None,
                 providers: Union[None, str, Sequence[ProviderSpec]] = None, task: str = "reid",
                 normalize_output: Optional[bool] = None, max_batch: Optional[int] = None,
                 output_name: Optional[str] = None, profile: bool = False) -> None:
        self._ort = require("onnxruntime", "onnxruntime", "running ONNX models")
        self.path = Path(path)
        where = f"ONNX model {str(self.path)!r}"
        if not self.path.is_file():
            raise ModelError(f"{where} not found; check the path")
        self.threads = threads
        self.profile = bool(profile)
        self._profile_dir: Optional[tempfile.TemporaryDirectory] = None
        self._providers_asked = resolve_providers(providers, self._ort.get_available_providers())
        self._session: Any = None
        self._session = self._make_session(where)

        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{where} has {len(inputs)} inputs {[i.name for i in inputs]}; expected one image input")
        inp = inputs[0]
        names = [o.name for o in outputs]
        if output_name is None:
            out = outputs[0]
        elif output_name in names:
            out = outputs[names.index(output_name)]
        else:
            raise ModelError(f"{where} has no output {output_name!r}; its outputs are {names}")
        in_shape = [d if isinstance(d, int) else None for d in inp.shape]
        out_shape = [d if isinstance(d, int) else None for d in out.shape]
        self.graph_input_shape, self.graph_output_shape = tuple(in_shape), tuple(out_shape)
        facts = graph_facts(in_shape, out_shape, task, where)
        meta = self._session.get_modelmeta().custom_metadata_map or {}
        card, source = resolve_card(self.path, card, meta.get(CARD_KEY), facts, task, where)
        if inp.type not in ORT_DTYPES:
            raise ModelError(f"{where}: input {inp.name!r} has type {inp.type}; supported: {sorted(ORT_DTYPES)}")
        dtype = ORT_DTYPES[inp.type]
        fixed = in_shape[0] is not None
        batch = in_shape[0] if fixed else max_batch
        precision = str(card.extra.get("precision") or ("fp16" if dtype == np.float16 else "fp32"))
        self._setup(card=card, name=str(self.path), task=task, normalize_output=normalize_output, max_batch=batch,
                    fixed_batch=fixed, input_name=inp.name, output_name=out.name, precision=precision,
                    input_dtype=dtype, card_source=source)

    def _make_session(self, where: str) -> Any:
        ort = self._ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        if self.profile:
            self._profile_dir = tempfile.TemporaryDirectory(prefix="apnet-edge-ort-profile-")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(self._profile_dir.name) / "profile")
        try:
            return ort.InferenceSession(str(self.path), so, providers=self._providers_asked)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelError(f"cannot load {where}: {one_line(exc)} (is it a complete, valid .onnx file?)") from None

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, best first."""
        return list(self._session.get_providers()) if self._session is not None else []

    def _activate(self) -> None:
        if self._session is None:
            self._session = self._make_session(f"ONNX model {str(self.path)!r}")

    def _deactivate(self) -> None:
        if self._profile_dir is not None:  # profiled but never read: stop the profiler before its folder goes
            try:
                self._session.end_profiling()
            except Exception:  # nothing to keep
                pass
            self._profile_dir.cleanup()
            self._profile_dir = None
        self._session = None

    def node_profile(self, executions: int) -> ExecutionProfile:
        """Mean kernel time per node over the last ``executions`` session runs, slowest first (op types as ONNX
        names them, kernels by execution provider), and the runs' mean time (ONNX Runtime's ``model_run``). Ends
        the session's profiler: a runner profiles once."""
        where = f"ONNX model {str(self.path)!r}"
        if not self.profile:
            raise ModelError(f"{where} was opened without profile=True; open it with profile=True to profile it")
        if self._profile_dir is None:
            raise ModelError(f"{where}: ONNX Runtime's profiler was read already (a runner profiles once); open a new "
                             f"runner with profile=True")
        if self._session is None:
            raise ModelError(f"{where}: the runner is not active; profile inside its `with` block")
        try:
            path = self._session.end_profiling()
            events = json.loads(Path(path).read_text()) if path else []
        except (OSError, ValueError) as exc:
            raise ModelError(f"{where}: cannot read ONNX Runtime's profile: {one_line(exc)}") from None
        finally:
            self._profile_dir.cleanup()
            self._profile_dir = None
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")[-max(1, int(executions)):]
        if not runs:
            raise ModelError(f"{where}: nothing to profile yet; run infer() first")
        per_run: list[dict[str, tuple[str, str, float]]] = [{} for _ in runs]
        starts = [r[0] for r in runs]
        for e in events:
            if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
                continue
            i = bisect.bisect_right(starts, e["ts"]) - 1
            if i < 0 or e["ts"] > runs[i][1]:
                continue
            name = e["name"][: -len("_kernel_time")]
            args = e.get("args", {})
            op, kernel, us = per_run[i].get(name, (args.get("op_name", "?"), args.get("provider", "?"), 0.0))
            per_run[i][name] = (op, kernel, us + float(e["dur"]))
        return mean_node_times(per_run, [float(end - start) for start, end in runs])

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self.output_name], {self.input_name: x})[0]
        except Exception as exc:
            raise ModelError(f"ONNX Runtime failed on {self.name!r} with input {tuple(x.shape)}: "
                             f"{one_line(exc)}") from None
