"""The TensorRT code type-checks against tensorrt-stubs (TensorRT 10 Python API) with engines/mypy.ini."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def test_mypy_against_tensorrt_stubs() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    from engines.typecheck import stub_dirs

    if stub_dirs() is None:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    res = subprocess.run([sys.executable, "-m", "engines.typecheck"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success" in res.stdout
