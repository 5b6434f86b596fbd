"""OpenVINO runner: OpenVINO IR (``.xml`` + ``.bin``) or ONNX models on the CPU (or another OpenVINO device).

The card comes from the model's ``rt_info`` (``apnet_edge/card``, or the ONNX ``metadata_props`` OpenVINO keeps
under ``framework/apnet_edge.card``), else from a sidecar beside the file, else from ``card=``.
Fixed-batch models are reshaped to a dynamic batch when that provably gives the same embeddings (checked with one
trial batch of 2 against single calls); otherwise they stay fixed and the runner splits batches.

``static_batches``: OpenVINO runs a model compiled for one static batch size faster than the same model with a
dynamic batch (measured on APNet-C ResNet-50, 2-vCPU Xeon with AMX: +14 % images/s at batch 1 in INT8, +36 % at
batch 16 in bf16; docs/benchmarks.md). The runner compiles such a static copy for each listed size and runs chunks
of exactly that size on it. OpenVINO 2026.4 crashes the whole process (SIGSEGV) while compiling some of them (an
APNet-C pyramid at static batch 4 or 8), so every static copy is first compiled and run once in a child process;
a size whose probe fails stays on the dynamic model, with a warning. The static copies of a CPU INT8 model compute
its quantized attention gates in float (:mod:`apnet_edge.runners.gates`), which is faster there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from collections import deque
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError, require
from apnet_edge.profiling import ExecutionProfile, mean_node_times
from apnet_edge.runners.base import CARD_KEY, Runner, graph_facts, one_line, resolve_card

PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
TYPE_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
OV_DTYPES = {"f32": np.float32, "f16": np.float16, "u8": np.uint8}
PROBE_TIMEOUT_S = 600.0
PROFILE_KEEP = 1000  # executions whose per-node times a profiling runner keeps
# Compiles and runs the model once at a static batch; the parent reads only the exit status and stderr.
_PROBE = """
import json, sys
import numpy as np
import openvino as ov
a = json.loads(sys.argv[1])
core = ov.Core()
model = None
if a["gates"]:
    from apnet_edge.runners.gates import read_with_float_gates
    model = read_with_float_gates(core, a["path"], a["gates"])
if model is None:
    model = core.read_model(a["path"])
shape = [a["batch"], *a["rest"]]
model.reshape({model.input(0): ov.PartialShape(shape)})
compiled = core.compile_model(model, a["device"], a["config"])
compiled(np.zeros(shape, np.dtype(a["dtype"])))
"""
_probed: dict[tuple, Optional[str]] = {}  # (file, size, mtime, batch, device, config, gates) -> None or why not


def _rt_card(model: Any) -> Optional[str]:
    for path in (["apnet_edge", "card"], ["framework", CARD_KEY]):
        try:
            if model.has_rt_info(path):
                return str(model.get_rt_info(path).astype(str))
        except Exception:  # older OpenVINO: has_rt_info may not accept nested paths
            continue
    return None


class OpenVinoRunner(Runner):
    """Run a model with OpenVINO.

    Args:
        path: ``.xml`` (with its ``.bin`` beside it) or ``.onnx``.
        card: a ModelCard overriding the model's own.
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default).
        precision: None (OpenVINO's default: bf16 on CPUs that have it, else f32), ``"f32"``, ``"bf16"``, ``"f16"``.
        device: OpenVINO device name (``"CPU"``, ``"GPU"``, ``"AUTO"`` ...).
        task, normalize_output, max_batch: as for :class:`~apnet_edge.runners.OnnxRuntimeRunner`.
        dynamic_batch: try to reshape a fixed-batch model to a dynamic batch.
        static_batches: batch sizes to also compile with a static shape (faster; see the module docstring). Chunks
            of exactly such a size run on that copy; a size OpenVINO cannot compile stays dynamic, with a warning.
            Ignored for models that keep a fixed batch.
        static_float_gates: the static copies of a CPU INT8 ONNX model compute its quantized attention gates in
            float between their quantized input and output (:mod:`apnet_edge.runners.gates`; faster there, needs
            the ``onnx`` package; the dynamic model is left as it is).
        profile: compile with ``PERF_COUNT`` and keep each execution's per-node times (the last
            :data:`PROFILE_KEEP`) for :meth:`node_profile`; costs time per call, for ``bench --profile`` only.
    """

    backend = "openvino"

    def __init__(self, path: Union[str, Path], card: Optional[ModelCard] = None, threads: Optional[int] = None,
                 precision: Optional[str] = None, device: str = "CPU", task: str = "reid",
                 normalize_output: Optional[bool] = None, max_batch: Optional[int] = None,
                 dynamic_batch: bool = True, static_batches: Sequence[int] = (),
                 static_float_gates: bool = True, profile: bool = False) -> None:
        self._ov = ov = require("openvino", "openvino", "running OpenVINO models")
        self.path = Path(path)
        where = f"OpenVINO model {str(self.path)!r}"
        if not self.path.is_file():
            raise ModelError(f"{where} not found; check the path")
        if self.path.suffix.lower() == ".xml" and not self.path.with_suffix(".bin").is_file():
            raise ModelError(f"{where} has no weights file {self.path.with_suffix('.bin').name!r} beside it")
        if precision is not None and precision.lower() not in PRECISIONS:
            raise ModelError(f"OpenVINO precision must be None, 'f32', 'bf16' or 'f16', found {precision!r}")
        self.device = device
        self.threads = threads
        self._config: dict[str, Any] = {}
        if precision is not None:
            self._config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision.lower()]
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self.profile = bool(profile)
        self._executions: deque[tuple[float, dict[str, tuple[str, str, float]]]] = deque(maxlen=PROFILE_KEEP)
        if self.profile:
            self._config["PERF_COUNT"] = True
        self._core = ov.Core()
        try:
            model = self._core.read_model(str(self.path))
        except Exception as exc:
            raise ModelError(f"cannot load {where}: {one_line(exc)} (is it a complete, valid model file?)") from None
        if len(model.inputs) != 1:
            raise ModelError(f"{where} has {len(model.inputs)} inputs; expected one image input")
        inp, out = model.input(0), model.output(0)
        in_shape = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
        out_shape = [d.get_length() if d.is_static else None for d in out.get_partial_shape()]
        facts = graph_facts(in_shape, out_shape, task, where)
        card, source = resolve_card(self.path, card, _rt_card(model), facts, task, where)
        type_name = inp.get_element_type().get_type_name()
        if type_name not in OV_DTYPES:
            raise ModelError(f"{where}: input type {type_name} is not supported; supported: {sorted(OV_DTYPES)}")
        self._task = task
        self._where = where
        self._compiled: Any = None
        self._request: Any = None
        fixed = in_shape[0] is not None
        self._dynamic_model: Any = None
        if fixed and dynamic_batch:
            self._dynamic_model = self._try_dynamic(model, in_shape, card)
        if self._dynamic_model is not None:
            fixed = False
        else:
            self._compiled = self._compile(model)
        self._model = self._dynamic_model if self._dynamic_model is not None else model
        bad = [b for b in static_batches if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1]
        if bad:
            raise ModelError(f"static_batches must be positive ints, found {list(static_batches)!r}")
        self.static_batches: tuple[int, ...] = () if fixed else tuple(sorted({int(b) for b in static_batches}))
        self._static: dict[int, Any] = {}  # batch -> infer request of its static copy (while active)
        gates = (card.extra.get("quantization") or {}).get("quantized_gates") or []
        self._gates: list[str] = [str(g) for g in gates] if static_float_gates and self.static_batches \
            and self.path.suffix.lower() == ".onnx" and find_spec("onnx") is not None else []
        self.static_float_gates = False  # set on activation: whether the static copies got float gate arithmetic
        batch = in_shape[0] if fixed else max_batch
        self._setup(card=card, name=str(self.path), task=task, normalize_output=normalize_output, max_batch=batch,
                    fixed_batch=fixed, input_name=inp.get_any_name(), output_name=out.get_any_name(),
                    precision=self._precision_of(card), input_dtype=OV_DTYPES[type_name], card_source=source)

    def _compile(self, model: Any) -> Any:
        try:
            return self._core.compile_model(model, self.device, self._config)
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot compile {self._where} for {self.device}: {one_line(exc)}") from None

    def _try_dynamic(self, model: Any, in_shape: list, card: ModelCard) -> Any:
        """Reshape to a dynamic batch and keep it only when a batch of 2 matches two single calls."""
        ov = self._ov
        try:
            fixed_compiled = self._compile(model)
            dyn = model.clone()
            dyn.reshape({dyn.input(0): ov.PartialShape([-1, *in_shape[1:]])})
            compiled = self._compile(dyn)
            rng = np.random.default_rng(0)
            x = rng.uniform(0, 255, (2, *in_shape[1:])).astype(np.float32)
            x = (x - 127.5) / 64.0 if card.pixel_scale != 1 else x
            two = np.asarray(compiled(x)[0], np.float32).reshape(2, -1)
            ones = np.concatenate([np.asarray(fixed_compiled(x[i:i + 1])[0], np.float32).reshape(1, -1)
                                   for i in range(2)])
            cos = (two * ones).sum(1) / np.maximum(np.linalg.norm(two, axis=1) * np.linalg.norm(ones, axis=1), 1e-12)
            if not np.all(cos > 0.99):
                return None
            self._compiled = compiled
            return dyn
        except Exception:  # the model's graph pins the batch (e.g. a Reshape to [1, C]); stay fixed
            return None

    def _precision_of(self, card: ModelCard) -> str:
        if card.extra.get("precision") == "int8":
            return "int8"
        try:
            name = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except Exception:
            name = self._config.get("INFERENCE_PRECISION_HINT", "f32")
        return TYPE_NAMES.get(name, name)

    def _activate(self) -> None:
        if self._compiled is None:
            self._compiled = self._compile(self._model)
        self._request = self._compiled.create_infer_request()
        source = None
        for b in self.static_batches:
            why = self._probe_static(b)
            if why is not None:
                warnings.warn(f"{self._where}: batch {b} runs on the dynamic-batch model: OpenVINO could not compile a "
                              f"static copy ({why})", RuntimeWarning, stacklevel=3)
                continue
            if source is None:
                source = self._static_source()
            model = source.clone()
            model.reshape({model.input(0): self._ov.PartialShape([b, *self.input_shape])})
            self._static[b] = self._compile(model).create_infer_request()

    def _static_source(self) -> Any:
        """The graph the static copies are made from: with float gate arithmetic where that applies."""
        self.static_float_gates = False
        if self._gates:
            from apnet_edge.runners.gates import read_with_float_gates

            try:
                model = read_with_float_gates(self._core, str(self.path), self._gates)
                if model is not None:
                    self.static_float_gates = True
                    return model
            except Exception as exc:  # keep the quantized gates rather than fail
                warnings.warn(f"{self._where}: static copies keep the quantized gates: {one_line(exc)}",
                              RuntimeWarning, stacklevel=4)
        return self._model

    @property
    def static_compiled(self) -> tuple[int, ...]:
        """The batch sizes that run on a static-shape copy (while active)."""
        return tuple(sorted(self._static))

    def _probe_static(self, batch: int) -> Optional[str]:
        """Compile and run the model at a static ``batch`` in a child process: None when that works, else why not."""
        st = self.path.stat()
        key = (str(self.path.resolve()), st.st_size, st.st_mtime_ns, batch, self.device,
               tuple(sorted((k, str(v)) for k, v in self._config.items())), tuple(self._gates))
        if key not in _probed:
            args = {"path": str(self.path), "batch": batch, "rest": list(self.input_shape), "device": self.device,
                    "config": self._config, "gates": self._gates, "dtype": np.dtype(self.input_dtype).name}
            try:
                proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True,
                                      text=True, timeout=PROBE_TIMEOUT_S)
                if proc.returncode == 0:
                    _probed[key] = None
                else:
                    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
                    sig = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
                    _probed[key] = f"the probe ended with {sig}" + (f": {lines[-1].strip()[:200]}" if lines else "")
            except subprocess.TimeoutExpired:
                _probed[key] = f"the probe took over {PROBE_TIMEOUT_S:.0f} s"
        return _probed[key]

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None
        self._static = {}

    def _run(self, x: np.ndarray) -> np.ndarray:
        request = self._static.get(int(x.shape[0]), self._request)
        try:
            t0 = time.perf_counter()
            request.infer({0: x})
            took = time.perf_counter() - t0
            out = np.array(request.get_output_tensor(0).data, copy=True)
        except Exception as exc:
            raise ModelError(f"OpenVINO failed on {self.name!r} with input {tuple(x.shape)}: {one_line(exc)}") from None
        if self.profile:
            self._executions.append((took * 1e6, {p.node_name: (p.node_type, p.exec_type,
                                                                p.real_time.total_seconds() * 1e6)
                                                  for p in request.profiling_info}))
        return out

    def node_profile(self, executions: int) -> ExecutionProfile:
        """Mean ``PERF_COUNT`` time per compiled node over the last ``executions`` executions (at most
        :data:`PROFILE_KEEP`), slowest first, node types and kernels as OpenVINO names them; and the mean time of
        ``infer`` on the request."""
        if not self.profile:
            raise ModelError(f"{self._where} was opened without profile=True; open it with profile=True to profile it")
        if not self._executions:
            raise ModelError(f"{self._where}: nothing to profile yet; run infer() first")
        last = list(self._executions)[-max(1, int(executions)):]
        return mean_node_times([nodes for _, nodes in last], [us for us, _ in last])
