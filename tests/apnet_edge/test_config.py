from __future__ import annotations

from pathlib import Path

import pytest

from apnet_edge.config import ExperimentConfig, load_config, parse_overrides, to_dict
from apnet_edge.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("apnet_*.yaml")) + [CONFIGS / "cpu_small.yaml"],
                         ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.input_size[0] % 32 == 0


def test_market_config_is_the_released_recipe() -> None:
    cfg = load_config(CONFIGS / "apnet_c_market1501.yaml")
    assert (cfg.model.arch, cfg.model.backbone, cfg.model.level, cfg.model.last_stride) == ("apnet_c", "resnet50", 2, 1)
    assert (cfg.solver.base_lr, cfg.solver.weight_decay, cfg.solver.steps) == (4e-4, 1e-3, (40, 80, 120))
    assert (cfg.data.batch_size, cfg.data.num_instances, cfg.solver.triplet_margin) == (80, 4, 0.3)


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(CONFIGS / "apnet_c_market1501.yaml", ["solver.max_epochs=3", "model.input_size=[128,64]"])
    assert cfg.solver.max_epochs == 3
    assert cfg.model.input_size == (128, 64)
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_round_trip_through_dict() -> None:
    from apnet_edge.config import from_dict

    cfg = load_config(CONFIGS / "cpu_small.yaml")
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("solver.base_lrr=1", "unknown config key 'solver.base_lrr'"),
        ("modle.level=1", "unknown config key 'modle'"),
        ("solver.max_epochs=ten", "'solver.max_epochs' must be an integer"),
        ("model.input_size=[250,128]", "divisible by 32"),
        ("model.level=7", "model.level must be 0, 1, 2 or 3"),
        ("model.arch=apnet_x", "model.arch must be one of"),
        ("solver.max_epochs", "must look like section.key=value"),
    ],
)
def test_bad_config_names_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as exc:
        load_config(CONFIGS / "apnet_c_market1501.yaml", [override])
    assert fragment in str(exc.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
