"""The build-plan -> Polygraphy CreateConfig -> TensorRT builder-config mapping, run through Polygraphy's real
``CreateConfig`` against a recording fake of the TensorRT builder API (no GPU): which BuilderFlags get set for
fp32/fp16/int8/DLA, the workspace pool limit, the timing cache, the profile shapes and the DLA core."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("polygraphy")

from apnet_edge.card import ModelCard  # noqa: E402
from apnet_edge.runners import tensorrt_runner as tr  # noqa: E402
from engines.build import make_config_loader, make_info, up_to_date  # noqa: E402
from engines.plan import BuildEnv, BuildRequest, OnnxFacts, plan_build  # noqa: E402

CARD = ModelCard(arch="tiny", backbone="none", input_size=(16, 8), embedding_dim=4)


class _Names:
    """An enum stand-in whose members are their own names."""

    def __init__(self, *names: str) -> None:
        for n in names:
            setattr(self, n, n)


class FakeConfig:
    def __init__(self) -> None:
        self.flags: list[str] = []
        self.pools: dict[str, int] = {}
        self.profiles: list[dict[str, tuple]] = []
        self.timing_cache_data: Any = None
        self.int8_calibrator: Any = None
        self.calibration_profile: Any = None
        self.default_device_type: Any = None
        self.DLA_core: Any = None
        self.profiling_verbosity: Any = None

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def clear_flag(self, flag: str) -> None:
        if flag in self.flags:
            self.flags.remove(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def add_optimization_profile(self, profile: dict) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: dict) -> None:
        self.calibration_profile = profile

    def create_timing_cache(self, data: bytes) -> tuple:
        return ("cache", bytes(data))

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        self.timing_cache_data = cache
        return True


class FakeBuilder:
    num_DLA_cores = 2

    def __init__(self) -> None:
        self.config = FakeConfig()

    def create_builder_config(self) -> FakeConfig:
        return self.config

    def create_optimization_profile(self) -> Any:
        prof: dict[str, tuple] = {}

        class P:
            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                prof[name] = (tuple(lo), tuple(opt), tuple(hi))

        p = P()
        p.shapes = prof  # type: ignore[attr-defined]
        return p


class FakeTensor:
    name, dtype, shape, is_shape_tensor = "input", "FLOAT", (-1, 3, 16, 8), False


class FakeNetwork:
    num_inputs = 1

    def get_input(self, i: int) -> FakeTensor:
        return FakeTensor()

    def __iter__(self) -> Any:
        return iter([])  # no layers: no Q/DQ layers, no per-layer precisions


def _reset_polygraphy_trt() -> None:
    """Polygraphy's lazily imported ``trt`` caches the module it first imported: forget it (fake or real)."""
    for name, m in list(sys.modules.items()):
        lazy = getattr(m, "__dict__", {}).get("trt") if name.startswith("polygraphy") and m is not None else None
        if lazy is not None and type(lazy).__name__ == "LazyModule":
            object.__setattr__(lazy, "module", None)


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    mod = types.ModuleType("tensorrt")
    mod.__version__ = "8.6.1.6"  # type: ignore[attr-defined]
    mod.BuilderFlag = _Names("TF32", "FP16", "INT8", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS",  # type: ignore
                             "OBEY_PRECISION_CONSTRAINTS", "DIRECT_IO", "REFIT", "SPARSE_WEIGHTS")
    mod.MemoryPoolType = _Names("WORKSPACE")  # type: ignore[attr-defined]
    mod.DeviceType = _Names("DLA", "GPU")  # type: ignore[attr-defined]
    mod.LayerType = _Names("QUANTIZE", "DEQUANTIZE", "SHAPE")  # type: ignore[attr-defined]
    mod.ProfilingVerbosity = _Names("DETAILED")  # type: ignore[attr-defined]
    mod.Runtime = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    _reset_polygraphy_trt()
    yield mod
    _reset_polygraphy_trt()


def facts(tmp_path: Path) -> OnnxFacts:
    return OnnxFacts(path=tmp_path / "m.onnx", sha256="ab" * 32, input_name="input", input_shape=(None, 3, 16, 8),
                     card=CARD)


def configure(plan: Any, calibrator: Any = None) -> FakeConfig:
    builder = FakeBuilder()
    config = make_config_loader(plan, calibrator)(builder, FakeNetwork())
    assert config is builder.config
    return config


def test_fp16_flags_workspace_profile_and_timing_cache(fake_trt: Any, tmp_path: Path) -> None:
    env = BuildEnv("8.6.1.6", "NVIDIA GeForce RTX 3090", "8.6")
    plan = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="fp16", workspace_mib=256,
                                   out_dir=tmp_path), facts(tmp_path), env)
    cfg = configure(plan)
    assert sorted(cfg.flags) == sorted(plan.builder_flags()) == ["FP16", "TF32"]
    assert cfg.pools == {"WORKSPACE": 256 << 20}
    assert cfg.profiles[0].shapes == {"input": ((1, 3, 16, 8), (8, 3, 16, 8), (32, 3, 16, 8))}
    assert cfg.timing_cache_data == ("cache", b"")  # no cache file yet: an empty one, filled by the build


def test_fp32_clears_tf32(fake_trt: Any, tmp_path: Path) -> None:
    env = BuildEnv("8.6.1.6", "NVIDIA GeForce RTX 3090", "8.6")
    cfg = configure(plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="fp32", out_dir=tmp_path),
                               facts(tmp_path), env))
    assert cfg.flags == [] and cfg.pools == {}


def test_int8_implicit_sets_the_calibrator(fake_trt: Any, tmp_path: Path) -> None:
    env = BuildEnv("8.6.1.6", "Orin", "8.7", num_dla_cores=2)
    plan = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="int8", calib_dir=tmp_path,
                                   out_dir=tmp_path), facts(tmp_path), env)
    calib = object()
    cfg = configure(plan, calib)
    assert sorted(cfg.flags) == ["FP16", "INT8", "TF32"] and cfg.int8_calibrator is calib
    assert cfg.calibration_profile.shapes["input"][1] == (8, 3, 16, 8)  # calibration runs at the opt shape


@pytest.mark.parametrize("fails", [False, True])
def test_int8_calibrates_on_the_crops_given_and_replaces_the_cache_only_when_built(
        fake_trt: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    """Polygraphy's calibrator replays an existing cache and never reads the crops: with crops given, the build
    calibrates into a fresh file that replaces the old cache only once the engine is built."""
    import numpy as np
    import polygraphy.backend.trt as pbt
    from polygraphy.exception import PolygraphyException

    import engines.build as eb
    import engines.calibration as ec
    from engines.build import EngineBuildError

    env = BuildEnv("8.6.1.6", "Orin", "8.7")
    plan = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="int8", calib_dir=tmp_path / "crops",
                                   out_dir=tmp_path / "e"), facts(tmp_path), env)
    assert plan.calib_cache is not None
    plan.calib_cache.parent.mkdir(parents=True)
    plan.calib_cache.write_bytes(b"old scales")
    caches: list[Path] = []

    def make_calibrator(data: Any, cache: Any) -> Any:
        assert data is not None and data.num_images == 16
        caches.append(Path(cache))
        return types.SimpleNamespace(free=lambda: None)

    class Build:
        def __init__(self, network: Any, config: Any, save_timing_cache: Any = None) -> None:
            pass

        def __call__(self) -> bytes:
            caches[-1].write_bytes(b"new scales")  # what TensorRT does through write_calibration_cache
            if fails:
                raise PolygraphyException("out of memory")
            return b"engine"

    monkeypatch.setattr(ec, "make_calibrator", make_calibrator)
    monkeypatch.setattr(eb, "parse_onnx", lambda plan: ("builder", "network", "parser"))
    monkeypatch.setattr(eb, "make_config_loader", lambda plan, calibrator: "config")
    monkeypatch.setattr(pbt, "EngineBytesFromNetwork", Build)
    crops = [np.full((32, 16, 3), i, np.uint8) for i in range(17)]
    if fails:
        with pytest.raises(EngineBuildError, match="out of memory"):
            eb.build_engine(plan, calib_crops=crops)
        assert plan.calib_cache.read_bytes() == b"old scales" and not plan.engine_path.exists()
    else:
        result = eb.build_engine(plan, calib_crops=crops)
        assert plan.calib_cache.read_bytes() == b"new scales" and result.engine_path.read_bytes() == b"engine"
        assert result.info.calibration is not None and result.info.calibration["images"] == 16
    assert caches and caches[0] != plan.calib_cache  # calibrated into a fresh file, never the old cache
    assert sorted(f.name for f in plan.calib_cache.parent.iterdir() if ".tmp" in f.name) == []


def test_dla_core_and_fallback(fake_trt: Any, tmp_path: Path) -> None:
    env = BuildEnv("8.6.1.6", "Orin", "8.7", num_dla_cores=2)
    plan = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="fp16", dla_core=1, out_dir=tmp_path),
                      facts(tmp_path), env)
    cfg = configure(plan)
    assert cfg.default_device_type == "DLA" and cfg.DLA_core == 1  # Polygraphy picks core 0; the build fixes it
    assert sorted(cfg.flags) == sorted(plan.builder_flags())
    assert "GPU_FALLBACK" in cfg.flags and cfg.profiles[0].shapes["input"][0] == (8, 3, 16, 8)


# ------------------------------------------------------------------------------------------------ sidecar record


def test_make_info_and_up_to_date(tmp_path: Path) -> None:
    env = BuildEnv("10.3.0.30", "Orin", "8.7")
    plan = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="fp16", out_dir=tmp_path / "e"),
                      facts(tmp_path), env)
    info = make_info(plan, "cd" * 32, 12.5)
    assert info.build_command == plan.command_line() and info.trtexec_command == plan.trtexec_command()
    assert info.card is not None and info.card["extra"]["precision"] == "fp16"
    assert info.profile_opt == (8, 3, 16, 8) and info.source_onnx_sha256 == "ab" * 32
    assert up_to_date(plan) is None
    plan.engine_path.parent.mkdir()
    plan.engine_path.write_bytes(b"x")
    tr.write_engine_info(plan.engine_path, info)
    assert up_to_date(plan) == info
    other = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="fp16", workspace_mib=64,
                                    out_dir=tmp_path / "e"), facts(tmp_path), env)
    assert other.engine_path == plan.engine_path and up_to_date(other) is None  # other settings: not up to date


def test_build_refuses_to_overwrite_another_engine(tmp_path: Path) -> None:
    from apnet_edge.errors import ModelError
    from engines.build import build_engine

    env = BuildEnv("10.3.0.30", "Orin", "8.7")
    plan = plan_build(BuildRequest(onnx=tmp_path / "m.onnx", precision="fp16", out_dir=tmp_path), facts(tmp_path), env)
    plan.engine_path.write_bytes(b"someone else's engine")
    with pytest.raises(ModelError, match="--force"):
        build_engine(plan)
