"""Checkpoints: atomic save, safe load, model rebuild, clear errors on architecture mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from apnet_edge.config import ExperimentConfig, ModelConfig, replace  # noqa: E402
from apnet_edge.errors import CheckpointError  # noqa: E402
from train.checkpoint import (  # noqa: E402
    load_checkpoint,
    load_weights_into,
    model_from_checkpoint,
    save_checkpoint,
)
from train.models import build_model  # noqa: E402

SMALL = ModelConfig(backbone="resnet18", input_size=(64, 32), level=2)


def _trained(cfg: ModelConfig, num_classes: int):
    """A model whose BN statistics and weights differ from a fresh one."""
    torch.manual_seed(1)
    model = build_model(cfg, num_classes)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(torch.randn(4, 3, *cfg.input_size))
    logits = out["logits"][0] if isinstance(out["logits"], list) else out["logits"]
    logits.logsumexp(1).mean().backward()
    opt.step()
    return model.eval(), opt


def test_round_trip_gives_identical_embeddings(tmp_path: Path) -> None:
    exp = ExperimentConfig(model=SMALL)
    model, opt = _trained(SMALL, 5)
    path = save_checkpoint(tmp_path / "run" / "last.pt", model, exp, epoch=3, optimizer=opt,
                           metrics={"mAP": np.float64(0.5), "cmc": np.arange(3)}, extra={"best_map": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    ckpt = load_checkpoint(path)
    assert ckpt["format_version"] == 1 and ckpt["epoch"] == 3 and ckpt["num_classes"] == 5
    assert ckpt["model_card"]["embedding_dim"] == 512 and ckpt["model_config"]["level"] == 2
    assert ckpt["metrics"] == {"mAP": 0.5, "cmc": [0, 1, 2]} and ckpt["experiment_config"]["model"]["level"] == 2
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        ref = model.embed(x, flip=True)
        for with_cls in (True, False):
            again = model_from_checkpoint(path, with_classifier=with_cls)
            assert not again.training and (again.classifier is not None) == with_cls
            assert torch.equal(again.embed(x, flip=True), ref)
            assert again.card.num_classes == 5
    fresh = build_model(SMALL, 5)
    load_weights_into(fresh, ckpt)
    assert torch.equal(fresh.eval().embed(x), model.embed(x))


def test_logits_feature_keeps_the_classifier(tmp_path: Path) -> None:
    cfg = replace(SMALL, test_feature="logits", level=1)
    model, _ = _trained(cfg, 6)
    save_checkpoint(tmp_path / "m.pt", model, cfg, epoch=0)
    again = model_from_checkpoint(tmp_path / "m.pt", with_classifier=False)
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert again.embedding_dim == 6 and torch.equal(again(x), model(x))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(bad)
    bare = tmp_path / "bare.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bare)
    with pytest.raises(CheckpointError, match="bare state dict"):
        load_checkpoint(bare)


def test_mismatched_classes_and_other_architecture(tmp_path: Path) -> None:
    model, _ = _trained(SMALL, 751)
    path = save_checkpoint(tmp_path / "market.pt", model, SMALL, epoch=0)
    with pytest.raises(CheckpointError, match="trained with 751 identities, this run has 702 classes") as exc:
        load_weights_into(build_model(SMALL, 702), path)
    assert "--no-classifier" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="has no classifier"):
        load_weights_into(build_model(SMALL, 3), build_ckpt_without_classifier(tmp_path))
    load_weights_into(build_model(SMALL, 0), path)  # features only: classifier ignored
    with pytest.raises(CheckpointError, match=r"holds apnet_c level 2 on resnet18, this model is apnet_c level 1") as exc:
        load_weights_into(build_model(replace(SMALL, level=1), 751), path)
    assert "unexpected" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="another shape"):
        load_weights_into(build_model(replace(SMALL, se_reduction=4), 751), path)
    with pytest.raises(CheckpointError, match="on resnet34: .* missing"):
        load_weights_into(build_model(replace(SMALL, backbone="resnet34"), 751), path)


def build_ckpt_without_classifier(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "nocls.pt", build_model(SMALL, 0), SMALL, epoch=0)
