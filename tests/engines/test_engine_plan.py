"""engines.plan / engines.onnx_info / engines.commands: everything build-engine decides before touching a GPU."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from apnet_edge.card import ModelCard  # noqa: E402
from apnet_edge.errors import ModelError  # noqa: E402
from engines import commands  # noqa: E402
from engines.onnx_info import inspect_onnx  # noqa: E402
from engines.plan import (  # noqa: E402
    DEFAULT_DETECTOR_BATCH,
    DEFAULT_REID_BATCH,
    BuildEnv,
    BuildRequest,
    engine_file_name,
    parse_batch,
    parse_input_size,
    plan_build,
    slug,
)

CARD = ModelCard(arch="tiny", backbone="none", input_size=(16, 8), embedding_dim=4)
TRT8 = BuildEnv("8.6.2.3", "Orin", "8.7", num_dla_cores=2)
TRT10 = BuildEnv("10.3.0.30", "NVIDIA GeForce RTX 4090", "8.9")
TRT11 = BuildEnv("11.4.1.2", "NVIDIA H100 80GB HBM3", "9.0")


def tiny_onnx(path: Path, *, batch: object = "N", hw: tuple[object, object] = (16, 8), card: bool = True,
              qdq: bool = False, fp16: bool = False, inputs: int = 1) -> Path:
    """input [batch, 3, H, W] -> GlobalAveragePool -> Flatten -> Gemm -> output [batch, 4] (opset 17)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "W")
    nodes, src = [], "input"
    inits = [w]
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        src = "dq"
    if fp16:
        nodes.append(helper.make_node("Cast", [src], ["h"], to=TensorProto.FLOAT16))
        nodes.append(helper.make_node("Cast", ["h"], ["f"], to=TensorProto.FLOAT))
        src = "f"
    nodes += [helper.make_node("GlobalAveragePool", [src], ["p"]), helper.make_node("Flatten", ["p"], ["fl"]),
              helper.make_node("Gemm", ["fl", "W"], ["output"])]
    ins = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, *hw])]
    ins += [helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, [1]) for i in range(1, inputs)]
    graph = helper.make_graph(nodes, "tiny", ins, [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                                                [batch, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if card:
        entry = model.metadata_props.add()
        entry.key, entry.value = "apnet_edge.card", CARD.to_json()
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def reid(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "apnet_tiny.onnx")


def plan(path: Path, env: BuildEnv, **kw: object):
    return plan_build(BuildRequest(onnx=path, out_dir=path.parent / "engines", **kw), inspect_onnx(path), env)


# ------------------------------------------------------------------------------------------------ onnx facts


def test_inspect_onnx(tmp_path: Path) -> None:
    f = inspect_onnx(tiny_onnx(tmp_path / "a.onnx"))
    assert (f.input_name, f.input_shape, f.outputs, f.opset) == ("input", (None, 3, 16, 8), ("output",), 17)
    assert f.card == CARD and not f.has_qdq and not f.has_fp16 and len(f.sha256) == 64
    q = inspect_onnx(tiny_onnx(tmp_path / "q.onnx", qdq=True))
    assert q.has_qdq and not q.has_fp16
    assert inspect_onnx(tiny_onnx(tmp_path / "h.onnx", fp16=True)).has_fp16
    det = inspect_onnx(tiny_onnx(tmp_path / "d.onnx", batch=1, hw=(64, 64), card=False))
    assert det.card is None and det.input_shape == (1, 3, 64, 64)


@pytest.mark.parametrize("make, match", [
    (lambda p: tiny_onnx(p, inputs=2), "2 inputs"),
    (lambda p: p.write_bytes(b"not onnx") and p, "not a readable ONNX"),
    (lambda p: p.with_name("missing.onnx"), "not found"),
])
def test_inspect_onnx_errors(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        inspect_onnx(make(tmp_path / "x.onnx"))


# ------------------------------------------------------------------------------------------------ precision


@pytest.mark.parametrize("env, precision, flags, net_flags, strongly", [
    (TRT8, "fp16", ["TF32", "FP16"], ["EXPLICIT_BATCH"], False),
    (TRT10, "fp16", ["TF32", "FP16"], [], False),
    (TRT8, "fp32", [], ["EXPLICIT_BATCH"], False),
    (TRT10, "fp32", [], [], False),
    (TRT11, "fp32", [], ["STRONGLY_TYPED"], True),
])
def test_float_precisions(reid: Path, env: BuildEnv, precision: str, flags, net_flags, strongly: bool) -> None:
    p = plan(reid, env, precision=precision)
    assert (p.precision, p.builder_flags(), p.network_flags(), p.strongly_typed) == (precision, flags, net_flags,
                                                                                      strongly)
    kw = p.create_config_kwargs()
    assert kw["fp16"] is (precision == "fp16") and kw["int8"] is False and kw["tf32"] is (precision != "fp32")
    assert p.card is not None and p.card.extra["precision"] == precision


def test_automatic_precision(tmp_path: Path, reid: Path) -> None:
    assert plan(reid, TRT10).precision == "fp16"
    p11 = plan(reid, TRT11)
    assert p11.precision == "fp32" and any("autocast" in n for n in p11.notes)
    assert plan(tiny_onnx(tmp_path / "q.onnx", qdq=True), TRT10).precision == "int8"
    assert plan(tiny_onnx(tmp_path / "h.onnx", fp16=True), TRT11).precision == "fp16"


def test_fp16_on_tensorrt11_needs_an_fp16_onnx(tmp_path: Path, reid: Path) -> None:
    with pytest.raises(ModelError, match=r"modelopt\.onnx\.autocast --onnx_path .*apnet_tiny\.onnx"):
        plan(reid, TRT11, precision="fp16")
    p = plan(tiny_onnx(tmp_path / "h.onnx", fp16=True), TRT11, precision="fp16")
    assert p.strongly_typed and p.builder_flags() == ["TF32"] and "--fp16" not in p.trtexec_command()


@pytest.mark.parametrize("env, flags, net_flags, strongly", [
    (TRT8, ["TF32", "FP16", "INT8"], ["EXPLICIT_BATCH"], False),
    (TRT10, ["TF32"], ["STRONGLY_TYPED"], True),
    (TRT11, ["TF32"], ["STRONGLY_TYPED"], True),
])
def test_int8_qdq_is_explicit(tmp_path: Path, env: BuildEnv, flags, net_flags, strongly: bool) -> None:
    p = plan(tiny_onnx(tmp_path / "q.onnx", qdq=True), env, precision="int8")
    assert (p.int8_mode, p.builder_flags(), p.network_flags(), p.strongly_typed) == ("explicit", flags, net_flags,
                                                                                    strongly)
    assert p.calib_cache is None and "--calib" not in p.trtexec_command()
    assert ("--stronglyTyped" in p.trtexec_command()) is (env is TRT10)


def test_int8_implicit_calibration(tmp_path: Path, reid: Path) -> None:
    with pytest.raises(ModelError, match="--calib DIR"):
        plan(reid, TRT8, precision="int8")
    p = plan(reid, TRT8, precision="int8", calib_dir=tmp_path / "crops")
    assert p.int8_mode == "implicit" and p.builder_flags() == ["TF32", "FP16", "INT8"]
    assert p.calib_cache is not None and p.calib_cache.name.startswith("apnet_tiny_") and p.calib_cache.suffix == ".calib"
    assert f"--calib={p.calib_cache}" in p.trtexec_command() and "--int8" in p.trtexec_command()
    assert "--calib" in p.command_line() and not any("deprecated" in n for n in p.notes)
    p10 = plan(reid, TRT10, precision="int8", calib_cache=tmp_path / "c.calib")
    assert p10.calib_cache == tmp_path / "c.calib" and any("deprecated since TensorRT 10.1" in n for n in p10.notes)
    with pytest.raises(ModelError, match=r"removed implicit INT8 calibration.*apnet-edge quantize"):
        plan(reid, TRT11, precision="int8", calib_dir=tmp_path)


def test_precision_mismatches(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="Q/DQ"):
        plan(tiny_onnx(tmp_path / "q.onnx", qdq=True), TRT10, precision="fp16")
    with pytest.raises(ModelError, match="FP16 tensors"):
        plan(tiny_onnx(tmp_path / "h.onnx", fp16=True), TRT10, precision="fp32")
    with pytest.raises(ModelError, match="precision must be one of"):
        plan(tiny_onnx(tmp_path / "a.onnx"), TRT10, precision="bf16")


# ------------------------------------------------------------------------------------------------ profile


def test_profile_defaults_and_requests(tmp_path: Path, reid: Path) -> None:
    p = plan(reid, TRT10)
    assert p.profile.batch == DEFAULT_REID_BATCH == (1, 8, 32)
    assert (p.profile.min, p.profile.opt, p.profile.max) == ((1, 3, 16, 8), (8, 3, 16, 8), (32, 3, 16, 8))
    assert plan(reid, TRT10, batch=(2, 4, 64)).profile.batch == (2, 4, 64)
    det = tiny_onnx(tmp_path / "yolo.onnx", hw=("H", "W"), card=False)
    with pytest.raises(ModelError, match="--input-size"):
        plan(det, TRT10)
    pd = plan(det, TRT10, input_size=(640, 640))
    assert pd.task == "detector" and pd.profile.batch == DEFAULT_DETECTOR_BATCH and pd.profile.max == (8, 3, 640, 640)
    assert pd.card is None


def test_fixed_batch_onnx(tmp_path: Path) -> None:
    fixed = tiny_onnx(tmp_path / "f.onnx", batch=4, card=False)
    p = plan(fixed, TRT10)
    assert p.profile.batch == (4, 4, 4) and p.profile.fixed and "--minShapes" not in p.trtexec_command()
    with pytest.raises(ModelError, match="fixed batch of 4"):
        plan(fixed, TRT10, batch=(1, 8, 32))


def test_reid_needs_a_card(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no apnet-edge model card"):
        plan(tiny_onnx(tmp_path / "x.onnx", card=False), TRT10, task="reid")


def test_card_size_must_match_graph(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="card says input_size"):
        plan(tiny_onnx(tmp_path / "x.onnx", hw=(32, 16)), TRT10)


@pytest.mark.parametrize("text, expected", [("1,8,32", (1, 8, 32)), ("8", (8, 8, 8)), ("1 4 16", (1, 4, 16)),
                                            (None, None), ([2, 2, 2], (2, 2, 2))])
def test_parse_batch(text, expected) -> None:
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text", ["0,8,32", "8,4,32", "1,2", "a,b,c"])
def test_parse_batch_errors(text: str) -> None:
    with pytest.raises(ModelError, match="--batch"):
        parse_batch(text)


def test_parse_input_size() -> None:
    assert parse_input_size("640,480") == (640, 480) == parse_input_size("640x480")
    with pytest.raises(ModelError):
        parse_input_size("640")


# ------------------------------------------------------------------------------------------------ DLA, workspace


def test_dla(reid: Path) -> None:
    p = plan(reid, TRT8, precision="fp16", dla_core=1)
    assert p.profile.batch == (8, 8, 8) and p.dla_core == 1 and p.gpu_fallback
    assert p.builder_flags() == ["TF32", "FP16", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK"]
    kw = p.create_config_kwargs()
    assert kw["use_dla"] is True and kw["allow_gpu_fallback"] is True
    assert "_dla1_b8-8-8_orin_sm87_trt8.6.2.engine" in p.engine_path.name
    cmd = p.trtexec_command()
    assert "--useDLACore=1" in cmd and "--allowGPUFallback" in cmd
    strict = plan(reid, TRT8, precision="fp16", dla_core=0, gpu_fallback=False, batch=(4, 4, 4))
    assert "DIRECT_IO" in strict.builder_flags() and "--allowGPUFallback" not in strict.trtexec_command()
    assert "--no-gpu-fallback" in strict.command_line()


@pytest.mark.parametrize("kw, env, match", [
    ({"precision": "fp32", "dla_core": 0}, TRT8, "FP16 or INT8"),
    ({"precision": "fp16", "dla_core": 2}, TRT8, "2 DLA core"),
    ({"precision": "fp16", "dla_core": 0}, TRT10, "no DLA core"),
    ({"precision": "fp16", "dla_core": 0, "batch": (1, 8, 32)}, TRT8, "min = opt = max"),
    ({"precision": "fp32", "dla_core": 0}, BuildEnv("11.2.0", "Orin", "8.7", 2), "no DLA support"),
])
def test_dla_errors(reid: Path, kw, env: BuildEnv, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        plan(reid, env, **kw)


def test_workspace_and_timing_cache(tmp_path: Path, reid: Path) -> None:
    p = plan(reid, TRT10, workspace_mib=1024)
    assert p.create_config_kwargs()["memory_pool_limits"] == {"WORKSPACE": 1 << 30}
    assert "--memPoolSize=workspace:1024" in p.trtexec_command()
    assert p.timing_cache == reid.parent / "engines" / "timing_geforce-rtx-4090_sm89_trt10.3.0.cache"
    assert p.create_config_kwargs()["load_timing_cache"] == str(p.timing_cache)
    assert f"--timingCacheFile={p.timing_cache}" in p.trtexec_command()
    none = plan(reid, TRT10, use_timing_cache=False)
    assert none.timing_cache is None and "load_timing_cache" not in none.create_config_kwargs()
    assert "--no-timing-cache" in none.command_line()
    with pytest.raises(ModelError, match="MiB"):
        plan(reid, TRT10, workspace_mib=0)


# ------------------------------------------------------------------------------------------------ names, lines


def test_file_names() -> None:
    assert slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    assert slug("Orin (nvgpu)") == "orin"
    name = engine_file_name("apnet_c market", "fp16", (1, 8, 32), TRT10)
    assert name == "apnet_c-market_fp16_b1-8-32_geforce-rtx-4090_sm89_trt10.3.0.engine"


def test_paths_and_command_line(reid: Path) -> None:
    p = plan(reid, TRT10, precision="fp16", workspace_mib=512, name="apnet_c")
    assert p.engine_path.parent == reid.parent / "engines"
    assert p.sidecar_path.name == p.engine_path.name.replace(".engine", ".build.json")
    args = shlex.split(p.command_line())
    assert args[:4] == ["apnet-edge", "build-engine", "--onnx", str(reid)]
    assert "--fp16" in args and args[args.index("--batch") + 1] == "1,8,32" and "--name" in args
    # the command line parses back into the same request
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    again = plan_build(commands.request_from_args(parser.parse_args(args[2:])), p.onnx, TRT10)
    assert again.command_line() == p.command_line() and again.engine_path == p.engine_path


def test_trtexec_line(reid: Path) -> None:
    cmd = plan(reid, TRT10, precision="fp16").trtexec_command()
    assert cmd.startswith(f"trtexec --onnx={reid} --saveEngine=")
    for part in ("--minShapes=input:1x3x16x8", "--optShapes=input:8x3x16x8", "--maxShapes=input:32x3x16x8",
                 "--fp16"):
        assert part in cmd
    assert "--noTF32" in plan(reid, TRT10, precision="fp32").trtexec_command()
    assert "--fp16" not in plan(reid, TRT11, precision="fp32").trtexec_command()


def test_summary_mentions_everything(reid: Path) -> None:
    text = plan(reid, TRT8, precision="int8", calib_dir=reid.parent).summary()
    for word in ("TensorRT 8.6.2.3", "Orin", "int8 (implicit calibration)", "profile", "engine", "calib"):
        assert word in text


# ------------------------------------------------------------------------------------------------ commands


def test_commands_dry_run_on_an_assumed_device(tmp_path: Path, reid: Path) -> None:
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    lines: list[str] = []
    out = tmp_path / "r.json"
    args = parser.parse_args(["--onnx", str(reid), "--int8", "--calib", str(tmp_path), "--assume-device",
                              "8.6.2.3,Orin,8.7,2", "--dla-core", "0", "--out", str(tmp_path / "e"), "--json",
                              str(out)])
    assert commands.run(args, out=lines.append) == 0
    text = "\n".join(lines)
    assert "trtexec --onnx=" in text and "--useDLACore=0" in text and "dry run" in text
    report = json.loads(out.read_text())
    assert report["plan"]["precision"] == "int8" and "INT8" in report["plan"]["builder_flags"]
    assert not (tmp_path / "e").exists()  # nothing built, nothing written


def test_commands_without_tensorrt(monkeypatch: pytest.MonkeyPatch, reid: Path) -> None:
    from apnet_edge.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    with pytest.raises(MissingDependencyError, match=r"pip install 'apnet-edge\[trt\]'.*|python3-libnvinfer"):
        commands.run(parser.parse_args(["--onnx", str(reid)]), out=lambda s: None)


def test_assume_device_errors() -> None:
    from apnet_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="TRT_VERSION,GPU_NAME"):
        commands.parse_assume_device("10.3.0,Orin")


def test_commands_module_is_light() -> None:
    code = ("import sys, engines.commands, engines.plan; "
            "print(sorted(m for m in ('tensorrt', 'polygraphy', 'pycuda', 'cuda', 'onnx', 'torch') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ real models


def test_real_yolox_detector(yolox_path: Path, tmp_path: Path) -> None:
    p = plan_build(BuildRequest(onnx=yolox_path, out_dir=tmp_path), inspect_onnx(yolox_path), TRT8)
    assert p.task == "detector" and p.card is None and p.precision == "fp16"
    assert p.profile.min == p.profile.max == (1, 3, 416, 416)
    assert p.engine_path.name == "yolox_nano_fp16_b1-1-1_orin_sm87_trt8.6.2.engine"
    assert "--minShapes" not in p.trtexec_command()


def test_real_third_party_reid_with_a_card_file(reid0248_path: Path, tmp_path: Path) -> None:
    card = Path(__file__).resolve().parents[2] / "configs" / "reid_0248.card.json"
    facts = inspect_onnx(reid0248_path, card)
    assert facts.card is not None and facts.card.layout == "NHWC" and "sidecar" in facts.card_source
    p = plan_build(BuildRequest(onnx=reid0248_path, out_dir=tmp_path, card_file=card), facts, TRT10)
    assert p.task == "reid" and p.profile.opt == (1, 256, 128, 3) and "--card" in p.command_line()
    with pytest.raises(ModelError, match="fixed batch of 1"):
        plan_build(BuildRequest(onnx=reid0248_path, out_dir=tmp_path, batch=(1, 8, 32)), facts, TRT10)


def test_dla_with_qdq_stays_weakly_typed_before_tensorrt11(tmp_path: Path) -> None:
    env = BuildEnv("10.3.0.30", "Orin", "8.7", num_dla_cores=2)
    p = plan(tiny_onnx(tmp_path / "q.onnx", qdq=True), env, precision="int8", dla_core=0)
    assert not p.strongly_typed and p.network_flags() == []
    assert p.builder_flags() == ["TF32", "FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK"]
