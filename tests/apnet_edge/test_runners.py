"""Runners: the real OMZ re-ID model (fixed batch 1, NHWC, BGR 0-255) with a card passed in and with a sidecar,
on real crops; a tiny dynamic-batch ONNX model built here (card in metadata_props); error messages; OpenVINO and
the torch runner on the same tiny weights."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from apnet_edge.card import ModelCard
from apnet_edge.crops import cut_crops, read_frames
from apnet_edge.errors import MissingDependencyError, ModelError
from apnet_edge.runners import infer_flip_averaged, load_runner, read_sidecar, write_sidecar
from apnet_edge.runners.onnxruntime_runner import OnnxRuntimeRunner

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

OMZ_CARD = ModelCard(arch="external", backbone="omz-0248", level=0, input_size=(256, 128), mean=(0, 0, 0),
                     std=(1, 1, 1), color_order="BGR", pixel_scale=1.0, layout="NHWC", embedding_dim=256)
TINY_CARD = ModelCard(arch="tiny", backbone="conv1x1", level=0, input_size=(32, 16), embedding_dim=8)  # RGB ImageNet
TINY_W = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)


def build_tiny_onnx(path: Path, card: ModelCard | None = TINY_CARD, batch: int | str = "N") -> Path:
    """1x1 conv (3 -> 8) + ReLU + global average pool + flatten: NCHW [N, 3, 32, 16] -> [N, 8], card in metadata."""
    nodes = [helper.make_node("Conv", ["images", "W"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["embeddings"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 32, 16])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [batch, 8])],
        [numpy_helper.from_array(TINY_W.reshape(8, 3, 1, 1), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if card is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "apnet_edge.card", card.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_reference(crops: list[np.ndarray]) -> np.ndarray:
    """What the tiny model must output, computed independently: per-crop resize, RGB, ImageNet norm, numpy."""
    out = []
    for c in crops:
        x = cv2.cvtColor(cv2.resize(c, (16, 32), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB) / 255.0
        x = (x - np.array(TINY_CARD.mean)) / np.array(TINY_CARD.std)
        out.append(np.maximum(x @ TINY_W.T.astype(np.float64), 0).mean(axis=(0, 1)))
    f = np.stack(out)
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def omz(reid0248_path: Path):
    with OnnxRuntimeRunner(reid0248_path, card=OMZ_CARD, threads=2) as runner:
        yield runner


@pytest.fixture
def omz_link(reid0248_path: Path, tmp_path: Path) -> Path:
    """The OMZ model seen from a folder of our own (so that a sidecar can be written beside it)."""
    link = tmp_path / "omz-0248.onnx"
    os.symlink(reid0248_path, link)
    return link


# ---------------------------------------------------------------------------------------------- real model
def test_fixed_batch_split_equals_single_calls(omz, real_crops) -> None:
    assert omz.max_batch == 1 and omz.fixed_batch and omz.card_source == "the card passed in"
    assert omz.input_name == "inputs:0" and omz.output_name == "Identity:0" and omz.backend == "onnxruntime"
    five = omz.infer(real_crops[:5])
    assert five.shape == (5, 256) and five.dtype == np.float32
    singles = np.concatenate([omz.infer([c]) for c in real_crops[:5]])
    np.testing.assert_allclose(five, singles, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(five, axis=1), 1.0, atol=1e-5)
    assert omz.infer([]).shape == (0, 256)


def test_same_person_in_consecutive_frames_is_most_similar(omz, yolox_detector, vtest_path) -> None:
    """Real embeddings: a person matched by box overlap in the next frame is closer than anyone else."""
    starts = (150, 350, 550)
    frames = read_frames(vtest_path, [i + d for i in starts for d in (0, 1)])
    same, other, rank1 = [], [], []
    for a, b in zip(frames[0::2], frames[1::2]):
        da, db = yolox_detector.detect(a), yolox_detector.detect(b)
        da, db = da.filter(da.heights >= 48), db.filter(db.heights >= 48)
        ea, eb = omz.infer(cut_crops(a, da)), omz.infer(cut_crops(b, db))
        sim, iou = ea @ eb.T, _iou(da.boxes, db.boxes)
        for i in range(len(da)):
            j = int(np.argmax(iou[i]))
            if iou[i, j] > 0.6:
                same.append(sim[i, j])
                other.extend(sim[i, iou[i] < 0.1].tolist())
                rank1.append(int(np.argmax(sim[i])) == j)
    assert len(same) >= 8 and len(other) >= 20, (len(same), len(other))
    assert np.mean(same) > np.mean(other) + 0.4, (np.mean(same), np.mean(other))
    assert np.mean(rank1) >= 0.9 and min(same) > 0.5, (np.mean(rank1), min(same))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_sidecar_card(omz, omz_link: Path, real_crops) -> None:
    written = write_sidecar(omz_link, OMZ_CARD)
    assert written.name == "omz-0248.card.json" and read_sidecar(omz_link) == OMZ_CARD
    with load_runner(omz_link, threads=2) as runner:
        assert runner.card == OMZ_CARD and "sidecar" in runner.card_source
        np.testing.assert_allclose(runner.infer(real_crops[:3]), omz.infer(real_crops[:3]), atol=1e-6)


def test_minimal_sidecar_takes_the_rest_from_the_graph(omz_link: Path) -> None:
    side = omz_link.with_name("omz-0248.json")
    side.write_text(json.dumps({"color_order": "BGR", "pixel_scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1]}))
    runner = load_runner(omz_link)
    assert runner.card.layout == "NHWC" and runner.card.input_size == (256, 128) and runner.card.embedding_dim == 256
    side.write_text(json.dumps({"layout": "NHWC"}))
    with pytest.raises(ModelError, match=r"lacks \['color_order', 'pixel_scale', 'mean', 'std'\]"):
        load_runner(omz_link)
    side.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_runner(omz_link)


def test_missing_card_explains_the_sidecar(omz_link: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_runner(omz_link)
    msg = str(err.value)
    assert "omz-0248.card.json" in msg and '"layout": "NHWC"' in msg and '"input_size": [256, 128]' in msg
    assert "normalisation cannot be known" in msg and "\n" not in msg


def test_card_contradicting_the_graph(reid0248_path: Path) -> None:
    from dataclasses import replace

    with pytest.raises(ModelError, match=r"layout NCHW but the graph is NHWC.*embedding_dim 512"):
        OnnxRuntimeRunner(reid0248_path, card=replace(OMZ_CARD, layout="NCHW", embedding_dim=512))


def test_wrong_batches_say_what_was_expected(omz) -> None:
    with pytest.raises(ModelError, match=r"dtype float64.*expected .*float32 array \(N, 256, 128, 3\) in NHWC"):
        omz.infer(np.zeros((2, 256, 128, 3)))
    with pytest.raises(ModelError, match=r"shape \(2, 3, 256, 128\); expected"):
        omz.infer(np.zeros((2, 3, 256, 128), np.float32))
    with pytest.raises(ModelError, match="crop 0"):
        omz.infer([np.zeros((50, 20), np.uint8)])
    with pytest.raises(ModelError, match="got dict"):
        omz.infer({"x": 1})


def test_detector_is_not_a_reid_model(yolox_path: Path) -> None:
    with pytest.raises(ModelError, match=r"\[1, 3549, 85\].*re-ID model must output \(N, D\)"):
        OnnxRuntimeRunner(yolox_path)
    with OnnxRuntimeRunner(yolox_path, task="detector", threads=1) as det:
        assert det.card.input_size == (416, 416) and det.card_source == "the graph"
        out = det.infer(np.full((2, 3, 416, 416), 114, np.float32))
        assert out.shape == (2, 3549, 85)  # raw, not normalised
        assert det._session.get_session_options().intra_op_num_threads == 1


# ---------------------------------------------------------------------------------------------- load_runner errors
def test_corrupt_onnx_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError) as err:
        load_runner(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_load_runner_errors(tmp_path: Path, tiny_onnx: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_runner(tmp_path / "missing.onnx")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"suffix '.tflite'.*\.onnx \(onnxruntime\)"):
        load_runner(tmp_path / "m.tflite")
    with pytest.raises(ModelError, match="backend torch cannot read"):
        load_runner(tiny_onnx, backend="torch")
    with pytest.raises(ModelError, match="unknown backend"):
        load_runner(tiny_onnx, backend="tflite")


def test_engine_without_tensorrt(tmp_path: Path) -> None:
    trt = importlib.util.find_spec("tensorrt")
    if trt is not None and hasattr(importlib.import_module("tensorrt"), "Runtime"):
        pytest.skip("a real TensorRT is installed")
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(MissingDependencyError, match=r"apnet-edge\[trt\]"):
        load_runner(tmp_path / "m.engine")


# ---------------------------------------------------------------------------------------------- tiny dynamic model
def test_dynamic_batch_metadata_card_and_parity(tiny_onnx: Path, real_crops) -> None:
    with load_runner(tiny_onnx, threads=1) as runner:
        assert runner.card == TINY_CARD and runner.card_source == "metadata 'apnet_edge.card'"
        assert runner.max_batch is None and not runner.fixed_batch
        emb = runner.infer(real_crops[:7])
        np.testing.assert_allclose(emb, tiny_reference(real_crops[:7]), atol=2e-5)
        pre = runner.prepare(real_crops[:7])  # a pre-processed batch gives the same result
        assert pre.shape == (7, 3, 32, 16)
        np.testing.assert_allclose(runner.infer(pre), emb, atol=1e-6)
    with load_runner(tiny_onnx, max_batch=3) as capped:
        np.testing.assert_allclose(capped.infer(real_crops[:7]), emb, atol=1e-6)
        assert capped.max_batch == 3


def test_fixed_batch_padding(tmp_path: Path, real_crops) -> None:
    runner = OnnxRuntimeRunner(build_tiny_onnx(tmp_path / "b4.onnx", batch=4))
    assert runner.max_batch == 4 and runner.fixed_batch
    np.testing.assert_allclose(runner.infer(real_crops[:6]), tiny_reference(real_crops[:6]), atol=2e-5)
    runner.deactivate()
    assert runner.providers == []
    assert runner.infer(real_crops[:1]).shape == (1, 8)  # re-activates on use


def test_unavailable_provider_falls_back_to_cpu(tiny_onnx: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA execution provider present")
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider"):
        runner = OnnxRuntimeRunner(tiny_onnx, providers=["cuda"])
    assert runner.providers == ["CPUExecutionProvider"]
    assert OnnxRuntimeRunner(tiny_onnx, providers="auto").providers[-1] == "CPUExecutionProvider"


# ---------------------------------------------------------------------------------------------- OpenVINO
@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'apnet-edge[openvino]')")
def test_openvino_matches_onnxruntime(reid0248_path: Path, omz, real_crops) -> None:
    with load_runner(reid0248_path, backend="openvino", card=OMZ_CARD, threads=2, precision="f32") as ov:
        assert ov.backend == "openvino" and ov.precision == "fp32"
        assert ov.max_batch == 1  # its graph reshapes to [1, 128]: the dynamic-batch trial rejects it
        got, ref = ov.infer(real_crops[:4]), omz.infer(real_crops[:4])
        assert np.all((got * ref).sum(1) > 0.9999)


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'apnet-edge[openvino]')")
def test_openvino_tiny_dynamic_from_metadata(tiny_onnx: Path, tmp_path: Path, real_crops) -> None:
    import openvino as ov

    ir = tmp_path / "tiny.xml"
    ov.save_model(ov.Core().read_model(str(tiny_onnx)), str(ir))
    with load_runner(ir, threads=1) as runner:
        assert runner.card == TINY_CARD and "metadata" in runner.card_source
        assert runner.max_batch is None and runner.precision in ("bf16", "fp32")
        emb = runner.infer(real_crops[:5])
        assert np.all((emb * tiny_reference(real_crops[:5])).sum(1) > 0.999)
    with pytest.raises(ModelError, match="no weights file"):
        ir.with_suffix(".bin").unlink()
        load_runner(ir)


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'apnet-edge[openvino]')")
def test_openvino_static_batches(tiny_onnx: Path, real_crops, monkeypatch, capsys) -> None:
    from apnet_edge.cli import main
    from apnet_edge.runners import openvino_runner

    ref = tiny_reference(real_crops[:5])
    with load_runner(tiny_onnx, backend="openvino", threads=1, static_batches=[3, 1]) as runner:
        assert runner.static_compiled == (1, 3)
        assert np.all((runner.infer(real_crops[:3]) * ref[:3]).sum(1) > 0.999)  # the static copy
        assert np.all((runner.infer(real_crops[:5]) * ref).sum(1) > 0.999)  # the dynamic model
    with pytest.raises(ModelError, match="static_batches must be positive ints"):
        load_runner(tiny_onnx, backend="openvino", static_batches=[0])
    # a probe that fails: the size stays on the dynamic model, with a warning naming why
    monkeypatch.setattr(openvino_runner, "_PROBE", "import sys; sys.exit(3)")
    monkeypatch.setattr(openvino_runner, "_probed", {})
    with pytest.warns(RuntimeWarning, match="batch 2 runs on the dynamic-batch model.*exit status 3"):
        with load_runner(tiny_onnx, backend="openvino", threads=1, static_batches=[2]) as runner:
            assert runner.static_compiled == ()
            assert np.all((runner.infer(real_crops[:2]) * ref[:2]).sum(1) > 0.999)
    # the CLI says it in one line
    assert main(["bench", "--model", str(tiny_onnx), "--backend", "openvino", "--batch", "2", "--seconds", "0"]) == 0
    err = capsys.readouterr().err
    assert "apnet-edge bench: warning: OpenVINO model" in err and "exit status 3" in err and "base.py" not in err


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'apnet-edge[openvino]')")
def test_bench_compiles_openvino_per_batch_unless_dynamic(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    import apnet_edge.runners as runners
    from apnet_edge.cli import main

    seen: list[tuple] = []
    real = runners.load_runner

    def spy(path, backend="auto", card=None, threads=None, **kw):
        runner = real(path, backend=backend, card=card, threads=threads, **kw)
        seen.append((backend, kw.get("static_batches"), runner))
        return runner

    monkeypatch.setattr(runners, "load_runner", spy)
    out = tmp_path / "b.json"
    assert main(["bench", "--model", str(tiny_onnx), "--backend", "openvino", "--batch", "1,3", "--seconds", "0",
                 "--threads", "1", "--json", str(out)]) == 0
    assert seen[-1][1] == (1, 3) and [t["batch"] for t in json.loads(out.read_text())[0]["timings"]] == [1, 3]
    assert main(["bench", "--model", str(tiny_onnx), "--backend", "openvino", "--batch", "2", "--seconds", "0",
                 "--dynamic-shapes"]) == 0
    assert seen[-1][1] is None
    assert main(["bench", "--model", str(tiny_onnx), "--backend", "ov", "--batch", "2", "--seconds", "0"]) == 0
    assert seen[-1][1] == (2,)  # the alias is OpenVINO too
    assert main(["bench", "--model", str(tiny_onnx), "--batch", "2", "--seconds", "0"]) == 0  # ONNX Runtime
    assert seen[-1][0] == "auto" and seen[-1][1] is None


@pytest.mark.skipif(not (HAS_OPENVINO and HAS_TORCH), reason="needs openvino and torch")
def test_openvino_static_batch_of_a_pyramid_survives(tmp_path: Path, real_crops) -> None:
    """OpenVINO 2026.4 dies (SIGSEGV) compiling this fused APNet-C pyramid at a static batch of 2: the probe must
    keep that out of this process, and the batch must still give the dynamic model's embeddings."""
    import warnings

    import torch

    from train.models.attention import AttentionPyramidC

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.pyramid = AttentionPyramidC(16, 2)
            self.pyramid.fused = True
            self.head = torch.nn.Conv2d(16, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.pyramid(torch.relu(self.conv(x)))).mean((2, 3))

    torch.manual_seed(0)
    path = tmp_path / "pyramid.onnx"
    torch.onnx.export(Tiny().eval(), torch.randn(1, 3, 32, 16), str(path), input_names=["images"],
                      output_names=["embeddings"], dynamic_axes={"images": {0: "n"}, "embeddings": {0: "n"}},
                      opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "apnet_edge.card", TINY_CARD.to_json()
    onnx.save(model, str(path))
    with load_runner(path, backend="openvino", threads=1, precision="f32") as dynamic:
        ref = dynamic.infer(real_crops[:2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with load_runner(path, backend="openvino", threads=1, precision="f32", static_batches=[2]) as runner:
            got = runner.infer(real_crops[:2])
            compiled = runner.static_compiled
    assert compiled == (2,) or any("batch 2 runs on the dynamic-batch model" in str(w.message) for w in caught)
    assert np.all((got * ref).sum(1) > 0.9999)


# ---------------------------------------------------------------------------------------------- torch
@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_runner_with_injected_model(tiny_onnx: Path, real_crops) -> None:
    import torch

    from apnet_edge.runners.torch_runner import TorchRunner

    class Tiny(torch.nn.Module):
        """Same weights as the tiny ONNX model, with the interface of train's APNet (card + embed)."""

        def __init__(self) -> None:
            super().__init__()
            self.card = TINY_CARD
            self.flips: list[bool] = []
            self.conv = torch.nn.Conv2d(3, 8, 1, bias=False)
            self.conv.weight.data = torch.from_numpy(TINY_W.reshape(8, 3, 1, 1).copy())

        def embed(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
            self.flips.append(flip)
            f = torch.relu(self.conv(x)).mean(dim=(2, 3))
            if flip:
                f = f + torch.relu(self.conv(torch.flip(x, dims=[3]))).mean(dim=(2, 3))
            return torch.nn.functional.normalize(f, dim=1)

    with TorchRunner(model=Tiny(), max_batch=3) as runner:
        assert runner.backend == "torch" and runner.card == TINY_CARD and runner.supports_flip
        emb = runner.infer(real_crops[:5])
        np.testing.assert_allclose(emb, tiny_reference(real_crops[:5]), atol=2e-5)
        with load_runner(tiny_onnx) as ort_runner:
            np.testing.assert_allclose(emb, ort_runner.infer(real_crops[:5]), atol=2e-5)
        model = runner._module
        model.flips.clear()
        flipped = runner.infer(real_crops[:5], flip=True)
        assert model.flips == [True, True]  # passed to embed for each chunk (3 + 2), and reset afterwards
        np.testing.assert_allclose(flipped, emb, atol=2e-5)  # 1x1 conv + mean pool is mirror-invariant
        runner.infer(real_crops[:1])
        assert model.flips == [True, True, False]
        model.flips.clear()
        np.testing.assert_allclose(infer_flip_averaged(runner, real_crops[:2]), emb[:2], atol=2e-5)
        assert model.flips == [True]  # the runner's own flip, not a second call on mirror images
        with pytest.raises(ModelError, match=r"\(N, 3, 32, 16\) in NCHW"):
            runner.infer(np.zeros((1, 32, 16, 3), np.float32))
    with pytest.raises(ModelError, match="needs a checkpoint path or model="):
        TorchRunner()
