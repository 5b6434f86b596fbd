"""TensorRTRunner and the build's parse step on small fakes of ``tensorrt`` and the CUDA shim (no GPU needed):
profile handling, batch splitting and padding, buffers allocated once and grown only when needed, warm-up,
the compatibility check before deserialization, error messages, and the missing-TensorRT error."""

from __future__ import annotations

import enum
import sys
import types
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from apnet_edge.card import ModelCard
from apnet_edge.errors import MissingDependencyError, ModelError
from apnet_edge.runners import cuda_shim
from apnet_edge.runners import tensorrt_runner as tr
from apnet_edge.runners.cuda_shim import DeviceInfo, HostBuffer, Stream

CARD = ModelCard(arch="tiny", backbone="none", input_size=(8, 4), embedding_dim=5)
W = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ fakes


class FakeCuda(cuda_shim.CudaApi):
    """Device memory as numpy byte arrays keyed by fake pointers; counts allocations."""

    name = "fake"

    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}
        self.next = 0x1000
        self.mallocs: list[int] = []
        self.freed: list[int] = []
        self.syncs = 0

    def device_info(self, device: int = 0) -> DeviceInfo:
        return DeviceInfo("Orin", "8.7", 8 << 30, device)

    def malloc(self, nbytes: int) -> int:
        ptr, self.next = self.next, self.next + nbytes + 256
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        self.mallocs.append(nbytes)
        return ptr

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)
        del self.mem[ptr]

    def host_empty(self, shape: Any, dtype: Any) -> HostBuffer:
        arr = np.zeros(shape, dtype)
        return HostBuffer(arr, arr.ctypes.data)

    def host_free(self, buf: HostBuffer) -> None:
        pass

    def stream_create(self) -> Stream:
        return Stream(77)

    def stream_destroy(self, stream: Stream) -> None:
        pass

    def stream_synchronize(self, stream: Stream) -> None:
        self.syncs += 1

    def htod_async(self, dst: int, src: np.ndarray, stream: Stream, nbytes: Optional[int] = None) -> None:
        raw = src.reshape(-1).view(np.uint8)
        self.mem[dst][:raw.size] = raw

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Stream, nbytes: Optional[int] = None) -> None:
        raw = dst.reshape(-1).view(np.uint8)
        raw[:] = self.mem[src][:raw.size]


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class FakeContext:
    """out = mean over H, W of the NCHW input, times W (3 -> 5)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shape: Optional[tuple[int, ...]] = None
        self.addr: dict[str, int] = {}
        self.shape_calls = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.engine.profile
        self.shape_calls += 1
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            tr._ERRORS.append(f"shape {shape} out of profile")
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.shape is not None
        return (self.shape[0], 5)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addr[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert stream == 77 and self.shape is not None
        mem = self.engine.cuda.mem
        n = int(np.prod(self.shape))
        x = mem[self.addr["input"]][:n * 4].view(np.float32).reshape(self.shape)
        y = (x.mean(axis=(2, 3)) @ W).astype(np.float32)
        out = mem[self.addr["embedding"]]
        out[:y.nbytes] = y.reshape(-1).view(np.uint8)
        self.engine.runs.append(self.shape[0])
        return True


class FakeEngine:
    def __init__(self, cuda: FakeCuda, profile: tuple[tuple[int, ...], ...]) -> None:
        self.cuda = cuda
        self.profile = profile
        self.runs: list[int] = []
        self.num_io_tensors = 2
        self.contexts: list[FakeContext] = []
        self.dla_core = -1

    def get_tensor_name(self, i: int) -> str:
        return ["input", "embedding"][i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "input" else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, 8, 4) if name == "input" else (-1, 5)

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        assert name == "input" and index == 0
        return list(self.profile)

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


def make_fake_trt(cuda: FakeCuda, profile: tuple[tuple[int, ...], ...], version: str = "10.3.0.30") -> Any:
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version  # type: ignore[attr-defined]
    mod.ILogger = ILogger  # type: ignore[attr-defined]
    mod.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
    mod.nptype = np.dtype  # type: ignore[attr-defined]
    mod.engines = []  # type: ignore[attr-defined]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            assert isinstance(logger, ILogger)
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data: bytes) -> Optional[FakeEngine]:
            if data != b"engine":
                tr._ERRORS.append("Serialization assertion failed: magicTagRead == kMAGIC_TAG")
                return None
            eng = FakeEngine(cuda, profile)
            eng.dla_core = self.DLA_core  # the core the runtime was set to when the engine was loaded
            mod.engines.append(eng)  # type: ignore[attr-defined]
            return eng

    mod.Runtime = Runtime  # type: ignore[attr-defined]
    return mod


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Install fakes; returns make(profile, sidecar=..., version=...) -> (engine path, cuda, trt module)."""
    cuda = FakeCuda()
    monkeypatch.setattr(cuda_shim, "get_cuda", lambda binding=None: cuda)
    monkeypatch.setattr(tr, "_LOGGER", None)  # the process-wide logger is rebuilt on the fake ILogger

    def make(profile=((1, 3, 8, 4), (4, 3, 8, 4), (8, 3, 8, 4)), sidecar: bool = True, version: str = "10.3.0.30",
             built_with: str = "10.3.0.30", data: bytes = b"engine", dla_core: Optional[int] = None):
        mod = make_fake_trt(cuda, profile, version)
        monkeypatch.setitem(sys.modules, "tensorrt", mod)
        path = tmp_path / "tiny_fp16_b1-4-8_orin_sm87_trt10.3.0.engine"
        path.write_bytes(data)
        if sidecar:
            tr.write_engine_info(path, tr.EngineInfo(
                tensorrt_version=built_with, gpu_name="Orin", compute_capability="8.7", precision="fp16",
                task="reid", input_name="input", profile_min=profile[0], profile_opt=profile[1],
                profile_max=profile[2], source_onnx="tiny.onnx", source_onnx_sha256="0" * 64,
                build_command="apnet-edge build-engine --onnx tiny.onnx --fp16 --batch 1,4,8 --out engines",
                card=CARD.to_dict(), dla_core=dla_core))
        return path, cuda, mod

    return make


def expected(x: np.ndarray) -> np.ndarray:
    y = x.mean(axis=(2, 3)) @ W
    return y / np.linalg.norm(y, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------ runner


def test_runner_reads_the_sidecar_and_embeds(fake) -> None:
    path, cuda, mod = fake()
    runner = tr.TensorRTRunner(path)
    assert runner.card == CARD and runner.precision == "fp16" and runner.max_batch == 8 and runner.task == "reid"
    assert "sidecar" in runner.card_source and runner.backend == "tensorrt"
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 4)).astype(np.float32)
    with runner:
        assert mod.engines[0].runs == [4]  # warm-up at the profile's opt batch
        y = runner.infer(x)
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-6)
    assert cuda.mem == {}  # everything freed on deactivate


def test_dla_engine_runs_on_the_core_it_was_built_for(fake) -> None:
    path, _, mod = fake(dla_core=1)
    tr.TensorRTRunner(path, warmup=0)
    assert mod.engines[-1].dla_core == 1
    path, _, mod = fake()
    tr.TensorRTRunner(path, warmup=0)
    assert mod.engines[-1].dla_core == -1  # a GPU engine: the runtime's default


def test_io_type_numpy_cannot_hold_is_refused(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, mod = fake()

    def nptype(t: str) -> np.dtype:
        if t == "bfloat16":
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(t)

    monkeypatch.setattr(mod, "nptype", nptype)
    monkeypatch.setattr(FakeEngine, "get_tensor_dtype", lambda self, name: "bfloat16" if name == "embedding"
                        else "float32")
    with pytest.raises(ModelError, match=r"'embedding' is bfloat16.*FP32 or FP16"):
        tr.TensorRTRunner(path, warmup=0)


def test_batches_split_and_buffers_grow_only_when_needed(fake) -> None:
    path, cuda, mod = fake()
    x = np.random.default_rng(2).standard_normal((20, 3, 8, 4)).astype(np.float32)
    with tr.TensorRTRunner(path) as runner:
        engine = mod.engines[0]
        grown = len(cuda.mallocs)
        assert grown == 2 and runner.allocated_bytes == {"input": 4 * 96 * 4, "embedding": 4 * 5 * 4}
        runner.infer(x[:3])
        assert len(cuda.mallocs) == grown  # smaller batch: same buffers
        y = runner.infer(x)  # 20 crops > max 8: split 8 + 8 + 4
        assert engine.runs[-3:] == [8, 8, 4]
        assert len(cuda.mallocs) == grown + 2  # grew once to batch 8, never again
        assert runner.allocated_bytes == {"input": 8 * 96 * 4, "embedding": 8 * 5 * 4}
        ctx = engine.contexts[0]
        calls = ctx.shape_calls
        runner.infer(x[:3])  # the last chunk above had 4: a new shape
        runner.infer(x[3:6])  # same shape again: not set again
        assert ctx.shape_calls == calls + 1
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-6)


def test_crops_are_preprocessed_by_the_card(fake) -> None:
    path, _, _ = fake()
    from apnet_edge.preprocess import preprocess_crops

    crops = [np.full((20, 10, 3), v, np.uint8) for v in (10, 200, 90)]
    with tr.TensorRTRunner(path, warmup=0) as runner:
        y = runner.infer(crops)
    np.testing.assert_allclose(y, expected(preprocess_crops(crops, CARD)), rtol=1e-5, atol=1e-6)


def test_fixed_batch_engine_pads(fake) -> None:
    path, _, mod = fake(profile=((4, 3, 8, 4),) * 3)  # DLA-style: min = opt = max = 4
    x = np.random.default_rng(3).standard_normal((6, 3, 8, 4)).astype(np.float32)
    with tr.TensorRTRunner(path) as runner:
        assert runner.fixed_batch and runner.max_batch == 4
        y = runner.infer(x)
        assert mod.engines[0].runs[-2:] == [4, 4]  # 4 + (2 padded to 4)
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-6)


def test_min_batch_above_one_pads(fake) -> None:
    path, _, mod = fake(profile=((2, 3, 8, 4), (4, 3, 8, 4), (8, 3, 8, 4)))
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 4)).astype(np.float32)
    with tr.TensorRTRunner(path, warmup=0) as runner:
        y = runner.infer(x)
        assert mod.engines[0].runs == [2] and y.shape == (1, 5)
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-6)


def test_max_batch_caps_calls(fake) -> None:
    path, _, mod = fake()
    with tr.TensorRTRunner(path, max_batch=3, warmup=0) as runner:
        runner.infer(np.zeros((7, 3, 8, 4), np.float32))
        assert mod.engines[0].runs == [3, 3, 1]


def test_engine_for_another_tensorrt_is_refused_before_loading(fake) -> None:
    path, _, mod = fake(version="10.3.0.30", built_with="8.6.2.3")
    with pytest.raises(ModelError, match=r"TensorRT 8\.6\.2\.3.*Rebuild it on this device with: apnet-edge "
                                         r"build-engine --onnx tiny\.onnx"):
        tr.TensorRTRunner(path)
    assert mod.engines == []


def test_undeserializable_engine_without_sidecar(fake) -> None:
    path, _, _ = fake(sidecar=False, data=b"garbage")
    with pytest.raises(ModelError, match=r"cannot deserialize.*magicTagRead.*apnet-edge build-engine --onnx"):
        tr.TensorRTRunner(path)


def test_engine_without_sidecar_uses_a_card_sidecar(fake, tmp_path: Path) -> None:
    from apnet_edge.runners.sidecar import write_sidecar

    path, _, _ = fake(sidecar=False)
    with pytest.raises(ModelError, match="carries no model card"):
        tr.TensorRTRunner(path)
    write_sidecar(path, CARD)
    runner = tr.TensorRTRunner(path, warmup=0)
    assert runner.card == CARD and runner.precision == "unknown"


def test_shape_outside_profile(fake) -> None:
    path, _, _ = fake()
    with tr.TensorRTRunner(path, warmup=0) as runner:
        runner._setup(card=CARD, name=runner.name, max_batch=16, input_name="input", output_name="embedding")
        with pytest.raises(ModelError, match="outside the engine's profile"):
            runner.infer(np.zeros((9, 3, 8, 4), np.float32))


def test_load_runner_routes_engines_here(fake) -> None:
    path, _, _ = fake()
    from apnet_edge.runners import load_runner

    runner = load_runner(path, threads=2)
    assert isinstance(runner, tr.TensorRTRunner)


def test_no_torch_needed() -> None:
    import subprocess

    code = ("import sys, apnet_edge.runners.tensorrt_runner, apnet_edge.runners.cuda_shim; "
            "print('torch' in sys.modules, 'tensorrt' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------------ missing TensorRT


def test_missing_tensorrt_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'apnet-edge\[trt\]'") as err:
        tr.ensure_tensorrt("building TensorRT engines")
    assert "python3-libnvinfer" in str(err.value) and err.value.extra == "trt"


def test_stub_only_tensorrt_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt-stubs leaves an importable, empty ``tensorrt`` namespace package: that is no TensorRT."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(MissingDependencyError, match="only type stubs"):
        tr.ensure_tensorrt()


def test_old_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("tensorrt")
    mod.__version__, mod.Runtime = "8.2.1.8", object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    with pytest.raises(ModelError, match=">= 8.5"):
        tr.ensure_tensorrt()


# ------------------------------------------------------------------------------------------------ build: parse


def test_parse_errors_are_attached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engines.build import EngineBuildError, parse_onnx
    from engines.plan import BuildEnv, BuildPlan, BuildRequest, OnnxFacts, Profile

    created: dict[str, Any] = {}

    class Flag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> str:
            created["flags"] = flags
            return "network"

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    class OnnxParser:
        num_errors = 2

        def __init__(self, network: str, logger: Any) -> None:
            assert network == "network"

        def parse_from_file(self, path: str) -> bool:
            created["path"] = path
            return False

        def get_error(self, i: int) -> ParserError:
            return ParserError(["In node 3 (importConv): UNSUPPORTED_NODE", "opset 19 not supported"][i])

    mod = make_fake_trt(FakeCuda(), ((1,),) * 3, "8.6.1.6")
    mod.Builder, mod.OnnxParser, mod.NetworkDefinitionCreationFlag = Builder, OnnxParser, Flag  # type: ignore
    mod.init_libnvinfer_plugins = lambda logger, ns: True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(tr, "_LOGGER", None)
    onnx = OnnxFacts(path=tmp_path / "m.onnx", sha256="0" * 64, input_name="input", input_shape=(None, 3, 8, 4),
                     opset=19)
    env = BuildEnv("8.6.1.6", "Orin", "8.7")
    prof = Profile("input", (1, 3, 8, 4), (4, 3, 8, 4), (8, 3, 8, 4))
    plan = BuildPlan(request=BuildRequest(onnx=onnx.path), env=env, onnx=onnx, task="reid", card=CARD,
                     precision="fp16", int8_mode=None, strongly_typed=False, fp16_flag=True, int8_flag=False,
                     tf32=True, profile=prof, engine_path=tmp_path / "m.engine", timing_cache=None, calib_cache=None)
    with pytest.raises(EngineBuildError, match="re-export with --opset 17") as err:
        parse_onnx(plan)
    assert err.value.errors == ["In node 3 (importConv): UNSUPPORTED_NODE", "opset 19 not supported"]
    assert "UNSUPPORTED_NODE" in str(err.value) and isinstance(err.value, ModelError)
    assert created == {"flags": 1, "path": str(onnx.path)}  # EXPLICIT_BATCH on TensorRT 8
