"""Errors raised by apnet-edge. Library code raises these; only the CLI turns them into exit codes.

Every message says what was asked, what was found and how to fix it.
"""

from __future__ import annotations


class ApnetError(Exception):
    """Base class of every error apnet-edge raises on purpose (the CLI exits with code 2 on these)."""


class ConfigError(ApnetError, ValueError):
    """A configuration file or override is malformed: unknown key, wrong type, bad value."""


class DatasetError(ApnetError, ValueError):
    """A dataset folder is missing, incomplete, or has files that do not follow the expected naming."""


class CheckpointError(ApnetError, ValueError):
    """A checkpoint cannot be used: missing, corrupt, another architecture, another number of classes."""


class ModelError(ApnetError, ValueError):
    """A model file (ONNX, engine) is not what was expected: wrong inputs/outputs, corrupt, not a re-ID model."""


class MissingDependencyError(ApnetError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"Python package '{module}' is not installed{what}. Install it with: pip install 'apnet-edge[{extra}]'"
        )
        self.module = module
        self.extra = extra


def require(module: str, extra: str, purpose: str = ""):
    """Import ``module`` lazily or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through MissingDependencyError tests
        raise MissingDependencyError(module, extra, purpose) from exc
