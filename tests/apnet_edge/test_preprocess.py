"""Card-driven pre-processing equals a plain per-crop reference, in both layouts and colour orders."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError
from apnet_edge.preprocess import preprocess_crops

IMAGENET = ModelCard(input_size=(64, 32))  # RGB, /255, ImageNet mean/std, NCHW
BGR_255_NHWC = ModelCard(arch="external", input_size=(48, 24), mean=(0, 0, 0), std=(1, 1, 1), color_order="BGR",
                         pixel_scale=1.0, layout="NHWC", embedding_dim=256)


def reference(crops, card: ModelCard) -> np.ndarray:
    """The obvious, slow way: one crop at a time, float64."""
    h, w = card.input_size
    out = []
    for c in crops:
        x = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
        if card.color_order == "RGB":
            x = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_BGR2RGB).astype(np.float64)
        x = (x / card.pixel_scale - np.array(card.mean)) / np.array(card.std)
        out.append(x.transpose(2, 0, 1) if card.layout == "NCHW" else x)
    return np.stack(out).astype(np.float32)


def random_crops(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(20, 200)), int(rng.integers(10, 90)), 3), dtype=np.uint8)
            for _ in range(n)]


@pytest.mark.parametrize("card", [IMAGENET, BGR_255_NHWC], ids=["rgb-imagenet-nchw", "bgr-255-nhwc"])
def test_matches_reference(card: ModelCard) -> None:
    crops = random_crops()
    x = preprocess_crops(crops, card)
    h, w = card.input_size
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert x.shape == ((5, 3, h, w) if card.layout == "NCHW" else (5, h, w, 3))
    np.testing.assert_allclose(x, reference(crops, card), rtol=1e-5, atol=1e-5)


def test_real_crops_match_reference(real_crops) -> None:
    np.testing.assert_allclose(preprocess_crops(real_crops[:8], IMAGENET), reference(real_crops[:8], IMAGENET),
                               rtol=1e-5, atol=1e-5)


def test_rgb_swaps_channels() -> None:
    blue = np.zeros((64, 32, 3), np.uint8)
    blue[..., 0] = 255  # BGR: pure blue
    rgb = preprocess_crops([blue], ModelCard(input_size=(64, 32), mean=(0, 0, 0), std=(1, 1, 1)))
    assert rgb[0, 2].min() == 1.0 and rgb[0, 0].max() == 0.0  # blue is the last channel in RGB
    bgr = preprocess_crops([blue], BGR_255_NHWC)
    assert bgr[0, ..., 0].min() == 255.0 and bgr[0, ..., 2].max() == 0.0


def test_exact_size_uint8_stack_and_input_untouched() -> None:
    crops = random_crops(3)
    stack = np.stack([cv2.resize(c, (32, 64)) for c in crops])
    before = stack.copy()
    a = preprocess_crops(stack, IMAGENET)  # a (N, H, W, 3) uint8 array is a stack of crops
    b = preprocess_crops(list(stack), IMAGENET)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(stack, before)


def test_empty() -> None:
    assert preprocess_crops([], IMAGENET).shape == (0, 3, 64, 32)
    assert preprocess_crops([], BGR_255_NHWC).shape == (0, 48, 24, 3)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((10, 10), np.uint8), "shape (10, 10)"),
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    ("not an image", "str"),
])
def test_bad_crop_is_named(bad, words: str) -> None:
    with pytest.raises(ModelError, match="crop 1") as err:
        preprocess_crops([np.zeros((8, 8, 3), np.uint8), bad], IMAGENET)
    assert words in str(err.value)
