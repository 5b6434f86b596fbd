"""Run loop robustness with fake models (no model files): looped replay, per-camera isolation of detector / re-ID /
capture failures, a dead RTSP camera next to a file camera. Tiny generated videos; each run takes well under 2 s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from apnet_edge.card import ModelCard
from apnet_edge.errors import ConfigError, ModelError
from apnet_edge.pipeline.schema import parse_cams
from apnet_edge.types import Detections

pytest.importorskip("supervision")  # the run loop's ByteTrack
cv2 = pytest.importorskip("cv2")

BOX = (10.0, 10.0, 50.0, 110.0)  # one person per frame, 100 px tall, away from the borders of an 80x120 view


def _video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def _halves_video(path: Path, n: int = 20) -> Path:
    """160x120: left half dark (40), right half bright (200): roi [0,0,80,120] vs [80,0,160,120] tell cameras apart."""
    img = np.full((120, 160, 3), 40, np.uint8)
    img[:, 80:] = 200
    return _video(path, [img] * n)


def _counting_video(path: Path, n: int = 30) -> Path:
    """Frame i is filled with 8 * i, so round(mean / 8) tells which source frame a camera delivered."""
    return _video(path, [np.full((120, 160, 3), 8 * i, np.uint8) for i in range(n)])


class FakeDetector:
    """One box per frame; ``fail(image)`` -> an exception to raise, or a value to return instead of Detections."""

    def __init__(self, fail: Optional[Callable[[np.ndarray], Any]] = None) -> None:
        self.fail = fail
        self.seen: list[tuple[tuple[int, ...], float]] = []  # (shape, mean) of every frame detected

    def detect_batch(self, frames: list[np.ndarray]) -> list[Any]:
        out: list[Any] = []
        for f in frames:
            bad = self.fail(f) if self.fail else None
            if isinstance(bad, BaseException):
                raise bad
            out.append(bad if bad is not None else
                       Detections(np.array([BOX], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int64)))
        self.seen += [(f.shape, float(f.mean())) for f in frames]  # only frames of calls that succeeded
        return out


class FakeReid:
    """Unit embeddings of dimension 16 (the same for every crop, so every track joins one identity)."""

    def __init__(self, fail: Optional[Callable[[np.ndarray], Optional[str]]] = None) -> None:
        self.fail = fail
        self.calls = 0
        self.card = ModelCard(arch="external", embedding_dim=16)  # as a runner: the card gives D

    def infer(self, crops: list[np.ndarray]) -> np.ndarray:
        self.calls += 1
        modes = {self.fail(c) for c in crops} if self.fail else set()
        if "raise" in modes:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if "shape" in modes:
            return np.ones((len(crops), 7), np.float32)
        if "nan" in modes:
            return np.full((len(crops), 16), np.nan, np.float32)
        e = np.zeros((len(crops), 16), np.float32)
        e[:, 0] = 1.0
        return e


def _cfg(tmp_path: Path, cameras: list[dict], max_frames: int = 0, **reid: Any) -> Any:
    for name in ("det.onnx", "reid.onnx"):
        (tmp_path / name).write_bytes(b"x")
    return parse_cams({
        "cameras": cameras,
        "detector": {"model": "det.onnx"},
        "reid": {"model": "reid.onnx", "min_box_height": 20, "ref_box_height": 100, **reid},
        "matcher": {"min_track_frames": 1},
        "outputs": {"dir": str(tmp_path / "out"), "video": "none", "log_every_s": 0},
        "max_frames": max_frames,
    }, tmp_path)


def _events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]


def _mot_frames(tmp_path: Path, cam: str) -> list[int]:
    return [int(line.split(",")[0]) for line in (tmp_path / "out" / f"{cam}.local.txt").read_text().splitlines()]


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize("cam, needle", [
    ({"id": "a", "source": "rtsp://u:secret@10.0.0.5/s", "loop": True}, "cameras[0].loop"),
    ({"id": "a", "source": "0", "end_frame": 5}, "cameras[0].end_frame"),
    ({"id": "a", "source": "v.avi", "loop": "yes"}, "cameras[0].loop"),
    ({"id": "a", "source": "v.avi", "start_frame": 10, "end_frame": 10}, "cameras[0].end_frame"),
    ({"id": "a", "source": "v.avi", "end_frame": -3}, "cameras[0].end_frame"),
])
def test_loop_and_end_frame_are_validated_with_the_key(tmp_path: Path, cam: dict, needle: str) -> None:
    (tmp_path / "v.avi").write_bytes(b"x")
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, [cam])
    assert needle in str(err.value) and "secret" not in str(err.value)


# ---------------------------------------------------------------- looped replay


def test_loop_restarts_at_start_frame_and_time_keeps_counting(tmp_path: Path) -> None:
    from apnet_edge.pipeline.run import run_pipeline

    video = _counting_video(tmp_path / "count.avi", 30)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 64, 3), 8 * i, np.uint8))
    cfg = _cfg(tmp_path, [
        {"id": "seg", "source": str(video), "start_frame": 2, "end_frame": 10, "loop": True},  # 8 frames a lap
        {"id": "tail", "source": str(video), "start_frame": 25, "loop": True,  # to the end of the file: 5 a lap
         "roi": [0, 0, 150, 120]},  # the roi only tells its frames apart below
        {"id": "folder", "source": str(folder), "start_frame": 1, "loop": True},  # 4 images a lap
        {"id": "plain", "source": str(video), "start_frame": 26},  # no loop: ends after 4 frames
        {"id": "empty", "source": str(video), "start_frame": 100, "loop": True},  # nothing to loop over
    ], max_frames=25)
    det = FakeDetector()
    s = run_pipeline(cfg, detector=det, reid=FakeReid())
    cams = s["cameras"]
    assert cams["seg"]["frames_processed"] == 25 and cams["seg"]["loops"] == 3 and cams["seg"]["error"] is None
    assert cams["tail"]["frames_processed"] == 25 and cams["tail"]["loops"] == 4
    assert cams["folder"]["frames_processed"] == 25 and cams["folder"]["loops"] == 6
    assert cams["plain"]["frames_processed"] == 4 and cams["plain"]["loops"] == 0 and cams["plain"]["error"] is None
    assert "no frame at start_frame 100" in cams["empty"]["error"] and len(s["failures"]) == 1
    # the frame index (MOT frame = index + 1) keeps counting across laps: one continuous, increasing timeline
    assert _mot_frames(tmp_path, "seg") == list(range(3, 28))
    assert _mot_frames(tmp_path, "tail") == list(range(26, 51))
    # ... while the pictures restart at start_frame (frame i holds the value 8 i; the folder is 64x48)
    def source_frames(shape: tuple[int, ...]) -> list[int]:
        return [round(m / 8) for sh, m in det.seen if sh == shape]

    assert source_frames((120, 150, 3)) == ([25, 26, 27, 28, 29] * 5)[:25]
    assert source_frames((48, 64, 3)) == ([1, 2, 3, 4] * 7)[:25]
    seg_and_plain = source_frames((120, 160, 3))
    assert [i for i in seg_and_plain if i < 20] == (list(range(2, 10)) * 4)[:25]
    # the tracker saw continuous time: the one constant box stays one track over every lap
    seg_starts = [e for e in _events(tmp_path) if e["type"] == "track_started" and e["camera"] == "seg"]
    assert len(seg_starts) == 1


def test_cameras_of_one_run_share_one_clock_whatever_their_start_frame(tmp_path: Path) -> None:
    """Two cameras on one 10 fps file, one from frame 0 and one from frame 20 (2 s in), played side by side: their
    events and the matcher's gaps are on one run clock (each camera's first frame at 0 s), not the file's own."""
    from apnet_edge.pipeline.run import run_pipeline

    video = _counting_video(tmp_path / "count.avi", 30)
    cfg = _cfg(tmp_path, [{"id": "early", "source": str(video)},
                          {"id": "late", "source": str(video), "start_frame": 20}], max_frames=8)
    nobody = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    # the person shows in `late` from its 4th frame (source frame 23, value 184) on
    det = FakeDetector(fail=lambda img: nobody if 156 < img.mean() < 180 else None)
    run_pipeline(cfg, detector=det, reid=FakeReid())
    ev = _events(tmp_path)
    starts = {e["camera"]: e for e in ev if e["type"] == "track_started"}
    late = starts["late"]["frame"]  # 23, or 24 where the tracker confirms a new track on its second frame
    assert starts["early"]["frame"] == 0 and late in (23, 24)  # the source's frame index stays
    assert starts["early"]["t"] == 0.0 and starts["late"]["t"] == pytest.approx((late - 20) / 10)
    assert all(0.0 <= e["t"] < 0.8 for e in ev if "t" in e)  # 8 frames at 10 fps: nothing at 2 s or later
    (hand,) = [e for e in ev if e["type"] == "handoff"]  # the same person (same embedding) in both views
    assert (hand["from_camera"], hand["to_camera"]) == ("early", "late") and 0.0 <= hand["gap_s"] < 0.5


# ---------------------------------------------------------------- per-camera isolation of model errors


@pytest.mark.parametrize("failure", ["raise", "wrong_output"])
def test_detector_failure_on_one_camera_ends_only_that_camera(tmp_path: Path, failure: str) -> None:
    from apnet_edge.pipeline.run import MAX_MODEL_FAILURES, run_pipeline

    video = _halves_video(tmp_path / "halves.avi", 20)

    def fail(img: np.ndarray) -> Any:
        if img.mean() > 120:  # the bright camera's frames
            if failure == "raise":
                return ModelError("YOLOX output has shape (1, 3549, 7); expected (1, anchors, 5 + classes)")
            return np.zeros((1, 5), np.float32)  # not Detections: the tracking step fails on it
        return None

    cfg = _cfg(tmp_path, [{"id": "good", "source": str(video), "roi": [0, 0, 80, 120]},
                          {"id": "bad", "source": str(video), "roi": [80, 0, 160, 120]}])
    s = run_pipeline(cfg, detector=FakeDetector(fail), reid=FakeReid())
    assert s["cameras"]["good"]["frames_processed"] == 20 and s["cameras"]["good"]["error"] is None
    assert len(s["failures"]) == 1 and s["failures"][0].startswith("camera bad: ")
    bad = s["cameras"]["bad"]
    if failure == "raise":  # skipped frame by frame, ended after MAX_MODEL_FAILURES in a row
        assert "detection failed: ModelError: YOLOX output has shape" in s["failures"][0]
        assert f"({MAX_MODEL_FAILURES} times in a row)" in bad["error"]
        assert bad["frames_processed"] == 0 and bad["model_errors"] == MAX_MODEL_FAILURES
    else:  # a tracker fed garbage ends its camera at once
        assert "tracking failed: AttributeError" in bad["error"] and bad["frames_processed"] == 0
    ended = [e for e in _events(tmp_path) if e["type"] == "camera_ended"]
    assert {e["camera"]: bool(e["error"]) for e in ended} == {"bad": True, "good": False}
    assert s["identities_created"] == 1  # the good camera went on to the matcher
    assert _mot_frames(tmp_path, "good") == list(range(1, 21))


def test_batched_detection_failure_is_retried_per_camera(tmp_path: Path) -> None:
    """A detector that cannot batch (raises for 2+ frames) loses nothing: every frame is retried alone."""
    from apnet_edge.pipeline.run import run_pipeline

    class NoBatch(FakeDetector):
        def detect_batch(self, frames: list[np.ndarray]) -> list[Any]:
            if len(frames) > 1:
                raise RuntimeError("engine profile allows batch 1 only")
            return super().detect_batch(frames)

    video = _halves_video(tmp_path / "halves.avi", 12)
    cfg = _cfg(tmp_path, [{"id": "a", "source": str(video), "roi": [0, 0, 80, 120]},
                          {"id": "b", "source": str(video), "roi": [80, 0, 160, 120]}])
    s = run_pipeline(cfg, detector=NoBatch(), reid=FakeReid())
    assert not s["failures"] and all(c["frames_processed"] == 12 for c in s["cameras"].values())


@pytest.mark.parametrize("mode", ["raise", "shape", "nan"])
def test_reid_failure_on_one_cameras_crops_ends_only_that_camera(tmp_path: Path, mode: str) -> None:
    from apnet_edge.pipeline.run import MAX_MODEL_FAILURES, run_pipeline

    video = _halves_video(tmp_path / "halves.avi", 20)
    reid = FakeReid(lambda crop: mode if crop.mean() > 120 else None)
    cfg = _cfg(tmp_path, [{"id": "good", "source": str(video), "roi": [0, 0, 80, 120]},
                          {"id": "bad", "source": str(video), "roi": [80, 0, 160, 120]}])
    s = run_pipeline(cfg, detector=FakeDetector(), reid=reid)
    good, bad = s["cameras"]["good"], s["cameras"]["bad"]
    assert good["frames_processed"] == 20 and good["error"] is None
    # the bad camera's new track asks for an embedding every frame; each attempt fails; ended after the limit
    assert bad["frames_processed"] == MAX_MODEL_FAILURES and bad["model_errors"] == MAX_MODEL_FAILURES
    assert "re-ID failed" in bad["error"] and len(s["failures"]) == 1 and "camera bad" in s["failures"][0]
    events = _events(tmp_path)
    created = [e for e in events if e["type"] == "identity_created"]
    assert [e["camera"] for e in created] == ["good"]  # no identity from the failing camera's crops
    ended = {e["camera"]: e for e in events if e["type"] == "camera_ended"}
    assert "re-ID failed" in ended["bad"]["error"] and ended["good"]["error"] is None
    bad_tracks = [e for e in events if e["type"] == "track_ended" and e["camera"] == "bad"]
    assert bad_tracks and all(e["reason"] == "camera_ended" for e in bad_tracks)
    assert s["state"]["scheduler_tracks"] == 0 and s["state"]["bound_tracks"] == 0  # everything freed at the end


def test_transient_reid_failure_is_forgiven(tmp_path: Path) -> None:
    """Fewer than MAX_MODEL_FAILURES failures in a row only cost the crops of those iterations."""
    from apnet_edge.pipeline.run import run_pipeline

    class Flaky(FakeReid):
        def infer(self, crops: list[np.ndarray]) -> np.ndarray:
            self.calls += 1
            if self.calls in (1, 2, 4):  # the batched call, then the per-camera retries, fail now and then
                raise RuntimeError("transient")
            return super().infer(crops)

    video = _halves_video(tmp_path / "halves.avi", 10)
    cfg = _cfg(tmp_path, [{"id": "a", "source": str(video), "roi": [0, 0, 80, 120]},
                          {"id": "b", "source": str(video), "roi": [80, 0, 160, 120]}])
    s = run_pipeline(cfg, detector=FakeDetector(), reid=Flaky())
    assert not s["failures"] and all(c["frames_processed"] == 10 for c in s["cameras"].values())
    assert sum(c["model_errors"] for c in s["cameras"].values()) >= 1 and s["identities_created"] == 1


def test_frame_size_change_mid_stream(tmp_path: Path) -> None:
    """Policy: another source frame size is fine while the roi still fits; otherwise the camera ends, alone."""
    from apnet_edge.pipeline.run import run_pipeline

    cams = []
    for name, roi in (("fits", [0, 0, 80, 60]), ("roi_out", [0, 0, 150, 120]), ("no_roi", None)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(8):
            size = (120, 160) if i < 5 else (80, 100)  # frame 5 on: 100x80
            cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((*size, 3), 100, np.uint8))
        cams.append({"id": name, "source": str(folder), **({"roi": roi} if roi else {})})
    video = _halves_video(tmp_path / "halves.avi", 8)
    cams.append({"id": "file", "source": str(video)})
    s = run_pipeline(_cfg(tmp_path, cams), detector=FakeDetector(), reid=FakeReid())
    c = s["cameras"]
    assert c["fits"]["frames_processed"] == 8 and c["fits"]["error"] is None
    assert c["roi_out"]["frames_processed"] == 5 and "roi [0, 0, 150, 120] lies outside frame 5 (100x80)" in \
        c["roi_out"]["error"] and "fix cameras[].roi" in c["roi_out"]["error"]
    assert c["no_roi"]["frames_processed"] == 5 and "frame 5 is 100x80 but the earlier frames were 160x120" in \
        c["no_roi"]["error"]
    assert c["file"]["frames_processed"] == 8 and len(s["failures"]) == 2


def test_dead_rtsp_camera_ends_redacted_while_a_file_camera_completes(tmp_path: Path) -> None:
    from apnet_edge.pipeline.run import run_pipeline

    video = _halves_video(tmp_path / "halves.avi", 15)
    cfg = _cfg(tmp_path, [{"id": "file", "source": str(video), "roi": [0, 0, 80, 120]},
                          {"id": "cam", "source": "rtsp://admin:hunter2@127.0.0.1:1/none?token=abc123",
                           "retries": 1, "retry_max_s": 0.1}])
    s = run_pipeline(cfg, detector=FakeDetector(), reid=FakeReid())
    assert s["cameras"]["file"]["frames_processed"] == 15 and s["cameras"]["file"]["error"] is None
    err = s["cameras"]["cam"]["error"]
    assert "cannot open rtsp://***:***@127.0.0.1:1/none" in err and "gave up after 1 attempts" in err
    assert len(s["failures"]) == 1 and s["failures"][0].startswith("camera cam: ")
    out = tmp_path / "out"
    data = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())  # report/ holds pictures
    assert b"hunter2" not in data and b"abc123" not in data
    assert any(e["type"] == "camera_ended" and e["camera"] == "cam" and e["error"] for e in _events(tmp_path))


# ---------------------------------------------------------------- nothing grows per frame


def test_looped_run_state_stays_bounded(tmp_path: Path) -> None:
    """400 looped frames, a person who comes and goes every 20 frames: tracks start and end over and over, yet the
    state kept between frames (scheduler, matcher bindings, live tracks, tracker lists) never grows."""
    from apnet_edge.pipeline.run import run_pipeline
    from apnet_edge.pipeline.sinks import LatencyStats

    class ComesAndGoes(FakeDetector):
        n = 0

        def detect_batch(self, frames: list[np.ndarray]) -> list[Any]:
            self.n += 1
            if (self.n // 20) % 2:
                return [Detections.empty() for _ in frames]
            return super().detect_batch(frames)

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((120, 80, 3), 90, np.uint8))
    cfg = _cfg(tmp_path, [{"id": "a", "source": str(folder), "loop": True}], max_frames=400)
    states: list[dict] = []
    s = run_pipeline(cfg, detector=ComesAndGoes(), reid=FakeReid(), progress=states.append, progress_every_s=0.0)
    assert s["cameras"]["a"]["frames_processed"] == 400 and s["cameras"]["a"]["loops"] == 99
    assert len(states) >= 399
    assert s["events"]["track_started"] >= 9 and s["events"]["track_ended"] == s["events"]["track_started"]
    for key, bound in (("scheduler_tracks", 1), ("live_tracks", 1), ("bound_tracks", 1), ("gallery", 1),
                       ("tracker_tracks", 4)):
        assert max(st[key] for st in states) <= bound, key
    assert s["identities_created"] == 1 and s["events"]["handoff"] >= 8  # re-entries keep the one global id
    assert s["state"]["scheduler_tracks"] == s["state"]["bound_tracks"] == s["state"]["live_tracks"] == 0
    # the latency reservoir holds at most `capacity` samples per stage, allocated once
    stats = LatencyStats(capacity=50)
    for i in range(1000):
        stats.add("x", float(i))
    assert stats.stored() == 50 and stats.counts["x"] == 1000 and stats.summary()["x"]["count"] == 1000
    assert stats.samples["x"].shape == (50,) and 0.0 <= stats.summary()["x"]["p50_ms"] <= 999.0


def test_a_track_the_tracker_moves_to_another_person_is_matched_anew(tmp_path: Path) -> None:
    """reid.switch_below (off by default, on here): from source frame 12 on, the one track's crops look like someone else
    (orthogonal embeddings): after two such crops the track leaves its identity (track_switched) and founds a new one;
    the global-id MOT file shows the change from that frame on, the local one keeps the track id."""
    from apnet_edge.pipeline.run import run_pipeline

    class TwoPeople(FakeReid):
        def infer(self, crops: list[np.ndarray]) -> np.ndarray:
            e = np.zeros((len(crops), 16), np.float32)
            for i, c in enumerate(crops):
                e[i, 0 if round(float(c.mean()) / 8) < 12 else 1] = 1.0
            return e

    video = _counting_video(tmp_path / "count.avi", 24)
    cfg = _cfg(tmp_path, [{"id": "a", "source": str(video)}], refresh_frames=1, switch_below=0.5)  # 3 sigmas
    s = run_pipeline(cfg, detector=FakeDetector(), reid=TwoPeople())
    assert not s["failures"]
    events = _events(tmp_path)
    (sw,) = [e for e in events if e["type"] == "track_switched"]
    assert (sw["camera"], sw["track_id"], sw["gid"], sw["frame"]) == ("a", 1, 1, 13)  # the 2nd crop of the other look
    created = [(e["gid"], e["track_id"]) for e in events if e["type"] == "identity_created"]
    assert created == [(1, 1), (2, 1)]
    rows = [line.split(",") for line in (tmp_path / "out" / "a.global.txt").read_text().splitlines()]
    assert {int(r[1]) for r in rows if int(r[0]) <= 13} == {1} and {int(r[1]) for r in rows if int(r[0]) >= 14} == {2}
    assert {line.split(",")[1] for line in (tmp_path / "out" / "a.local.txt").read_text().splitlines()} == {"1"}
    # the default (switch_below 0) leaves it off: the same run keeps one identity
    cfg = _cfg(tmp_path, [{"id": "a", "source": str(video)}], refresh_frames=1)
    run_pipeline(cfg, detector=FakeDetector(), reid=TwoPeople())
    events = _events(tmp_path)
    assert not [e for e in events if e["type"] == "track_switched"]
    assert [e["gid"] for e in events if e["type"] == "identity_created"] == [1]
