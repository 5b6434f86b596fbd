"""AttentionPyramidC.affine: the whole pyramid as one per-channel affine map equals the step-wise path (eval)."""

from __future__ import annotations

import pytest
import torch

from apnet_edge.config import ModelConfig
from train.models import build_model
from train.models.attention import AttentionPyramidC


def _randomise_bn(model: torch.nn.Module) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("order", ["fine_to_coarse", "coarse_to_fine"])
def test_fused_pyramid_equals_stepwise(level: int, order: str) -> None:
    torch.manual_seed(level)
    model = build_model(ModelConfig(backbone="resnet18", level=level, input_size=(64, 32), pyramid_order=order), 0)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(3, 3, 64, 32)
    pyramids = [m for m in model.modules() if isinstance(m, AttentionPyramidC)]
    assert len(pyramids) == 5
    with torch.no_grad():
        ref = model.embed(x)
        inner = torch.randn(2, 64, 16, 8)
        step_out = pyramids[0](inner)
        for p in pyramids:
            p.fused = True
        fused = model.embed(x)
        fused_out = pyramids[0](inner)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_out, step_out, atol=1e-5, rtol=1e-5)


def test_fused_flag_is_ignored_in_training_mode() -> None:
    torch.manual_seed(0)
    pyr = AttentionPyramidC(64, level=2)
    pyr.fused = True
    pyr.train()
    x = torch.randn(4, 64, 8, 4)
    calls = []
    handle = pyr.steps[0][0].register_forward_hook(lambda *a: calls.append(1))
    pyr(x)
    handle.remove()
    assert calls  # the step-wise path ran (batch statistics, gradients through every step)


def test_fused_last_pyramid_is_applied_to_the_pooled_features() -> None:
    """The fifth pyramid is applied to the means (global and the two part stripes), the others to the map."""
    torch.manual_seed(3)
    cfg = ModelConfig(backbone="resnet18", level=2, input_size=(64, 32), multi_part=True)
    model = build_model(cfg, 0)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    pyramids = [m for m in model.modules() if isinstance(m, AttentionPyramidC)]
    assert len(pyramids) == 6  # five + the part branch's copy of the last one
    with torch.no_grad():
        ref = model.embed(x)
        for p in pyramids:
            p.fused = True
        seen: list[int] = []
        hooks = [p.register_forward_hook(lambda m, i, o, k=k: seen.append(k)) for k, p in enumerate(pyramids)]
        fused = model.embed(x)
        for h in hooks:
            h.remove()
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    assert seen == [0, 1, 2, 3]  # the last pyramid and its part copy never ran on a feature map
