"""Image transforms of the APNet recipe (APNET.md section 2).

Train: to PIL -> Resize (h, w) bilinear -> RandomHorizontalFlip(flip_prob) -> Pad(pad, fill 0) ->
RandomCrop(h, w) -> ToTensor (0..1) -> Normalize(mean, std) -> RandomErasing(erasing_prob).
Test: to PIL -> Resize (h, w) bilinear -> ToTensor -> Normalize.

Inputs are PIL RGB images or (H, W, 3) uint8 RGB numpy arrays; outputs are float32 tensors (3, h, w).
All randomness comes from torch's global RNG (``torch.manual_seed`` makes a call reproducible; DataLoader
workers get distinct torch seeds).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode


class ToPILImage:
    """PIL RGB image from a PIL image (converted to RGB) or an (H, W, 3) uint8 RGB numpy array."""

    def __call__(self, img: Any) -> Image.Image:
        if isinstance(img, Image.Image):
            return img if img.mode == "RGB" else img.convert("RGB")
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected a PIL image or an (H, W, 3) uint8 RGB array, found {arr.dtype} {arr.shape}")
        return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomErasing:
    """Random Erasing (Zhong et al. 2020) exactly as the reid-strong-baseline / APNet release does it.

    With probability ``probability``, up to 100 attempts: area fraction ~ U(sl, sh) of the image, aspect ratio
    h/w ~ U(r1, 1/r1) (uniform, not log-uniform), ``h = round(sqrt(area * ratio))``, ``w = round(sqrt(area /
    ratio))``; the first rectangle with ``h < H`` and ``w < W`` gets a uniformly random top-left corner and
    is filled with ``value`` per channel. ``value`` is written into the already *normalised* tensor (the
    release fills the ImageNet mean 0.485/0.456/0.406, not 0 - a quirk kept on purpose). torchvision's
    RandomErasing differs (log-uniform ratio, 10 attempts, default scale 0.02-0.33), hence this class.
    Input (C, H, W) float tensor; returns an erased copy (the input is not modified).
    """

    def __init__(self, probability: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 value: Sequence[float] = (0.485, 0.456, 0.406)) -> None:
        if not 0.0 <= probability <= 1.0 or not 0.0 < sl <= sh or not 0.0 < r1 <= 1.0:
            raise ValueError(f"need 0 <= probability <= 1, 0 < sl <= sh, 0 < r1 <= 1; found {probability}, "
                             f"{sl}, {sh}, {r1}")
        self.probability = float(probability)
        self.sl, self.sh, self.r1 = float(sl), float(sh), float(r1)
        self.value = tuple(float(v) for v in value)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.probability <= 0 or torch.rand(1).item() >= self.probability:
            return img
        c, height, width = img.shape
        area = height * width
        for _ in range(100):
            target = torch.empty(1).uniform_(self.sl, self.sh).item() * area
            ratio = torch.empty(1).uniform_(self.r1, 1.0 / self.r1).item()
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            if w < width and h < height:
                top = int(torch.randint(0, height - h + 1, (1,)).item())
                left = int(torch.randint(0, width - w + 1, (1,)).item())
                out = img.clone()
                fill = torch.as_tensor(self.value[:c] if c > 1 else self.value[:1], dtype=img.dtype)
                out[:, top:top + h, left:left + w] = fill.view(-1, 1, 1)
                return out
        return img

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(probability={self.probability}, sl={self.sl}, sh={self.sh}, "
                f"r1={self.r1}, value={self.value})")


def _check_size(input_size: Sequence[int]) -> tuple[int, int]:
    if len(input_size) != 2 or min(int(v) for v in input_size) <= 0:
        raise ValueError(f"input_size must be (height, width) > 0, found {tuple(input_size)}")
    return int(input_size[0]), int(input_size[1])


def build_train_transform(input_size: Sequence[int], mean: Sequence[float], std: Sequence[float],
                          flip_prob: float = 0.5, pad: int = 10, erasing_prob: float = 0.5) -> T.Compose:
    """Training augmentation; ``input_size`` = (height, width) in pixels, ``pad`` in pixels (zero fill),
    ``mean``/``std`` of 0..1 RGB pixels; random erasing fills ``mean`` after normalisation (see RandomErasing).
    ``flip_prob = 0``, ``pad = 0`` or ``erasing_prob = 0`` leave that step out. Returns image -> (3, h, w)."""
    h, w = _check_size(input_size)
    if pad < 0:
        raise ValueError(f"pad must be >= 0 pixels, found {pad}")
    steps: list[Any] = [ToPILImage(), T.Resize((h, w), interpolation=InterpolationMode.BILINEAR)]
    if flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(p=flip_prob))
    if pad > 0:
        steps += [T.Pad(pad, fill=0), T.RandomCrop((h, w))]
    steps += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if erasing_prob > 0:
        steps.append(RandomErasing(probability=erasing_prob, value=mean))
    return T.Compose(steps)


def build_test_transform(input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """Evaluation transform: image -> Resize (h, w) bilinear -> ToTensor -> Normalize -> (3, h, w) float32."""
    h, w = _check_size(input_size)
    return T.Compose([ToPILImage(), T.Resize((h, w), interpolation=InterpolationMode.BILINEAR), T.ToTensor(),
                      T.Normalize(mean=list(mean), std=list(std))])
