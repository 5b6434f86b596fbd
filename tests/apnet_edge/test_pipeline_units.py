"""cams.yaml validation, URL redaction, embedding scheduler and cross-camera matcher (synthetic, no models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from apnet_edge.errors import ConfigError
from apnet_edge.pipeline.matcher import CrossCameraMatcher
from apnet_edge.pipeline.scheduler import EmbeddingScheduler, crop_quality
from apnet_edge.pipeline.schema import (
    MatcherConfig,
    ReidConfig,
    TransitConfig,
    load_cams,
    parse_cams,
    redact_url,
)

ROOT = Path(__file__).resolve().parents[2]


def _base(tmp_path: Path) -> dict:
    for name in ("det.onnx", "reid.onnx", "a.avi"):
        (tmp_path / name).write_bytes(b"x")
    return {"cameras": [{"id": "a", "source": "a.avi"}, {"id": "b", "source": "rtsp://u:secret@10.0.0.5/s"}],
            "detector": {"model": "det.onnx"}, "reid": {"model": "reid.onnx"}}


def test_valid_config_resolves_paths_against_the_yaml_folder(tmp_path: Path) -> None:
    cfg = parse_cams(_base(tmp_path), tmp_path)
    assert cfg.cameras[0].source == str(tmp_path / "a.avi") and cfg.cameras[0].kind == "file"
    assert cfg.cameras[1].kind == "live" and "secret" not in cfg.cameras[1].display_source
    assert cfg.detector.model == str(tmp_path / "det.onnx")


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["cameras"][0].update(fps=5), "cameras[0].fps"),
    (lambda d: d["detector"].update(score_treshold=0.2), "detector.score_treshold"),
    (lambda d: d.update(extra=1), "'extra'"),
    (lambda d: d["cameras"][1].update(id="a"), "cameras[1].id"),
    (lambda d: d["cameras"][0].update(source="missing.avi"), "cameras[0].source"),
    (lambda d: d["reid"].update(model="nope.onnx"), "reid.model"),
    (lambda d: d["cameras"][0].update(roi=[10, 10, 5, 20]), "cameras[0].roi"),
    (lambda d: d["cameras"][0].update(roi=[0, 0, 5]), "cameras[0].roi"),
    (lambda d: d["reid"].update(budget_per_frame="many"), "reid.budget_per_frame"),
    (lambda d: d.update(matcher={"topology": [{"src": "a", "dst": "zz"}]}), "matcher.topology[0].dst"),
    (lambda d: d.update(tracker={"type": "deepsort"}), "tracker.type"),
    (lambda d: d.update(cameras=[]), "cameras"),
    (lambda d: d["reid"].update(crop_pad=0.8), "reid.crop_pad"),
    (lambda d: d["reid"].update(switch_below=1.5), "reid.switch_below"),
    (lambda d: d["reid"].update(switch_crops=0), "reid.switch_crops"),
])
def test_bad_config_names_the_key(tmp_path: Path, mutate, needle: str) -> None:
    data = _base(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_cams(data, tmp_path)
    assert needle in str(err.value)


def test_load_cams_prefixes_file_and_redacts(tmp_path: Path) -> None:
    data = _base(tmp_path)
    data["cameras"][1]["retries"] = "x"
    p = tmp_path / "cams.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="cams.yaml.*cameras\\[1\\].retries"):
        load_cams(p)


def test_example_config_parses_when_shared_exists() -> None:
    example = ROOT / "configs" / "cams.example.yaml"
    if not (ROOT.parent / "shared" / "models" / "yolox_nano.onnx").exists():
        pytest.skip("../shared/models is absent: the example points at the shared video and models")
    cfg = load_cams(example)
    assert [c.id for c in cfg.cameras] == ["left", "right"]


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pa55@192.168.1.2:554/live") == "rtsp://***:***@192.168.1.2:554/live"
    assert redact_url("rtsp://token@cam/x") == "rtsp://***@cam/x"
    out = redact_url("failed to open http://cam/x?user=bob&password=hunter2 now")
    assert "hunter2" not in out and "user=bob" in out and out.endswith(" now")
    assert redact_url("/data/video.avi") == "/data/video.avi"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_scheduler_budget_new_first_and_running_embedding() -> None:
    cfg = ReidConfig(model="m", budget_per_frame=2, refresh_frames=5, min_box_height=20)
    s = EmbeddingScheduler(cfg)
    boxes = np.array([[10, 10, 50, 150], [100, 10, 140, 150], [200, 10, 240, 150]], np.float32)
    cands = s.observe("a", 0, [1, 2, 3], boxes, (300, 400))
    assert [c.reason for c in cands] == ["new"] * 3
    chosen = s.select(cands)
    assert len(chosen) == 2
    e = np.eye(2, 4, dtype=np.float32)
    s.update(chosen, e)
    cands = s.observe("a", 1, [1, 2, 3], boxes, (300, 400))
    assert {c.track_id for c in cands} == {3}  # embedded ones wait for refresh or a better crop
    s.update(s.select(cands), np.eye(1, 4, k=2, dtype=np.float32))
    assert s.observe("a", 6, [1], boxes[:1], (300, 400))[0].reason == "refresh"
    st = s.tracks[("a", 1)]
    st.add(np.array([0, 1, 0, 0], np.float32), st.best_quality, 7)
    assert np.allclose(st.embedding, _unit(np.array([1, 1, 0, 0], np.float32)))
    assert s.drop("a", 1) is not None and ("a", 1) not in s.tracks


def test_track_look_holds_a_crop_that_does_not_fit_and_restarts_after_a_switch() -> None:
    from apnet_edge.pipeline.scheduler import SWITCH_AFTER, TrackEmbedding

    a, b = np.eye(2, 4, dtype=np.float32)
    st = TrackEmbedding("c", 1, 0)
    for f in range(SWITCH_AFTER):
        st.add(a, 0.8, f, good=True, switch_below=0.35)
    st.add(b, 0.8, 10, good=True, switch_below=0.35)  # one crop of someone else (an occlusion?): held back
    assert st.good_count == SWITCH_AFTER and st.last_good_frame == SWITCH_AFTER - 1 and not st.switched
    assert np.allclose(st.good_embedding, a)
    st.add(a, 0.8, 11, good=True, switch_below=0.35)  # fits again: the held crop is dropped
    st.add(b, 0.8, 12, good=True, switch_below=0.35)
    assert st.good_count == SWITCH_AFTER + 1 and not st.switched
    st.add(b, 0.6, 13, good=True, switch_below=0.35)  # the second in a row: the track follows someone else now
    assert st.switched and st.good_count == 2 and st.last_good_frame == 13
    assert np.allclose(st.good_embedding, b) and np.allclose(st.embedding, b)
    off = TrackEmbedding("c", 2, 0)  # switch_below 0: every good crop is folded in
    for f, e in enumerate([a, a, a, b, b]):
        off.add(e, 0.8, f, good=True)
    assert off.good_count == 5 and not off.switched


def test_switch_threshold_follows_the_tracks_own_spread() -> None:
    """With switch_sigmas, a crop must also fall below the track's usual similarity (mean - k sd, sd >= 0.05): a
    track whose crops scatter (a weak model) is not cut by a crop that is merely low."""
    from apnet_edge.pipeline.scheduler import SWITCH_AFTER, TrackEmbedding

    rng = np.random.default_rng(0)
    base = _unit(np.ones(8, np.float32))

    def near(sim: float) -> np.ndarray:  # a unit vector with cosine ``sim`` to the mean direction ``base``
        other = rng.standard_normal(8).astype(np.float32)
        other = _unit(other - (other @ base) * base)
        return (sim * base + np.sqrt(1 - sim * sim) * other).astype(np.float32)

    steady, loose, strict = TrackEmbedding("c", 1, 0), TrackEmbedding("c", 2, 0), TrackEmbedding("c", 3, 0)
    for f in range(SWITCH_AFTER):  # the mean to judge against
        for st in (steady, loose, strict):
            st.add(base, 0.8, f, good=True, switch_below=0.5, switch_sigmas=3.0)
    assert steady.switch_threshold(0.5, 3.0) is None  # no similarities seen yet: not judged
    assert steady.switch_threshold(0.5, 0.0) == 0.5  # switch_sigmas 0: the absolute limit alone
    scatter = [near(0.35 if f % 2 else 0.95) for f in range(6)] + [near(0.3), near(0.3)]
    for f, e in enumerate(scatter):
        steady.add(base, 0.8, 10 + f, good=True, switch_below=0.5, switch_sigmas=3.0)
        loose.add(e, 0.8, 10 + f, good=True, switch_below=0.5, switch_sigmas=3.0)
        strict.add(e, 0.8, 10 + f, good=True, switch_below=0.5, switch_sigmas=0.0)
        if f == 5:
            assert steady.switch_threshold(0.5, 3.0) == 0.5  # crops all alike: the absolute limit decides
            t = loose.switch_threshold(0.5, 3.0)
            assert t is not None and t < 0.2  # a scattering track is judged against its own spread
    assert not loose.switched  # two crops at 0.3 are usual for this track
    assert strict.switched  # the absolute limit alone cuts it


def test_crop_quality_penalises_border_small_and_overlap() -> None:
    cfg = ReidConfig(model="m", min_box_height=20, ref_box_height=100)
    boxes = np.array([[50, 50, 90, 150], [0, 50, 40, 150], [200, 50, 210, 60], [300, 50, 340, 150],
                      [305, 50, 345, 150]], np.float32)
    q = crop_quality(boxes, (400, 500), cfg)
    assert q[0] == pytest.approx(1.0) and q[1] == pytest.approx(0.5)
    assert q[2] == 0.0 and q[3] == 0.0 and q[4] == 0.0  # too small; overlapping each other


def test_matcher_reentry_keeps_global_id_and_handoff() -> None:
    m = CrossCameraMatcher(MatcherConfig(threshold=0.6))
    rng = np.random.default_rng(0)
    p1, p2 = _unit(rng.normal(size=64)), _unit(rng.normal(size=64))
    a = m.assign([("left", 1, p1), ("left", 2, p2)], now=0.0)
    assert [x.created for x in a] == [True, True]
    g1 = m.gid_of("left", 1)
    m.release("left", 1)
    back = m.assign([("left", 7, _unit(p1 + 0.1 * rng.normal(size=64)))], now=30.0)
    assert back[0].gid == g1 and not back[0].created and back[0].similarity > 0.6
    # the same person seen in another camera while still in the first one (overlapping views)
    other = m.assign([("right", 3, p2)], now=31.0)
    assert other[0].gid == m.gid_of("left", 2) and other[0].from_camera == "left"


def test_matcher_hungarian_is_one_to_one_and_same_camera_is_exclusive() -> None:
    m = CrossCameraMatcher(MatcherConfig(threshold=0.5))
    p = _unit(np.ones(8))
    m.assign([("a", 1, p)], now=0.0)
    m.release("a", 1)
    q = _unit(np.ones(8) + np.eye(8)[0] * 0.3)
    out = m.assign([("b", 1, q), ("b", 2, p)], now=1.0)
    by_track = {x.track_id: x for x in out}
    assert not by_track[2].created and by_track[1].created  # the better match wins, the other is new
    # an identity live in camera b cannot be given to a second track of camera b
    again = m.assign([("b", 9, p)], now=2.0)
    assert again[0].created


def test_matcher_gallery_is_bounded_by_size_and_ttl() -> None:
    m = CrossCameraMatcher(MatcherConfig(threshold=0.99, gallery_size=5, ttl_s=10.0))
    rng = np.random.default_rng(1)
    for i in range(20):
        m.assign([("a", i, _unit(rng.normal(size=32)))], now=float(i) * 0.1)
        m.release("a", i)
    assert len(m.gallery) == 5 and m.evicted == 15
    m.expire(100.0)
    assert len(m.gallery) == 0


def test_matcher_topology_forbids_impossible_transit() -> None:
    topo = (TransitConfig(src="a", dst="b", min_s=5.0, max_s=20.0),)
    m = CrossCameraMatcher(MatcherConfig(threshold=0.5, topology=topo))
    p = _unit(np.ones(8))
    m.assign([("a", 1, p)], now=0.0)
    m.release("a", 1)
    assert m.assign([("b", 1, p)], now=1.0)[0].created  # too fast for the walk
    m2 = CrossCameraMatcher(MatcherConfig(threshold=0.5, topology=topo))
    m2.assign([("a", 1, p)], now=0.0)
    m2.release("a", 1)
    assert not m2.assign([("b", 1, p)], now=10.0)[0].created


def test_crop_pad_widens_the_box_within_the_frame() -> None:
    from apnet_edge.crops import crop_box

    img = np.arange(100 * 80, dtype=np.uint16).reshape(100, 80)[..., None].repeat(3, 2)
    assert crop_box(img, (20, 30, 40, 70)).shape == (40, 20, 3)
    padded = crop_box(img, (20, 30, 40, 70), pad=0.1)  # 2 px left/right, 4 px top/bottom
    assert padded.shape == (48, 24, 3) and padded[0, 0, 0] == img[26, 18, 0]
    assert crop_box(img, (0, 0, 40, 70), pad=0.25).shape == (88, 50, 3)  # clipped at the frame (y2 87.5 rounds up)


def test_flip_averages_each_crop_with_its_mirror_image_in_one_call() -> None:
    from apnet_edge.pipeline.run import _embed

    calls = []

    class Reid:  # embedding = the crop's left and right column means: a mirror image swaps them
        def infer(self, crops):
            calls.append(len(crops))
            e = np.array([[c[:, 0].mean(), c[:, -1].mean()] for c in crops], np.float32)
            return e / np.linalg.norm(e, axis=1, keepdims=True)

    crops = [np.full((4, 3, 3), 1, np.uint8), np.full((4, 3, 3), 1, np.uint8)]
    crops[1][:, -1] = 3
    plain = _embed(Reid(), crops, 2)
    both = _embed(Reid(), crops, 2, flip=True)
    assert calls == [2, 4]  # the mirrors go in the same call
    assert np.allclose(plain[1], np.array([1, 3]) / np.sqrt(10), atol=1e-6)
    assert np.allclose(both, np.sqrt(0.5), atol=1e-6)  # (1, 3) + (3, 1): the same direction as (1, 1)
