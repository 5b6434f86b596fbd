"""Shared fixtures: an isolated HOME/cache for every test session, and real data from ``../shared``
(the pedestrian video and the two real models) with real person crops cut from it, computed once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_REASON = "../shared not present: real video/models unavailable"


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """HOME, TORCH_HOME, XDG_CACHE_HOME and YOLO_CONFIG_DIR point into a temporary folder for the whole session,
    so that no library (OpenVINO's ~/intel, ONNX Runtime's ~/.cache, Ultralytics' settings) writes to the user's."""
    root = tmp_path_factory.mktemp("isolated_home")
    mp = pytest.MonkeyPatch()
    for var, sub in (("HOME", "home"), ("TORCH_HOME", "torch"), ("XDG_CACHE_HOME", "cache"),
                     ("YOLO_CONFIG_DIR", "yolo")):
        (root / sub).mkdir()
        mp.setenv(var, str(root / sub))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the project (real video and models); skips the test when it is absent."""
    d = Path(__file__).resolve().parents[1].parent / "shared"
    if not d.is_dir():
        pytest.skip(SHARED_REASON)
    return d


def _shared_file(shared_dir: Path, rel: str) -> Path:
    p = shared_dir / rel
    if not p.is_file():
        pytest.skip(f"{p} not present: real video/models unavailable")
    return p


@pytest.fixture(scope="session")
def vtest_path(shared_dir: Path) -> Path:
    """The PETS 2009 pedestrian video: 795 frames, 768x576, BGR."""
    return _shared_file(shared_dir, "data/vtest.avi")


@pytest.fixture(scope="session")
def yolox_path(shared_dir: Path) -> Path:
    """YOLOX-nano ONNX, input [1, 3, 416, 416], raw grid outputs [1, 3549, 85]."""
    return _shared_file(shared_dir, "models/yolox_nano.onnx")


@pytest.fixture(scope="session")
def reid0248_path(shared_dir: Path) -> Path:
    """OpenVINO OMZ person-reidentification-retail-0248 ONNX: NHWC [1, 256, 128, 3] BGR 0-255 -> [1, 256]."""
    return _shared_file(shared_dir, "models/person-reidentification-retail-0248.onnx")


@pytest.fixture(scope="session")
def yolox_detector(yolox_path: Path):
    """A YOLOX-nano person detector on ONNX Runtime (2 threads), shared by the session."""
    from apnet_edge.detectors.yolox import YoloxDetector

    with YoloxDetector(yolox_path, threads=2) as det:
        yield det


@pytest.fixture(scope="session")
def real_crops(vtest_path: Path, yolox_detector) -> list[np.ndarray]:
    """32 real person crops (BGR uint8, >= 48 px tall) from 8 frames spread over vtest.avi, detected by YOLOX-nano."""
    from apnet_edge.crops import crops_from_video

    crops = crops_from_video(vtest_path, yolox_detector, max_crops=32, num_frames=8, min_height=48)
    assert len(crops) >= 24, f"only {len(crops)} person crops found in vtest.avi"
    return crops
