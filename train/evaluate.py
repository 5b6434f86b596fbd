"""Validation during training: embed query and gallery with the PyTorch model and score them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from apnet_edge.datasets.base import ReidImage


@torch.no_grad()
def embed_records(model: torch.nn.Module, records: Sequence[ReidImage], transform, device: torch.device,
                  batch_size: int = 128, num_workers: int = 2, flip: bool = True) -> np.ndarray:
    """(N, D) float32 L2-normalised test features of ``records`` (flip-averaged when ``flip``)."""
    from train.data import make_test_loader

    was_training = model.training
    model.eval()
    feats = []
    for images, _pids, _cams, _idx in make_test_loader(records, transform, batch_size, num_workers):
        feats.append(model.embed(images.to(device, non_blocking=True), flip=flip).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)


def validate(model: torch.nn.Module, query: Sequence[ReidImage], gallery: Sequence[ReidImage], transform,
             device: torch.device, batch_size: int = 128, num_workers: int = 2, flip: bool = True) -> dict:
    """Standard-protocol metrics (fractions) of ``model`` on a query/gallery split."""
    from apnet_edge.evaluation import rank_features

    qf = embed_records(model, query, transform, device, batch_size, num_workers, flip)
    gf = embed_records(model, gallery, transform, device, batch_size, num_workers, flip)
    m = rank_features(qf, gf, [r.pid for r in query], [r.pid for r in gallery],
                      [r.camid for r in query], [r.camid for r in gallery])
    return m.to_dict()
