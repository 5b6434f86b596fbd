"""The scenario configs (configs/cams.time_halves.yaml, configs/cams.four.yaml) on real data, 40 frames per camera,
and scripts/pipeline_report.py on their outputs. Skipped when ../shared (vtest.avi and the models) is absent."""

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

pytestmark = pytest.mark.skipif(not all(p.exists() for p in NEEDED),
                                reason="../shared video/models absent (vtest.avi, yolox_nano.onnx, 0248 re-ID)")
FRAMES = 40


def _report_module():
    spec = importlib.util.spec_from_file_location("pipeline_report", ROOT / "scripts" / "pipeline_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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

    r = _report_module().report(out)
    assert r["identities_created"] == s["identities_created"]
    assert r["global_ids"] <= len(gids) - r["identities_merged"]  # revised ids: merged identities vanish
    assert r["handoffs"] == s["events"].get("handoff", 0)
    assert set(r["cameras"]) == set(first_frames) and isinstance(r["geometry"], list)
