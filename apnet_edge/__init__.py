"""apnet-edge: person re-identification from training to live cameras.

Importing this package is cheap: it touches no network, no disk and no heavy library
(torch, tensorrt, openvino, ultralytics are imported lazily where they are needed).
"""

from __future__ import annotations

__version__ = "0.1.0"

from apnet_edge.card import ModelCard
from apnet_edge.errors import (
    ApnetError,
    CheckpointError,
    ConfigError,
    DatasetError,
    MissingDependencyError,
    ModelError,
)

__all__ = [
    "ApnetError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "MissingDependencyError",
    "ModelCard",
    "ModelError",
    "__version__",
]
