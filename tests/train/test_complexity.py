"""Parameter and MAC counts, checked against the analytic numbers of APNET.md section 4."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402

from apnet_edge.config import ModelConfig  # noqa: E402
from train.complexity import count_macs, count_parameters, model_info  # noqa: E402
from train.models import build_model  # noqa: E402


def test_apnet_c_level2_resnet50_matches_the_spec() -> None:
    info = model_info(ModelConfig(level=2))  # meta device: no weights, no real forward
    assert info["params_total"] == pytest.approx(29.10e6, rel=0.005)
    assert info["params_backbone"] == pytest.approx(23.51e6, rel=0.005)
    assert info["params_attention"] == 1_393_664 + 4_190_752 + 7_808  # SE + SAMS + frozen-bias BN2d
    assert info["params_classifier"] == 0 and info["embedding_dim"] == 2048
    assert info["macs"] == pytest.approx(4.06e9, rel=0.01)
    assert info["input_size"] == [256, 128]
    assert model_info(ModelConfig(level=2), num_classes=751)["params_total"] == pytest.approx(30.64e6, rel=0.005)


def test_level0_and_level1_resnet50() -> None:
    l0 = model_info(ModelConfig(level=0))
    l1 = model_info(ModelConfig(level=1))
    assert l0["params_total"] == pytest.approx(23.51e6, rel=0.005) and l0["params_attention"] == 0
    assert l0["macs"] == pytest.approx(4.05e9, rel=0.005)
    assert l1["params_attention"] == pytest.approx(1.39e6, rel=0.005)
    assert l1["params_total"] - l0["params_total"] == l1["params_attention"]
    assert model_info(ModelConfig(level=0, input_size=(384, 128)))["macs"] == pytest.approx(6.08e9, rel=0.005)
    assert model_info(ModelConfig(level=0, backbone="se_resnet50"))["params_backbone"] == pytest.approx(
        26.02e6, rel=0.005)


def test_counters_on_a_toy_model_and_classifier_flag() -> None:
    toy = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    assert count_macs(toy, (4, 4)) == 4 * 4 * 8 * 3 * 9 + 8 * 5
    model = build_model(ModelConfig(backbone="resnet18", input_size=(64, 32), multi_part=True), 10)
    assert count_parameters(model, include_classifier=True) - count_parameters(model) == 3 * 512 * 10
    assert model.training and count_macs(model) > 0 and model.training  # mode restored


def test_apnet_s_counts_the_affinity_matmul() -> None:
    small = {"backbone": "resnet18", "input_size": (64, 32)}
    s = model_info(ModelConfig(arch="apnet_s", level=1, **small))
    c0 = model_info(ModelConfig(level=0, **small))
    # level-1 RGA-S agents at the 5 points: maps 16x8, 16x8, 8x4, 4x2, 4x2; affinity = N*N*C/8
    affinity = sum(n * n * c // 8 for n, c in ((128, 64), (128, 64), (32, 128), (8, 256), (8, 512)))
    assert s["macs"] - c0["macs"] > affinity
    assert s["params_attention"] > 0 and s["embedding_dim"] == 512
    info = model_info(ModelConfig(test_feature="logits", **small))
    assert "note" in info and info["embedding_dim"] == 512
