"""apnet_edge.gate: FP32 vs converted model on real crops, and mAP / rank-1 on a labelled folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apnet_edge.card import ModelCard
from apnet_edge.errors import DatasetError, ModelError
from apnet_edge.gate import DEFAULT_MIN_MEAN_COSINE, GateResult, compare_models, precision_of


class FakeRunner:
    """Duck-typed runner: embeds a crop as a fixed projection of its mean colour and size (+ optional noise)."""

    def __init__(self, dim: int = 8, noise: float = 0.0, card: ModelCard | None = None, nan: bool = False) -> None:
        self.proj = np.random.default_rng(0).standard_normal((5, dim))
        self.noise = noise
        self.card = card or ModelCard(embedding_dim=dim)
        self.nan = nan
        self.rng = np.random.default_rng(1)

    def infer(self, crops: list[np.ndarray]) -> np.ndarray:
        f = np.stack([[*c.reshape(-1, 3).mean(0) / 255.0, c.shape[0] / 100.0, c.shape[1] / 100.0] for c in crops])
        y = f @ self.proj + self.noise * self.rng.standard_normal((len(crops), self.proj.shape[1]))
        if self.nan:
            y[0] = np.nan
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


# ----------------------------------------------------------------------------------------- without models


def test_precision_from_card_and_runner():
    assert precision_of(ModelCard()) == "fp32"
    assert precision_of(ModelCard(extra={"quantization": {"target": "cpu"}})) == "int8"
    assert precision_of(ModelCard(extra={"precision": "FP16"})) == "fp16"

    class R:
        precision = "fp16"

    assert precision_of(ModelCard(), R()) == "fp16"
    assert DEFAULT_MIN_MEAN_COSINE == {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.998, "int8": 0.98}


def test_fake_runners(real_crops):
    same = compare_models(FakeRunner(), FakeRunner(), real_crops)
    assert same.passed and same.reasons == [] and same.mean_cosine == pytest.approx(1.0, abs=1e-6)
    int8 = FakeRunner(noise=0.05, card=ModelCard(embedding_dim=8, extra={"quantization": {"target": "cpu"}}))
    res = compare_models(FakeRunner(), int8, real_crops)
    assert res.precision == "int8" and res.min_mean_cosine == 0.98
    bad = compare_models(FakeRunner(), FakeRunner(noise=1.0), real_crops, min_worst_cosine=0.99)
    assert not bad.passed and len(bad.reasons) == 2
    assert f"crop {bad.worst_index} has cosine" in bad.reasons[1]
    nan = compare_models(FakeRunner(), FakeRunner(nan=True), real_crops)
    assert not nan.passed and "not finite" in nan.reasons[0] and nan.worst_index == 0
    with pytest.raises(ModelError, match="not comparable"):
        compare_models(FakeRunner(dim=8), FakeRunner(dim=4), real_crops)
    with pytest.raises(ModelError, match="precision"):
        compare_models(FakeRunner(), FakeRunner(), real_crops, precision="int4")
    with pytest.raises(DatasetError):
        compare_models(FakeRunner(), FakeRunner(), [])
    with pytest.raises(DatasetError):
        compare_models(FakeRunner(), FakeRunner(), None)


# ----------------------------------------------------------------------------------------- real ONNX models


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory, real_crops) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from apnet_edge.config import ModelConfig
    from apnet_edge.preprocess import preprocess_crops
    from export.onnx_export import export_onnx
    from train.checkpoint import save_checkpoint
    from train.models import build_model

    d = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", input_size=(64, 32))
    model = build_model(cfg, num_classes=0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(preprocess_crops(real_crops, model.card)))
    ckpt = save_checkpoint(d / "tiny.pt", model.eval(), cfg, epoch=1)
    return export_onnx(ckpt, d / "tiny.onnx", parity_crops=real_crops[:4], simplify=False).path


def perturbed_copy(src: Path, out: Path, scale: float) -> Path:
    """``src`` with Gaussian noise of ``scale`` x each weight's std added to every convolution weight."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if init.name in conv_weights:
            noisy = w + scale * float(w.std()) * rng.standard_normal(w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def labelled_root(tmp_path_factory, real_crops) -> Path:
    """Market-named folder: each real crop is an identity; query = the crop on camera 1, gallery = two altered
    views of it on cameras 2 and 3."""
    import cv2

    root = tmp_path_factory.mktemp("labelled")
    (root / "query").mkdir()
    (root / "bounding_box_test").mkdir()
    for i, c in enumerate(real_crops[:12]):
        pid = i + 1
        cv2.imwrite(str(root / "query" / f"{pid:04d}_c1s1_{i:06d}_00.jpg"), c)
        brighter = np.clip(c.astype(np.int16) + 25, 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "bounding_box_test" / f"{pid:04d}_c2s1_{i:06d}_00.jpg"), c[:, ::-1])
        cv2.imwrite(str(root / "bounding_box_test" / f"{pid:04d}_c3s1_{i:06d}_00.jpg"), brighter)
    return root


def test_identical_models_pass(fp32_onnx, real_crops):
    res = compare_models(fp32_onnx, fp32_onnx, real_crops)
    assert isinstance(res, GateResult) and res.passed and res.reasons == []
    assert res.precision == "fp32" and res.min_mean_cosine == 0.9999
    assert res.mean_cosine == pytest.approx(1.0, abs=1e-6) and res.min_cosine == pytest.approx(1.0, abs=1e-6)
    assert res.n_crops == len(real_crops) and res.reference_metrics is None
    d = res.to_dict()
    assert d["passed"] and d["thresholds"]["min_mean_cosine"] == 0.9999 and "PASSED" in res.summary()


def test_perturbed_candidate_fails(fp32_onnx, real_crops, tmp_path):
    bad = perturbed_copy(fp32_onnx, tmp_path / "noisy.onnx", scale=0.05)
    res = compare_models(fp32_onnx, bad, real_crops)
    print(f"\nperturbed candidate: mean cosine {res.mean_cosine:.4f}, worst {res.min_cosine:.4f} "
          f"(crop {res.worst_index})")
    assert not res.passed and any("mean cosine" in r and "fp32" in r for r in res.reasons)
    assert res.min_cosine <= res.p01_cosine <= res.mean_cosine < 0.9999
    assert "FAILED" in res.summary()
    # an explicit threshold below its mean cosine lets the same candidate pass
    loose = compare_models(fp32_onnx, bad, real_crops, min_mean_cosine=res.mean_cosine - 1e-3)
    assert loose.passed


def test_labelled_folder_metrics(fp32_onnx, labelled_root, tmp_path):
    bad = perturbed_copy(fp32_onnx, tmp_path / "noisy.onnx", scale=2.0)
    res = compare_models(fp32_onnx, bad, None, labelled_root=str(labelled_root), max_map_drop=0.0,
                         min_mean_cosine=-1.0)
    rm, cm = res.reference_metrics, res.candidate_metrics
    print(f"\nlabelled folder: reference mAP {rm['mAP']:.3f} rank-1 {rm['rank1']:.3f}; "
          f"perturbed mAP {cm['mAP']:.3f} rank-1 {cm['rank1']:.3f}")
    assert res.n_crops == 36  # query + gallery images, used as crops when none are given
    assert 0.0 <= cm["mAP"] <= 1.0 and 0.0 < rm["mAP"] <= 1.0 and 0.0 <= rm["rank1"] <= 1.0
    assert res.map_drop == pytest.approx(rm["mAP"] - cm["mAP"])
    assert res.map_drop > 0.05 and not res.passed and res.reasons[0].startswith("mAP dropped")
    same = compare_models(fp32_onnx, fp32_onnx, None, labelled_root=labelled_root)
    assert same.passed and same.map_drop == pytest.approx(0.0, abs=1e-9)


def test_checkpoint_reference_and_int8_candidate(fp32_onnx, real_crops, tmp_path):
    """The real use: the PyTorch checkpoint as reference; its ONNX passes at fp32, its INT8 model is judged at int8."""
    from export.quantize import quantize_onnx

    ckpt = fp32_onnx.with_name("tiny.pt")
    res = compare_models(ckpt, fp32_onnx, real_crops)
    assert res.passed and res.precision == "fp32" and res.min_cosine >= 0.9999
    int8 = quantize_onnx(fp32_onnx, real_crops[::2], tmp_path / "int8.onnx", progress=False).path
    res = compare_models(ckpt, int8, real_crops[1::2])
    print(f"\ncheckpoint vs INT8 (cpu) on {res.n_crops} held-out crops: mean cosine {res.mean_cosine:.4f}")
    assert res.precision == "int8" and res.min_mean_cosine == 0.98
    assert res.passed == (res.mean_cosine >= 0.98)
    assert res.passed or "required for int8" in res.reasons[0]


def test_verify_cli_gates_the_candidate_on_the_runtime_named(fp32_onnx, labelled_root, tmp_path, capsys):
    pytest.importorskip("openvino")
    from apnet_edge.cli import main

    out = tmp_path / "gate.json"
    rc = main(["verify", "--reference", str(fp32_onnx), "--candidate", str(fp32_onnx), "--data", str(labelled_root),
               "--labelled", "--backend", "onnxruntime", "--candidate-backend", "openvino", "--json", str(out)])
    import json

    d = json.loads(out.read_text())
    # OpenVINO runs an FP32 ONNX in bf16 on CPUs that have it (this one does): the gate judges it as bf16
    assert d["precision"] in ("fp32", "bf16")
    assert d["thresholds"]["min_mean_cosine"] == DEFAULT_MIN_MEAN_COSINE[d["precision"]]
    assert 0.99 < d["mean_cosine"] <= 1.0 + 1e-6
    assert rc == (0 if d["passed"] else 1)
    cap = capsys.readouterr()
    assert ("PASSED" if d["passed"] else "FAILED") in cap.out + cap.err
