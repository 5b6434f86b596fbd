"""Per-node profiles (``apnet-edge bench --profile``) on ONNX Runtime and OpenVINO, with a tiny ONNX model built here
(dynamic batch, and fixed batch 2 so that a call runs in chunks)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from apnet_edge.cli import main
from apnet_edge.errors import ModelError
from apnet_edge.profiling import format_profile, mean_node_times, profile_model
from apnet_edge.runners import load_runner

from .test_runners import build_tiny_onnx

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
BACKENDS = ["onnxruntime"] + (["openvino"] if HAS_OPENVINO else [])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("prof") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny_fixed(tmp_path_factory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("prof") / "tiny_b2.onnx", batch=2)


def test_mean_node_times_averages_sorts_and_drops_idle_nodes() -> None:
    ex = [{"conv": ("Conv", "k1", 10.0), "relu": ("Relu", "k2", 2.0), "reshape": ("Reshape", "k3", 0.0)},
          {"conv": ("Conv", "k1", 30.0), "relu": ("Relu", "k2", 4.0), "reshape": ("Reshape", "k3", 0.0)}]
    prof = mean_node_times(ex, [50.0, 70.0])
    assert [(n.name, n.op_type, n.kernel, n.us) for n in prof.nodes] == [("conv", "Conv", "k1", 20.0),
                                                                         ("relu", "Relu", "k2", 3.0)]
    assert prof.execution_us == 60.0
    assert mean_node_times([], []).nodes == ()


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_names_the_graphs_work(tiny: Path, backend: str) -> None:
    p = profile_model(str(tiny), backend, batch=3, threads=1, runs=4, warmup=1)
    assert p.backend == backend and p.batch == 3 and p.runs == 4 and p.executions_per_call == 1
    assert p.nodes and all(n.us > 0 and n.kernel for n in p.nodes)
    assert [n.us for n in p.nodes] == sorted((n.us for n in p.nodes), reverse=True)
    ops = {n.op_type.lower() for n in p.nodes}
    assert ops & {"conv", "fusedconv", "convolution"}, ops  # the 1x1 convolution ran and was timed
    assert 0 < p.node_us <= 1.5 * p.execution_us and p.execution_us <= p.wall_us
    assert sum(us for _, us, _ in p.by_op_type()) == pytest.approx(p.node_us)
    text = format_profile(p, top=1)
    assert "op type" in text and p.nodes[0].name in text
    assert len(p.nodes) == 1 or f"({len(p.nodes) - 1} more nodes)" in text
    assert json.loads(json.dumps(p.to_dict()))["nodes"][0]["name"] == p.nodes[0].name


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_of_a_fixed_batch_model_counts_every_chunk(tiny_fixed: Path, backend: str) -> None:
    p = profile_model(str(tiny_fixed), backend, batch=5, threads=1, runs=3, warmup=1)
    assert p.executions_per_call == 3  # 5 crops on a batch-2 model: 2 + 2 + 1 (padded)
    assert 0 < p.execution_us <= p.wall_us  # the three executions of each call, inside its wall time
    assert profile_model(str(tiny_fixed), backend, batch=2, threads=1, runs=3, warmup=1).executions_per_call == 1


def test_profile_refuses_other_backends_and_unprofiled_runners(tiny: Path, tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ModelError, match="trtexec"):
        profile_model(str(engine))
    with pytest.raises(ModelError, match="runs >= 1"):
        profile_model(str(tiny), runs=0)
    with load_runner(tiny) as runner:
        runner.infer(np.zeros((1, 3, 32, 16), np.float32))
        with pytest.raises(ModelError, match="profile=True"):
            runner.node_profile(1)
    with load_runner(tiny, profile=True) as runner:
        with pytest.raises(ModelError, match="run infer"):
            runner.node_profile(1)
        with pytest.raises(ModelError, match="read already"):  # ONNX Runtime's profiler ends with the first read
            runner.node_profile(1)
    runner = load_runner(tiny, profile=True)
    runner.activate()
    runner.infer(np.zeros((1, 3, 32, 16), np.float32))
    folder = Path(runner._profile_dir.name)
    runner.deactivate()  # profiled, never read: the profiler stops and its folder goes
    assert not folder.exists()


def test_bench_profile_cli_prints_and_writes_profiles(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", "--model", str(tiny), "--batch", "1,2", "--seconds", "0", "--profile", "--profile-runs", "3",
                 "--top", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "img/s" in text and text.count("profiler on") == 2 and "op type" in text
    rows = json.loads(out.read_text())
    assert [q["batch"] for q in rows[0]["profiles"]] == [1, 2] and rows[0]["profiles"][0]["nodes"]
    if HAS_OPENVINO:  # the same file on two backends: each result keeps its own profiles
        assert main(["bench", "--model", str(tiny), "--compare", str(tiny), "--compare-backend", "openvino",
                     "--batch", "1", "--seconds", "0", "--profile", "--profile-runs", "2", "--json", str(out)]) == 0
        rows = json.loads(out.read_text())
        assert [[q["backend"] for q in r["profiles"]] for r in rows] == [["onnxruntime"], ["openvino"]]


def test_bench_profile_cli_errors(tiny: Path, tmp_path: Path, capsys) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    assert main(["bench", "--model", str(engine), "--profile", "--seconds", "0"]) != 0
    assert "trtexec" in capsys.readouterr().err
    assert main(["bench", "--model", str(tiny), "--profile", "--profile-runs", "0", "--seconds", "0"]) != 0
    assert "--profile-runs" in capsys.readouterr().err
    assert main(["bench", "--table3", "--calib", str(tmp_path), "--profile"]) != 0
    assert "--profile applies to --model" in capsys.readouterr().err
