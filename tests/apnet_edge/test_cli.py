"""The CLI works without heavy libraries, never lets a user's files shadow ours, and exits 2 on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apnet_edge.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "torchvision", "tensorrt", "openvino", "ultralytics", "pycuda", "polygraphy", "cuda"]

BLOCKER = textwrap.dedent(
    f"""
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {HEAVY!r}:
                raise ImportError('blocked for the test: ' + name)
            return None
    sys.meta_path.insert(0, _Block())
    from apnet_edge.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


def _run_blocked(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_help_without_heavy_libraries() -> None:
    res = _run_blocked("--help")
    assert res.returncode == 0, res.stderr
    for name in _commands():
        assert name in res.stdout


@pytest.mark.parametrize("name", _commands())
def test_every_subcommand_help_without_heavy_libraries(name: str) -> None:
    res = _run_blocked(name, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: apnet-edge " + name in res.stdout


def test_train_without_torch_names_the_extra(tmp_path: Path) -> None:
    res = _run_blocked("train", "--config", str(ROOT / "configs" / "cpu_small.yaml"), "--output", str(tmp_path))
    assert res.returncode == 2
    assert "pip install 'apnet-edge[train]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_run_with_onnx_models_needs_no_heavy_library(tmp_path: Path, vtest_path: Path, yolox_path: Path,
                                                    reid0248_path: Path) -> None:
    """`apnet-edge run` on real video with ONNX models works with torch, Ultralytics, OpenVINO, TensorRT and the CUDA
    bindings unimportable (an edge box with numpy, OpenCV, the tracker and ONNX Runtime only): backend auto falls back
    to ONNX Runtime."""
    pytest.importorskip("supervision")
    cams = tmp_path / "cams.yaml"
    cams.write_text(textwrap.dedent(f"""
        cameras:
          - {{id: left, source: {vtest_path}, roi: [0, 0, 384, 576]}}
          - {{id: right, source: {vtest_path}, roi: [384, 0, 768, 576]}}
        detector: {{model: {yolox_path}, threads: 1}}
        reid: {{model: {reid0248_path}, card: {ROOT / "configs" / "reid_0248.card.json"}, threads: 1}}
        outputs: {{dir: {tmp_path / "out"}, video: none, log_every_s: 0}}
        max_frames: 5
        """))
    res = _run_blocked("run", "--cameras", str(cams))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"frames_processed": 5' in summary and '"failures": []' in summary


def test_import_is_light() -> None:
    code = f"import sys, apnet_edge, apnet_edge.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_user_files_do_not_shadow_our_packages(tmp_path: Path) -> None:
    """A folder with its own train.py / export.py / engines.py must not replace our top-level packages."""
    for mod in ("train", "export", "engines"):
        (tmp_path / f"{mod}.py").write_text("raise SystemExit('the user file was imported instead of ours')\n")
    exe = Path(sys.executable).with_name("apnet-edge")
    if not exe.exists():
        pytest.skip(f"console script not installed beside {sys.executable}; run 'make test'")
    env = dict(os.environ, PYTHONPATH="")
    res = subprocess.run([str(exe), "model-info", "--json", "model.backbone=resnet18", "model.input_size=[64,32]"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert '"parameters"' in res.stdout or "params" in res.stdout


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["model-info", "model.level=9"], "model.level must be 0, 1, 2 or 3"),
        (["model-info", "--config", "no/such.yaml"], "does not exist"),
        (["eval", "--checkpoint", "missing.pt", "--data-root", "no/such/dir"], "no/such/dir"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], fragment: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.count("\n") == 1
