"""The scenario configs (configs/cams.time_halves.yaml, configs/cams.four.yaml) on real data, 40 frames per camera,
and scripts/pipeline_report.py on their outputs (those skipped when ../shared, with vtest.avi and the models, is
absent); the report's scoring against a reference run on synthetic files."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
NEEDED = [SHARED / "data" / "vtest.avi", SHARED / "models" / "yolox_nano.onnx",
          SHARED / "models" / "person-reidentification-retail-0248.onnx"]

needs_shared = pytest.mark.skipif(not all(p.exists() for p in NEEDED),
                                reason="../shared video/models absent (vtest.avi, yolox_nano.onnx, 0248 re-ID)")
FRAMES = 40


def _script_module(name: str = "pipeline_report"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_shared
@pytest.mark.parametrize("name, first_frames", [
    ("cams.time_halves.yaml", {"first": 0, "second": 398}),
    ("cams.four.yaml", {"left_a": 0, "right_a": 0, "left_b": 398, "right_b": 398}),
])
def test_scenario_config_runs_and_writes_well_formed_outputs(tmp_path: Path, name: str, first_frames: dict) -> None:
    pytest.importorskip("supervision")
    from apnet_edge.pipeline.run import run_pipeline
    from apnet_edge.pipeline.schema import load_cams

    cfg = load_cams(ROOT / "configs" / name)
    assert {c.id: c.start_frame for c in cfg.cameras} == first_frames
    assert all(c.end_frame - c.start_frame == 397 for c in cfg.cameras)  # the two time halves: 397 frames each
    out = tmp_path / "out"
    cfg = dataclasses.replace(
        cfg, max_frames=FRAMES,
        detector=dataclasses.replace(cfg.detector, threads=1), reid=dataclasses.replace(cfg.reid, threads=1),
        outputs=dataclasses.replace(cfg.outputs, dir=str(out), video="none", log_every_s=0.0))
    s = run_pipeline(cfg)
    assert s["failures"] == [] and all(c["frames_processed"] == FRAMES for c in s["cameras"].values())

    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert all(isinstance(e.get("type"), str) and isinstance(e.get("wall_time"), float) for e in events)
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_ended"
    assert [c["id"] for c in events[0]["cameras"]] == list(first_frames)
    gids = {e["gid"] for e in events if e["type"] in ("identity_created", "handoff")}
    assert len({e["gid"] for e in events if e["type"] == "identity_created"}) == s["identities_created"] >= 1

    for cam, start in first_frames.items():
        local = [line.split(",") for line in (out / f"{cam}.local.txt").read_text().splitlines()]
        glob = [line.split(",") for line in (out / f"{cam}.global.txt").read_text().splitlines()]
        assert local, f"{cam}: no tracks in {FRAMES} frames"
        for rows in (local, glob):
            assert all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows)
            frames = [int(r[0]) for r in rows]
            assert frames == sorted(frames) and start + 1 <= frames[0] and frames[-1] <= start + FRAMES
            assert all(float(r[4]) > 0 and float(r[5]) > 0 and 0.0 <= float(r[6]) <= 1.0 for r in rows)
        assert {int(r[1]) for r in glob} <= gids

    r = _script_module().report(out)
    assert r["identities_created"] == s["identities_created"]
    assert r["global_ids"] <= len(gids) - r["identities_merged"]  # revised ids: merged identities vanish
    assert r["handoffs"] == s["events"].get("handoff", 0)
    assert set(r["cameras"]) == set(first_frames) and isinstance(r["geometry"], list)


def _write_run(d: Path, cameras: list[dict], mot: dict[str, list[tuple]], ids: list[dict]) -> Path:
    d.mkdir()
    events = [{"type": "run_started", "cameras": cameras}, *ids, {"type": "run_ended"}]
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    for cam, rows in mot.items():  # rows: (frame 1-based, track id, x, y, w, h)
        (d / f"{cam}.local.txt").write_text("".join(f"{f},{t},{x},{y},{w},{h},0.9,-1,-1,-1\n"
                                                    for f, t, x, y, w, h in rows))
    return d


def test_report_scores_identities_against_a_reference_run(tmp_path: Path, capsys) -> None:
    # reference (whole 200 x 100 source): person 1 walks left -> right across x = 100, person 2 stays right
    ref_rows = [(f, 1, 20 + 20 * f, 10, 30, 80) for f in range(1, 8)] + [(f, 2, 160, 10, 30, 80) for f in range(1, 8)]
    ref = _write_run(tmp_path / "ref", [{"id": "full", "source": "v.avi"}], {"full": ref_rows}, [])
    cams = [{"id": "left", "source": "v.avi", "roi": [0, 0, 100, 100]},
            {"id": "right", "source": "v.avi", "roi": [100, 0, 200, 100]}]
    mot = {"left": [(f, 1, 20 + 20 * f, 10, 30, 80) for f in range(1, 3)]}  # person 1 in left, frames 1-2
    mot["right"] = [(f, 5, 20 * f - 80, 10, 30, 80) for f in range(5, 8)] + [(f, 6, 60, 10, 30, 80) for f in range(1, 8)]
    good = [{"type": "identity_created", "gid": 1, "camera": "left", "track_id": 1},
            {"type": "identity_created", "gid": 2, "camera": "right", "track_id": 6},
            {"type": "handoff", "gid": 1, "from_camera": "left", "to_camera": "right", "track_id": 5}]
    report = _script_module()
    s = report.score_against(_write_run(tmp_path / "good", cams, mot, good), ref)
    assert s["tracks_matched_to_reference"] == 3 and s["tracks_with_gid_scored"] == 3
    assert s["across_cameras"]["precision"] == 1.0 and s["across_cameras"]["recall"] == 1.0
    assert (s["persons_in_several_cameras"], s["persons_in_several_cameras_with_one_gid"]) == (1, 1)
    (p,) = s["persons"]  # the per-person breakdown (--persons): its tracks in time order and how each got its id
    assert p["gids"] == [1] and [(t["camera"], t["track_id"], t["how"]) for t in p["tracks"]] == [
        ("left", 1, "created"), ("right", 5, "handoff")]
    assert p["tracks"][1]["frames"] == [4, 6] and p["tracks"][1]["first_box"] == [120.0, 10.0, 150.0, 90.0]  # source pixels
    # the hand-off went to the wrong person: one false merge, one missed pair
    bad = [good[0], {"type": "handoff", "gid": 1, "from_camera": "left", "to_camera": "right", "track_id": 6},
           {"type": "identity_created", "gid": 3, "camera": "right", "track_id": 5}]
    s = report.score_against(_write_run(tmp_path / "bad", cams, mot, bad), ref)
    a = s["across_cameras"]
    assert (a["same_person_same_gid"], a["other_person_same_gid"], a["same_person_other_gid"]) == (0, 1, 1)
    assert a["precision"] == 0.0 and a["recall"] == 0.0 and s["persons_in_several_cameras_with_one_gid"] == 0
    with pytest.raises(SystemExit, match="ONE camera"):
        report.score_against(tmp_path / "good", tmp_path / "good")
    assert report.main([str(tmp_path / "bad"), "--reference", str(ref), "--persons"]) == 0
    assert "SPLIT" in capsys.readouterr().out
    assert p["tracks"][1]["samples"] == [[f, 20 * f + 40.0, 10.0, 20 * f + 70.0, 90.0] for f in (4, 5, 6)]
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "bad"), "--persons"])


def test_report_scores_against_persons_labelled_by_eye(tmp_path: Path, capsys) -> None:
    # reference: person A is in frames 1-3 (track 1), leaves, and comes back in frames 6-7 as track 3; track 2 follows
    # person B in frames 1-3, then (a tracker switch) person C in frames 4-7. Camera "first" sees A and B, "second"
    # A's return and C; the run hands A over and gives C a new id. Reference track 4 is a post the detector takes for a
    # person, left unlabelled; "first" tracks it too (track 3, global id 9)
    ref_rows = ([(f, 1, 20, 10, 30, 80) for f in range(1, 4)] + [(f, 3, 20, 10, 30, 80) for f in range(6, 8)]
                + [(f, 2, 140, 10, 30, 80) for f in range(1, 8)] + [(f, 4, 80, 10, 10, 40) for f in range(1, 4)])
    ref = _write_run(tmp_path / "ref", [{"id": "full", "source": "v.avi"}], {"full": ref_rows}, [])
    cams = [{"id": "first", "source": "v.avi", "start_frame": 0, "end_frame": 3},
            {"id": "second", "source": "v.avi", "start_frame": 3, "end_frame": 7}]
    mot = {"first": [(f, 1, 20, 10, 30, 80) for f in range(1, 4)] + [(f, 2, 140, 10, 30, 80) for f in range(1, 4)]
           + [(f, 3, 80, 10, 10, 40) for f in range(1, 4)],
           "second": [(f, 7, 20, 10, 30, 80) for f in range(6, 8)] + [(f, 8, 140, 10, 30, 80) for f in range(4, 8)]}
    ids = [{"type": "identity_created", "gid": 1, "camera": "first", "track_id": 1},
           {"type": "identity_created", "gid": 2, "camera": "first", "track_id": 2},
           {"type": "identity_created", "gid": 9, "camera": "first", "track_id": 3},
           {"type": "handoff", "gid": 1, "from_camera": "first", "to_camera": "second", "track_id": 7},
           {"type": "identity_created", "gid": 3, "camera": "second", "track_id": 8}]
    run = _write_run(tmp_path / "run", cams, mot, ids)
    gids = {1: 1, 2: 2, 3: 9, 7: 1, 8: 3}
    for cam, rows in mot.items():  # the global ids as written: one per track here
        (run / f"{cam}.global.txt").write_text("".join(f"{f},{gids[t]},{x},{y},{w},{h},0.9,-1,-1,-1\n"
                                                       for f, t, x, y, w, h in rows))
    labels = tmp_path / "labels.yaml"
    labels.write_text("persons: {A: returns, B: first half, C: second half}\nsegments:\n"
                      "  - [1, 0, 2, A, [20, 10, 50, 90]]\n  - [3, 5, 6, A, [20, 10, 50, 90]]\n"
                      "  - [2, 0, 2, B, [140, 10, 170, 90]]\n  - [2, 3, 6, C, [140, 10, 170, 90]]\n")
    report = _script_module()
    # against the reference's tracks, A's return is another person: the right hand-off counts as a wrong merge
    a = report.score_against(run, ref)["across_cameras"]
    assert (a["same_person_same_gid"], a["other_person_same_gid"], a["same_person_other_gid"]) == (0, 1, 1)
    s = report.score_against(run, ref, labels)
    a = s["across_cameras"]
    assert (a["same_person_same_gid"], a["other_person_same_gid"], a["same_person_other_gid"]) == (1, 0, 0)
    assert (s["persons_in_several_cameras"], s["persons_in_several_cameras_with_one_gid"]) == (1, 1)
    assert [p["person"] for p in s["persons"]] == ["A"] and s["labels"] == str(labels)
    # IDF1 over both cameras: 12 labelled boxes (first: A, B in frames 0-2; second: A in 5-6, C in 3-6), 12 written
    # ones on them (the post's 3 count neither way), every one under its person's global id
    assert s["identity"] == {"idf1": 1.0, "idp": 1.0, "idr": 1.0, "idtp": 12, "gt_boxes": 12, "written_boxes": 12}
    (run / "second.global.txt").write_text((run / "second.global.txt").read_text().replace(",1,20,", ",2,20,"))
    i = report.score_against(run, ref, labels)["identity"]  # A's return written under B's id: 2 frames lost
    assert (i["idtp"], i["idf1"]) == (10, round(20 / 24, 3))
    assert report.score_against(run, ref)["identity"] is None  # only against labelled persons
    # the same ground truth in MOTChallenge files for standard tools: one id per person across cameras, camera pixels,
    # the run's frame numbers; the post is a "count neither way" row (conf 0, class 8)
    gt_dir = tmp_path / "gt"
    assert report.main([str(run), "--reference", str(ref), "--labels", str(labels), "--write-gt", str(gt_dir)]) == 0
    persons = json.loads((gt_dir / "persons.json").read_text())
    assert persons == {"1": "A", "2": "B", "3": "C"}
    first = [r.split(",") for r in (gt_dir / "first" / "gt" / "gt.txt").read_text().splitlines()]
    second = [r.split(",") for r in (gt_dir / "second" / "gt" / "gt.txt").read_text().splitlines()]
    assert [(r[0], r[1], r[6], r[7]) for r in first if r[0] == "1"] == [("1", "1", "1", "1"), ("1", "2", "1", "1"),
                                                                        ("1", "-1", "0", "8")]
    assert {(r[0], r[1]) for r in second} == {("6", "1"), ("7", "1")} | {(str(f), "3") for f in range(4, 8)}
    assert [float(v) for v in first[0][2:6]] == [20.0, 10.0, 30.0, 80.0]  # x, y, w, h as in the run's MOT files
    assert "seqLength=7" in (gt_dir / "second" / "seqinfo.ini").read_text()
    assert (gt_dir / "answers" / "second.txt").read_text() == (run / "second.global.txt").read_text()
    with pytest.raises(SystemExit):
        report.main([str(run), "--reference", str(ref), "--write-gt", str(gt_dir)])  # needs --labels
    assert report.main([str(run), "--reference", str(ref), "--labels", str(labels), "--persons"]) == 0
    assert "person A (label): global ids [1]" in capsys.readouterr().out
    # labels made on another reference run are refused, naming the segment
    labels.write_text(labels.read_text().replace("[3, 5, 6, A, [20,", "[3, 5, 6, A, [90,"))
    with pytest.raises(SystemExit, match=r"segment \[3, 5, 6, A\].*another reference run"):
        report.score_against(run, ref, labels)
    labels.write_text("persons: {A: x}\nsegments:\n  - [1, 0, 2, Z, [20, 10, 50, 90]]\n")
    with pytest.raises(SystemExit, match="person 'Z' is not listed"):
        report.score_against(run, ref, labels)
    labels.write_text("segments: []\n")
    with pytest.raises(SystemExit, match="expected 'persons'"):
        report.score_against(run, ref, labels)
    with pytest.raises(SystemExit):
        report.main([str(run), "--labels", str(labels)])


def test_report_contact_sheets_cut_each_track_from_the_source(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    # a 200 x 100 source whose frame f is filled with grey level 30 * f: a crop's colour says which frame it came from
    src = tmp_path / "frames"
    src.mkdir()
    for f in range(8):
        cv2.imwrite(str(src / f"{f:04d}.png"), np.full((100, 200, 3), 30 * f, np.uint8))
    ref_rows = [(f, 1, 20 + 20 * f, 10, 30, 80) for f in range(1, 8)]
    ref = _write_run(tmp_path / "ref", [{"id": "full", "source": str(src)}], {"full": ref_rows}, [])
    cams = [{"id": "left", "source": str(src), "roi": [0, 0, 100, 100]},
            {"id": "right", "source": str(src), "roi": [100, 0, 200, 100]}]
    mot = {"left": [(f, 1, 20 + 20 * f, 10, 30, 80) for f in range(1, 3)],
           "right": [(f, 5, 20 * f - 80, 10, 30, 80) for f in range(5, 8)]}
    ids = [{"type": "identity_created", "gid": 1, "camera": "left", "track_id": 1},
           {"type": "identity_created", "gid": 2, "camera": "right", "track_id": 5}]
    run = _write_run(tmp_path / "run", cams, mot, ids)
    report = _script_module()
    assert report.main([str(run), "--reference", str(ref), "--sheets", str(tmp_path / "sheets")]) == 0
    (sheet,) = (tmp_path / "sheets").iterdir()
    assert sheet.name == "person_001_split.png"  # one person, two global ids
    img = cv2.imread(str(sheet))
    assert img.shape == (2 * report.TILE_H, report.LABEL_W + report.SHEET_CROPS * report.TILE_W, 3)
    row2 = img[report.TILE_H:, report.LABEL_W:]  # right track 5: source frames 4, 5, 6 (0-based), then padding
    levels = [int(row2[50, i * report.TILE_W + 20, 0]) for i in range(4)]
    assert levels[:3] == [120, 150, 180] and levels[3] == 0
    with pytest.raises(SystemExit):
        report.main([str(run), "--sheets", str(tmp_path / "x")])


@needs_shared
def test_cut_cameras_scored_against_the_uncut_reference_on_real_video(tmp_path: Path) -> None:
    pytest.importorskip("supervision")
    from apnet_edge.pipeline.run import run_pipeline
    from apnet_edge.pipeline.schema import load_cams

    runs = {}
    for name in ("cams.full.yaml", "cams.example.yaml"):
        cfg = load_cams(ROOT / "configs" / name)
        out = tmp_path / name.split(".")[1]
        cfg = dataclasses.replace(
            cfg, max_frames=FRAMES,
            detector=dataclasses.replace(cfg.detector, threads=1), reid=dataclasses.replace(cfg.reid, threads=1),
            outputs=dataclasses.replace(cfg.outputs, dir=str(out), video="none", report=False, log_every_s=0.0))
        run_pipeline(cfg)
        runs[name] = out
    s = _script_module().score_against(runs["cams.example.yaml"], runs["cams.full.yaml"])
    # every person in the first 4 s is tracked in both the cut and the uncut view: nearly all tracks find theirs
    assert s["tracks"] >= 4 and s["tracks_matched_to_reference"] >= 0.8 * s["tracks"]
    a = s["across_cameras"]
    # with the example's exit/entry topology, no two different people share an id in these 4 s
    assert a["other_person_same_gid"] == 0, s
    assert s["persons_in_several_cameras_with_one_gid"] <= s["persons_in_several_cameras"]


@needs_shared
def test_vtest_labels_fit_the_reference_run(tmp_path: Path) -> None:
    """configs/vtest.labels.yaml names reference tracks by id and box: the reference run of configs/cams.full.yaml
    must still produce them (a detector or tracker change that renumbers the tracks needs new labels)."""
    pytest.importorskip("supervision")
    import yaml

    from apnet_edge.pipeline.run import run_pipeline
    from apnet_edge.pipeline.schema import load_cams

    frames = 170  # the 20 segments of the 47 that start in the first 17 s
    cfg = load_cams(ROOT / "configs" / "cams.full.yaml")
    out = tmp_path / "full"
    run_pipeline(dataclasses.replace(
        cfg, max_frames=frames,
        detector=dataclasses.replace(cfg.detector, threads=1), reid=dataclasses.replace(cfg.reid, threads=1),
        outputs=dataclasses.replace(cfg.outputs, dir=str(out), video="none", report=False, log_every_s=0.0)))
    doc = yaml.safe_load((ROOT / "configs" / "vtest.labels.yaml").read_text())
    early = [s for s in doc["segments"] if s[1] < frames]  # their first box is in the run
    assert len(early) == 20
    part = tmp_path / "early.yaml"
    part.write_text(yaml.safe_dump({"persons": doc["persons"], "segments": early}))
    report = _script_module()
    labels = report.read_labels(part, report.read_mot(out / "full.local.txt"))
    assert len(labels) == len(early)


@needs_shared
def test_vtest_scenes_are_valid_cams_files_that_cover_the_video() -> None:
    """scripts/vtest_scenes.py: every scene, built on configs/cams.example.yaml, passes the cams schema; side-by-side
    cuts tile the frame's width with transits between neighbours only, time cuts tile the frames."""
    import yaml

    from apnet_edge.errors import ConfigError
    from apnet_edge.pipeline.schema import parse_cams

    vs = _script_module("vtest_scenes")
    base = ROOT / "configs" / "cams.example.yaml"
    raw = yaml.safe_load(base.read_text())
    vs.apply_sets(raw, ["reid.refresh_frames=6", "matcher.threshold=0.6"])
    source = parse_cams(raw, base.parent).cameras[0].source
    size, frames = vs.source_facts(source)
    assert size == (768, 576) and frames == 795
    for scene in vs.SCENES:
        cams, topo = vs.scene_cameras(scene, source, size, frames)
        cfg = parse_cams({**raw, "cameras": cams, "matcher": {**raw["matcher"], "topology": topo}}, base.parent)
        assert cfg.reid.refresh_frames == 6 and cfg.matcher.threshold == 0.6
        xs = sorted({(c.roi[0], c.roi[2]) if c.roi else (0, 768) for c in cfg.cameras})
        spans = sorted({(c.start_frame, c.end_frame or frames) for c in cfg.cameras})
        assert xs[0][0] == 0 and xs[-1][1] == 768 and all(a[1] == b[0] for a, b in zip(xs, xs[1:]))
        assert spans[0][0] == 0 and spans[-1][1] == frames and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert len(topo) == (2 * (len(cams) - 1) if scene in vs.CUTS else 0)
    assert len(vs.scene_cameras("thirds", source, size, frames)[0]) == 3
    with pytest.raises(ConfigError, match="section.key=value"):
        vs.apply_sets(raw, ["refresh_frames=6"])
    for lost in ("matcher.topology=[]", "outputs.video=mosaic"):  # each scene replaces these: refused, not dropped
        with pytest.raises(ConfigError, match="each scene sets"):
            vs.apply_sets(raw, [lost])
    with pytest.raises(ConfigError, match="unknown scene"):
        vs.scene_cameras("fifths", source, size, frames)


def test_report_checks_switch_detections_against_the_labels() -> None:
    """A track_switched event is real when the track follows another labelled person after it than 15-40 frames
    before it, false when the same one, unclear when a side has no labelled box."""
    report = _script_module()
    boxes: dict = {}
    for t, x, last in ((5, 20, 60), (6, 200, 60), (7, 400, 42)):
        boxes[("cam", t)] = {f: (float(x), 10.0, x + 30.0, 90.0) for f in range(1, last + 1)}
    gt: dict = {}
    for f in range(1, 61):  # P then Q at track 5's place (the tracker switched), R all along at track 6's, S at 7's
        gt[("cam", f)] = [("P" if f <= 40 else "Q", (20.0, 10.0, 50.0, 90.0)), ("R", (200.0, 10.0, 230.0, 90.0)),
                          ("S", (400.0, 10.0, 430.0, 90.0))]
    events = [{"type": "track_switched", "camera": "cam", "track_id": t, "frame": f} for t, f in ((5, 42), (6, 45),
                                                                                                  (7, 45))]
    s = report.check_switches(events, boxes, (gt, {}, {}, {}))
    assert (s["detected"], s["real"], s["false"], s["unclear"]) == (3, 1, 1, 1)
    assert [(e["before"], e["after"], e["verdict"]) for e in s["events"]] == [
        ("P", "Q", "real"), ("R", "R", "false"), ("S", None, "unclear")]
