"""Torch datasets and loaders over :class:`apnet_edge.datasets.ReidDataset` records."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from apnet_edge.datasets.base import ReidImage
from apnet_edge.errors import DatasetError


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as an RGB uint8 array (H, W, 3)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path!r}: not an image or unreadable; remove or replace it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageDataset(Dataset):
    """Items are ``(image tensor (3,H,W) normalised RGB, pid, camid, index)``."""

    def __init__(self, records: Sequence[ReidImage], transform: Callable[[Any], torch.Tensor]) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        return self.transform(read_rgb(r.path)), r.pid, r.camid, i


def make_test_loader(records: Sequence[ReidImage], transform, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(ImageDataset(records, transform), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())


def make_train_loader(records: Sequence[ReidImage], transform, batch_size: int, num_instances: int,
                      num_workers: int, seed: int, sampler_factory: Optional[Callable] = None):
    """P x K loader; returns ``(loader, sampler)`` so the caller can ``sampler.set_epoch(epoch)``."""
    from train.sampler import RandomIdentitySampler

    pids = [r.pid for r in records]
    sampler = (sampler_factory or RandomIdentitySampler)(pids, batch_size=batch_size, num_instances=num_instances,
                                                          seed=seed)
    loader = DataLoader(ImageDataset(records, transform), batch_size=batch_size, sampler=sampler,
                        num_workers=num_workers, drop_last=True, pin_memory=torch.cuda.is_available(),
                        persistent_workers=num_workers > 0)
    return loader, sampler
