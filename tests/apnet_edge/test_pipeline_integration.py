"""vtest.avi left/right halves as two cameras: YOLOX-nano + ByteTrack + 0248 re-ID for 40 frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"
CARD_0248 = Path(__file__).resolve().parents[2] / "configs" / "reid_0248.card.json"  # NHWC, BGR 0-255
VIDEO = SHARED / "data" / "vtest.avi"
DET = SHARED / "models" / "yolox_nano.onnx"
REID = SHARED / "models" / "person-reidentification-retail-0248.onnx"

pytestmark = pytest.mark.skipif(not (VIDEO.exists() and DET.exists() and REID.exists()),
                                reason="../shared video/models absent (vtest.avi, yolox_nano.onnx, 0248 re-ID)")


def test_two_cameras_from_vtest(tmp_path: Path) -> None:
    pytest.importorskip("supervision")
    from apnet_edge.pipeline.run import run_pipeline
    from apnet_edge.pipeline.schema import parse_cams

    cfg = parse_cams({
        "cameras": [{"id": "left", "source": str(VIDEO), "roi": [0, 0, 384, 576]},
                    {"id": "right", "source": str(VIDEO), "roi": [384, 0, 768, 576]},
                    {"id": "broken", "source": "rtsp://user:hunter2@127.0.0.1:9/none", "retries": 1,
                     "retry_max_s": 0.1}],
        "detector": {"model": str(DET), "threads": 2},
        "reid": {"model": str(REID), "card": str(CARD_0248), "threads": 2},
        "outputs": {"dir": str(tmp_path / "out"), "video": "mosaic", "log_every_s": 0},
        "max_frames": 40,
    }, tmp_path)
    s = run_pipeline(cfg)
    out = tmp_path / "out"
    assert s["cameras"]["left"]["frames_processed"] == 40 and s["cameras"]["right"]["frames_processed"] == 40
    assert s["cameras"]["broken"]["error"] and len(s["failures"]) == 1  # the dead camera did not stop the others
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    kinds = {e["type"] for e in events}
    assert {"run_started", "track_started", "identity_created", "track_ended", "run_ended"} <= kinds
    assert s["identities_created"] >= 1
    for cam in ("left", "right"):
        rows = [line.split(",") for line in (out / f"{cam}.local.txt").read_text().splitlines()]
        assert rows and all(len(r) == 10 for r in rows) and 1 <= int(rows[0][0]) <= 40
        assert (out / f"{cam}.global.txt").stat().st_size > 0
    text = "\n".join(p.read_text() for p in out.iterdir() if p.suffix in (".json", ".jsonl"))
    assert "hunter2" not in text  # RTSP secrets never reach the outputs
    assert (out / "mosaic.mp4").stat().st_size > 0
    assert {"detect", "track", "embed", "match", "decode"} <= set(s["latency_ms"])
