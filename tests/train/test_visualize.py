"""``visualize attention``: tiny random APNet-C and APNet-S checkpoints on real person crops from vtest.avi
(synthetic images when ../shared is absent): the figure's grid, normalised finite maps, APNet-S maps equal to the
masks the model computes, hooks removed and outputs unchanged, clear errors, and the CLI path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

import torch.nn.functional as F  # noqa: E402

from apnet_edge.cli import main  # noqa: E402
from apnet_edge.config import ModelConfig  # noqa: E402
from apnet_edge.errors import CheckpointError, ConfigError, DatasetError  # noqa: E402
from apnet_edge.preprocess import preprocess_crops  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.models import build_model  # noqa: E402
from train.visualize import _normalise, attention_maps, pyramid_levels, visualize_attention  # noqa: E402

SIZE = (64, 32)
C2 = ModelConfig(arch="apnet_c", backbone="resnet18", input_size=SIZE, level=2)
S2 = ModelConfig(arch="apnet_s", backbone="resnet18", input_size=SIZE, level=2)


def _model(cfg: ModelConfig):
    torch.manual_seed(0)
    return build_model(cfg, 0).eval()


@pytest.fixture(scope="module")
def crops(request) -> list[np.ndarray]:
    """Three real person crops cut from vtest.avi, or three synthetic 'people' without ../shared."""
    try:
        real = request.getfixturevalue("real_crops")
        return [real[i] for i in (0, len(real) // 2, len(real) - 1)]
    except pytest.skip.Exception:
        rng = np.random.default_rng(0)
        out = []
        for k in range(3):
            img = np.full((96, 40, 3), 200, np.uint8)
            cv2.ellipse(img, (20, 48), (12, 40), 0, 0, 360, (40 * k, 80, 160), -1)
            out.append(np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8))
        return out


@pytest.fixture(scope="module")
def image_dir(crops, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("crops")
    for i, c in enumerate(crops[:2]):
        cv2.imwrite(str(d / f"{i:04d}_c1s1_000001_00.jpg"), c)
    cv2.imwrite(str(d.parent / "single.png"), crops[2])
    return d


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, cfg in (("c2", C2), ("s2", S2), ("c1", ModelConfig(backbone="resnet18", input_size=SIZE, level=1)),
                      ("c0", ModelConfig(backbone="resnet18", input_size=SIZE, level=0))):
        out[name] = save_checkpoint(d / f"{name}.pt", _model(cfg), cfg, epoch=0)
    return out


def _check_figure(fig, rows: int, levels: tuple[int, ...]) -> None:
    png = cv2.imread(str(fig.path))
    assert png is not None and png.shape[:2] == fig.layout.size
    assert (fig.layout.rows, fig.layout.cols) == (rows, 1 + len(levels))
    maps = fig.maps.maps
    assert maps.shape == (rows, len(levels), *SIZE) and fig.maps.levels == levels
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    for m in maps.reshape(-1, SIZE[0] * SIZE[1]):
        assert m.min() == 0.0 and (m.max() == pytest.approx(1.0) or m.max() == 0.0)


def test_apnet_c_figure(checkpoints, image_dir: Path, tmp_path: Path) -> None:
    fig = visualize_attention(checkpoints["c2"], [image_dir, image_dir.parent / "single.png"], tmp_path / "a.png")
    _check_figure(fig, 3, (1, 2))
    assert fig.maps.method == "attention-cam" and fig.maps.stages == (0, 1, 2, 3, 4)
    assert "APNet-C" in fig.maps.description and "Grad-CAM" in fig.maps.description
    assert fig.maps.maps.reshape(3, 2, -1).max(axis=2).min() == pytest.approx(1.0)  # no blank map here
    one = visualize_attention(checkpoints["c1"], [image_dir], tmp_path / "b.png", stage=4, method="gradcam")
    _check_figure(one, 2, (1,))
    assert "stage 4 (layer4, 4x2 map)" in one.maps.description


def test_apnet_s_maps_are_the_models_own_masks(crops) -> None:
    model = _model(S2)
    res = attention_maps(model, crops, stage=1)
    assert res.method == "mask" and res.levels == (1, 2) and "spatial attention mask" in res.description
    # the same masks by hand: run the network up to layer1, then the level-2 (2 stripes) then level-1 mask
    x = torch.from_numpy(preprocess_crops(crops, model.card))
    with torch.no_grad():
        pieces = model.backbone.pieces()
        h = model.pyramids[0](pieces[0](x))
        h = pieces[1](h)
        steps = model.pyramids[1].steps
        assert [lvl for lvl, _ in pyramid_levels(model.pyramids[1])] == [2, 1]  # fine -> coarse
        m2 = steps[0].mask(h)
        m1 = steps[1].mask(h * m2)
    for j, m in ((0, m1), (1, m2)):
        want = _normalise(F.interpolate(m, size=SIZE, mode="bilinear", align_corners=False))[:, 0].numpy()
        np.testing.assert_allclose(res.maps[:, j], want, atol=1e-5)


def test_hooks_removed_and_outputs_unchanged(crops) -> None:
    for cfg, method in ((C2, "auto"), (S2, "gradcam")):
        model = _model(cfg)
        x = torch.from_numpy(preprocess_crops(crops, model.card))
        with torch.no_grad():
            before = model(x)
        attention_maps(model, crops, method=method, batch_size=2)
        assert not any(m._forward_hooks for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        with torch.no_grad():
            assert torch.equal(model(x), before)


def test_errors(checkpoints, image_dir: Path, tmp_path: Path, crops) -> None:
    with pytest.raises(CheckpointError, match="level 0"):
        visualize_attention(checkpoints["c0"], [image_dir])
    with pytest.raises(DatasetError, match="does not exist"):
        visualize_attention(checkpoints["c2"], [tmp_path / "missing"])
    with pytest.raises(ConfigError, match="without a spatial mask"):
        attention_maps(_model(C2), crops, method="mask")
    with pytest.raises(ConfigError, match="stage must be"):
        attention_maps(_model(C2), crops, stage=7)
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        visualize_attention(onnx_like, [image_dir])


def test_ranks_with_a_checkpoint(checkpoints, crops, tmp_path: Path) -> None:
    """``visualize ranks`` takes a checkpoint too (torch runner, default --device auto)."""
    for split, cam in (("query", 1), ("bounding_box_test", 2)):
        (tmp_path / "site" / split).mkdir(parents=True)
        for pid, c in enumerate(crops, start=1):
            cv2.imwrite(str(tmp_path / "site" / split / f"{pid:04d}_c{cam}s1_000001_00.jpg"), c)
    out = tmp_path / "ranks.png"
    assert main(["visualize", "ranks", "--model", str(checkpoints["c2"]), "--data", str(tmp_path / "site"),
                 "--queries", "2", "--out", str(out)]) == 0
    assert cv2.imread(str(out)) is not None


def test_cli(checkpoints, image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fig" / "attention.png"
    assert main(["visualize", "attention", "--checkpoint", str(checkpoints["s2"]), "--images", str(image_dir),
                 "--out", str(out), "--stage", "2"]) == 0
    assert "wrote" in capsys.readouterr().out and cv2.imread(str(out)).shape[0] > 2 * 256
    assert main(["visualize", "attention", "--checkpoint", str(checkpoints["c0"]), "--images", str(image_dir),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no attention" in err and err.count("\n") == 1
    assert main(["visualize", "attention", "--checkpoint", str(checkpoints["c2"]), "--images",
                 str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
