"""TensorRT runner: a serialized engine (``.engine`` / ``.plan``) behind the same interface as every other runner.

Works with TensorRT 8.5/8.6 (JetPack 5), 10.x (JetPack 6, desktop) and 11.x through the named-tensor API they
share (``num_io_tensors``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). No PyTorch:
CUDA memory and the stream go through :mod:`apnet_edge.runners.cuda_shim` (cuda-python, pycuda or
``polygraphy.cuda``, whichever the device has).

Per runner: one execution context, one CUDA stream, device buffers allocated once and grown only when a larger
batch arrives, pinned host buffers for the input and the returned output, a warm-up run on activation. Any batch
within the engine's optimisation profile runs in one call; larger batches are split by :class:`Runner.infer`,
and engines built with a fixed batch (DLA) get their last chunk padded.

Every engine built by ``apnet-edge build-engine`` has a sidecar ``<stem>.build.json`` (:class:`EngineInfo`) beside
it: TensorRT version, GPU and compute capability, precision, profile, source ONNX hash, the model card and the
exact build command. Before deserializing, the runner checks the sidecar against this device and TensorRT and,
on a mismatch, fails with a message that says to rebuild and gives the command.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import MissingDependencyError, ModelError
from apnet_edge.runners.base import Runner, graph_facts, resolve_card

if TYPE_CHECKING:
    import tensorrt as trt

    from apnet_edge.runners.cuda_shim import CudaApi, DeviceInfo, HostBuffer, Stream

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
MIN_TENSORRT = (8, 5)
"""Oldest TensorRT this runner supports: the first with the named-tensor API (``execute_async_v3``)."""
SIDECAR_SUFFIX = ".build.json"
"""Suffix of the engine sidecar: ``model_fp16_....engine`` -> ``model_fp16_....build.json``."""
SIDECAR_FORMAT = "apnet-edge/tensorrt-engine@1"
JETSON_HINT = ("on Jetson the bindings come with JetPack: sudo apt-get install python3-libnvinfer, and create the "
               "virtualenv with --system-site-packages")


# ------------------------------------------------------------------------------------------------ versions


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)``; non-numeric tails are dropped (``"8.6.1.post1"`` -> ``(8, 6, 1)``)."""
    out = []
    for part in str(text).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def short_version(text: str) -> str:
    """Major.minor.patch of a TensorRT version: engines load only on the same one (``"10.3.0.30"`` -> ``"10.3.0"``)."""
    v = parse_version(text)[:3]
    return ".".join(str(p) for p in v) if v else str(text)


def ensure_tensorrt(purpose: str = "running TensorRT engines") -> str:
    """Import TensorRT and return its version string.

    Raises:
        MissingDependencyError: TensorRT is not installed, or only its type stubs are (``tensorrt-stubs`` leaves
            an importable but empty ``tensorrt`` namespace package). The message names
            ``pip install 'apnet-edge[trt]'`` and the JetPack package.
        ModelError: TensorRT is older than 8.5.
    """
    try:
        import tensorrt as trt_mod
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", f"{purpose}; {JETSON_HINT}") from exc
    version = getattr(trt_mod, "__version__", None)
    if version is None or not hasattr(trt_mod, "Runtime"):
        raise MissingDependencyError("tensorrt", "trt", f"{purpose}; only type stubs (tensorrt-stubs) are installed; "
                                                        f"{JETSON_HINT}")
    if parse_version(version)[:2] < MIN_TENSORRT:
        raise ModelError(f"TensorRT {version} is too old for apnet-edge (needs >= 8.5, the named-tensor API); "
                         f"upgrade JetPack (5.1+) or pip install 'apnet-edge[trt]'")
    return str(version)


# ------------------------------------------------------------------------------------------------ logger

_LOGGER: Any = None
_ERRORS: deque[str] = deque(maxlen=50)


def trt_logger() -> trt.ILogger:
    """The process-wide TensorRT logger of apnet-edge: forwards to :mod:`logging` (``apnet_edge.tensorrt``) and
    keeps the latest errors for :func:`take_trt_errors`. TensorRT uses one logger per process, so builder, parser
    and runtime all get this one."""
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    import tensorrt as trt_mod

    pylog = logging.getLogger("apnet_edge.tensorrt")
    sev = trt_mod.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.ERROR, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
              sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}
    errors = {sev.INTERNAL_ERROR, sev.ERROR}

    class _Logger(trt_mod.ILogger):
        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)  # trampoline classes must initialise their parent explicitly

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            try:
                if severity in errors:
                    _ERRORS.append(str(msg))
                pylog.log(levels.get(severity, logging.DEBUG), "%s", msg)
            except Exception:  # a logger called from C++ must never raise
                pass

    _LOGGER = _Logger()
    return _LOGGER


def take_trt_errors() -> list[str]:
    """The TensorRT error messages logged since the last call (and forget them)."""
    out = list(_ERRORS)
    _ERRORS.clear()
    return out


# ------------------------------------------------------------------------------------------------ sidecar


@dataclass(frozen=True)
class EngineInfo:
    """What the sidecar ``<engine stem>.build.json`` records about an engine.

    Shapes are full input shapes, e.g. ``(1, 3, 256, 128)``; ``workspace_mib`` in MiB; ``build_seconds`` in seconds.
    ``card`` is the model card as a dict (None for detectors built from a YOLO ONNX without one).
    ``build_command`` is the ``apnet-edge build-engine`` line that rebuilds the engine.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    task: str
    input_name: str
    profile_min: tuple[int, ...]
    profile_opt: tuple[int, ...]
    profile_max: tuple[int, ...]
    source_onnx: str
    source_onnx_sha256: str
    build_command: str
    card: Optional[dict[str, Any]] = None
    trtexec_command: str = ""
    int8_mode: Optional[str] = None
    strongly_typed: bool = False
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    workspace_mib: Optional[int] = None
    timing_cache: Optional[str] = None
    calibration: Optional[dict[str, Any]] = None
    engine_file: str = ""
    engine_sha256: str = ""
    built_at: str = ""
    build_seconds: float = 0.0
    apnet_edge_version: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The sidecar JSON object (nested, human-readable)."""
        d = asdict(self)
        return {
            "format": SIDECAR_FORMAT,
            "engine": {"file": d["engine_file"], "sha256": d["engine_sha256"], "built_at": d["built_at"],
                       "build_seconds": round(float(d["build_seconds"]), 3),
                       "apnet_edge_version": d["apnet_edge_version"]},
            "tensorrt": {"version": d["tensorrt_version"]},
            "gpu": {"name": d["gpu_name"], "compute_capability": d["compute_capability"]},
            "precision": d["precision"], "int8_mode": d["int8_mode"], "strongly_typed": d["strongly_typed"],
            "task": d["task"],
            "profile": {"input": d["input_name"], "min": list(self.profile_min), "opt": list(self.profile_opt),
                        "max": list(self.profile_max)},
            "dla": {"core": d["dla_core"], "gpu_fallback": d["gpu_fallback"]},
            "workspace_mib": d["workspace_mib"], "timing_cache": d["timing_cache"], "calibration": d["calibration"],
            "source_onnx": {"path": d["source_onnx"], "sha256": d["source_onnx_sha256"]},
            "card": d["card"],
            "build_command": d["build_command"], "trtexec_command": d["trtexec_command"],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "sidecar") -> EngineInfo:
        """Parse :meth:`to_dict` output; ModelError naming ``source`` when a required key is missing."""
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise ModelError(f"{source} is not an apnet-edge engine sidecar (no \"format\": {SIDECAR_FORMAT!r})")
        try:
            eng, prof, dla = data.get("engine") or {}, data["profile"], data.get("dla") or {}
            kw: dict[str, Any] = {
                "tensorrt_version": str(data["tensorrt"]["version"]), "gpu_name": str(data["gpu"]["name"]),
                "compute_capability": str(data["gpu"]["compute_capability"]), "precision": str(data["precision"]),
                "task": str(data.get("task") or "reid"), "input_name": str(prof["input"]),
                "profile_min": tuple(int(v) for v in prof["min"]), "profile_opt": tuple(int(v) for v in prof["opt"]),
                "profile_max": tuple(int(v) for v in prof["max"]),
                "source_onnx": str(data["source_onnx"]["path"]), "source_onnx_sha256": str(data["source_onnx"]["sha256"]),
                "build_command": str(data.get("build_command") or ""), "card": data.get("card"),
                "trtexec_command": str(data.get("trtexec_command") or ""), "int8_mode": data.get("int8_mode"),
                "strongly_typed": bool(data.get("strongly_typed", False)), "dla_core": dla.get("core"),
                "gpu_fallback": bool(dla.get("gpu_fallback", False)), "workspace_mib": data.get("workspace_mib"),
                "timing_cache": data.get("timing_cache"), "calibration": data.get("calibration"),
                "engine_file": str(eng.get("file") or ""), "engine_sha256": str(eng.get("sha256") or ""),
                "built_at": str(eng.get("built_at") or ""), "build_seconds": float(eng.get("build_seconds") or 0.0),
                "apnet_edge_version": str(eng.get("apnet_edge_version") or ""),
                "notes": tuple(str(n) for n in data.get("notes") or ()),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source} is incomplete or malformed ({type(exc).__name__}: {exc}); rebuild the engine "
                             f"with apnet-edge build-engine to rewrite it") from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in kw.items() if k in known})


def engine_sidecar_path(engine_path: PathLike) -> Path:
    """The sidecar beside an engine: ``x.engine`` -> ``x.build.json``."""
    p = Path(engine_path)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def write_engine_info(engine_path: PathLike, info: EngineInfo) -> Path:
    """Write ``info`` as the engine's sidecar; returns its path."""
    side = engine_sidecar_path(engine_path)
    side.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return side


def read_engine_info(engine_path: PathLike) -> Optional[EngineInfo]:
    """The engine's sidecar, or None when there is none; ModelError when it exists but is unreadable."""
    side = engine_sidecar_path(engine_path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"engine sidecar {str(side)!r} is not readable JSON ({exc}); delete it or rebuild the "
                         f"engine") from None
    return EngineInfo.from_dict(data, f"engine sidecar {str(side)!r}")


def gpu_key(name: str) -> str:
    """GPU name for comparisons: lowercase alphanumerics, without a leading ``nvidia`` or a ``(...)`` suffix."""
    n = re.sub(r"\(.*?\)", "", str(name)).lower()
    n = re.sub(r"[^a-z0-9]+", "", n)
    return n[len("nvidia"):] if n.startswith("nvidia") and len(n) > len("nvidia") else n


def rebuild_hint(info: Optional[EngineInfo], engine_path: PathLike) -> str:
    """``Rebuild it on this device: <command>`` from the sidecar, or a generic command when there is none."""
    cmd = info.build_command if info is not None and info.build_command else (
        f"apnet-edge build-engine --onnx <the source model.onnx> --out {Path(engine_path).parent or '.'}")
    return f"Rebuild it on this device with: {cmd}"


def _numpy_dtype(trt_mod: Any, trt_dtype: Any, tensor: str, where: str) -> np.dtype:
    """The numpy dtype of an engine I/O tensor; BF16/FP8 I/O (no numpy twin) is refused with the fix."""
    try:
        return np.dtype(trt_mod.nptype(trt_dtype))
    except TypeError:
        raise ModelError(f"{where}: I/O tensor {tensor!r} is {trt_dtype}, which numpy cannot hold; rebuild the engine "
                         f"with FP32 or FP16 inputs and outputs (keep the model's I/O types when converting it)") from None


def check_engine_compat(info: EngineInfo, engine_path: PathLike, trt_version: str, device: DeviceInfo,
                        strict_gpu: bool = True) -> list[str]:
    """Check that an engine (described by ``info``) can load here; returns warnings, raises on a hard mismatch.

    Raises ModelError, naming both sides and the rebuild command, when the TensorRT version (major.minor.patch)
    differs, the compute capability differs, or (``strict_gpu``) the GPU model differs. With ``strict_gpu=False``
    another GPU of the same compute capability is only a warning (TensorRT loads it, possibly slower).
    """
    where = f"TensorRT engine {str(engine_path)!r}"
    hint = rebuild_hint(info, engine_path)
    if short_version(info.tensorrt_version) != short_version(trt_version):
        raise ModelError(f"{where} was built with TensorRT {info.tensorrt_version}, but this device has TensorRT "
                         f"{trt_version}; an engine loads only with the TensorRT version that built it. {hint}")
    here = f"{device.name} (compute capability {device.compute_capability})"
    built = f"{info.gpu_name} (compute capability {info.compute_capability})"
    if str(info.compute_capability) != str(device.compute_capability):
        raise ModelError(f"{where} was built for {built}, but this GPU is {here}; an engine runs only on the GPU "
                         f"architecture it was built for. {hint}")
    if gpu_key(info.gpu_name) != gpu_key(device.name):
        msg = (f"{where} was built on {built}, but this GPU is {here}; its kernels were tuned for the other GPU. "
               f"{hint}")
        if strict_gpu:
            raise ModelError(msg + " (or load it with strict_gpu=False to run it anyway)")
        return [msg]
    return []


# ------------------------------------------------------------------------------------------------ runner


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def _volume(shape: Sequence[int]) -> int:
    return int(np.prod(shape)) if len(shape) else 1


class _Buffer:
    """One I/O tensor's device memory (``capacity`` bytes) and, for copied tensors, its pinned host twin."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype
        self.device_ptr = 0
        self.capacity = 0
        self.host: Optional[HostBuffer] = None


class TensorRTRunner(Runner):
    """Run a TensorRT engine.

    Args:
        path: the ``.engine`` / ``.plan`` file; its sidecar ``<stem>.build.json`` (written by ``build-engine``)
            supplies the model card, precision and task, and is checked against this GPU and TensorRT.
        card: a ModelCard overriding the sidecar's (engines without a sidecar: else ``<stem>.card.json``).
        threads: ignored (accepted so every runner takes the same arguments).
        task: ``"reid"`` or ``"detector"``; default: the sidecar's, else ``"reid"``.
        normalize_output: L2-normalise the output rows (default: True for re-ID).
        max_batch: cap on crops per call (default and upper bound: the profile's max batch).
        output_name: which output to return (default: the first).
        warmup: inference runs on zeros at activation (at the profile's opt batch); 0 to skip.
        cuda_binding: ``"cuda-python"``, ``"pycuda"``, ``"polygraphy"`` or None (first available).
        device: CUDA device index.
        strict_gpu: refuse an engine built on another GPU model of the same compute capability (default); with
            False that is a warning.
        check_compat: compare the sidecar with this GPU/TensorRT before loading (default True).

    Raises:
        MissingDependencyError: TensorRT or every CUDA binding is missing (names ``pip install 'apnet-edge[trt]'``).
        ModelError: missing/corrupt engine, an engine for another GPU or TensorRT (with the rebuild command),
            an engine with more than one input.
    """

    backend = "tensorrt"

    def __init__(self, path: PathLike, card: Optional[ModelCard] = None, threads: Optional[int] = None,
                 task: Optional[str] = None, normalize_output: Optional[bool] = None,
                 max_batch: Optional[int] = None, output_name: Optional[str] = None, warmup: int = 1,
                 cuda_binding: Optional[str] = None, device: int = 0, strict_gpu: bool = True,
                 check_compat: bool = True) -> None:
        from apnet_edge.runners import cuda_shim

        self.path = Path(path)
        where = f"TensorRT engine {str(self.path)!r}"
        if not self.path.is_file():
            raise ModelError(f"{where} not found; check the path")
        self.trt_version = ensure_tensorrt("running TensorRT engines")
        import tensorrt as trt_mod

        self.info = read_engine_info(self.path)
        self.cuda: CudaApi = cuda_shim.get_cuda(cuda_binding)
        self.device_info = self.cuda.device_info(device)
        self.compat_warnings: list[str] = []
        if self.info is not None and check_compat:
            self.compat_warnings = check_engine_compat(self.info, self.path, self.trt_version, self.device_info,
                                                       strict_gpu)
            for w in self.compat_warnings:
                warnings.warn(w, RuntimeWarning, stacklevel=2)

        take_trt_errors()
        init_plugins = getattr(trt_mod, "init_libnvinfer_plugins", None)
        if init_plugins is not None:  # engines may use TensorRT's standard plugins
            init_plugins(trt_logger(), "")
        runtime = trt_mod.Runtime(trt_logger())
        if self.info is not None and self.info.dla_core is not None:
            runtime.DLA_core = int(self.info.dla_core)  # run on the DLA core it was built for (as trtexec does)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            errs = take_trt_errors()
            detail = f": {'; '.join(errs[-3:])}" if errs else ""
            raise ModelError(f"cannot deserialize {where}{detail}. It is corrupt, or it was built with another "
                             f"TensorRT version (this is {self.trt_version}) or for another GPU (this is "
                             f"{self.device_info.name}, compute capability {self.device_info.compute_capability}). "
                             f"{rebuild_hint(self.info, self.path)}")
        self._runtime, self._engine = runtime, engine

        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt_mod.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or not outputs:
            raise ModelError(f"{where} has inputs {inputs} and outputs {outputs}; expected one image input and at "
                             f"least one output")
        in_name = inputs[0]
        if output_name is None:
            out_name = outputs[0]
        elif output_name in outputs:
            out_name = output_name
        else:
            raise ModelError(f"{where} has no output {output_name!r}; its outputs are {outputs}")
        self._outputs = outputs
        declared = _shape(engine.get_tensor_shape(in_name))
        if all(d >= 0 for d in declared):  # a static engine: its shape is the whole profile
            pmin = popt = pmax = declared
        else:
            pmin, popt, pmax = (_shape(s) for s in engine.get_tensor_profile_shape(in_name, 0))
        self.profile = (pmin, popt, pmax)
        # a dynamic dimension the profile pins (min == max, e.g. H and W) counts as static for the card checks
        in_shape = [(lo if lo == hi else None) if d < 0 else d for d, lo, hi in zip(declared, pmin, pmax)]
        out_shape = [None if d < 0 else d for d in _shape(engine.get_tensor_shape(out_name))]
        self.graph_input_shape, self.graph_output_shape = tuple(in_shape), tuple(out_shape)

        task = task or (self.info.task if self.info is not None else "reid")
        facts = graph_facts(in_shape, out_shape, task, where)
        meta = json.dumps(self.info.card) if self.info is not None and self.info.card else None
        chosen, source = resolve_card(self.path, card, meta, facts, task, where)
        if self.info is not None and card is None and meta is not None:
            source = f"engine sidecar {str(engine_sidecar_path(self.path))!r}"

        self._min_batch, self._opt_batch, prof_max = pmin[0], popt[0], pmax[0]
        cap = prof_max if max_batch is None else max(min(int(max_batch), prof_max), self._min_batch)
        if self.info is not None:
            precision = self.info.precision
        else:
            precision = str(chosen.extra.get("precision") or "unknown")
        self._dtypes = {n: _numpy_dtype(trt_mod, engine.get_tensor_dtype(n), n, where) for n in inputs + outputs}
        self._setup(card=chosen, name=str(self.path), task=task, normalize_output=normalize_output,
                    max_batch=cap, fixed_batch=pmin[0] == pmax[0], input_name=in_name, output_name=out_name,
                    precision=precision, input_dtype=self._dtypes[in_name], card_source=source)
        self.warmup = int(warmup)
        self._context: Any = None
        self._stream: Optional[Stream] = None
        self._buffers: dict[str, _Buffer] = {}
        self._shape: Optional[tuple[int, ...]] = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ facts
    @property
    def engine(self) -> trt.ICudaEngine:
        """The deserialized ``ICudaEngine``."""
        return self._engine

    @property
    def min_batch(self) -> int:
        """Smallest batch the profile accepts (smaller chunks are padded up to it)."""
        return self._min_batch

    @property
    def allocated_bytes(self) -> dict[str, int]:
        """Device bytes currently allocated per I/O tensor (grows only when a larger batch needs it)."""
        return {n: b.capacity for n, b in self._buffers.items()}

    # ------------------------------------------------------------------ life cycle
    def _activate(self) -> None:
        take_trt_errors()
        context = self._engine.create_execution_context()
        if context is None:
            errs = take_trt_errors()
            raise ModelError(f"TensorRT could not create an execution context for {self.name!r}"
                             f"{': ' + '; '.join(errs[-3:]) if errs else ''} (out of GPU memory?)")
        self._context = context
        self._stream = self.cuda.stream_create()
        self._buffers = {n: _Buffer(n, self._dtypes[n]) for n in [self.input_name, *self._outputs]}
        self._shape = None
        if self.warmup > 0:
            shape = (max(min(self._opt_batch, self.max_batch or self._opt_batch), self._min_batch),
                     *self.input_shape)
            x = np.zeros(shape, self.input_dtype)
            for _ in range(self.warmup):
                self._run(x)

    def _deactivate(self) -> None:
        cuda = self.cuda
        for buf in self._buffers.values():
            if buf.device_ptr:
                cuda.free(buf.device_ptr)
            if buf.host is not None:
                cuda.host_free(buf.host)
        self._buffers = {}
        if self._stream is not None:
            cuda.stream_destroy(self._stream)
        self._stream = None
        self._context = None
        self._shape = None

    # ------------------------------------------------------------------ buffers
    def _reserve(self, buf: _Buffer, nbytes: int, host: bool) -> bool:
        """Make ``buf`` hold ``nbytes`` (device, and pinned host if ``host``); True when it was (re)allocated."""
        grew = False
        if nbytes > buf.capacity:
            if buf.device_ptr:
                self.cuda.free(buf.device_ptr)
                buf.device_ptr = 0
            buf.device_ptr = self.cuda.malloc(nbytes)
            buf.capacity = nbytes
            grew = True
        if host and (buf.host is None or buf.host.array.nbytes < buf.capacity):
            if buf.host is not None:
                self.cuda.host_free(buf.host)
            buf.host = self.cuda.host_empty((buf.capacity // buf.dtype.itemsize,), buf.dtype)
        return grew

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        ctx = self._context
        lo, _, hi = self.profile
        if not ctx.set_input_shape(self.input_name, shape):
            errs = take_trt_errors()
            raise ModelError(f"{self.name}: input shape {shape} is outside the engine's profile {lo} .. {hi}"
                             f"{': ' + errs[-1] if errs else ''}")
        for name in self._outputs:
            oshape = _shape(ctx.get_tensor_shape(name))
            if any(d < 0 for d in oshape):
                raise ModelError(f"{self.name}: output {name!r} has a data-dependent shape {oshape}; engines with "
                                 f"such outputs (e.g. an NMS plugin) are not supported; export the detector without "
                                 f"NMS")
            self._out_shapes[name] = oshape
        need = {self.input_name: _volume(shape) * self._dtypes[self.input_name].itemsize}
        for name in self._outputs:
            need[name] = _volume(self._out_shapes[name]) * self._dtypes[name].itemsize
        for name, nbytes in need.items():
            copied = name in (self.input_name, self.output_name)
            if self._reserve(self._buffers[name], nbytes, copied):
                ctx.set_tensor_address(name, self._buffers[name].device_ptr)
        self._shape = shape

    # ------------------------------------------------------------------ inference
    def _run(self, x: np.ndarray) -> np.ndarray:
        n = int(x.shape[0])
        if n < self._min_batch:  # profiles with min batch > 1 (fixed-batch / DLA engines): pad, drop after
            x = np.concatenate([x, np.repeat(x[-1:], self._min_batch - n, axis=0)], axis=0)
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        shape = _shape(x.shape)
        if shape != self._shape:
            self._set_shape(shape)
        stream = self._stream
        assert stream is not None
        inp, out = self._buffers[self.input_name], self._buffers[self.output_name]
        assert inp.host is not None and out.host is not None
        in_count = _volume(shape)
        host_in = inp.host.array[:in_count]
        np.copyto(host_in.reshape(shape), x, casting="no")
        self.cuda.htod_async(inp.device_ptr, host_in, stream)
        if not self._context.execute_async_v3(stream.handle):
            errs = take_trt_errors()
            raise ModelError(f"TensorRT inference failed on {self.name!r} with input {shape}"
                             f"{': ' + '; '.join(errs[-3:]) if errs else ''}")
        oshape = self._out_shapes[self.output_name]
        host_out = out.host.array[:_volume(oshape)]
        self.cuda.dtoh_async(host_out, out.device_ptr, stream)
        self.cuda.stream_synchronize(stream)
        return host_out.reshape(oshape)[:n].copy()
