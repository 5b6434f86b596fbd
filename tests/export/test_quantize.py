"""export.quantize: INT8 Q/DQ models for the CPU and for TensorRT, calibrated on real person crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402

from apnet_edge.errors import ModelError  # noqa: E402
from apnet_edge.preprocess import preprocess_crops  # noqa: E402
from export.onnx_export import export_onnx, load_onnx_card  # noqa: E402
from export.quantize import pooled_vector_nodes, quantize_onnx  # noqa: E402

# The tiny model has random weights: random deep nets amplify quantization noise far more than trained ones
# (a trained OSNet re-ID model reaches ~0.96 with the same settings), so these floors only catch breakage.
FLOOR = {"cpu": 0.85, "tensorrt": 0.75}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, real_crops) -> Path:
    from apnet_edge.config import ModelConfig
    from train.checkpoint import save_checkpoint
    from train.models import build_model

    d = tmp_path_factory.mktemp("fp32")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", input_size=(64, 32))
    model = build_model(cfg, num_classes=0)
    for m in model.modules():  # BatchNorm statistics of real crops: realistic activation ranges
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(preprocess_crops(real_crops[::2], model.card)))
    ckpt = save_checkpoint(d / "tiny.pt", model.eval(), cfg, epoch=1)
    return export_onnx(ckpt, d / "tiny.onnx", parity_crops=real_crops[:8]).path


@pytest.fixture(scope="module", params=["cpu", "tensorrt"])
def quantized(request, tmp_path_factory, fp32, real_crops):
    out = tmp_path_factory.mktemp(f"int8_{request.param}") / "tiny_int8.onnx"
    return quantize_onnx(fp32, real_crops[::2], out, target=request.param, progress=False)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def _producers(model) -> dict:
    """Tensor name -> the node that writes it."""
    return {o: n for n in model.graph.node for o in n.output}


def _zero_points(model) -> list[np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_qdq_graph_and_card(quantized, fp32, real_crops):
    model = onnx.load(str(quantized.path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == quantized.num_quantize_nodes > 0 and "DequantizeLinear" in ops
    card = load_onnx_card(quantized.path)
    q = card.extra["quantization"]
    assert card.extra["precision"] == "int8" and q["target"] == quantized.target and q["format"] == "QDQ"
    assert q["calibration_count"] == quantized.num_calib == len(real_crops[::2])
    assert card.input_size == load_onnx_card(fp32).input_size
    assert sorted(f.name for f in quantized.path.parent.iterdir()) == [quantized.path.name]
    zps = _zero_points(model)
    if quantized.target == "cpu":
        assert (q["activation_type"], q["weight_type"]) == ("QUInt8", "QInt8")
        assert any(z.dtype == np.uint8 for z in zps)
        # ONNX Runtime fuses Q/DQ into QLinearConv only when the model imports com.microsoft (2.5x speed)
        assert "com.microsoft" in {o.domain for o in model.opset_import}
        # the gate of each of the four inner fused pyramids (x * scale) runs on uint8 maps; the fifth is applied
        # to the pooled feature; every other Mul of the attention stays float
        producers = _producers(model)
        consumers = {i: n for n in model.graph.node for i in n.input}
        gates = [n for n in model.graph.node if n.name in q["quantized_gates"]]
        assert len(gates) == len(q["quantized_gates"]) == 4
        other_muls = {n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Mul"} - set(q["quantized_gates"])
        assert other_muls and other_muls <= set(q["excluded_nodes"])  # the card lists what stays float
        for g in gates:
            assert all(producers[i].op_type == "DequantizeLinear" for i in g.input)
            assert consumers[g.output[0]].op_type == "QuantizeLinear"
        pooled = [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]
        assert len(pooled) == 4 and all(consumers[n.output[0]].op_type == "QuantizeLinear" for n in pooled)
        # the sums and concatenations on pooled (N, C) vectors that make scale and shift stay float: no Q/DQ there
        vector_ops = set(pooled_vector_nodes(onnx.load(str(fp32))))
        assert {"Add", "Concat"} <= {n.op_type for n in model.graph.node if n.name in vector_ops}
        assert vector_ops <= set(q["excluded_nodes"])
        for n in (n for n in model.graph.node if n.name in vector_ops):
            assert all(producers[i].op_type != "DequantizeLinear" for i in n.input if i in producers), n.name
    else:  # TensorRT: int8 everywhere, zero point 0, float weights behind Q/DQ pairs, float biases
        assert (q["activation_type"], q["weight_type"]) == ("QInt8", "QInt8") and q["activation_symmetric"]
        assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
        inits = {i.name for i in model.graph.initializer}
        dq_from_init = [n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
        assert not dq_from_init  # every DQ is fed by a Q: no int8 weight / int32 bias initializers (TRT 8.x)
        assert q["quantized_gates"] == []  # not verified on TensorRT: the attention stays float there


def test_cosine_to_fp32_on_held_out_real_crops(quantized, fp32, real_crops):
    held_out = real_crops[1::2]
    x = preprocess_crops(held_out, load_onnx_card(fp32))
    ref, got = _run(fp32, x), _run(quantized.path, x)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    print(f"\nINT8 {quantized.target}: cosine to FP32 over {len(cos)} held-out crops mean {cos.mean():.4f} "
          f"min {cos.min():.4f}; quantization took {quantized.seconds:.2f} s")
    assert np.isfinite(cos).all() and cos.mean() >= FLOOR[quantized.target]


def test_calibration_from_a_folder(tmp_path, fp32, real_crops):
    import cv2

    folder = tmp_path / "calib"
    (folder / "cam1").mkdir(parents=True)
    for i, c in enumerate(real_crops[:6]):
        cv2.imwrite(str(folder / ("cam1" if i % 2 else "") / f"{i:04d}.{'png' if i % 3 else 'jpg'}"), c)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="could not be read"):
        res = quantize_onnx(fp32, folder, tmp_path / "out" / "q.onnx", num_calib=5, progress=False,
                            exclude=["MaxPool"])
    assert res.num_calib == 5 and res.skipped_images == (str(folder / "broken.jpg"),)
    assert res.path.is_file()
    # node-name patterns keep whole blocks in float; the percentile is recorded
    model = onnx.load(str(fp32))
    first = next(n.name for n in model.graph.node if n.op_type == "Conv")
    pattern = first.rsplit("/", 1)[0] + "/*" if "/" in first else first
    res = quantize_onnx(fp32, real_crops[:6], tmp_path / "q2.onnx", exclude=[pattern], percentile=99.99,
                        progress=False)
    assert first in res.excluded_nodes
    assert res.card.extra["quantization"]["calibration_percentile"] == 99.99


def test_calibration_errors(tmp_path, fp32):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="is empty"):
        quantize_onnx(fp32, empty, tmp_path / "q.onnx", progress=False)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("x")
    (texts / "b.csv").write_text("y")
    with pytest.raises(ModelError, match=r"no images \(found \.csv, \.txt\)"):
        quantize_onnx(fp32, texts, tmp_path / "q.onnx", progress=False)
    with pytest.raises(ModelError, match="does not exist"):
        quantize_onnx(fp32, tmp_path / "missing", tmp_path / "q.onnx", progress=False)
    with pytest.raises(ModelError, match="no calibration crops"):
        quantize_onnx(fp32, [], tmp_path / "q.onnx", progress=False)
    assert not (tmp_path / "q.onnx").exists()


def test_model_errors(tmp_path, fp32, quantized, real_crops):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    crops = real_crops[:2]
    with pytest.raises(ModelError, match="not a re-ID model"):
        quantize_onnx(tmp_path / "plain.onnx", crops, tmp_path / "q.onnx", progress=False)
    with pytest.raises(ModelError, match="already quantized"):
        quantize_onnx(quantized.path, crops, tmp_path / "q.onnx", progress=False)
    with pytest.raises(ModelError, match="match no op type, node name or node-name pattern"):
        quantize_onnx(fp32, crops, tmp_path / "q.onnx", exclude=["NoSuchOp"], progress=False)
    with pytest.raises(ModelError, match="match no op type"):
        quantize_onnx(fp32, crops, tmp_path / "q.onnx", exclude=["/nowhere/*"], progress=False)
    with pytest.raises(ModelError, match="percentile"):
        quantize_onnx(fp32, crops, tmp_path / "q.onnx", percentile=101.0, progress=False)
    with pytest.raises(ModelError, match="target"):
        quantize_onnx(fp32, crops, tmp_path / "q.onnx", target="tpu", progress=False)
    with pytest.raises(ModelError, match="overwrite"):
        quantize_onnx(fp32, crops, fp32, progress=False)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["plain.onnx"]


def test_cli_preset_choices_are_the_presets():
    from apnet_edge.cli import KEEP_FLOAT_CHOICES
    from export.quantize import KEEP_FLOAT_AUTO, KEEP_FLOAT_PRESETS

    assert KEEP_FLOAT_CHOICES == (*KEEP_FLOAT_PRESETS, KEEP_FLOAT_AUTO)


def test_keep_float_preset_keeps_the_sensitive_parts_of_an_apnet_export_in_float(tmp_path, fp32, real_crops):
    res = quantize_onnx(fp32, real_crops[:6], tmp_path / "acc.onnx", keep_float="accurate", percentile=99.99,
                        progress=False)
    kept = set(res.excluded_nodes)
    names = [n.name for n in onnx.load(str(fp32)).graph.node]
    for must in ("/pyramids.", "/layer1/", "/conv1/"):
        group = [n for n in names if n.startswith(must)]
        assert group and set(group) <= kept, must
    assert any(n.startswith("/layer4/") and n.endswith("/Add") for n in kept)
    assert not any(n.startswith("/layer2/") for n in kept)  # the rest stays INT8 ...
    q = onnx.load(str(res.path))
    convs_q = {n.input[0] for n in q.graph.node if n.op_type == "Conv"}
    dq_out = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    assert convs_q & dq_out  # ... and still has quantized convolutions
    assert res.card.extra["quantization"]["keep_float_preset"] == "accurate"
    x = preprocess_crops(real_crops[1::2][:8], res.card)
    a, b = _run(fp32, x), _run(res.path, x)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.mean() > FLOOR["cpu"]
    with pytest.raises(ModelError, match="preset 'fast' is unknown"):
        quantize_onnx(fp32, real_crops[:6], tmp_path / "x.onnx", keep_float="fast", progress=False)
    assert not (tmp_path / "x.onnx").exists()


def test_float_gates_keep_every_mul_in_float(tmp_path, fp32, real_crops):
    res = quantize_onnx(fp32, real_crops[::4], tmp_path / "float_gates.onnx", target="cpu", progress=False,
                        quantize_gates=False)
    model = onnx.load(str(res.path))
    producers = _producers(model)
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    assert res.quantized_gates == () and load_onnx_card(res.path).extra["quantization"]["quantized_gates"] == []

    def quantized(n) -> bool:  # both inputs behind DequantizeLinear: ONNX Runtime fuses it into a QLinearMul
        return all(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)

    assert muls and not any(quantized(n) for n in muls)


@pytest.mark.parametrize("quantized", ["cpu"], indirect=True)  # OpenVINO runs the CPU target's model
def test_cpu_int8_export_compiles_and_agrees_on_openvino(quantized, real_crops, tmp_path):
    """OpenVINO runs the CPU Q/DQ model and agrees with ONNX Runtime. In a subprocess: an OpenVINO crash while
    compiling (one variant of the fused pyramid's graph once caused a SIGFPE there) must fail this test, not kill
    the session."""
    import subprocess
    import sys

    pytest.importorskip("openvino")
    code = (
        "import sys, numpy as np\n"
        "from apnet_edge.runners import load_runner\n"
        "crops = list(np.load(sys.argv[2], allow_pickle=True))\n"
        "with load_runner(sys.argv[1], backend='openvino', threads=2) as ov, "
        "load_runner(sys.argv[1], backend='onnxruntime', threads=2) as ort:\n"
        "    a, b = ov.infer(crops), ort.infer(crops)\n"
        "print(float((a * b).sum(1).mean()))\n")
    sample = tmp_path / "crops.npy"
    np.save(sample, np.array(real_crops[1::4], dtype=object), allow_pickle=True)
    proc = subprocess.run([sys.executable, "-c", code, str(quantized.path), str(sample)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"OpenVINO failed on {quantized.path.name} (rc {proc.returncode}): {proc.stderr[-800:]}"
    # the same INT8 model on two runtimes (OpenVINO runs the float parts in bf16 where the CPU has it: 0.975 on
    # this random-weight model with AMX); the floor catches breakage, not drift
    assert float(proc.stdout.strip().splitlines()[-1]) >= 0.9


def test_keep_float_auto_keeps_what_the_target_needs_in_float_and_reports_it(tmp_path, fp32, real_crops, capsys):
    """The search's INT8 model is the one it measured: its cosine on the search crops, recomputed here, is the
    reported one and reaches the target; the groups left in float are excluded, the rest stays INT8."""
    import json

    from apnet_edge.cli import main
    from export.quantize import split_search_crops

    crops = real_crops[:24]
    full = quantize_onnx(fp32, crops, tmp_path / "full.onnx", progress=False, percentile=99.99)
    calib_part, search_part, overlap = split_search_crops(crops, 8, 300)
    assert len(search_part) == 8 and len(calib_part) == 16 and not overlap
    x = preprocess_crops(search_part, full.card)
    ref = _run(fp32, x)

    def cosine(path) -> np.ndarray:
        e = _run(path, x)
        return np.sum(e * ref, 1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))

    full_cos = float(cosine(full.path).mean())
    target = round(1.0 - (1.0 - full_cos) / 3, 4)  # the full INT8 model misses it: something must stay float
    assert full_cos < target
    assert main(["quantize", "--onnx", str(fp32), "--calib", str(_folder(tmp_path / "calib", crops)), "--out",
                 str(tmp_path / "auto.onnx"), "--keep-float", "auto", "--target-cosine", str(target),
                 "--search-crops", "8"]) == 0
    printed = json.loads(capsys.readouterr().out)
    card = load_onnx_card(tmp_path / "auto.onnx")
    q = card.extra["quantization"]
    s = q["keep_float_search"]
    assert printed["keep_float_search"] == s
    assert q["keep_float_preset"] == "auto" and q["calibration_count"] == 16 and s["search_crops"] == 8
    assert s["target_cosine"] == target and s["mean_cosine"] >= target
    assert any(g["int8"] for g in s["groups"]) and not all(g["int8"] for g in s["groups"])
    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    for g in s["groups"]:
        if g["name"] != "/":
            members = [n for n in convs if n.startswith(g["name"] + "/")]
            assert all((n in q["excluded_nodes"]) != g["int8"] for n in members), g
    assert float(cosine(tmp_path / "auto.onnx").mean()) == pytest.approx(s["mean_cosine"], abs=2e-4)
    with pytest.raises(ModelError, match="target_cosine"):
        quantize_onnx(fp32, crops, tmp_path / "x.onnx", keep_float="auto", target_cosine=1.5, progress=False)


def _folder(path: Path, crops) -> Path:
    import cv2

    path.mkdir()
    for i, c in enumerate(crops):
        cv2.imwrite(str(path / f"{i:03d}.png"), c)
    return path


def test_third_party_onnx_is_quantized_with_its_sidecar_card_or_card_flag(tmp_path, fp32, real_crops):
    """An ONNX without apnet-edge metadata (a third-party re-ID model) takes its card from a sidecar beside it, as
    the runners do, or from `quantize --card FILE`; without either the error says what is missing."""
    from apnet_edge.cli import main
    from apnet_edge.runners.sidecar import write_sidecar

    card = load_onnx_card(fp32)
    model = onnx.load(str(fp32))
    del model.metadata_props[:]
    ext = tmp_path / "external.onnx"
    onnx.save(model, str(ext))
    with pytest.raises(ModelError, match="no 'apnet_edge.card' metadata"):
        quantize_onnx(ext, real_crops[:4], tmp_path / "no_card.onnx", progress=False)
    (tmp_path / "cards").mkdir()
    elsewhere = write_sidecar(tmp_path / "cards" / "ext.card.json", card)
    assert main(["quantize", "--onnx", str(ext), "--calib", str(_folder(tmp_path / "calib", real_crops[:4])),
                 "--out", str(tmp_path / "flag.onnx"), "--card", str(elsewhere)]) == 0
    write_sidecar(tmp_path / "external.card.json", card)
    res = quantize_onnx(ext, real_crops[:4], tmp_path / "sidecar.onnx", progress=False)
    for path in (tmp_path / "flag.onnx", res.path):
        q = load_onnx_card(path)
        assert q.input_size == card.input_size and q.extra["precision"] == "int8"


def test_keep_float_auto_says_so_when_no_group_reaches_the_target(tmp_path, fp32, real_crops, monkeypatch):
    """A target no INT8 group can hold (here: every group alone measured under it) stops with the most tolerant
    group's cosine and what to do, and writes nothing."""
    import export.mixed_precision as mp
    import export.quantize as qz

    def nothing_passes(groups, evaluate, target, search_crops, overlaps_calibration, progress=True):
        errors = tuple(0.01 * (i + 1) for i in range(len(groups)))
        return mp.KeepFloatSearch(target, tuple(groups), errors, (), 1.0, 1.0, search_crops, overlaps_calibration)

    monkeypatch.setattr(qz, "search_keep_float", nothing_passes)
    with pytest.raises(ModelError, match=r"no part of .* reaches mean cosine 0.999 .* alone gives 0.9900"):
        quantize_onnx(fp32, real_crops[:24], tmp_path / "x.onnx", keep_float="auto", target_cosine=0.999,
                      search_crops=8, progress=False)
    assert not (tmp_path / "x.onnx").exists()


def test_float_gate_arithmetic_for_openvino_static_copies(quantized, fp32, real_crops, tmp_path):
    """The OpenVINO runner's static copies of a CPU INT8 model compute the gates between their quantized input and
    output in float: the rewrite touches only the gates and gives ONNX Runtime's embeddings; the runner uses it."""
    from apnet_edge.runners.gates import float_gate_arithmetic

    if quantized.target != "cpu":
        pytest.skip("only CPU INT8 models quantize the gates")
    model = onnx.load(str(quantized.path))
    gates = load_onnx_card(quantized.path).extra["quantization"]["quantized_gates"]
    before = len(model.graph.node)
    assert float_gate_arithmetic(model, gates) == 3 * len(gates)  # scale, product and shift of each gate
    assert len(model.graph.node) == before - 6 * len(gates)  # their Q/DQ pairs are gone
    producers = _producers(model)
    for mul in (n for n in model.graph.node if n.name in gates):
        kinds = sorted(producers[i].op_type for i in mul.input)
        assert kinds == ["DequantizeLinear", "Unsqueeze"]  # the map stays quantized, the scale does not
    out = tmp_path / "float_gates.onnx"
    onnx.save(model, str(out))
    x = preprocess_crops(real_crops[1::4], load_onnx_card(quantized.path))
    ref, a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (_run(p, x) for p in (fp32, quantized.path, out)))
    cos_int8, cos_float_gates = float((ref * a).sum(1).mean()), float((ref * b).sum(1).mean())
    assert cos_float_gates >= max(FLOOR["cpu"], cos_int8 - 0.005), (cos_int8, cos_float_gates)  # fewer roundings
    assert float_gate_arithmetic(onnx.load(str(quantized.path)), []) == 0
    print(f"cosine to FP32: INT8 {cos_int8:.4f}, float gate arithmetic {cos_float_gates:.4f}")

    pytest.importorskip("openvino")
    from apnet_edge.runners import load_runner

    with load_runner(quantized.path, backend="openvino", threads=2, static_batches=[1]) as ov, \
            load_runner(quantized.path, backend="onnxruntime", threads=2) as ref:
        assert ov.static_compiled == () or ov.static_float_gates  # a crashing probe leaves batch 1 dynamic
        got = np.concatenate([ov.infer(real_crops[i:i + 1]) for i in range(1, 9, 2)])
        assert float((got * ref.infer(real_crops[1:9:2])).sum(1).mean()) >= 0.9  # bf16 float parts: see above
