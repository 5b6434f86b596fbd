"""The engine sidecar (<stem>.build.json) and the check that refuses an engine built for another GPU/TensorRT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError
from apnet_edge.runners.cuda_shim import DeviceInfo
from apnet_edge.runners.tensorrt_runner import (
    SIDECAR_FORMAT,
    EngineInfo,
    check_engine_compat,
    engine_sidecar_path,
    gpu_key,
    parse_version,
    read_engine_info,
    short_version,
    write_engine_info,
)

CMD = "apnet-edge build-engine --onnx apnet.onnx --fp16 --batch 1,8,32 --out engines"


def info(**kw: object) -> EngineInfo:
    base: dict = dict(tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", precision="fp16",
                      task="reid", input_name="input", profile_min=(1, 3, 256, 128), profile_opt=(8, 3, 256, 128),
                      profile_max=(32, 3, 256, 128), source_onnx="apnet.onnx", source_onnx_sha256="ab" * 32,
                      build_command=CMD, card=ModelCard().to_dict(), notes=("a note",))
    base.update(kw)
    return EngineInfo(**base)


def test_round_trip(tmp_path: Path) -> None:
    eng = tmp_path / "apnet_fp16_b1-8-32_orin_sm87_trt10.3.0.engine"
    side = write_engine_info(eng, info(dla_core=0, gpu_fallback=True, calibration={"cache": "x.calib"}))
    assert side == engine_sidecar_path(eng) and side.name == "apnet_fp16_b1-8-32_orin_sm87_trt10.3.0.build.json"
    data = json.loads(side.read_text())
    assert data["format"] == SIDECAR_FORMAT and data["tensorrt"]["version"] == "10.3.0.30"
    assert data["gpu"] == {"name": "Orin", "compute_capability": "8.7"} and data["profile"]["max"] == [32, 3, 256, 128]
    assert data["source_onnx"]["sha256"] == "ab" * 32 and data["card"]["embedding_dim"] == 2048
    back = read_engine_info(eng)
    assert back == info(dla_core=0, gpu_fallback=True, calibration={"cache": "x.calib"})
    assert ModelCard.from_dict(back.card) == ModelCard()  # type: ignore[union-attr, arg-type]


def test_sidecar_is_not_a_card_sidecar(tmp_path: Path) -> None:
    """The runners' card-sidecar lookup (<stem>.card.json, <stem>.json, ...) must never pick up the engine sidecar."""
    from apnet_edge.runners.sidecar import sidecar_candidates

    eng = tmp_path / "m.engine"
    assert engine_sidecar_path(eng) not in sidecar_candidates(eng)


def test_missing_and_broken(tmp_path: Path) -> None:
    eng = tmp_path / "m.engine"
    assert read_engine_info(eng) is None
    engine_sidecar_path(eng).write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        read_engine_info(eng)
    engine_sidecar_path(eng).write_text(json.dumps({"format": SIDECAR_FORMAT, "tensorrt": {}}))
    with pytest.raises(ModelError, match="incomplete or malformed"):
        read_engine_info(eng)
    engine_sidecar_path(eng).write_text(json.dumps({"arch": "x"}))
    with pytest.raises(ModelError, match="not an apnet-edge engine sidecar"):
        read_engine_info(eng)


def test_compatible() -> None:
    assert check_engine_compat(info(), "e.engine", "10.3.0.30", DeviceInfo("Orin", "8.7")) == []
    # the build number may differ; nvidia-smi's "(nvgpu)" suffix does not count
    assert check_engine_compat(info(), "e.engine", "10.3.0.99", DeviceInfo("Orin (nvgpu)", "8.7")) == []


def test_other_tensorrt_version_says_rebuild() -> None:
    with pytest.raises(ModelError) as err:
        check_engine_compat(info(), "e.engine", "8.6.2.3", DeviceInfo("Orin", "8.7"))
    msg = str(err.value)
    assert "TensorRT 10.3.0.30" in msg and "8.6.2.3" in msg and f"Rebuild it on this device with: {CMD}" in msg


def test_other_gpu_architecture_says_rebuild() -> None:
    with pytest.raises(ModelError, match=r"compute capability 8\.9.*Rebuild it on this device with: apnet-edge"):
        check_engine_compat(info(), "e.engine", "10.3.0.30", DeviceInfo("NVIDIA GeForce RTX 4090", "8.9"))


def test_other_gpu_model_same_architecture() -> None:
    built = info(gpu_name="NVIDIA GeForce RTX 3080", compute_capability="8.6")
    here = DeviceInfo("NVIDIA GeForce RTX 3090", "8.6")
    with pytest.raises(ModelError, match="strict_gpu=False"):
        check_engine_compat(built, "e.engine", "10.3.0.30", here)
    warnings = check_engine_compat(built, "e.engine", "10.3.0.30", here, strict_gpu=False)
    assert len(warnings) == 1 and "RTX 3080" in warnings[0]


def test_versions() -> None:
    assert parse_version("10.3.0.30") == (10, 3, 0, 30) and parse_version("8.6.1.post1") == (8, 6, 1)
    assert short_version("8.6.2.3") == "8.6.2"
    assert gpu_key("NVIDIA GeForce RTX 4090") == gpu_key("GeForce RTX 4090") == "geforcertx4090"
