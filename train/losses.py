"""Training losses of the APNet recipe (APNET.md section 2): label-smoothed cross-entropy + batch-hard triplet."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing (Szegedy et al. 2016), as in reid-strong-baseline / APNet.

    Target distribution ``q = (1 - epsilon) * one_hot(y) + epsilon / num_classes``; loss =
    ``mean_b sum_c -q[b, c] * log_softmax(logits)[b, c]`` (a scalar in nats). ``num_classes`` must be the TRUE
    number of training identities (the released APNet code hard-codes 751 for every dataset; we do not).
    Computed in float32 even under autocast.
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, found {num_classes}")
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), found {epsilon}")
        self.num_classes = int(num_classes)
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, num_classes), ``targets`` (B,) int64 class indices -> scalar loss."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}), found {tuple(logits.shape)}; build the loss "
                             f"with the classifier's number of classes")
        log_probs = F.log_softmax(logits.float(), dim=1)
        q = torch.full_like(log_probs, self.epsilon / self.num_classes)
        q.scatter_(1, targets.long().view(-1, 1), 1.0 - self.epsilon + self.epsilon / self.num_classes)
        return (-q * log_probs).sum(1).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, epsilon={self.epsilon}"


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (M, N) between rows of ``x`` (M, D) and ``y`` (N, D); squared distances are clamped
    at 1e-12 before the square root (so identical rows give 1e-6 and no NaN gradient)."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    return d2.clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017) with Euclidean distance on un-normalised features.

    For each anchor: hardest positive = farthest same-ID sample (the anchor itself counts, at distance ~0),
    hardest negative = closest other-ID sample. ``margin`` (feature units): loss = mean(relu(d_ap - d_an +
    margin)); ``margin=None``: soft margin, loss = mean(softplus(d_ap - d_an)). Works with any number of
    samples per ID. Distances are computed in float32 even under autocast.
    """

    def __init__(self, margin: Optional[float] = 0.3) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ValueError(f"margin must be >= 0 or None (soft margin), found {margin}")
        self.margin = None if margin is None else float(margin)

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``features`` (B, D), ``pids`` (B,) -> ``(loss scalar, dist_ap (B,), dist_an (B,))``.

        ``dist_ap``/``dist_an`` are the hardest positive/negative distances per anchor (keep their gradients);
        ``(dist_an > dist_ap).float().mean()`` is the usual triplet accuracy.
        """
        if features.ndim != 2 or pids.ndim != 1 or features.shape[0] != pids.shape[0]:
            raise ValueError(f"features must be (B, D) and pids (B,), found {tuple(features.shape)} and "
                             f"{tuple(pids.shape)}")
        feats = features.float()
        n = feats.shape[0]
        dist = euclidean_dist(feats, feats)
        same = pids.view(n, 1) == pids.view(1, n)
        if bool(same.all()):
            raise ValueError("the batch holds a single identity, so there is no negative for the triplet loss; "
                             "use a P x K identity sampler with P >= 2")
        eye = torch.eye(n, dtype=torch.bool, device=dist.device)
        dist = dist.masked_fill(eye, 1e-6)  # exact self-distance (the expansion is inexact for large norms)
        dist_ap = dist.masked_fill(~same, float("-inf")).max(1).values
        dist_an = dist.masked_fill(same, float("inf")).min(1).values
        if self.margin is None:
            loss = F.softplus(dist_ap - dist_an).mean()
        else:
            loss = F.relu(dist_ap - dist_an + self.margin).mean()
        return loss, dist_ap, dist_an

    def extra_repr(self) -> str:
        return f"margin={self.margin if self.margin is not None else 'soft'}"
