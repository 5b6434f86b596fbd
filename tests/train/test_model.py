"""APNet model: backbones, attention pyramids, heads, embeddings, pretrained loading (small CPU models)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from apnet_edge.card import IMAGENET_MEAN, ModelCard  # noqa: E402
from apnet_edge.config import ModelConfig  # noqa: E402
from apnet_edge.errors import CheckpointError, ConfigError  # noqa: E402
from train.models import APNet, available_backbones, build_model  # noqa: E402
from train.models.attention import (  # noqa: E402
    AttentionPyramidC,
    AttentionPyramidS,
    FrozenBiasBatchNorm1d,
    FrozenBiasBatchNorm2d,
    RGASpatial,
    SEAttention,
    SplitAttention,
    StripeAttention,
)
from train.models.backbones import build_backbone  # noqa: E402

SMALL = (64, 32)


def small_cfg(**kw) -> ModelConfig:
    base = {"backbone": "resnet18", "input_size": SMALL}
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------- backbones
def test_backbone_keys_match_torchvision_and_channels() -> None:
    for name, tv in (("resnet18", torchvision.models.resnet18), ("resnet50", torchvision.models.resnet50)):
        with torch.device("meta"):
            ours = build_backbone(name)
            ref = tv(weights=None)
        ref_keys = {k for k in ref.state_dict() if not k.startswith("fc.")}
        assert set(ours.state_dict()) == ref_keys
        assert all(ours.state_dict()[k].shape == ref.state_dict()[k].shape for k in ref_keys)
    with torch.device("meta"):
        assert build_backbone("resnet50").channels == (64, 256, 512, 1024, 2048)
        assert build_backbone("resnet34").channels == (64, 64, 128, 256, 512)
        assert set(build_backbone("se_resnet50").state_dict()) > ref_keys
    assert build_backbone("resnet18").channels == (64, 64, 128, 256, 512)


def test_backbone_last_stride_and_stem_quirk() -> None:
    x = torch.randn(1, 3, *SMALL)
    for last_stride, h4 in ((1, 4), (2, 2)):
        bb = build_backbone("resnet18", last_stride=last_stride).eval()
        shapes = []
        for piece in bb.pieces():
            x_ = piece(x if not shapes else shapes[-1])
            shapes.append(x_)
        assert [tuple(t.shape[2:]) for t in shapes] == bb.feature_sizes(SMALL)
        assert shapes[-1].shape[2] == h4
    assert isinstance(build_backbone("resnet18").relu, nn.Identity)  # released quirk: no stem ReLU
    bb = build_backbone("resnet18", stem_relu=True).eval()
    assert isinstance(bb.relu, nn.ReLU) and bool((bb.stem(x) >= 0).all())
    assert bool((build_backbone("resnet18").eval().stem(x) < 0).any())


def test_unknown_backbone_lists_the_names() -> None:
    with pytest.raises(ConfigError, match="resnet18, resnet34, resnet50"):
        build_model(small_cfg(backbone="resnet101"), 0)
    assert available_backbones() == ["resnet18", "resnet34", "resnet50", "se_resnet50"]


# ------------------------------------------------------------------------------------------- attention C
def test_split_attention_softmax_and_dims() -> None:
    sams = SplitAttention(256, radix=2)
    assert sams.hidden == 128 and sams.fc1.in_channels == 128 and sams.fc2.out_channels == 256
    assert SplitAttention(64, 2).hidden == 32 and SplitAttention(64, 4).hidden == 64
    x = torch.randn(3, 64, 8, 4)
    for r in (2, 4):
        m = SplitAttention(64, r)
        a = m.attention(x)
        assert a.shape == (3, r, 64 // r)
        assert torch.allclose(a.sum(1), torch.ones(3, 64 // r), atol=1e-6)
        y = m(x)
        # merge = concat over groups of a_i * X_i
        manual = torch.cat([a[:, i, :, None, None] * g for i, g in enumerate(x.chunk(r, 1))], 1)
        assert torch.allclose(y, manual, atol=1e-6)
    with pytest.raises(ConfigError):
        SplitAttention(64, 3)


def test_pyramid_c_levels_and_order() -> None:
    assert isinstance(AttentionPyramidC(64, 0).steps, nn.Sequential) and len(AttentionPyramidC(64, 0).steps) == 0
    se_only = AttentionPyramidC(64, 1).steps
    assert len(se_only) == 1 and isinstance(se_only[0], SEAttention)
    assert se_only[0].fc[0].out_features == 8 and se_only[0].fc[0].bias is None
    p3 = AttentionPyramidC(64, 3).steps
    assert [s[0].radix for s in p3[:2]] == [4, 2] and isinstance(p3[0][1], FrozenBiasBatchNorm2d)
    assert isinstance(p3[2], SEAttention)
    rev = AttentionPyramidC(64, 3, order="coarse_to_fine").steps
    assert isinstance(rev[0], SEAttention) and [s[0].radix for s in rev[1:]] == [2, 4]
    x = torch.randn(2, 64, 8, 4)
    for level in range(4):
        assert AttentionPyramidC(64, level)(x).shape == x.shape


def test_frozen_bias_batchnorms_are_not_trainable() -> None:
    model = build_model(small_cfg(level=3, multi_part=True), 5)
    frozen = [m for m in model.modules() if isinstance(m, (FrozenBiasBatchNorm1d, FrozenBiasBatchNorm2d))]
    assert len(frozen) == 5 * 2 + 2 + 1 + 2  # 2 SAMS per point, part pyramid copy, BNNeck, 2 part BNNecks
    for m in frozen:
        assert not m.bias.requires_grad and m.weight.requires_grad
        assert float(m.bias.detach().abs().sum()) == 0.0 and float(m.weight.detach().min()) == 1.0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert all(id(m.bias) not in trainable for m in frozen)


# ------------------------------------------------------------------------------------------- attention S
def test_rga_spatial_mask_and_stripes() -> None:
    x = torch.randn(2, 64, 8, 4)
    agent = RGASpatial(64, 8, 4).eval()
    m = agent.mask(x)
    assert m.shape == (2, 1, 8, 4) and bool(((m > 0) & (m < 1)).all())
    assert agent.relation[0].in_channels == 2 * 32 and agent.relation[0].out_channels == 4
    stripes = StripeAttention(64, 8, 4, parts=4).eval()
    assert len(stripes.agents) == 4 and stripes.agents[0].height == 2
    assert stripes.agents[0].theta[0].weight.data_ptr() != stripes.agents[1].theta[0].weight.data_ptr()
    # each stripe's mask depends only on that stripe
    y = x.clone()
    y[:, :, :2] += 1.0
    assert torch.allclose(stripes.mask(x)[:, :, 2:], stripes.mask(y)[:, :, 2:])
    pyr = AttentionPyramidS(64, 8, 4, level=3)
    assert [s.parts for s in pyr.steps] == [4, 2, 1]
    assert [s.parts for s in AttentionPyramidS(64, 8, 4, 3, order="coarse_to_fine").steps] == [1, 2, 4]
    with pytest.raises(ConfigError, match="stripes"):
        AttentionPyramidS(64, 6, 4, level=3)


# ------------------------------------------------------------------------------------------- APNet
@pytest.mark.parametrize("arch,level", [("apnet_c", lv) for lv in range(4)] + [("apnet_s", lv) for lv in range(4)])
def test_shapes_for_every_level(arch: str, level: int) -> None:
    model = build_model(small_cfg(arch=arch, level=level), 7)
    x = torch.randn(2, 3, *SMALL)
    out = model(x)
    assert out["logits"].shape == (2, 7) and out["features"].shape == (2, 512)
    assert "part_logits" not in out
    out["logits"].sum().backward()
    model.eval()
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (2, model.embedding_dim) == (2, 512)


def test_eval_forward_equals_embed_unit_norm_and_flip() -> None:
    model = build_model(small_cfg(level=2), 4).eval()
    x = torch.randn(3, 3, *SMALL)
    with torch.no_grad():
        e = model.embed(x)
        assert torch.equal(model(x), e)
        assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
        ef = model.embed(x, flip=True)
        manual = F.normalize(model._test_feature(x) + model._test_feature(x.flip(3)), dim=1)
        assert torch.allclose(ef, manual, atol=1e-6)
        assert torch.allclose(ef, model.embed(x.flip(3), flip=True), atol=1e-5)
        assert torch.allclose(ef.norm(dim=1), torch.ones(3), atol=1e-5)
        assert not torch.allclose(ef, e, atol=1e-4)


def test_test_feature_variants() -> None:
    x = torch.randn(2, 3, *SMALL)
    before = build_model(small_cfg(test_feature="before_bn"), 0).eval()
    with torch.no_grad():
        feat = before._global_and_parts(x)[0]
        assert torch.allclose(before(x), F.normalize(feat, dim=1), atol=1e-6)
    logits = build_model(small_cfg(test_feature="logits"), 9).eval()
    assert logits.embedding_dim == 9 and logits(x).shape == (2, 9)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(small_cfg(test_feature="logits"), 0)


def test_multi_part_branch() -> None:
    model = build_model(small_cfg(multi_part=True), 6)
    assert model.embedding_dim == 3 * 512
    x = torch.randn(2, 3, *SMALL)
    out = model(x)
    assert isinstance(out["logits"], list) and [t.shape for t in out["logits"]] == [(2, 6)] * 3
    assert [t.shape for t in out["part_logits"]] == [(2, 6)] * 2
    assert [t.shape for t in out["part_features"]] == [(2, 512)] * 2
    assert model.part_layer4 is not model.backbone.layer4
    model.eval()
    with torch.no_grad():
        emb = model(x)
        g, parts = model._global_and_parts(x)
        # stripes = top/bottom halves of the part branch's layer4 map
        y = model.part_pyramid(model.part_layer4(_fork(model, x)))
        assert torch.allclose(parts[0], y[:, :, :2].mean((2, 3)), atol=1e-5)
    assert emb.shape == (2, 1536) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert build_model(small_cfg(multi_part=True, test_feature="logits"), 6).embedding_dim == 18


def _fork(model: APNet, x: torch.Tensor) -> torch.Tensor:
    for piece, pyr in zip(model.backbone.pieces()[:4], model.pyramids[:4]):
        x = pyr(piece(x))
    return x


def test_input_sizes_that_do_not_divide_raise() -> None:
    with pytest.raises(ConfigError, match="divisible by 32"):
        small_cfg(input_size=(100, 50))
    with pytest.raises(ConfigError, match="stripes"):  # layer4 map 2 rows high, level 3 needs 4 stripes
        build_model(small_cfg(arch="apnet_s", level=3, last_stride=2), 0)
    with pytest.raises(ConfigError, match="even layer4"):
        build_model(small_cfg(input_size=(32, 32), last_stride=2, multi_part=True), 0)
    model = build_model(small_cfg(arch="apnet_s", level=1), 0).eval()
    with pytest.raises(ConfigError, match=r"built for input \(64, 32\)"):
        model(torch.randn(1, 3, 128, 64))


def test_card() -> None:
    model = build_model(small_cfg(level=1, pyramid_order="coarse_to_fine"), 11)
    card = model.card
    assert isinstance(card, ModelCard)
    assert (card.arch, card.backbone, card.level, card.input_size) == ("apnet_c", "resnet18", 1, SMALL)
    assert card.mean == IMAGENET_MEAN and card.pixel_scale == 255.0 and card.layout == "NCHW"
    assert card.color_order == "RGB" and card.embedding_dim == 512 and card.num_classes == 11
    assert card.extra["pyramid_order"] == "coarse_to_fine" and card.extra["last_stride"] == 1
    assert ModelCard.from_json(card.to_json()) == card


# ------------------------------------------------------------------------------------------- pretrained
def test_pretrained_loads_a_torchvision_state_dict(tmp_path: Path) -> None:
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(small_cfg(pretrained=str(path), multi_part=True), 3)
    assert model.pretrained_report["missing"] == [] and model.pretrained_report["unexpected"] == []
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(model.backbone.state_dict()[k], v), k
    assert torch.equal(model.part_layer4[0].conv1.weight, ref.layer4[0].conv1.weight)

    with pytest.raises(CheckpointError, match="do not exist"):
        build_model(small_cfg(pretrained=str(tmp_path / "nope.pth")), 0)
    bogus = tmp_path / "bogus.pth"
    torch.save({"features.0.weight": torch.zeros(3), "conv1.weight": torch.zeros(1)}, bogus)
    with pytest.raises(CheckpointError, match="do not fit backbone resnet18"):
        build_model(small_cfg(pretrained=str(bogus)), 0)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot be read"):
        build_model(small_cfg(pretrained=str(junk)), 0)
