"""Crop pre-processing driven by the model card: the single place where pixels become a model input.

``preprocess_crops(crops, card)``: BGR uint8 crops of any size -> float32 batch in the model's layout:
resize to ``card.input_size`` (cv2 INTER_LINEAR), colour order, ``/ pixel_scale``, ``(x - mean) / std``,
NCHW or NHWC. Everything after the resize is one vectorised numpy pass over the whole batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError


def check_crop(crop: object, index: int = 0) -> np.ndarray:
    """Return ``crop`` as an (H, W, 3) uint8 array or raise ModelError saying what crop ``index`` is instead."""
    if not isinstance(crop, np.ndarray):
        raise ModelError(f"crop {index} is a {type(crop).__name__}; expected a BGR uint8 numpy array (H, W, 3)")
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ModelError(f"crop {index} has dtype {crop.dtype} and shape {tuple(crop.shape)}; "
                         f"expected a BGR uint8 array (H, W, 3)")
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise ModelError(f"crop {index} is empty (shape {tuple(crop.shape)}); drop empty boxes before embedding")
    return crop


def resize_crops(crops: Sequence[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """Stack BGR uint8 crops resized to ``size_hw`` (height, width) with INTER_LINEAR: (N, H, W, 3) uint8."""
    import cv2

    h, w = int(size_hw[0]), int(size_hw[1])
    out = np.empty((len(crops), h, w, 3), np.uint8)
    for i, crop in enumerate(crops):
        crop = check_crop(crop, i)
        if crop.shape[0] == h and crop.shape[1] == w:
            out[i] = crop
        else:
            out[i] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def normalize_pixels(pixels: np.ndarray, card: ModelCard) -> np.ndarray:
    """(N, H, W, 3) BGR pixels (uint8 or float 0-255) -> float32 model input in ``card.layout``.

    Applies the colour order, ``/ pixel_scale`` and ``(x - mean) / std`` as one multiply-add per channel.
    """
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ModelError(f"pixels must be (N, H, W, 3), found shape {tuple(pixels.shape)}")
    if card.color_order == "RGB":
        pixels = pixels[..., ::-1]
    mean = np.asarray(card.mean, np.float64)
    std = np.asarray(card.std, np.float64)
    if np.any(std == 0):
        raise ModelError(f"model card std has a zero entry {card.std}; fix the card (std=1 for 'no scaling')")
    scale = (1.0 / (float(card.pixel_scale) * std)).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    x = pixels.astype(np.float32)
    if not (np.all(scale == 1.0) and np.all(shift == 0.0)):
        x *= scale
        x += shift
    if card.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def preprocess_crops(crops: Sequence[np.ndarray], card: ModelCard) -> np.ndarray:
    """BGR uint8 crops (H_i, W_i, 3), any sizes -> float32 (N, 3, H, W) or (N, H, W, 3) per ``card.layout``.

    ``H, W = card.input_size``. An empty sequence gives an empty batch of the right shape.
    A 4-D uint8 array (N, H, W, 3) is accepted as a stack of crops.
    """
    h, w = card.input_size
    if len(crops) == 0:
        shape = (0, 3, h, w) if card.layout == "NCHW" else (0, h, w, 3)
        return np.zeros(shape, np.float32)
    return normalize_pixels(resize_crops(crops, (h, w)), card)
