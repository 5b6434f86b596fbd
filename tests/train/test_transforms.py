"""Train/test transforms of the recipe: shapes, determinism, flip, pad/crop, random erasing fill values."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from PIL import Image  # noqa: E402

from train.transforms import RandomErasing, build_test_transform, build_train_transform  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = (64, 32)


def image(seed: int = 0, h: int = 100, w: int = 45) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_shapes_dtypes_and_pil_numpy_agree():
    img = image()
    for tf in (build_train_transform(SIZE, MEAN, STD), build_test_transform(SIZE, MEAN, STD)):
        torch.manual_seed(0)
        out = tf(img)
        torch.manual_seed(0)
        out_pil = tf(Image.fromarray(img))
        assert out.shape == (3, 64, 32) and out.dtype == torch.float32
        assert torch.equal(out, out_pil)
    with pytest.raises(ValueError, match="uint8"):
        build_test_transform(SIZE, MEAN, STD)(img.astype(np.float32))


def test_test_transform_normalises_constant_colour():
    img = np.zeros((30, 20, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 0, 128
    out = build_test_transform(SIZE, MEAN, STD)(img)
    for c, v in enumerate((255, 0, 128)):
        assert torch.allclose(out[c], torch.tensor((v / 255 - MEAN[c]) / STD[c]), atol=1e-5)


def test_train_transform_deterministic_with_seed():
    tf = build_train_transform(SIZE, MEAN, STD, erasing_prob=1.0)
    img = image(1)
    torch.manual_seed(123)
    a = tf(img)
    torch.manual_seed(123)
    b = tf(img)
    assert torch.equal(a, b)
    outs = {tf(img).sum().item() for _ in range(5)}
    assert len(outs) > 1  # it is random without reseeding


def test_flip_only_equals_mirrored_test_transform():
    img = image(2)
    flipped = build_train_transform(SIZE, MEAN, STD, flip_prob=1.0, pad=0, erasing_prob=0.0)(img)
    expected = build_test_transform(SIZE, MEAN, STD)(np.ascontiguousarray(img[:, ::-1]))
    assert torch.allclose(flipped, expected, atol=1e-6)


def test_pad_then_crop_shows_zero_border_sometimes():
    white = np.full((64, 32, 3), 255, np.uint8)
    tf = build_train_transform(SIZE, MEAN, STD, flip_prob=0.0, pad=10, erasing_prob=0.0)
    black = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD)]).view(3, 1, 1)
    torch.manual_seed(0)
    seen_border = 0
    for _ in range(10):
        out = tf(white)
        assert out.shape == (3, 64, 32)
        seen_border += int(torch.isclose(out, black.expand_as(out), atol=1e-5).all(0).any())
    assert seen_border > 0


def test_random_erasing_fills_mean_after_normalisation():
    torch.manual_seed(0)
    er = RandomErasing(probability=1.0, value=MEAN)
    x = torch.full((3, 64, 32), -7.0)
    for _ in range(20):
        y = er(x)
        assert torch.equal(x, torch.full((3, 64, 32), -7.0))  # input untouched
        erased = (y != -7.0).all(0)
        rows, cols = torch.nonzero(erased, as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(erased.sum()) == h * w and h < 64 and w < 32  # one rectangle
        assert 0.01 < h * w / (64 * 32) < 0.45
        for c in range(3):
            assert torch.all(y[c][erased] == torch.tensor(MEAN[c]))
    assert torch.equal(RandomErasing(probability=0.0)(x), x)


def test_train_transform_erasing_writes_mean_values():
    tf = build_train_transform(SIZE, MEAN, STD, flip_prob=0.0, pad=0, erasing_prob=1.0)
    torch.manual_seed(3)
    out = tf(np.zeros((64, 32, 3), np.uint8))  # normalised black is far from the mean fill
    mask = torch.isclose(out[0], torch.tensor(MEAN[0]))
    assert mask.any()
    assert torch.allclose(out[1][mask], torch.tensor(MEAN[1])) and torch.allclose(out[2][mask], torch.tensor(MEAN[2]))
