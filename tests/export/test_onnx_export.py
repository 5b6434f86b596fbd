"""export.onnx_export: a tiny APNet checkpoint -> ONNX, checked on real person crops from vtest.avi."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from apnet_edge.card import ModelCard  # noqa: E402
from apnet_edge.config import ModelConfig  # noqa: E402
from apnet_edge.errors import ModelError  # noqa: E402
from apnet_edge.files import file_sha256  # noqa: E402
from apnet_edge.preprocess import preprocess_crops  # noqa: E402
from export.onnx_export import CARD_KEY, export_onnx, load_onnx_card  # noqa: E402

INPUT_SIZE = (64, 32)


def make_tiny_checkpoint(path: Path, crops: list[np.ndarray], num_classes: int = 5, arch: str = "apnet_c") -> Path:
    """A resnet18 APNet at 64x32 whose BatchNorm statistics come from real crops (realistic activations)."""
    from train.checkpoint import save_checkpoint
    from train.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, backbone="resnet18", input_size=INPUT_SIZE)
    model = build_model(cfg, num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the warm-up batch
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(preprocess_crops(crops, model.card)))
    model.eval()
    return save_checkpoint(path, model, cfg, epoch=1)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, real_crops) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", real_crops)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_ckpt, real_crops):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_ckpt, out, parity_crops=real_crops)


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_metadata_holds_the_model_card(exported, tiny_ckpt):
    model = onnx.load(str(exported.path))
    props = {p.key: p.value for p in model.metadata_props}
    card = ModelCard.from_json(props[CARD_KEY])
    assert card == load_onnx_card(exported.path) == exported.card
    assert card.input_size == INPUT_SIZE and card.embedding_dim == 512 and card.num_classes == 5
    assert card.color_order == "RGB" and card.pixel_scale == 255.0 and not card.normalize_in_graph
    sha = file_sha256(tiny_ckpt)
    assert card.extra["checkpoint_sha256"] == sha == props["checkpoint_sha256"] == exported.checkpoint_sha256
    assert card.extra["opset"] == 17 and card.extra["exporter"] == "torchscript"
    assert json.loads(props["input_size"]) == [64, 32]
    assert json.loads(props["mean"]) == pytest.approx(list(card.mean))
    assert json.loads(props["std"]) == pytest.approx(list(card.std))
    assert props["color_order"] == "RGB" and props["layout"] == "NCHW" and props["embedding_dim"] == "512"
    assert props["arch"] == "apnet_c"
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset.get("", opset.get("ai.onnx")) == 17
    assert exported.opset == 17 and exported.simplifier in ("onnxslim", "onnxsim", None)


def test_only_the_embedding_path_with_dynamic_batch(exported):
    sess = _session(exported.path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("images", "embeddings")
    assert inp.shape[1:] == [3, 64, 32] and isinstance(inp.shape[0], str)
    rng = np.random.default_rng(0)
    for n in (1, 3, 7):
        y = sess.run(None, {"images": rng.standard_normal((n, 3, 64, 32)).astype(np.float32)})[0]
        assert y.shape == (n, 512)  # the 5-way classifier is not in the graph
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


def test_parity_on_real_crops(exported, real_crops):
    p = exported.parity
    print(f"\nparity over {p.n_crops} real crops: mean cosine {p.mean_cosine:.8f}, min {p.min_cosine:.8f}; "
          f"export took {exported.seconds:.2f} s")
    assert p.source == "crops" and p.n_crops == len(real_crops)
    assert p.min_cosine >= 0.9999 and p.mean_cosine >= p.min_cosine


def test_single_file_and_no_leftovers(exported):
    folder = exported.path.parent
    assert sorted(f.name for f in folder.iterdir()) == [exported.path.name]  # no .data, no temp file
    model = onnx.load(str(exported.path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(model)


def test_normalize_in_graph(tmp_path, tiny_ckpt, real_crops, exported):
    res = export_onnx(tiny_ckpt, tmp_path / "raw.onnx", normalize_in_graph=True, parity_crops=real_crops)
    card = load_onnx_card(res.path)
    assert card.normalize_in_graph and card.color_order == "BGR" and card.pixel_scale == 1.0
    assert card.mean == (0.0, 0.0, 0.0) and card.std == (1.0, 1.0, 1.0)
    assert card.extra["graph_normalization"]["color_order_model"] == "RGB"
    assert res.parity.min_cosine >= 0.9999
    # raw BGR pixels into the new graph == normalised RGB into the plain graph
    raw = preprocess_crops(real_crops[:6], card)
    assert raw.max() > 1.5  # really 0-255 pixels
    a = _session(res.path).run(None, {"images": raw})[0]
    b = _session(exported.path).run(None, {"images": preprocess_crops(real_crops[:6], exported.card)})[0]
    assert np.min((a * b).sum(1)) >= 0.9999


def test_failed_parity_leaves_nothing(tmp_path, tiny_ckpt, real_crops):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match=r"crop \d+ has cosine"):
        export_onnx(tiny_ckpt, out, parity_crops=real_crops[:4], min_cosine=1.01, simplify=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_synthetic_parity_without_crops(tmp_path, tiny_ckpt):
    res = export_onnx(tiny_ckpt, tmp_path / "synthetic.onnx", simplify=False)
    assert res.parity.source == "synthetic" and res.parity.min_cosine >= 0.9999
    assert res.simplifier is None and res.card.extra["simplifier"] is None


def test_bad_arguments(tmp_path, tiny_ckpt):
    with pytest.raises(ModelError, match="opset 18"):
        export_onnx(tiny_ckpt, tmp_path / "d.onnx", exporter="dynamo", opset=17)
    with pytest.raises(ModelError, match="exporter"):
        export_onnx(tiny_ckpt, tmp_path / "d.onnx", exporter="tflite")
    with pytest.raises(ModelError, match=r"\.onnx"):
        export_onnx(tiny_ckpt, tmp_path / "d.bin")
    assert list(tmp_path.iterdir()) == []


def test_attention_fused_only_for_the_channel_pyramid(exported, tmp_path, real_crops):
    """APNet-C exports its pyramids fused (parity holds); APNet-S (spatial masks) is exported step by step."""
    assert exported.card.extra["attention_fused"] is True
    assert exported.parity.min_cosine >= 0.9999
    ckpt = make_tiny_checkpoint(tmp_path / "s.pt", real_crops, arch="apnet_s")
    res = export_onnx(ckpt, tmp_path / "s.onnx", parity_crops=real_crops)
    assert res.card.extra["attention_fused"] is False
    assert res.parity.min_cosine >= 0.9999
