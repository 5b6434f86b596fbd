"""Label-smoothed cross-entropy and batch-hard triplet loss on hand-checkable inputs."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from train.losses import CrossEntropyLabelSmooth, TripletLoss, euclidean_dist  # noqa: E402


def test_label_smooth_uniform_logits_give_log_c():
    ce = CrossEntropyLabelSmooth(4, epsilon=0.1)
    assert ce(torch.zeros(2, 4), torch.tensor([0, 3])).item() == pytest.approx(math.log(4))


def test_label_smooth_hand_value_and_torch_agreement():
    # logits [2, 0, 0], target 0, C = 3, eps = 0.1: q = [0.9 + 0.1/3, 0.1/3, 0.1/3], lse = log(e^2 + 2)
    # loss = -sum q * (logit - lse) = lse - 2 * (0.9 + 0.1/3)
    ce = CrossEntropyLabelSmooth(3, epsilon=0.1)
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = math.log(math.e ** 2 + 2) - 2 * (0.9 + 0.1 / 3)
    assert ce(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)
    x, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    ce5 = CrossEntropyLabelSmooth(5, epsilon=0.1)
    assert ce5(x, y).item() == pytest.approx(F.cross_entropy(x, y, label_smoothing=0.1).item(), rel=1e-5)
    assert CrossEntropyLabelSmooth(5, 0.0)(x, y).item() == pytest.approx(F.cross_entropy(x, y).item(), rel=1e-5)


def test_label_smooth_rejects_wrong_class_count():
    with pytest.raises(ValueError, match=r"\(B, 751\)"):
        CrossEntropyLabelSmooth(751)(torch.zeros(2, 702), torch.tensor([0, 1]))


def test_triplet_hand_values():
    # 1-D features: distances are |a - b|. pids 0,0,1,1 at 0,1,3,5
    # hardest positive: [1, 1, 2, 2]; hardest negative: [min(3,5), min(2,4), min(3,2), min(5,4)] = [3, 2, 2, 4]
    feats = torch.tensor([[0.0], [1.0], [3.0], [5.0]], requires_grad=True)
    pids = torch.tensor([0, 0, 1, 1])
    loss, ap, an = TripletLoss(margin=0.3)(feats, pids)
    assert ap.tolist() == pytest.approx([1, 1, 2, 2], abs=1e-4)
    assert an.tolist() == pytest.approx([3, 2, 2, 4], abs=1e-4)
    assert loss.item() == pytest.approx(0.3 / 4, abs=1e-5)  # relu(ap - an + 0.3) = [0, 0, 0.3, 0]
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    soft, _, _ = TripletLoss(margin=None)(feats.detach(), pids)
    sp = [math.log1p(math.exp(v)) for v in (-2, -1, 0, -2)]  # softplus(ap - an)
    assert soft.item() == pytest.approx(sum(sp) / 4, rel=1e-4)


def test_triplet_uneven_ids_and_singletons():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [10.0, 0.0]])
    pids = torch.tensor([7, 7, 7, 2])  # id 2 has only itself: hardest positive ~ 0
    _, ap, an = TripletLoss()(feats, pids)
    assert ap.tolist() == pytest.approx([5, 5, math.sqrt(9 + 9), 0], abs=1e-4)
    assert an.tolist() == pytest.approx([10, math.sqrt(49 + 16), math.sqrt(100 + 1), math.sqrt(49 + 16)], abs=1e-4)


def test_triplet_needs_two_ids_and_euclidean_dist():
    with pytest.raises(ValueError, match="single identity"):
        TripletLoss()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        TripletLoss(margin=-1.0)
    x, y = torch.randn(5, 8), torch.randn(3, 8)
    assert torch.allclose(euclidean_dist(x, y), torch.cdist(x, y), atol=1e-4)
