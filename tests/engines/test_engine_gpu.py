"""End to end on a real GPU: build FP16 / INT8 (Q/DQ and, on TensorRT < 11, calibrated) engines from a small ONNX,
compare them with ONNX Runtime, cross-check our runner against Polygraphy's TrtRunner, and build the YOLOX
detector. Every test here skips cleanly without TensorRT, Polygraphy or a usable GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from apnet_edge.card import ModelCard  # noqa: E402
from apnet_edge.errors import ApnetError  # noqa: E402

CARD = ModelCard(arch="tiny", backbone="conv", input_size=(32, 16), embedding_dim=32)


@pytest.fixture(scope="module")
def gpu_env() -> Any:
    """The build target; skips the module without TensorRT, Polygraphy, a CUDA binding or a GPU."""
    pytest.importorskip("polygraphy")
    from engines.build import current_env

    try:
        return current_env()
    except ApnetError as exc:  # MissingDependencyError, CudaError, too-old TensorRT
        pytest.skip(f"no TensorRT GPU here: {exc}")


def _graph(scales: dict[str, float] | None) -> Any:
    """input [N,3,32,16] -> Conv 3->8 -> Relu -> Conv 8->16 s2 -> Relu -> GAP -> Flatten -> Gemm -> [N,32].
    With ``scales``: symmetric int8 Q/DQ pairs on both convolutions' inputs and weights (TensorRT's layout)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    fc = (rng.standard_normal((16, 32)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (fc, "fc"))]
    nodes: list[Any] = []

    def qdq(src: str, scale: float) -> str:
        s, z = f"{src}_s", f"{src}_z"
        inits.extend([numpy_helper.from_array(np.array(scale, np.float32), s),
                      numpy_helper.from_array(np.array(0, np.int8), z)])
        nodes.extend([helper.make_node("QuantizeLinear", [src, s, z], [f"{src}_q"]),
                      helper.make_node("DequantizeLinear", [f"{src}_q", s, z], [f"{src}_dq"])])
        return f"{src}_dq"

    x, a, b = "input", "w1", "w2"
    if scales:
        x, a = qdq("input", scales["input"]), qdq("w1", float(np.abs(w1).max()) / 127)
    nodes += [helper.make_node("Conv", [x, a], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"])]
    r1 = "r1"
    if scales:
        r1, b = qdq("r1", scales["r1"]), qdq("w2", float(np.abs(w2).max()) / 127)
    nodes += [helper.make_node("Conv", [r1, b], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
              helper.make_node("Relu", ["c2"], ["r2"]), helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["output"])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 32])]
    if scales is None:
        outputs.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, ["N", 8, 32, 16]))
    graph = helper.make_graph(nodes, "tiny_conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                 ["N", 3, 32, 16])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: Any, path: Path, card: ModelCard | None = CARD) -> Path:
    if card is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "apnet_edge.card", card.to_json()
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic person-sized BGR crops (smooth random blobs) in a folder."""
    import cv2

    d = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(1)
    for i in range(48):
        h, w = int(rng.integers(64, 160)), int(rng.integers(32, 80))
        small = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        cv2.imwrite(str(d / f"{i:03d}.png"), cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))
    return d


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, crops: Path) -> dict[str, Path]:
    """The FP32 ONNX (with card) and its Q/DQ twin (scales from the FP32 activations on the crops)."""
    from apnet_edge.crops import read_image_folder
    from apnet_edge.preprocess import preprocess_crops

    d = tmp_path_factory.mktemp("models")
    probe = _save(_graph(None), d / "probe.onnx", None)
    x = preprocess_crops(read_image_folder(crops), CARD)
    r1 = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"]).run(["r1"], {"input": x})[0]
    scales = {"input": float(np.abs(x).max()) / 127, "r1": float(np.percentile(r1, 99.9)) / 127}
    fp32 = _graph(None)
    del fp32.graph.output[1]  # drop the probe output
    return {"fp32": _save(fp32, d / "tiny.onnx"), "qdq": _save(_graph(scales), d / "tiny_qdq.onnx")}


def _build(onnx_path: Path, out: Path, env: Any, **kw: Any) -> Any:
    from engines.build import build_engine
    from engines.onnx_info import inspect_onnx
    from engines.plan import BuildRequest, plan_build

    plan = plan_build(BuildRequest(onnx=onnx_path, out_dir=out, batch=(1, 4, 8), **kw), inspect_onnx(onnx_path), env)
    return plan, build_engine(plan)


def _ort_embed(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    y = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_fp16_engine_matches_onnxruntime(gpu_env: Any, models: dict[str, Path], crops: Path,
                                         tmp_path: Path) -> None:
    from apnet_edge.crops import read_image_folder
    from apnet_edge.preprocess import preprocess_crops
    from apnet_edge.runners.tensorrt_runner import TensorRTRunner, read_engine_info
    from engines.verify import verify_engine

    if gpu_env.major >= 11:
        pytest.skip("TensorRT 11 builds FP16 only from an FP16 (AutoCast) ONNX")
    plan, result = _build(models["fp32"], tmp_path, gpu_env, precision="fp16")
    assert result.engine_path.is_file() and result.sidecar_path.is_file() and not result.skipped
    info = read_engine_info(result.engine_path)
    assert info is not None and info.precision == "fp16" and info.tensorrt_version == gpu_env.tensorrt_version
    assert plan.timing_cache is not None and plan.timing_cache.is_file()  # written for the next build
    x = preprocess_crops(read_image_folder(crops), CARD)
    ref = _ort_embed(models["fp32"], x)
    with TensorRTRunner(result.engine_path) as runner:
        for n in (1, 3, 8, 21):  # within the profile, and larger than its max (split)
            y = runner.infer(x[:n])
            assert y.shape == (n, 32)
            assert float((y * ref[:n]).sum(1).min()) > 0.999
    gate = verify_engine(result.engine_path, models["fp32"], crops)
    assert gate.passed, gate.summary()
    again = _build(models["fp32"], tmp_path, gpu_env, precision="fp16")[1]
    assert again.skipped  # same ONNX, same command: up to date


def test_int8_from_qdq_onnx(gpu_env: Any, models: dict[str, Path], crops: Path, tmp_path: Path) -> None:
    from engines.verify import verify_engine

    plan, result = _build(models["qdq"], tmp_path, gpu_env, precision="int8")
    assert plan.int8_mode == "explicit" and result.info.int8_mode == "explicit"
    gate = verify_engine(result.engine_path, models["fp32"], crops, min_mean_cosine=0.95)
    assert gate.passed, gate.summary()


def test_int8_implicit_calibration_and_cache_reuse(gpu_env: Any, models: dict[str, Path], crops: Path,
                                                   tmp_path: Path) -> None:
    from engines.verify import verify_engine

    if not gpu_env.has_implicit_int8:
        pytest.skip("TensorRT 11 has no implicit INT8 calibration")
    plan, result = _build(models["fp32"], tmp_path / "a", gpu_env, precision="int8", calib_dir=crops)
    assert plan.calib_cache is not None and plan.calib_cache.is_file()
    assert result.info.calibration is not None and result.info.calibration["images"] == 48
    gate = verify_engine(result.engine_path, models["fp32"], crops, min_mean_cosine=0.95)
    assert gate.passed, gate.summary()
    # a second build reuses the cache: no crops needed
    plan2, result2 = _build(models["fp32"], tmp_path / "b", gpu_env, precision="int8", calib_cache=plan.calib_cache)
    assert result2.engine_path.is_file() and result2.info.calibration["images"] is None


def test_runner_matches_polygraphy_trtrunner(gpu_env: Any, models: dict[str, Path], tmp_path: Path) -> None:
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from apnet_edge.runners.tensorrt_runner import TensorRTRunner

    precision = "fp32" if gpu_env.major >= 11 else "fp16"
    _, result = _build(models["fp32"], tmp_path, gpu_env, precision=precision)
    x = np.random.default_rng(5).standard_normal((6, 3, 32, 16)).astype(np.float32)
    with TrtRunner(EngineFromBytes(result.engine_path.read_bytes())) as prunner:
        ref = np.asarray(prunner.infer({"input": x})["output"], np.float32)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    with TensorRTRunner(result.engine_path) as runner:
        np.testing.assert_allclose(runner.infer(x), ref, atol=1e-5)


def test_engine_from_another_tensorrt_is_refused(gpu_env: Any, models: dict[str, Path], tmp_path: Path) -> None:
    from apnet_edge.errors import ModelError
    from apnet_edge.runners.tensorrt_runner import TensorRTRunner, engine_sidecar_path

    precision = "fp32" if gpu_env.major >= 11 else "fp16"
    _, result = _build(models["fp32"], tmp_path, gpu_env, precision=precision)
    side = engine_sidecar_path(result.engine_path)
    data = json.loads(side.read_text())
    data["tensorrt"]["version"] = "7.0.0.11"
    side.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="Rebuild it on this device with: apnet-edge build-engine"):
        TensorRTRunner(result.engine_path)


def test_parse_failure_carries_parser_errors(gpu_env: Any, tmp_path: Path) -> None:
    from engines.build import EngineBuildError

    bad = helper.make_model(helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["output"], domain="com.example")], "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 32])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = _save(bad, tmp_path / "bad.onnx", None)
    with pytest.raises(EngineBuildError) as err:
        _build(path, tmp_path, gpu_env, precision="fp32", task="detector")
    assert err.value.errors and "NoSuchOp" in str(err.value)


def test_yolox_detector_engine(gpu_env: Any, yolox_path: Path, tmp_path: Path) -> None:
    """The same command builds the detector (no card: task detector, the ONNX's fixed batch 1)."""
    from apnet_edge.runners.tensorrt_runner import TensorRTRunner
    from engines.build import build_engine
    from engines.onnx_info import inspect_onnx
    from engines.plan import BuildRequest, plan_build

    precision = "fp32" if gpu_env.major >= 11 else "fp16"
    plan = plan_build(BuildRequest(onnx=yolox_path, out_dir=tmp_path, precision=precision), inspect_onnx(yolox_path),
                      gpu_env)
    assert plan.task == "detector" and plan.profile.batch == (1, 1, 1)
    result = build_engine(plan)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    ref = ort.InferenceSession(str(yolox_path), providers=["CPUExecutionProvider"]).run(None, {
        inspect_onnx(yolox_path).input_name: x})[0]
    with TensorRTRunner(result.engine_path) as runner:
        assert runner.task == "detector"
        y = runner.infer(x)
    assert y.shape == ref.shape
    assert float(np.abs(y - ref).max()) < 0.05 * float(np.abs(ref).max()) + 1e-3
