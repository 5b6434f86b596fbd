"""YOLOX on real frames, the decode on a synthetic output, NMS, Detections, and crops from the real video."""

from __future__ import annotations

import numpy as np
import pytest

from apnet_edge.crops import cut_crops, read_frames, read_image_folder, spread_indices
from apnet_edge.detectors.yolox import (
    YoloxDetector,
    batched_nms,
    decode_yolox,
    letterbox,
    nms,
    postprocess,
    yolox_grids,
)
from apnet_edge.errors import ApnetError, DatasetError, ModelError
from apnet_edge.types import Detections

FRAMES = (120, 300, 480, 660)


@pytest.fixture(scope="module")
def frames(vtest_path) -> list[np.ndarray]:
    return read_frames(vtest_path, FRAMES)


# ---------------------------------------------------------------------------------------------- real frames
def test_finds_people_with_plausible_boxes(yolox_detector: YoloxDetector, frames) -> None:
    for frame in frames:
        det = yolox_detector.detect(frame)
        tall = det.filter(det.heights >= 48)
        assert len(tall) >= 3, f"only {len(tall)} people >= 48 px found"
        assert set(det.class_ids.tolist()) == {0}
        assert np.all((det.scores >= 0.3) & (det.scores <= 1.0))
        b = tall.boxes
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 2] <= 768) and np.all(b[:, 1] >= 0) and np.all(b[:, 3] <= 576)
        h, w = tall.heights, tall.widths
        assert np.all((h >= 48) & (h < 300)), h  # people in this scene are about 50-150 px tall
        assert np.all((h / w > 1.2) & (h / w < 5.0)), h / w  # standing people are taller than wide


def test_detect_batch_equals_detect(yolox_detector: YoloxDetector, frames) -> None:
    batch = yolox_detector.detect_batch(frames[:2])
    for frame, det in zip(frames[:2], batch):
        one = yolox_detector.detect(frame)
        np.testing.assert_allclose(det.boxes, one.boxes, atol=1e-3)
    assert yolox_detector.detect_batch([]) == []


def test_bad_frame(yolox_detector: YoloxDetector) -> None:
    with pytest.raises(ModelError, match="frame 0 is float32"):
        yolox_detector.detect(np.zeros((10, 10, 3), np.float32))


# ---------------------------------------------------------------------------------------------- decode
def test_grid_order_matches_yolox() -> None:
    grid, stride = yolox_grids((416, 416))
    assert grid.shape == (3549, 2) and stride.shape == (3549, 1)
    assert grid[1].tolist() == [1, 0] and grid[52].tolist() == [0, 1]  # x fastest, then y
    assert stride[2704, 0] == 16 and grid[2704].tolist() == [0, 0]  # 52*52 stride-8 cells come first


def test_decode_synthetic_output_gives_expected_box() -> None:
    raw = np.zeros((3549, 85), np.float32)  # objectness 0 everywhere: nothing
    a = 52 * 52 + 7 * 26 + 5  # stride 16, cell x=5, y=7
    raw[a, :4] = [0.5, 0.25, np.log(4.0), np.log(8.0)]
    raw[a, 4], raw[a, 5], raw[a, 6] = 0.9, 0.8, 0.1
    dec = decode_yolox(raw, (416, 416))
    np.testing.assert_allclose(dec[a, :4], [88.0, 116.0, 64.0, 128.0], rtol=1e-6)  # (5.5*16, 7.25*16), 4*16, 8*16
    det = postprocess(dec, ratio=0.5, frame_hw=(576, 768), score_threshold=0.3)
    assert len(det) == 1 and det.class_ids[0] == 0
    np.testing.assert_allclose(det.boxes[0], [112.0, 104.0, 240.0, 360.0], rtol=1e-6)  # input px / 0.5
    np.testing.assert_allclose(det.scores[0], 0.72, rtol=1e-6)
    assert len(postprocess(dec, 0.5, (576, 768), score_threshold=0.75)) == 0


def test_decode_clips_to_frame_and_checks_anchor_count() -> None:
    raw = np.zeros((1, 3549, 85), np.float32)
    raw[0, 0, :4] = [0.0, 0.0, np.log(4.0), np.log(4.0)]  # stride 8 cell (0, 0): centre (0, 0), 32x32
    raw[0, 0, 4:6] = 1.0
    det = postprocess(decode_yolox(raw, (416, 416))[0], 1.0, (100, 200))
    np.testing.assert_allclose(det.boxes[0], [0, 0, 16, 16])
    with pytest.raises(ModelError, match="3549"):
        decode_yolox(raw, (320, 320))


def test_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 2, 0]
    assert sorted(batched_nms(boxes, scores, np.array([0, 1, 0]), 0.45).tolist()) == [0, 1, 2]


def test_letterbox_top_left_pad_114() -> None:
    frame = np.full((576, 768, 3), 7, np.uint8)
    img, r = letterbox(frame, (416, 416))
    assert img.shape == (416, 416, 3) and r == pytest.approx(416 / 768)
    assert (img[:312] == 7).all() and (img[312:] == 114).all()


# ---------------------------------------------------------------------------------------------- Detections
def test_detections_validate_and_filter() -> None:
    d = Detections(np.array([[0, 0, 10, 20], [5, 5, 6, 9]]), [0.9, 0.4], [0, 2])
    assert len(d) == 2 and d.boxes.dtype == np.float32 and d.class_ids.dtype == np.int64
    assert len(d.filter(d.scores > 0.5)) == 1 and d.filter([1]).class_ids.tolist() == [2]
    assert len(d.filter([])) == 0 and len(Detections.empty()) == 0
    with pytest.raises(ValueError):
        d.boxes[0, 0] = 3  # read-only
    with pytest.raises(ApnetError, match=r"\(N, 4\)"):
        Detections(np.zeros((2, 5)), [1, 1], [0, 0])
    with pytest.raises(ApnetError, match="N = 2"):
        Detections(np.zeros((2, 4)), [1], [0, 0])


# ---------------------------------------------------------------------------------------------- crops
def test_read_frames_order_and_errors(vtest_path, frames, tmp_path) -> None:
    again = read_frames(vtest_path, [FRAMES[1], FRAMES[0], FRAMES[1]])
    np.testing.assert_array_equal(again[0], frames[1])
    np.testing.assert_array_equal(again[1], frames[0])
    assert again[2] is not again[0] and frames[0].shape == (576, 768, 3) and frames[0].dtype == np.uint8
    with pytest.raises(ApnetError, match="795 readable frames"):
        read_frames(vtest_path, [800])
    with pytest.raises(ApnetError, match="not found"):
        read_frames(tmp_path / "none.avi", [0])
    assert spread_indices(795, 4) == [0, 265, 529, 794]


def test_cut_crops_min_height_pad_clip() -> None:
    frame = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(100, 80, 3).astype(np.uint8)
    det = Detections(np.array([[10, 10, 30, 70], [0, 0, 5, 20], [70, 50, 90, 110]]), [0.9, 0.8, 0.7], [0, 0, 0])
    crops = cut_crops(frame, det, min_height=48)
    assert [c.shape for c in crops] == [(60, 20, 3), (50, 10, 3)]  # 2nd too short; 3rd clipped to the frame
    np.testing.assert_array_equal(crops[0], frame[10:70, 10:30])
    padded = cut_crops(frame, det, min_height=48, pad=0.1)
    assert padded[0].shape == (72, 24, 3)
    crops[0][:] = 0
    assert frame[10:70, 10:30].any()  # crops are copies


def test_real_crops_fixture(real_crops) -> None:
    assert 24 <= len(real_crops) <= 32
    assert all(c.dtype == np.uint8 and c.ndim == 3 and c.shape[0] >= 48 for c in real_crops)


def test_read_image_folder(real_crops, tmp_path) -> None:
    import cv2

    for i, c in enumerate(real_crops[:5]):
        (tmp_path / "a").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "a" / f"{i}.png"), c)
    imgs = read_image_folder(tmp_path, limit=3)
    assert len(imgs) == 3
    np.testing.assert_array_equal(imgs[0], real_crops[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        read_image_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        read_image_folder(tmp_path / "missing")
