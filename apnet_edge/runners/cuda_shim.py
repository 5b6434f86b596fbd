"""One small CUDA interface over whichever Python binding the device has.

TensorRT needs device memory, pinned host memory, a stream and async copies; the Python bindings for those
differ by platform: desktop pip installs get ``cuda-python`` (``cuda.bindings.runtime``, or ``cuda.cudart`` before
12.6), Jetson images often have ``pycuda``, and Polygraphy ships a ctypes wrapper of ``libcudart``
(``polygraphy.cuda``). :func:`get_cuda` returns the first that works, as a :class:`CudaApi`:

    cuda = get_cuda()                      # or get_cuda("pycuda"); env APNET_EDGE_CUDA_BINDING picks one too
    dev = cuda.malloc(nbytes)              # int device pointer
    host = cuda.host_empty((8, 2048), np.float32)   # pinned (page-locked) numpy array
    stream = cuda.stream_create()
    cuda.htod_async(dev, host, stream); cuda.stream_synchronize(stream)

Everything here is imported lazily: importing this module needs numpy only. Sizes are bytes; pointers are ints.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from apnet_edge.errors import ApnetError, MissingDependencyError

BINDINGS = ("cuda-python", "pycuda", "polygraphy")
"""Bindings :func:`get_cuda` tries, in this order (``auto``)."""
ENV_BINDING = "APNET_EDGE_CUDA_BINDING"
"""Environment variable naming the binding to use (one of :data:`BINDINGS`, or ``auto``)."""


class CudaError(ApnetError, RuntimeError):
    """A CUDA call failed (no GPU, driver too old, out of memory ...); the message names the call and the error."""


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU a process runs on: ``name`` as CUDA reports it (e.g. ``"NVIDIA GeForce RTX 4090"``, ``"Orin"``),
    ``compute_capability`` as ``"major.minor"`` (e.g. ``"8.7"``), ``total_memory`` in bytes (0 if unknown)."""

    name: str
    compute_capability: str
    total_memory: int = 0
    index: int = 0


class Stream:
    """A CUDA stream owned by a :class:`CudaApi`; ``handle`` is the ``cudaStream_t`` as an int (for TensorRT),
    ``native`` the binding's own stream object."""

    def __init__(self, handle: int, native: Any = None) -> None:
        self.handle = int(handle)
        self.native: Any = native if native is not None else handle


class HostBuffer:
    """Pinned host memory seen as a numpy array (``array``); ``ptr`` is its address."""

    def __init__(self, array: np.ndarray, ptr: int, owner: Any = None) -> None:
        self.array = array
        self.ptr = int(ptr)
        self.owner = owner


class CudaApi:
    """The operations the TensorRT runner needs. Subclasses wrap one binding; every method raises
    :class:`CudaError` on a failed call."""

    name = "base"

    def device_info(self, device: int = 0) -> DeviceInfo:
        raise NotImplementedError

    def malloc(self, nbytes: int) -> int:
        """Allocate ``nbytes`` of device memory; returns the device pointer."""
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def host_empty(self, shape: Sequence[int], dtype: Any) -> HostBuffer:
        """Allocate pinned host memory for an array of ``shape`` and ``dtype``."""
        raise NotImplementedError

    def host_free(self, buf: HostBuffer) -> None:
        raise NotImplementedError

    def stream_create(self) -> Stream:
        raise NotImplementedError

    def stream_destroy(self, stream: Stream) -> None:
        raise NotImplementedError

    def stream_synchronize(self, stream: Stream) -> None:
        raise NotImplementedError

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream, nbytes: Optional[int] = None) -> None:
        """Copy ``nbytes`` (default: all) of the C-contiguous host array ``src`` to device pointer ``dst``."""
        raise NotImplementedError

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream, nbytes: Optional[int] = None) -> None:
        """Copy ``nbytes`` (default: all of ``dst``) from device pointer ``src`` into the host array ``dst``."""
        raise NotImplementedError


def _nbytes(arr: np.ndarray, nbytes: Optional[int]) -> int:
    if not arr.flags.c_contiguous:
        raise CudaError("host arrays copied to or from the GPU must be C-contiguous")
    n = arr.nbytes if nbytes is None else int(nbytes)
    if n > arr.nbytes:
        raise CudaError(f"copy of {n} bytes does not fit the host array of {arr.nbytes} bytes")
    return n


def _array_at(ptr: int, shape: Sequence[int], dtype: Any) -> np.ndarray:
    """A numpy array over ``prod(shape) * itemsize`` bytes at address ``ptr`` (memory owned elsewhere)."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape)) if len(shape) else 1
    raw = (ctypes.c_byte * max(count * dt.itemsize, 1)).from_address(ptr)
    return np.frombuffer(raw, dtype=dt, count=count).reshape(tuple(shape))


# --------------------------------------------------------------------------------------------- cuda-python


class CudaPythonApi(CudaApi):
    """``cuda-python``: ``cuda.bindings.runtime`` (12.6 and later) or ``cuda.cudart`` (older releases)."""

    name = "cuda-python"

    def __init__(self, runtime: Any = None) -> None:
        if runtime is None:
            import importlib

            try:
                runtime = importlib.import_module("cuda.bindings.runtime")
            except ImportError:
                runtime = importlib.import_module("cuda.cudart")
        self.rt = runtime

    def _check(self, call: str, result: Any) -> Any:
        """cuda-python returns ``(err, value...)``; raise on ``err``, return the value(s)."""
        res = result if isinstance(result, tuple) else (result,)
        err, values = res[0], res[1:]
        if int(err) != 0:
            name = getattr(err, "name", str(err))
            text = ""
            try:
                ok, msg = self.rt.cudaGetErrorString(err)
                text = msg.decode() if isinstance(msg, bytes) else str(msg)
            except Exception:  # the message is a nicety; never hide the real error behind it
                pass
            raise CudaError(f"CUDA call {call} failed: {name}" + (f" ({text})" if text else "") + _hint(name))
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def device_info(self, device: int = 0) -> DeviceInfo:
        self._check("cudaSetDevice", self.rt.cudaSetDevice(device))
        props = self._check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = props.name
        name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
        return DeviceInfo(name=name.strip(), compute_capability=f"{props.major}.{props.minor}",
                          total_memory=int(props.totalGlobalMem), index=device)

    def malloc(self, nbytes: int) -> int:
        return int(self._check("cudaMalloc", self.rt.cudaMalloc(int(nbytes))))

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self.rt.cudaFree(int(ptr)))

    def host_empty(self, shape: Sequence[int], dtype: Any) -> HostBuffer:
        nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        ptr = int(self._check("cudaMallocHost", self.rt.cudaMallocHost(nbytes)))
        return HostBuffer(_array_at(ptr, shape, dtype), ptr)

    def host_free(self, buf: HostBuffer) -> None:
        self._check("cudaFreeHost", self.rt.cudaFreeHost(buf.ptr))

    def stream_create(self) -> Stream:
        s = self._check("cudaStreamCreate", self.rt.cudaStreamCreate())
        return Stream(int(s), s)

    def stream_destroy(self, stream: Stream) -> None:
        self._check("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream.native))

    def stream_synchronize(self, stream: Stream) -> None:
        self._check("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream.native))

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream, nbytes: Optional[int] = None) -> None:
        n = _nbytes(src, nbytes)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(int(dst), src.ctypes.data, n, kind, stream.native))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream, nbytes: Optional[int] = None) -> None:
        n = _nbytes(dst, nbytes)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst.ctypes.data, int(src), n, kind, stream.native))


# --------------------------------------------------------------------------------------------- pycuda


class PyCudaApi(CudaApi):
    """``pycuda``: uses the device's *primary* context (the one TensorRT's runtime API uses), pushed once."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        import atexit

        import pycuda.driver as drv

        self.drv = drv
        self.device_index = device
        try:
            drv.init()
            self._device = drv.Device(device)
            self._ctx = self._device.retain_primary_context()
            self._ctx.push()
        except drv.Error as exc:
            raise CudaError(f"pycuda could not open GPU {device}: {exc}{_hint(str(exc))}") from None
        # pycuda aborts the process at exit when its context stack is not empty (pycuda.autoprimaryctx pops too)
        atexit.register(self._ctx.pop)
        self._allocs: dict[int, Any] = {}

    def _call(self, call: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self.drv.Error as exc:
            raise CudaError(f"CUDA call {call} (pycuda) failed: {exc}{_hint(str(exc))}") from None

    def device_info(self, device: int = 0) -> DeviceInfo:
        if device != self.device_index:  # memory and streams live in the context pushed in __init__
            raise CudaError(f"the pycuda binding runs on GPU {self.device_index}, not GPU {device}; select the GPU "
                            f"with CUDA_VISIBLE_DEVICES={device} (it is then GPU 0), or use cuda-python")
        d = self._call("Device", lambda: self.drv.Device(device))
        major, minor = d.compute_capability()
        return DeviceInfo(name=str(d.name()).strip(), compute_capability=f"{major}.{minor}",
                          total_memory=int(d.total_memory()), index=device)

    def malloc(self, nbytes: int) -> int:
        alloc = self._call("mem_alloc", lambda: self.drv.mem_alloc(int(nbytes)))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(int(ptr), None)
        if alloc is not None:
            self._call("free", alloc.free)

    def host_empty(self, shape: Sequence[int], dtype: Any) -> HostBuffer:
        arr = self._call("pagelocked_empty", lambda: self.drv.pagelocked_empty(tuple(shape), np.dtype(dtype)))
        return HostBuffer(arr, arr.ctypes.data, owner=arr)

    def host_free(self, buf: HostBuffer) -> None:
        base = getattr(buf.array, "base", None)
        if base is not None and hasattr(base, "free"):
            self._call("free", base.free)

    def stream_create(self) -> Stream:
        s = self._call("Stream", self.drv.Stream)
        return Stream(int(s.handle), s)

    def stream_destroy(self, stream: Stream) -> None:
        stream.native = None  # pycuda destroys the stream when its object is collected

    def stream_synchronize(self, stream: Stream) -> None:
        self._call("Stream.synchronize", stream.native.synchronize)

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream, nbytes: Optional[int] = None) -> None:
        n = _nbytes(src, nbytes)
        view = src.reshape(-1).view(np.uint8)[:n]
        self._call("memcpy_htod_async", lambda: self.drv.memcpy_htod_async(int(dst), view, stream.native))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream, nbytes: Optional[int] = None) -> None:
        n = _nbytes(dst, nbytes)
        view = dst.reshape(-1).view(np.uint8)[:n]
        self._call("memcpy_dtoh_async", lambda: self.drv.memcpy_dtoh_async(view, int(src), stream.native))


# --------------------------------------------------------------------------------------------- polygraphy.cuda

_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor
CUDA_ERROR_NAMES = {1: "cudaErrorInvalidValue", 2: "cudaErrorMemoryAllocation", 3: "cudaErrorInitializationError",
                    35: "cudaErrorInsufficientDriver", 100: "cudaErrorNoDevice", 101: "cudaErrorInvalidDevice",
                    209: "cudaErrorNoKernelImageForDevice"}


class PolygraphyCudaApi(CudaApi):
    """``polygraphy.cuda``: Polygraphy's ctypes wrapper of ``libcudart``; pinned memory and device facts are
    called on the same library handle."""

    name = "polygraphy"

    def __init__(self) -> None:
        from polygraphy import cuda as pcuda
        from polygraphy.exception import PolygraphyException

        self.pcuda = pcuda
        self._exc = PolygraphyException
        try:
            self.w = self._call("load libcudart", pcuda.wrapper)
        except OSError as exc:  # ctypes found no libcudart: as good as not installed
            raise ImportError(f"polygraphy.cuda cannot load libcudart: {exc}") from exc
        self.lib = self.w.handle

    def _call(self, call: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._exc as exc:
            m = re.search(r"CUDA Error: (\d+)", str(exc))
            text = CUDA_ERROR_NAMES.get(int(m.group(1)), f"cudaError {m.group(1)}") if m else str(exc).strip()
            raise CudaError(f"CUDA call {call} (polygraphy.cuda) failed: {text}{_hint(text)}") from None

    def _status(self, call: str, status: int) -> None:
        if int(status) != 0:
            name = CUDA_ERROR_NAMES.get(int(status), f"cudaError {int(status)}")
            raise CudaError(f"CUDA call {call} failed: {name}{_hint(name)}")

    def device_info(self, device: int = 0) -> DeviceInfo:
        self._status("cudaSetDevice", self.lib.cudaSetDevice(ctypes.c_int(device)))
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self._status("cudaDeviceGetAttribute", self.lib.cudaDeviceGetAttribute(
            ctypes.byref(major), ctypes.c_int(_ATTR_CC_MAJOR), ctypes.c_int(device)))
        self._status("cudaDeviceGetAttribute", self.lib.cudaDeviceGetAttribute(
            ctypes.byref(minor), ctypes.c_int(_ATTR_CC_MINOR), ctypes.c_int(device)))
        props = ctypes.create_string_buffer(8192)  # cudaDeviceProp starts with char name[256]
        fn = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        self._status("cudaGetDeviceProperties", fn(props, ctypes.c_int(device)))
        name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace").strip()
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self._status("cudaMemGetInfo", self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)))
        return DeviceInfo(name=name, compute_capability=f"{major.value}.{minor.value}",
                          total_memory=int(total.value), index=device)

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", lambda: self.w.malloc(int(nbytes))))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", lambda: self.w.free(int(ptr)))

    def host_empty(self, shape: Sequence[int], dtype: Any) -> HostBuffer:
        nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        ptr = ctypes.c_void_p()
        self._status("cudaMallocHost", self.lib.cudaMallocHost(ctypes.byref(ptr), ctypes.c_size_t(nbytes)))
        return HostBuffer(_array_at(int(ptr.value or 0), shape, dtype), int(ptr.value or 0))

    def host_free(self, buf: HostBuffer) -> None:
        self._status("cudaFreeHost", self.lib.cudaFreeHost(ctypes.c_void_p(buf.ptr)))

    def stream_create(self) -> Stream:
        return Stream(int(self._call("cudaStreamCreate", self.w.create_stream)))

    def stream_destroy(self, stream: Stream) -> None:
        self._call("cudaStreamDestroy", lambda: self.w.destroy_stream(stream.handle))

    def stream_synchronize(self, stream: Stream) -> None:
        self._call("cudaStreamSynchronize", lambda: self.w.stream_synchronize(stream.handle))

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream, nbytes: Optional[int] = None) -> None:
        n = _nbytes(src, nbytes)
        kind = self.pcuda.MemcpyKind.HostToDevice
        self._call("cudaMemcpyAsync", lambda: self.w.memcpy(int(dst), src.ctypes.data, n, kind, stream.handle))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream, nbytes: Optional[int] = None) -> None:
        n = _nbytes(dst, nbytes)
        kind = self.pcuda.MemcpyKind.DeviceToHost
        self._call("cudaMemcpyAsync", lambda: self.w.memcpy(dst.ctypes.data, int(src), n, kind, stream.handle))


# --------------------------------------------------------------------------------------------- selection

_FACTORIES: dict[str, Callable[[], CudaApi]] = {
    "cuda-python": CudaPythonApi,
    "pycuda": PyCudaApi,
    "polygraphy": PolygraphyCudaApi,
}
_ALIASES = {"cuda-python": "cuda-python", "cuda_python": "cuda-python", "cuda": "cuda-python",
            "cudart": "cuda-python", "pycuda": "pycuda", "polygraphy": "polygraphy", "polygraphy.cuda": "polygraphy"}
_CACHE: dict[str, CudaApi] = {}


def _hint(error_text: str) -> str:
    low = error_text.lower()
    if "insufficientdriver" in low.replace(" ", "") or "no cuda-capable" in low or "nodevice" in low:
        return ("; no usable NVIDIA GPU/driver here (TensorRT engines need one: check `nvidia-smi`, or on Jetson "
                "that the process can open /dev/nvhost-*)")
    if "memoryallocation" in low.replace(" ", "") or "out of memory" in low:
        return "; the GPU is out of memory (close other GPU processes, use a smaller batch or --workspace)"
    return ""


def get_cuda(binding: Optional[str] = None) -> CudaApi:
    """The CUDA binding to use: ``binding`` (one of :data:`BINDINGS`), else ``$APNET_EDGE_CUDA_BINDING``, else the
    first of cuda-python, pycuda, polygraphy that imports and can query GPU 0 (an installed binding built for a newer
    CUDA than the driver's fails there). Cached per binding.

    Raises:
        MissingDependencyError: none of them is installed (names ``pip install 'apnet-edge[trt]'``).
        CudaError: the binding asked for, or every installed one, cannot open the GPU.
        ValueError: an unknown binding name.
    """
    asked = (binding or os.environ.get(ENV_BINDING) or "auto").strip().lower()
    if asked != "auto" and asked not in _ALIASES:
        raise ValueError(f"unknown CUDA binding {asked!r}; choose one of {', '.join(BINDINGS)} or auto")
    names = list(BINDINGS) if asked == "auto" else [_ALIASES[asked]]
    missing = []
    unusable: list[str] = []
    for name in names:
        if name in _CACHE:
            return _CACHE[name]
        try:
            api = _FACTORIES[name]()
            if asked == "auto":  # installed is not enough: cuda-python 13 imports fine over a CUDA 12 driver
                api.device_info(0)
        except ImportError:
            missing.append(name)
            continue
        except CudaError as exc:
            if asked != "auto":
                raise
            unusable.append(f"{name}: {exc}")
            continue
        _CACHE[name] = api
        return api
    if unusable:
        raise CudaError("no CUDA binding works here: " + "; ".join(unusable)
                        + ". Install the binding that matches the driver's CUDA version (cuda-python 12.x for "
                          "CUDA 12 drivers, 13.x needs driver 580 or newer; pycuda on JetPack)")
    raise MissingDependencyError(
        names[0] if len(names) == 1 else "cuda-python", "trt",
        f"CUDA memory and streams for TensorRT; tried {', '.join(missing)}. On Jetson: pip install pycuda "
        f"or cuda-python matching JetPack's CUDA")


def nvidia_smi_device_info(index: int = 0, run: Callable[..., Any] = subprocess.run) -> Optional[DeviceInfo]:
    """GPU name and compute capability from ``nvidia-smi`` (no Python binding needed), or None if unavailable."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = run([exe, "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits", "-i",
                   str(index)], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if getattr(out, "returncode", 1) != 0:
        return None
    return parse_nvidia_smi(str(out.stdout), index)


def parse_nvidia_smi(text: str, index: int = 0) -> Optional[DeviceInfo]:
    """Parse one ``name, compute_cap, memory.total`` CSV line of nvidia-smi (memory in MiB)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 2 or not parts[0] or "." not in parts[1]:
        return None
    try:
        mem = int(float(parts[2]) * 1024 * 1024) if len(parts) > 2 and parts[2] not in ("", "[N/A]") else 0
    except ValueError:
        mem = 0
    return DeviceInfo(name=parts[0], compute_capability=parts[1], total_memory=mem, index=index)


def device_info(index: int = 0, binding: Optional[str] = None) -> DeviceInfo:
    """The GPU's name and compute capability through the CUDA binding, falling back to ``nvidia-smi``.

    Raises CudaError when neither can tell (no GPU, no driver) and MissingDependencyError when no binding is
    installed and nvidia-smi is absent too.
    """
    try:
        return get_cuda(binding).device_info(index)
    except (MissingDependencyError, CudaError) as exc:
        info = nvidia_smi_device_info(index)
        if info is not None:
            return info
        raise exc
