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
            api = cuda_shim.CudaApi()
            api.name = name
            return api
        return make

    monkeypatch.setattr(cuda_shim, "_FACTORIES", {"cuda-python": factory("cuda-python", False),
                                                  "pycuda": factory("pycuda", True),
                                                  "polygraphy": factory("polygraphy", True)})
    assert cuda_shim.get_cuda().name == "pycuda" and made == ["cuda-python", "pycuda"]
    assert cuda_shim.get_cuda() is cuda_shim.get_cuda("pycuda")  # cached
    monkeypatch.setenv(cuda_shim.ENV_BINDING, "polygraphy.cuda")
    assert cuda_shim.get_cuda().name == "polygraphy"


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
