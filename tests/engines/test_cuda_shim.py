"""apnet_edge.runners.cuda_shim: binding selection, errors that say what is wrong, nvidia-smi parsing."""

from __future__ import annotations

import importlib.util
import subprocess

import numpy as np
import pytest

from apnet_edge.errors import MissingDependencyError
from apnet_edge.runners import cuda_shim
from apnet_edge.runners.cuda_shim import CudaError, DeviceInfo, parse_nvidia_smi


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_shim, "_CACHE", {})
    monkeypatch.delenv(cuda_shim.ENV_BINDING, raising=False)


def test_unknown_binding() -> None:
    with pytest.raises(ValueError, match="cuda-python, pycuda, polygraphy"):
        cuda_shim.get_cuda("cupy")


def test_none_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> cuda_shim.CudaApi:
        raise ImportError("nope")

    monkeypatch.setattr(cuda_shim, "_FACTORIES", {n: missing for n in cuda_shim.BINDINGS})
    with pytest.raises(MissingDependencyError, match=r"pip install 'apnet-edge\[trt\]'") as err:
        cuda_shim.get_cuda()
    assert "cuda-python, pycuda, polygraphy" in str(err.value)


def test_order_env_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def factory(name: str, ok: bool):
        def make() -> cuda_shim.CudaApi:
            made.append(name)
            if not ok:
                raise ImportError(name)
            return _Binding(name)
        return make

    monkeypatch.setattr(cuda_shim, "_FACTORIES", {"cuda-python": factory("cuda-python", False),
                                                  "pycuda": factory("pycuda", True),
                                                  "polygraphy": factory("polygraphy", True)})
    assert cuda_shim.get_cuda().name == "pycuda" and made == ["cuda-python", "pycuda"]
    assert cuda_shim.get_cuda() is cuda_shim.get_cuda("pycuda")  # cached
    monkeypatch.setenv(cuda_shim.ENV_BINDING, "polygraphy.cuda")
    assert cuda_shim.get_cuda().name == "polygraphy"


class _Binding(cuda_shim.CudaApi):
    def __init__(self, name: str, error: str = "") -> None:
        self.name, self.error = name, error

    def device_info(self, device: int = 0) -> DeviceInfo:
        if self.error:
            raise CudaError(f"CUDA call cudaGetDeviceProperties failed: {self.error}")
        return DeviceInfo("Orin", "8.7", index=device)


def test_an_installed_binding_that_cannot_reach_the_gpu_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda-python 13 imports fine over a CUDA 12 driver and then fails every call: auto goes on to pycuda."""
    monkeypatch.setattr(cuda_shim, "_FACTORIES", {
        "cuda-python": lambda: _Binding("cuda-python", "cudaErrorInsufficientDriver"),
        "pycuda": lambda: _Binding("pycuda"), "polygraphy": lambda: _Binding("polygraphy")})
    assert cuda_shim.get_cuda().name == "pycuda"
    with pytest.raises(CudaError, match="InsufficientDriver"):  # asked for by name: taken as is, its calls fail
        cuda_shim.get_cuda("cuda-python").device_info(0)


def test_no_binding_works(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> cuda_shim.CudaApi:
        raise ImportError("nope")

    monkeypatch.setattr(cuda_shim, "_FACTORIES", {
        "cuda-python": lambda: _Binding("cuda-python", "cudaErrorInsufficientDriver"), "pycuda": missing,
        "polygraphy": lambda: _Binding("polygraphy", "cudaErrorNoDevice")})
    with pytest.raises(CudaError, match=r"cuda-python: .*InsufficientDriver.*polygraphy: .*NoDevice.*driver 580"):
        cuda_shim.get_cuda()


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python / cuda-bindings not installed")
def test_cuda_python_errors_are_explained() -> None:
    """On a machine without a GPU driver every call fails; the error names the call and the cause."""
    api = cuda_shim.get_cuda("cuda-python")
    try:
        ptr = api.malloc(256)
    except CudaError as exc:
        assert "cudaMalloc" in str(exc)
        if "InsufficientDriver" in str(exc) or "NoDevice" in str(exc):
            assert "no usable NVIDIA GPU" in str(exc)
    else:  # a real GPU: round-trip through pinned memory and the device
        stream = api.stream_create()
        host = api.host_empty((64,), np.float32)
        host.array[:] = np.arange(64)
        back = api.host_empty((64,), np.float32)
        api.htod_async(ptr, host.array, stream)
        api.dtoh_async(back.array, ptr, stream)
        api.stream_synchronize(stream)
        np.testing.assert_array_equal(back.array, np.arange(64))
        for b in (host, back):
            api.host_free(b)
        api.free(ptr)
        api.stream_destroy(stream)


def test_nvidia_smi_parsing() -> None:
    assert parse_nvidia_smi("NVIDIA GeForce RTX 4090, 8.9, 24564\n") == DeviceInfo(
        "NVIDIA GeForce RTX 4090", "8.9", 24564 << 20)
    assert parse_nvidia_smi("Orin (nvgpu), 8.7, [N/A]") == DeviceInfo("Orin (nvgpu)", "8.7", 0)
    assert parse_nvidia_smi("") is None and parse_nvidia_smi("garbage") is None


def test_device_info_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_binding(binding: object = None) -> cuda_shim.CudaApi:
        raise MissingDependencyError("cuda-python", "trt")

    monkeypatch.setattr(cuda_shim, "get_cuda", no_binding)
    monkeypatch.setattr(cuda_shim, "nvidia_smi_device_info", lambda index=0: DeviceInfo("Orin", "8.7"))
    assert cuda_shim.device_info().name == "Orin"
    monkeypatch.setattr(cuda_shim, "nvidia_smi_device_info", lambda index=0: None)
    with pytest.raises(MissingDependencyError):
        cuda_shim.device_info()


def test_nvidia_smi_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_shim.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def run(cmd: list, **kw: object) -> subprocess.CompletedProcess:
        assert "--query-gpu=name,compute_cap,memory.total" in cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="NVIDIA A2, 8.6, 15356\n", stderr="")

    assert cuda_shim.nvidia_smi_device_info(0, run=run) == DeviceInfo("NVIDIA A2", "8.6", 15356 << 20)
    assert cuda_shim.nvidia_smi_device_info(0, run=lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9)) is None


def test_pycuda_pops_its_context_at_exit_and_stays_on_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """pycuda aborts the process at exit when a pushed context was never popped; the binding registers the pop."""
    import atexit
    import sys
    import types

    events: list[str] = []

    class Ctx:
        def push(self) -> None:
            events.append("push")

        def pop(self) -> None:
            events.append("pop")

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def retain_primary_context(self) -> Ctx:
            return Ctx()

        def compute_capability(self) -> tuple[int, int]:
            return 8, 7

        def name(self) -> str:
            return "Orin"

        def total_memory(self) -> int:
            return 1 << 30

    drv = types.ModuleType("pycuda.driver")
    drv.Error = RuntimeError  # type: ignore[attr-defined]
    drv.init = lambda: None  # type: ignore[attr-defined]
    drv.Device = Device  # type: ignore[attr-defined]
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    at_exit: list = []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    api = cuda_shim.PyCudaApi()
    assert events == ["push"] and len(at_exit) == 1
    at_exit[0]()
    assert events == ["push", "pop"]
    assert api.device_info(0) == DeviceInfo("Orin", "8.7", 1 << 30, 0)
    with pytest.raises(CudaError, match="CUDA_VISIBLE_DEVICES=1"):
        api.device_info(1)


def test_polygraphy_without_libcudart_counts_as_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pcuda = pytest.importorskip("polygraphy.cuda")

    def no_lib() -> None:
        raise OSError("libcudart.so: cannot open shared object file")

    monkeypatch.setattr(pcuda, "wrapper", no_lib)
    with pytest.raises(ImportError, match="libcudart"):
        cuda_shim.PolygraphyCudaApi()
