"""End-to-end: the CLI trains a tiny APNet on a generated Market-1501-named folder, resumes, and evaluates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from apnet_edge.cli import main  # noqa: E402
from train.trainer import lr_factor  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def make_market_folder(root: Path, ids: int = 6, per_cam: int = 3, size=(64, 32)) -> Path:
    """Identities are distinct colour patterns; two cameras; Market-1501 naming (0001_c1s1_000010_00.jpg)."""
    rng = np.random.default_rng(0)
    h, w = size
    for split, pid_range in (("bounding_box_train", range(1, ids + 1)),
                             ("query", range(ids + 1, 2 * ids + 1)),
                             ("bounding_box_test", range(ids + 1, 2 * ids + 1))):
        (root / split).mkdir(parents=True, exist_ok=True)
        for pid in pid_range:
            top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
            cams = (2,) if split == "query" else (1, 2) if split == "bounding_box_train" else (1,)
            for cam in cams:
                for k in range(per_cam if split != "query" else 1):
                    img = np.empty((h, w, 3), np.uint8)
                    img[: h // 2] = top
                    img[h // 2:] = bottom
                    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
                    cv2.imwrite(str(root / split / f"{pid:04d}_c{cam}s1_{100 * k + cam:06d}_00.jpg"), img)
    return root


def test_lr_schedule_matches_the_recipe() -> None:
    f = [lr_factor(e, 10, 0.01, (40, 80, 120), 0.1) for e in (0, 5, 10, 39, 40, 80, 120)]
    assert f[0] == pytest.approx(0.01)
    assert f[1] == pytest.approx(0.505)
    assert f[2:4] == [1.0, 1.0]
    assert f[4:] == pytest.approx([0.1, 0.01, 0.001])


def test_train_resume_and_eval_through_the_cli(tmp_path: Path) -> None:
    data = make_market_folder(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--config", str(CONFIGS / "cpu_small.yaml"), "--data-root", str(data), "--output", str(out),
              "model.input_size=[64,32]", "data.batch_size=8", "data.num_instances=2", "data.num_workers=0",
              "train.eval_period=1", "solver.warmup_epochs=1"]
    assert main(["train", *common, "solver.max_epochs=1"]) == 0
    assert {"last.pt", "best.pt", "config.yaml", "log.csv", "epoch_001.pt"} <= {p.name for p in out.iterdir()}
    assert main(["train", *common, "solver.max_epochs=2", "--resume"]) == 0
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["mAP"]) <= 1.0 for r in rows)
    assert (out / "curves.png").stat().st_size > 1000

    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--dataset", "folder", "--data-root", str(data),
                 "--json", str(report), "--device", "cpu"]) == 0
    result = json.loads(report.read_text())
    assert result["num_query"] == 6 and result["num_gallery"] == 18
    assert 0.0 < result["metrics"]["mAP"] <= 1.0


def test_missing_dataset_folder_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["train", "--config", str(CONFIGS / "cpu_small.yaml"), "--data-root", str(tmp_path / "none"),
                 "--output", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err and "Traceback" not in err
